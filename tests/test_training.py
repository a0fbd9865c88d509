"""Shared training (on the run engine), inference and evaluation on tiny generated datasets: resume equality,
a finished run reported for its own identity only (genotype, settings, dataset), models/ with checksums."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from nas_ops.baselines.unet import unet_genotype
from nas_ops.data import make_mri_dataset, make_nuclei_dataset
from nas_ops.data.geometry import DataGeometry
from nas_ops.errors import DatasetError, GenotypeError, InputError
from nas_ops.training.evaluation import evaluate
from nas_ops.training.inference import predict
from nas_ops.training.recipe import Recipe
from nas_ops.training.trainer import train

SIZE = (32, 32)


@pytest.fixture(scope="module")
def mri(tmp_path_factory):
    return make_mri_dataset(tmp_path_factory.mktemp("mri"), num_patients=5, shape=(32, 32, 8), seed=3)


@pytest.fixture(scope="module")
def nuclei(tmp_path_factory):
    return make_nuclei_dataset(tmp_path_factory.mktemp("nuclei"), num_images=5, size=64, seed=3)


def _genotype(tmp_path, in_channels=1, out_channels=3):
    return unet_genotype(2, in_channels, out_channels, features=[4, 8]).save(tmp_path / "source.json")


def _train(genotype, dataset, out, epochs):
    return train(genotype, dataset, out, recipe=Recipe(epochs=epochs, batch_size=4),
                 geometry=DataGeometry(spatial_size=SIZE), device="cpu", seed=1)


def test_resumed_training_equals_uninterrupted(tmp_path, mri, monkeypatch):
    g = _genotype(tmp_path)
    straight = _train(g, mri, tmp_path / "straight", epochs=3)

    from nas_ops.engine.loop import RunEngine

    real, calls = RunEngine.train_epoch, []

    def dies_in_epoch_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(RunEngine, "train_epoch", dies_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        _train(g, mri, tmp_path / "part", epochs=3)
    assert not (tmp_path / "part" / "models").exists()
    monkeypatch.setattr(RunEngine, "train_epoch", real)
    resumed = _train(g, mri, tmp_path / "part", epochs=3)

    strip = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]  # noqa: E731
    assert strip(resumed["history"]) == strip(straight["history"])
    a = torch.load(tmp_path / "straight" / "models" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "models" / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = json.loads((tmp_path / "part" / "train_log.json").read_text())
    assert [row["epoch"] for row in log["history"]] == [1, 2, 3]
    assert len(log["final_val_dice"]) == 2


def test_finished_training_is_not_run_again(tmp_path, mri):
    g = _genotype(tmp_path)
    first = _train(g, mri, tmp_path / "run", epochs=1)
    model = tmp_path / "run" / "models" / "model.pt"
    mtime = model.stat().st_mtime_ns
    again = _train(g, mri, tmp_path / "run", epochs=1)
    assert again == first
    assert model.stat().st_mtime_ns == mtime
    other = unet_genotype(2, 1, 3, features=[4, 8, 16]).save(tmp_path / "other.json")
    with pytest.raises(InputError, match=r"train_state.pt: field 'genotype\.spec\.features': this output_dir holds a "
                                         "training"):
        _train(other, mri, tmp_path / "run", epochs=1)
    with pytest.raises(InputError, match="field 'epochs'"):
        _train(g, mri, tmp_path / "run", epochs=2)
    # the same folder with another dataset: refused, not reported as finished
    other_data = make_mri_dataset(tmp_path / "other_mri", num_patients=5, shape=(32, 32, 8), seed=4)
    with pytest.raises(InputError, match="field 'dataset.fingerprint'"):
        _train(g, other_data, tmp_path / "run", epochs=1)
    with pytest.raises(DatasetError, match="no such folder"):
        _train(g, tmp_path / "nowhere", tmp_path / "run", epochs=1)
    assert model.stat().st_mtime_ns == mtime


def test_predictions_keep_input_geometry_and_evaluation_scores_them(tmp_path, mri):
    g = _genotype(tmp_path)
    run = tmp_path / "run"
    _train(g, mri, run, epochs=1)
    paths = predict(run / "models", mri, run / "predictions", device="cpu")
    assert paths and all(p.name.endswith(".nii.gz") for p in paths)
    for p in paths:
        pred = nib.load(str(p))
        ref = nib.load(str(mri / "labelsTr" / p.name))
        assert pred.shape == ref.shape
        np.testing.assert_allclose(pred.affine, ref.affine)
        assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1, 2}
    result = evaluate(run / "predictions", mri, run / "eval", run / "models")
    assert result["num_cases"] == len(paths)
    assert set(result["summary"]["dice"]) == {"inner_zone", "outer_zone"}
    assert result["params"] > 0 and result["macs"] > 0 and result["input_shape"] == [1, *SIZE]
    assert (run / "eval" / "metrics.csv").read_text().count("\n") == 1 + 2 * len(paths)


def test_a_changed_weights_file_is_refused_naming_it(tmp_path, mri):
    run = tmp_path / "run"
    _train(_genotype(tmp_path), mri, run, epochs=1)
    model = run / "models" / "model.pt"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"model.pt: field 'sha256.model.pt': the file changed since it was written"):
        predict(run / "models", mri, run / "predictions", device="cpu")
    assert not (run / "predictions").exists()


def test_perfect_prediction_scores_one(tmp_path, nuclei):
    run = tmp_path / "run"
    (run / "predictions").mkdir(parents=True)
    for label in sorted((nuclei / "labelsTr").glob("*.png"))[:2]:
        shutil.copy(label, run / "predictions" / label.name)
    result = evaluate(run / "predictions", nuclei, run / "eval")
    dice = result["summary"]["dice"]["nucleus"]
    assert dice["mean"] == pytest.approx(1.0) and dice["n"] == 2
    assert result["summary"]["hd95"]["nucleus"]["mean"] == 0.0
    assert result["summary"]["surface_dice"]["nucleus"]["mean"] == pytest.approx(1.0)


def test_png_predictions_round_trip(tmp_path, nuclei):
    g = _genotype(tmp_path, in_channels=3, out_channels=2)
    run = tmp_path / "run"
    _train(g, nuclei, run, epochs=1)
    paths = predict(run / "models", nuclei, run / "predictions", cases="all", device="cpu")
    assert len(paths) == 5 and all(p.suffix == ".png" for p in paths)
    for p in paths:  # written (H, W) as the labels are stored
        assert np.asarray(Image.open(p)).shape == np.asarray(Image.open(nuclei / "labelsTr" / p.name)).shape
    assert evaluate(run / "predictions", nuclei, run / "eval")["num_cases"] == 5


def test_genotype_that_does_not_fit_the_dataset_is_refused_before_writing(tmp_path, mri):
    g = _genotype(tmp_path, in_channels=3)
    with pytest.raises(GenotypeError, match="source.json: field 'in_channels': is 3 but .*dataset.json has 1"):
        _train(g, mri, tmp_path / "run", epochs=1)
    assert not (tmp_path / "run").exists()
    g = _genotype(tmp_path, out_channels=2)
    with pytest.raises(GenotypeError, match="field 'out_channels'"):
        _train(g, mri, tmp_path / "run", epochs=1)
    with pytest.raises(DatasetError, match="dataset_dir"):
        _train(_genotype(tmp_path), tmp_path / "nowhere", tmp_path / "run", epochs=1)
    assert not (tmp_path / "run").exists()
