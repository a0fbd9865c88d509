"""The zoo index: one JSON file listing packed bundles by name and version, with what installation checks.

``index.json``::

    {"format": 1, "bundles": [{"name", "version", "method", "task", "dataset", "monai_version",
      "pytorch_version", "medseg_nas_version", "archive" (path relative to the index, or a file:// URL),
      "archive_sha256", "files": {member: sha256}, "sizes": {member: bytes}, "eval_metrics",
      "genotype_sha256"}, ...]}

A (name, version) is indexed once: indexing it again with other content is refused (bump the version).
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from nas_ops.atomic import write_json_atomic
from nas_ops.entry import entry
from nas_ops.errors import InputError
from nas_ops.training.artifacts import sha256_file

FORMAT = 1


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_path(path: Path) -> str:
    """The hex sha256 of a file (the index stores bare hex digests)."""
    return sha256_file(path).split(":", 1)[1]


def release_key(version: str) -> tuple[int, ...]:
    """A version's numeric release (``2.14.1+cu124`` -> ``(2, 14, 1)``), for ordering and compatibility."""
    return tuple(int(x) for x in version.split("+")[0].split(".")[:3] if x.isdigit())


def local_path(location: str, base: Path | None = None, source: Any = "zoo", field: str = "index_path") -> Path:
    """A local path or ``file://`` URL as a path (relative paths against ``base``); other URLs are refused."""
    if not isinstance(location, str) or not location:
        raise InputError(source, field, f"must be a path or a file:// URL, got {location!r}")
    if "://" in location and not location.startswith("file://"):
        raise InputError(source, field, f"{location}: only local paths and file:// URLs are read (copy the index "
                         "and its archives to this machine first)")
    if location.startswith("file://"):
        return Path(unquote(urlparse(location).path))
    path = Path(location)
    return path if path.is_absolute() or base is None else base / path


def read_index(location: str | Path) -> tuple[Path, dict[str, Any]]:
    """``(path, document)`` of an index (a path or a ``file://`` URL), checked to be an index."""
    path = local_path(str(location))
    if not path.is_file():
        raise InputError(path, "index", "no such file: give the path or file:// URL of a zoo index.json")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(path, "index", f"is not a JSON document ({type(err).__name__})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("bundles"), list):
        raise InputError(path, "format", f"is not a zoo index of format {FORMAT}")
    for i, item in enumerate(doc["bundles"]):
        check_entry(item, path, f"bundles[{i}]")
    return path, doc


def check_release(value: Any, source: Any, field: str) -> str:
    """A package version as its release tells it (``1.6.1``, ``2.14.1+cu124``)."""
    if not isinstance(value, str) or not re.match(r"^[0-9]+\.[0-9]+", value):
        raise InputError(source, field, f"is not a version, got {value!r:.40}")
    return value


ENTRY_KEYS = {"name": str, "version": str, "archive": str, "archive_sha256": str, "files": dict,
              "monai_version": str, "pytorch_version": str}


def check_entry(entry: Any, path: Path, field: str) -> None:
    """An index entry has the keys installation reads, of the right types, with a release version."""
    from nas_ops.zoo.pack import check_version

    if not isinstance(entry, dict):
        raise InputError(path, field, f"must be an object, got {entry!r:.60}")
    for key, kind in ENTRY_KEYS.items():
        if not isinstance(entry.get(key), kind):
            got = "missing" if key not in entry else f"got {entry[key]!r:.60}"
            raise InputError(path, f"{field}.{key}", f"must be a {kind.__name__}: {got}")
    from nas_ops.zoo.pack import NAME

    if not NAME.fullmatch(entry["name"]):
        raise InputError(path, f"{field}.name", f"must be lower-case letters, digits and '_', got "
                         f"{entry['name']!r:.60}")
    check_version(entry["version"], path, f"{field}.version")
    for key in ("monai_version", "pytorch_version"):
        check_release(entry[key], path, f"{field}.{key}")
    if not all(isinstance(v, str) and len(v) == 64 for v in [entry["archive_sha256"], *entry["files"].values()]):
        raise InputError(path, f"{field}.files", "every checksum must be a sha256 in hex (64 characters)")


def entry_of(archive: Path, index_dir: Path) -> dict[str, Any]:
    """The index entry of a packed bundle zip (checked: one bundle folder, a readable metadata.json)."""
    from nas_ops.zoo.pack import check_version

    if not archive.is_file():
        raise InputError(archive, "archive", "no such file: give the zip that zoo pack wrote")
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise InputError(archive, "archive", "is not a zip archive") from None
    with zf:
        names = [i.filename for i in zf.infolist() if not i.is_dir()]
        top = {n.split("/", 1)[0] for n in names}
        if len(top) != 1 or any("/" not in n for n in names):
            raise InputError(archive, "archive", f"must hold one bundle folder, holds {sorted(top)}")
        name = top.pop()
        from nas_ops.zoo.install import check_member

        for info in zf.infolist():  # what install would refuse is not indexed
            check_member(info, archive, name)
        member = f"{name}/configs/metadata.json"
        try:
            meta = json.loads(zf.read(member).decode("utf-8"))
        except KeyError:
            raise InputError(archive, member, "is missing: not a bundle zip (pack it with zoo pack)") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(archive, member, f"is not a JSON document ({type(err).__name__})") from None
        if not isinstance(meta, dict):
            raise InputError(archive, member, "must be a JSON object")
        for key in ("version", "monai_version", "pytorch_version"):
            if key not in meta:
                raise InputError(archive, f"{member}: {key}", "is missing")
            (check_version if key == "version" else check_release)(meta[key], archive, f"{member}: {key}")
        files = {n.split("/", 1)[1]: sha256_bytes(zf.read(n)) for n in names}
        sizes = {n.split("/", 1)[1]: zf.getinfo(n).file_size for n in names}
    try:
        rel = str(archive.resolve().relative_to(index_dir.resolve()))
    except ValueError:
        rel = archive.resolve().as_uri()
    return {"name": name, "version": meta["version"], "method": meta.get("method"), "bundle": meta.get("bundle"),
            "task": meta.get("task"),
            "dataset": meta.get("dataset"), "monai_version": meta["monai_version"],
            "pytorch_version": meta["pytorch_version"],
            "medseg_nas_version": meta.get("required_packages_version", {}).get("medseg-nas"),
            "archive": rel, "archive_sha256": sha256_path(archive), "files": files, "sizes": sizes,
            "eval_metrics": meta.get("eval_metrics", {}), "genotype_sha256": meta.get("genotype_sha256")}


@entry
def index(*archives: str, index_path: str = "zoo/index.json") -> str:
    """Add packed bundle zips to the index at ``index_path`` (created if missing); returns its path."""
    path = Path(index_path)
    doc = read_index(path)[1] if path.exists() else {"format": FORMAT, "bundles": []}
    for archive in archives:
        entry = entry_of(Path(archive), path.parent)
        same = [e for e in doc["bundles"] if (e["name"], e["version"]) == (entry["name"], entry["version"])]
        if same and same[0]["files"] != entry["files"]:
            raise InputError(archive, "version", f"{entry['name']} {entry['version']} is already indexed in {path} "
                             "with other content: pack it with a new version")
        doc["bundles"] = [e for e in doc["bundles"] if e not in same] + [entry]
    doc["bundles"].sort(key=lambda e: (e["name"], [int(x) for x in e["version"].split(".")]))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, doc)
    return str(path)


@entry
def listing(index_path: str = "zoo/index.json", method: str | None = None, task: str | None = None) -> str:
    """The index as a table, filtered by method (the genotype's, or the bundle's: ``bixnet`` or ``bixnas``) and by a
    word of the task or dataset."""
    _, doc = read_index(index_path)
    rows = [e for e in doc["bundles"] if (method is None or method in (e.get("method"), e.get("bundle")))
            and (task is None or task.lower() in f"{e.get('task')} {e.get('dataset')}".lower())]
    lines = ["| name | version | method | dataset | mean Dice | MONAI | torch |", "|---|---|---|---|---|---|---|"]
    for e in rows:
        dice = e.get("eval_metrics", {}).get("mean_dice")
        lines.append(f"| {e['name']} | {e['version']} | {e.get('method')} | {e.get('dataset')} | "
                     f"{'' if dice is None else dice} | {e['monai_version']} | {e['pytorch_version']} |")
    return "\n".join(lines)
