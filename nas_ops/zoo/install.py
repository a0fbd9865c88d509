"""Install a bundle from a zoo index, checked before anything lands in the target folder.

Refused, each naming the file and the field: a name or version the index lacks; a bundle made for a newer MONAI
or medseg-nas than installed (or another major version); an archive whose sha256 differs from the index's; an
archive member that is absolute, climbs out with ``..``, is a link, lies outside the bundle's folder, is larger
than its declared size or than :data:`MAX_MEMBER_BYTES`, or compresses more than :data:`MAX_RATIO` (a zip bomb);
a file the index lists that the archive lacks, or one it does not list; a file whose sha256 differs.

The bundle is extracted into a temporary folder next to the target and renamed into place only when every check
passed, so a refused installation leaves the target folder as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import stat
import tempfile
import zipfile
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path, PurePosixPath
from typing import Any

from nas_ops.config import check_output_dir
from nas_ops.entry import entry
from nas_ops.errors import InputError
from nas_ops.zoo.index import check_release, local_path, read_index, release_key, sha256_path

MAX_MEMBER_BYTES = 4 * 2**30  # no file of a bundle is larger (the biggest 3D models are well under 1 GiB)
MAX_RATIO = 200  # deflate of float weights gives ~1.1x, of JSON ~5x; 1000x is a bomb
CHUNK = 1 << 20


def _check_version(needed: str | None, package: str, source: Path, field: str) -> None:
    """Refuse a bundle made for another major version, or a newer release, of ``package`` than installed."""
    if not needed:
        return
    check_release(needed, source, field)
    try:
        have = installed_version(package)
    except PackageNotFoundError:
        raise InputError(source, field, f"the bundle needs {package} {needed}, which is not installed") from None
    h, n = release_key(have), release_key(needed)
    if h[:1] != n[:1] or h < n:
        raise InputError(source, field, f"the bundle was made with {package} {needed}; {have} is installed: "
                         f"install {package} >= {needed} (same major version) or pick another version")


def find_entry(doc: dict[str, Any], path: Path, name: str, version: str | None) -> dict[str, Any]:
    """The index entry of ``name`` at ``version`` (default: the newest)."""
    mine = [e for e in doc["bundles"] if e.get("name") == name]
    if not mine:
        known = sorted({e.get("name") for e in doc["bundles"]})
        raise InputError(path, "name", f"no bundle {name!r} in the index (it has: {known})")
    if version is None:
        return max(mine, key=lambda e: release_key(e["version"]))
    for e in mine:
        if e["version"] == version:
            return e
    raise InputError(path, "version", f"{name} has no version {version} (the index has "
                     f"{sorted(e['version'] for e in mine)})")


def check_member(info: zipfile.ZipInfo, archive: Path, name: str) -> str | None:
    """One archive member checked as installation needs it (no absolute path, no '..', no link, inside the bundle's
    folder ``name``, a bounded size, not a zip bomb); returns its path inside the bundle, None for a folder. The
    index (:mod:`nas_ops.zoo.index`) checks every member the same way, so it lists nothing install would refuse."""
    member = info.filename
    field = f"member {member!r}"
    parts = PurePosixPath(member).parts
    if member.startswith(("/", "\\")) or (len(member) > 1 and member[1] == ":"):
        raise InputError(archive, field, "is an absolute path: refused")
    if ".." in parts or "\\" in member:
        raise InputError(archive, field, "climbs out of the bundle folder ('..'): refused")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise InputError(archive, field, "is a symbolic link: refused")
    if not parts or parts[0] != name:
        raise InputError(archive, field, f"lies outside the bundle's folder {name}/: refused")
    if info.is_dir():
        return None
    if info.file_size > MAX_MEMBER_BYTES:
        raise InputError(archive, field, f"declares {info.file_size:,} bytes, more than {MAX_MEMBER_BYTES:,}")
    if info.file_size > CHUNK and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        raise InputError(archive, field, f"expands {info.file_size / max(info.compress_size, 1):.0f}x: a zip "
                         "bomb, refused")
    return "/".join(parts[1:])


def _check_members(zf: zipfile.ZipFile, archive: Path, name: str, entry: dict[str, Any]) -> dict[str, zipfile.ZipInfo]:
    """Every member checked (see the module docstring); returns ``{relative path: info}`` of the files."""
    files: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        rel = check_member(info, archive, name)
        if rel is not None:
            files[rel] = info
    listed = entry.get("files", {})
    for rel in sorted(set(listed) - set(files)):
        raise InputError(archive, f"files.{rel}", "is listed in the index but missing from the archive")
    for rel in sorted(set(files) - set(listed)):
        raise InputError(archive, f"member {name}/{rel}", "is not listed in the index: refused")
    return files


def _extract(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, want: str, archive: Path, rel: str) -> None:
    """Stream one member to ``dest``, never past its declared size, and check its sha256."""
    digest, written = hashlib.sha256(), 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(info) as src, open(dest, "wb") as out:
        for chunk in iter(lambda: src.read(CHUNK), b""):
            written += len(chunk)
            if written > info.file_size:
                raise InputError(archive, f"member {info.filename!r}", "holds more bytes than it declares: refused")
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != want:
        raise InputError(archive, f"files.{rel}", f"sha256 {digest.hexdigest()[:12]}... differs from the index's "
                         f"{want[:12]}...: the archive was altered")


def _verify_install(target: Path, entry: dict[str, Any]) -> None:
    """An existing install of the same version is reported only when every file still has the index's checksum."""
    for rel, want in sorted(entry["files"].items()):
        path = target / rel
        if not path.is_file():
            raise InputError(path, f"files.{rel}", "is missing from the existing install: remove the folder and "
                             "install again")
        got = hashlib.sha256(path.read_bytes()).hexdigest()
        if got != want:
            raise InputError(path, f"files.{rel}", f"sha256 {got[:12]}... differs from the index's {want[:12]}...: "
                             "the install was altered since; remove the folder and install again")


@entry
def install(name: str, index_path: str = "zoo/index.json", target_dir: str = "bundles_installed",
            version: str | int | float | None = None) -> str:
    """Install ``name`` (``version``, default the newest) from the index into ``<target_dir>/<name>``; returns
    that folder. A bundle already installed there at the same version is reported, not reinstalled."""
    from nas_ops.zoo.pack import check_version

    version = None if version is None else check_version(version, "zoo install")
    check_output_dir(target_dir, "target_dir", "zoo install")
    path, doc = read_index(index_path)
    entry = find_entry(doc, path, name, version)
    _check_version(entry.get("monai_version"), "monai", path, f"bundles[{name} {entry['version']}].monai_version")
    _check_version(entry.get("medseg_nas_version"), "medseg-nas", path,
                   f"bundles[{name} {entry['version']}].medseg_nas_version")
    archive = local_path(entry["archive"], path.parent, path, f"bundles[{name} {entry['version']}].archive")
    if not archive.is_file():
        raise InputError(path, f"bundles[{name} {entry['version']}].archive", f"{archive} does not exist")
    got = sha256_path(archive)
    if got != entry["archive_sha256"]:
        raise InputError(archive, "archive_sha256", f"sha256 {got[:12]}... differs from the index's "
                         f"{entry['archive_sha256'][:12]}...: the archive was altered or replaced")
    target = Path(target_dir) / name
    if target.exists():
        meta = target / "configs" / "metadata.json"
        try:
            same = json.loads(meta.read_text())["version"] == entry["version"]
        except (OSError, ValueError, KeyError):
            same = False
        if same:
            _verify_install(target, entry)
            return str(target)
        raise InputError(target, "target_dir", "already holds another install of this bundle: remove it or choose "
                         "another target_dir")
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise InputError(archive, "archive", "is not a zip archive") from None
    with zf:
        files = _check_members(zf, archive, name, entry)  # before anything is written
        made = [p for p in (Path(target_dir), *Path(target_dir).parents) if not p.exists()]
        Path(target_dir).mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target_dir))
        try:
            for rel, info in files.items():
                _extract(zf, info, staging / name / rel, entry["files"][rel], archive, rel)
            (staging / name).rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            for p in made:  # folders this install created, innermost first
                with contextlib.suppress(OSError):
                    p.rmdir()
            raise
        shutil.rmtree(staging, ignore_errors=True)
    return str(target)
