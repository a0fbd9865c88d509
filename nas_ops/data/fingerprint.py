"""A dataset's fingerprint: what a run's identity records of its data, and what lets a run validate it once.

The sha256 of ``dataset.json``'s bytes (and of ``splits_final.json``'s, when the folder holds its folds) and, for
every file it names, the file's path relative to the dataset
folder, its size and its modification time. Computing it opens no image (a few ``stat`` calls per case), so every
candidate training of a search can check that the dataset is the one validated at the start of the run. A copy
made with ``cp -p`` or ``rsync -a`` keeps it; editing, replacing or touching a file changes it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from nas_ops.data.msd import MSDDataset
from nas_ops.data.splits import SPLIT_FILE
from nas_ops.errors import DatasetError


def dataset_fingerprint(ds: MSDDataset) -> str:
    """``sha256:<hex>`` of ``dataset.json`` and the names, sizes and modification times of its files."""
    digest = hashlib.sha256(ds.json_path.read_bytes())
    split = ds.root / SPLIT_FILE
    if split.is_file():
        digest.update(b"\0" + SPLIT_FILE.encode() + b"\0" + split.read_bytes())
    for i, item in enumerate(ds.items):
        for key in ("image", "label"):
            path = Path(item[key])
            try:
                st = path.stat()
            except OSError:
                raise DatasetError(ds.json_path, f"training[{i}].{key}", f"file does not exist: {path}") from None
            name = os.path.relpath(path, ds.root)
            digest.update(f"\0{name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return f"sha256:{digest.hexdigest()}"
