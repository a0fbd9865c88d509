"""Atomic file writes: a kill at any moment leaves the old file or the new one, never half of one.

Only the main process of a distributed run writes (:func:`nas_ops.process.is_main_process`): other ranks
return without touching the disk. A written file gets the permissions of a plain ``open`` under the user's umask
(a temporary file is created 0600), so results are readable by whoever could read the folder.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from nas_ops.process import is_main_process


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(file)`` into a temporary sibling, fsync it, then ``os.replace`` it over ``path``.

    A crash at any point leaves either the old file or the new one, complete; the temporary file is removed on error.
    """
    if not is_main_process():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w+b") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a process killed mid-write
        stale.unlink(missing_ok=True)


def _umask() -> int:
    """The process's umask (reading it means setting it: put straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable; best effort, as not every platform can open a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: str | Path, doc: Any) -> None:
    """Write ``doc`` as indented JSON, atomically."""
    text = json.dumps(doc, indent=2) + "\n"
    atomic_write(path, lambda fh: fh.write(text.encode()))
