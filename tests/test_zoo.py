"""The model zoo: every bundle's metadata passes MONAI's verify_metadata offline; a trained run packs into a zip that
installs by checksum into an empty folder and, run from there, predicts bit-identically to the original run; MONAI's
own ``download --url file://`` reads the zip; and every bad archive or index is refused with the target untouched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from nas_ops.data import make_nuclei_dataset
from nas_ops.errors import InputError
from nas_ops.zoo.index import index, listing, sha256_path
from nas_ops.zoo.install import install
from nas_ops.zoo.pack import pack

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLES = ("bixnas", "mbnas", "c2fnas")
NAME = "bixnas_tiny"


def monai_bundle(*args: str, cwd: Path = REPO_ROOT, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MEDSEG_NAS_DEBUG", None)
    done = subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    if check:
        assert done.returncode == 0, done.stderr[-4000:]
    return done


@pytest.mark.parametrize("name", BUNDLES)
def test_every_bundle_metadata_passes_monai_verify_metadata_offline(name):
    done = monai_bundle("verify_metadata", "--meta_file", f"bundles/{name}/configs/metadata.json", "--filepath",
                        "bundles/meta_schema.json")
    assert "metadata is verified with no error" in done.stdout + done.stderr


def test_verify_metadata_refuses_a_metadata_without_its_version(tmp_path):
    meta = json.loads((REPO_ROOT / "bundles/bixnas/configs/metadata.json").read_text())
    del meta["version"]
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    done = monai_bundle("verify_metadata", "--meta_file", str(tmp_path / "metadata.json"), "--filepath",
                        str(REPO_ROOT / "bundles/meta_schema.json"), check=False)
    assert done.returncode != 0 and "'version' is a required property" in done.stderr


# -- pack, index, install ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained, predicted and evaluated BiX-Net run, packed and indexed."""
    root = tmp_path_factory.mktemp("zoo")
    data = make_nuclei_dataset(root / "Task900_Tiny", num_images=8, size=64, seed=0)
    out = root / "run"
    common = ["--dataset_dir", str(data), "--output_dir", str(out), "--n_folds", "4", "--device", "cpu"]
    monai_bundle("run", "--config_file", "bundles/bixnas/configs/train.json", *common, "--num_threads", "1",
                 "--epochs", "1", "--batch_size", "2", "--spatial_size", "[64,64]")
    monai_bundle("run", "--config_file", "bundles/bixnas/configs/inference.json", *common)
    monai_bundle("run", "--config_file", "bundles/bixnas/configs/evaluate.json", "--dataset_dir", str(data),
                 "--output_dir", str(out))
    archive = Path(pack(str(out), "bixnas", "0.1.0", out_dir=str(root / "zoo"), name=NAME))
    index_path = Path(index(str(archive), index_path=str(root / "zoo" / "index.json")))
    return {"data": data, "out": out, "archive": archive, "index": index_path, "root": root}


def test_packing_is_reproducible_and_the_zip_has_the_zoo_layout(trained, tmp_path):
    archive = trained["archive"]
    again = Path(pack(str(trained["out"]), "bixnas", "0.1.0", out_dir=str(tmp_path), name=NAME))
    assert again.read_bytes() == archive.read_bytes()
    with zipfile.ZipFile(archive) as zf:
        names = sorted(zf.namelist())
        meta = json.loads(zf.read(f"{NAME}/configs/metadata.json"))
    assert names == sorted(f"{NAME}/{m}" for m in (
        "LICENSE", "configs/evaluate.json", "configs/inference.json", "configs/logging.conf",
        "configs/metadata.json", "configs/train.json", "docs/README.md", "models/genotype.json", "models/model.pt",
        "models/model_info.json"))
    metrics = json.loads((trained["out"] / "eval" / "metrics.json").read_text())
    assert meta["version"] == "0.1.0" and meta["eval_metrics"]["num_cases"] == metrics["num_cases"]
    assert len(meta["genotype_sha256"]) == 64 and meta["network_data_format"]["inputs"]["image"]["num_channels"] == 3
    doc = json.loads(trained["index"].read_text())
    assert [(e["name"], e["version"]) for e in doc["bundles"]] == [(NAME, "0.1.0")]
    assert doc["bundles"][0]["archive_sha256"] == sha256_path(archive)
    table = listing(str(trained["index"]), method="bixnas")
    assert NAME in table and NAME not in listing(str(trained["index"]), method="mbnas")


def test_an_installed_bundle_runs_alone_and_predicts_bit_identically(trained, tmp_path):
    target = tmp_path / "installed"
    folder = Path(install(NAME, index_path=trained["index"].as_uri(), target_dir=str(target)))
    assert folder == target / NAME and sorted(p.name for p in target.iterdir()) == [NAME]
    monai_bundle("verify_metadata", "--meta_file", "configs/metadata.json", "--filepath",
                 str(REPO_ROOT / "bundles/meta_schema.json"), cwd=folder)
    pred = tmp_path / "pred"
    monai_bundle("run", "--config_file", "configs/inference.json", "--dataset_dir", str(trained["data"]),
                 "--output_dir", str(pred), "--n_folds", "4", "--device", "cpu", cwd=folder)
    ours = sorted((pred / "predictions").glob("[!.]*"))
    theirs = sorted((trained["out"] / "predictions").glob("[!.]*"))
    assert [p.name for p in ours] == [p.name for p in theirs] and len(ours) == 2
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(ours, theirs, strict=True))
    assert install(NAME, index_path=str(trained["index"]), target_dir=str(target)) == str(folder)  # reported


def test_monai_bundle_download_reads_the_zip(trained, tmp_path):
    monai_bundle("download", "--name", NAME, "--url", trained["archive"].as_uri(), "--bundle_dir", str(tmp_path))
    assert (tmp_path / NAME / "configs" / "metadata.json").is_file()
    assert (tmp_path / NAME / "models" / "model.pt").read_bytes() == zipfile.ZipFile(trained["archive"]).read(
        f"{NAME}/models/model.pt")


def _forged(trained, tmp_path: Path, edit) -> Path:
    """A copy of the zoo whose archive ``edit(members) -> members`` rewrote, with an index that matches the new
    archive's checksum (an attacker who controls both) but keeps the genuine file list."""
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    with zipfile.ZipFile(trained["archive"]) as zf:
        members = [(info, zf.read(info)) for info in zf.infolist()]
    archive = zoo / trained["archive"].name
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in edit(members):
            zf.writestr(info, data)
    doc = json.loads(trained["index"].read_text())
    doc["bundles"][0]["archive_sha256"] = sha256_path(archive)
    (zoo / "index.json").write_text(json.dumps(doc))
    return zoo / "index.json"


def _renamed(members, old: str, new: str):
    out = []
    for info, data in members:
        if info.filename.endswith(old):
            info = zipfile.ZipInfo(new, date_time=info.date_time)
        out.append((info, data))
    return out


def _symlinked(members):
    out = list(members)
    link = zipfile.ZipInfo(f"{NAME}/models/link", date_time=(1980, 1, 1, 0, 0, 0))
    link.external_attr = (0o120777 << 16)
    return [*out, (link, b"/etc/passwd")]


def _bomb(members):
    big = zipfile.ZipInfo(f"{NAME}/docs/big.txt", date_time=(1980, 1, 1, 0, 0, 0))
    big.compress_type = zipfile.ZIP_DEFLATED
    return [*members, (big, b"\0" * (64 * 2**20))]


def _flip(members):
    out = []
    for info, data in members:
        if info.filename.endswith("models/model.pt"):
            data = data[:4096] + bytes(b ^ 0xFF for b in data[4096:4100]) + data[4100:]
        out.append((info, data))
    return out


@pytest.mark.parametrize(("case", "field"), [
    ("tampered", "archive_sha256"),
    ("flipped", "files.models/model.pt"),
    ("removed", "files.docs/README.md"),
    ("dotdot", f"member '{NAME}/../evil.txt'"),
    ("absolute", "member '/tmp/evil.txt'"),
    ("symlink", f"member '{NAME}/models/link'"),
    ("bomb", f"member '{NAME}/docs/big.txt'"),
    ("monai", f"bundles[{NAME} 0.1.0].monai_version"),
    ("version", "version"),
])
def test_bad_archives_and_indexes_are_refused_leaving_the_target_as_it_was(trained, tmp_path, case, field):
    target = tmp_path / "installed"
    target.mkdir()
    (target / "keep.txt").write_text("earlier install")
    index_path = trained["index"]
    version = None
    if case == "tampered":  # one byte of the archive changed after indexing
        zoo = tmp_path / "zoo"
        shutil.copytree(trained["index"].parent, zoo)
        data = bytearray((zoo / trained["archive"].name).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (zoo / trained["archive"].name).write_bytes(bytes(data))
        index_path = zoo / "index.json"
    elif case == "flipped":
        index_path = _forged(trained, tmp_path, _flip)
    elif case == "removed":
        index_path = _forged(trained, tmp_path, lambda ms: [(i, d) for i, d in ms if not i.filename.endswith(
            "README.md")])
    elif case == "dotdot":
        index_path = _forged(trained, tmp_path, lambda ms: _renamed(ms, "LICENSE", f"{NAME}/../evil.txt"))
    elif case == "absolute":
        index_path = _forged(trained, tmp_path, lambda ms: _renamed(ms, "LICENSE", "/tmp/evil.txt"))
    elif case == "symlink":
        index_path = _forged(trained, tmp_path, _symlinked)
    elif case == "bomb":
        index_path = _forged(trained, tmp_path, _bomb)
    elif case == "monai":
        zoo = tmp_path / "zoo"
        shutil.copytree(trained["index"].parent, zoo)
        doc = json.loads((zoo / "index.json").read_text())
        doc["bundles"][0]["monai_version"] = "9.0.0"
        (zoo / "index.json").write_text(json.dumps(doc))
        index_path = zoo / "index.json"
    elif case == "version":
        version = "0.2.0"
    with pytest.raises(InputError) as err:
        install(NAME, index_path=str(index_path), target_dir=str(target), version=version)
    assert f"field '{field}'" in str(err.value), str(err.value)
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]  # nothing half-installed, nothing removed
    assert not Path("/tmp/evil.txt").exists() or case != "absolute"


def test_an_altered_install_is_never_reported_as_installed(trained, tmp_path):
    target = tmp_path / "installed"
    folder = Path(install(NAME, index_path=str(trained["index"]), target_dir=str(target)))
    readme = folder / "docs" / "README.md"
    readme.write_text(readme.read_text() + "edited\n")
    with pytest.raises(InputError, match=r"README.md: field 'files.docs/README.md': sha256 .* differs from the "
                                         r"index's .*: the install was altered since"):
        install(NAME, index_path=str(trained["index"]), target_dir=str(target))
    readme.unlink()
    with pytest.raises(InputError, match="field 'files.docs/README.md': is missing from the existing install"):
        install(NAME, index_path=str(trained["index"]), target_dir=str(target))


@pytest.mark.parametrize(("edit", "field"), [
    (lambda ms: _renamed(ms, "LICENSE", f"{NAME}/../evil.txt"), f"member '{NAME}/../evil.txt'"),
    (_symlinked, f"member '{NAME}/models/link'"),
])
def test_the_index_refuses_an_archive_install_would_refuse(trained, tmp_path, edit, field):
    index_path = _forged(trained, tmp_path, edit)
    archive = index_path.parent / trained["archive"].name
    with pytest.raises(InputError, match=f"field '{field}'"):
        index(str(archive), index_path=str(tmp_path / "new" / "index.json"))
    assert not (tmp_path / "new").exists()


def test_export_refuses_a_model_its_bundle_does_not_describe(trained, tmp_path):
    from nas_ops.zoo.export import export

    installed = Path(install(NAME, index_path=str(trained["index"]), target_dir=str(tmp_path / "installed")))
    c2f = tmp_path / "c2f_models"  # a 3D model given to the 2D bundle
    shutil.copytree(trained["out"] / "train" / "models", c2f)
    genotype = json.loads((c2f / "genotype.json").read_text())
    from nas_ops.c2fnas.space import C2FNAS_PANC_LEVELS, C2FNAS_PANC_OPS, c2fnas_genotype

    c2fnas_genotype(C2FNAS_PANC_LEVELS, C2FNAS_PANC_OPS, 1, 3, base_channels=4, stem_channels=4).save(
        c2f / "genotype.json")
    with pytest.raises(InputError, match=r"genotype.json: field 'spatial_dims': is 3: .*bixnas applies 2D networks"):
        export(str(REPO_ROOT / "bundles" / "bixnas"), formats=("torchscript",), model_dir=str(c2f),
               out_dir=str(tmp_path / "out"))
    other = tmp_path / "other_models"  # a 2D model of other channels than the packed bundle's
    shutil.copytree(trained["out"] / "train" / "models", other)
    (other / "genotype.json").write_text(json.dumps({**genotype, "in_channels": 1}))
    with pytest.raises(InputError, match=r"field 'genotype_sha256': is not the genotype .*metadata.json describes"):
        export(str(installed), formats=("torchscript",), model_dir=str(other), out_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_the_cli_refuses_in_one_line(trained, tmp_path):
    env = {**os.environ}
    env.pop("MEDSEG_NAS_DEBUG", None)
    done = subprocess.run([sys.executable, "scripts/zoo.py", "install", "nope", "--index_path", str(trained["index"]),
                           "--target_dir", str(tmp_path / "t")], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (f"error: {trained['index']}: field 'name': no bundle 'nope' in "
                                                    f"the index (it has: ['{NAME}'])")
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["pack", "RUN", "bixnas", "0.3.0", "--out_dri", "OUT"], "error: zoo.py pack: field 'out_dri': unknown option "
                                                             "(did you mean 'out_dir'?)"),
    (["pack", "RUN", "bixnas", "0.1", "--out_dir", "OUT"], "error: zoo pack: field 'version': must look like 1.2.3, "
                                                           "got 0.1"),
    (["pack", "RUN", "c2fnas", "0.3.0", "--out_dir", "OUT", "--bundle_dir", "C2F"],
     "error: RUN/train/models/genotype.json: field 'spatial_dims': is 2: the c2fnas bundle trains 3D networks"),
    (["pack", "RUN", "bixnas", "0.3.0", "--out_dir", "FILE", "--bundle_dir", "BIX"],
     "error: zoo pack: field 'out_dir': FILE cannot be a folder: FILE is a file"),
    (["index", "FILE", "--index_path", "OUT/index.json"], "error: FILE: field 'archive': is not a zip archive"),
    (["list", "--index_path", "https://zoo.example/index.json"], "error: zoo: field 'index_path': "
                                                                 "https://zoo.example/index.json: only local paths"),
    (["list", "--index_path", "BAD"], "error: BAD: field 'bundles[0].version': must be a str: missing"),
    (["install", NAME, "--index_path", "INDEX", "--target_dri", "OUT"], "error: zoo.py install: field "
                                                                         "'target_dri': unknown option"),
])
def test_bad_cli_input_is_one_line_and_writes_nothing(trained, tmp_path, args, message):
    (tmp_path / "file.txt").write_text("not a zip")
    (tmp_path / "bad.json").write_text(json.dumps({"format": 1, "bundles": [{"name": "x"}]}))
    subs = {"RUN": str(trained["out"]), "OUT": str(tmp_path / "out"), "FILE": str(tmp_path / "file.txt"),
            "BAD": str(tmp_path / "bad.json"), "INDEX": str(trained["index"]),
            "C2F": str(REPO_ROOT / "bundles" / "c2fnas"), "BIX": str(REPO_ROOT / "bundles" / "bixnas")}

    def sub(text: str) -> str:
        for key, value in subs.items():
            text = text.replace(key, value)
        return text

    env = {**os.environ}
    env.pop("MEDSEG_NAS_DEBUG", None)
    done = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "zoo.py"), *map(sub, args)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith(sub(message)), done.stderr[-500:]
    assert not (tmp_path / "out").exists() and not (tmp_path / "zoo").exists() and not (
        tmp_path / "bundles_installed").exists()
