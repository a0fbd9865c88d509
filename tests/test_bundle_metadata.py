"""Every bundle's configs/metadata.json carries what the MONAI Bundle specification makes mandatory.

The specification (MONAI docs, "MONAI Bundle Specification", metadata.json file) lists the mandatory top-level
keys and the keys every input/output tensor format specifier must have; the JSON schema it points to is a
download, so it is checked here by those lists, offline.
"""

import json
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLES = sorted((REPO_ROOT / "bundles").glob("*/configs/metadata.json"))
MANDATORY = ("version", "monai_version", "pytorch_version", "numpy_version", "task", "description", "authors",
             "copyright", "network_data_format")
TENSOR_KEYS = ("type", "format", "num_channels", "spatial_shape", "dtype", "value_range", "is_patch_data",
               "channel_def")


def test_every_bundle_has_metadata():
    assert {p.parts[-3] for p in BUNDLES} >= {"bixnas", "mbnas"}


@pytest.mark.parametrize("path", BUNDLES, ids=[p.parts[-3] for p in BUNDLES])
def test_metadata_has_the_mandatory_keys(path):
    meta = json.loads(path.read_text())
    assert [k for k in MANDATORY if k not in meta] == []
    assert any(k in meta for k in ("required_packages_version", "optional_packages_version"))
    assert meta["schema"].startswith("https://github.com/Project-MONAI/")
    assert all(isinstance(meta[k], str) and meta[k] for k in ("version", "task", "description", "authors"))
    assert meta["version"] in meta.get("changelog", {meta["version"]: ""})
    fmt = meta["network_data_format"]
    assert set(fmt) >= {"inputs", "outputs"} and fmt["inputs"] and fmt["outputs"]
    for tensor in (*fmt["inputs"].values(), *fmt["outputs"].values()):
        assert [k for k in TENSOR_KEYS if k not in tensor] == []
        assert tensor["num_channels"] == len(tensor["channel_def"])
        assert len(tensor["spatial_shape"]) in (2, 3) and isinstance(tensor["is_patch_data"], bool)
        assert len(tensor["value_range"]) in (0, 2)


@pytest.mark.parametrize("path", BUNDLES, ids=[p.parts[-3] for p in BUNDLES])
def test_monai_reads_the_packages_as_written(path):
    """MONAI renames a deprecated ``optional_packages_version`` onto ``required_packages_version`` when it reads
    metadata: a file with both would lose its required packages."""
    from monai.bundle import ConfigParser

    written = json.loads(path.read_text())
    assert "optional_packages_version" not in written
    parser = ConfigParser()
    parser.read_meta(str(path))
    assert parser.get("_meta_")["required_packages_version"] == written["required_packages_version"]
    assert "medseg-nas" in written["required_packages_version"]


@pytest.mark.parametrize(("bundle", "report", "model"), [
    ("bixnas", "study_nuclei_report.md", "bixnas-found"),
    ("mbnas", "study_mri2d_report.md", "mbnas-found"),
    ("c2fnas", "study_mri3d_report.md", "c2fnas-found"),
])
def test_the_metadata_reports_the_figures_of_one_study_run(bundle, report, model):
    """eval_metrics are the found network's row of the demo study that docs/study.md reports: Dice, IoU and GMACs
    of the same network, measured in one run (not a search score of one network beside a retraining of another)."""
    meta = json.loads((REPO_ROOT / "bundles" / bundle / "configs" / "metadata.json").read_text())
    row = next(line for line in (REPO_ROOT / "docs" / "figures" / report).read_text().splitlines()
               if line.startswith(f"| {model} | found |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    dice, iou, gmacs = float(cells[2].split(" ± ")[0]), float(cells[3].split(" ± ")[0]), float(cells[7])
    assert meta["eval_metrics"] == {"demo_study_found_test_dice": dice, "demo_study_found_test_iou": iou,
                                    "demo_study_found_gmacs": gmacs}
