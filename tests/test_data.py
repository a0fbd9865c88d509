"""Data layer: demo generators, MSD validation (bad input names file and field), patient folds, MONAI pipelines."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader
from PIL import Image

from nas_ops.data import (
    ensure_demo_data,
    fold_items,
    load_case,
    load_msd_dataset,
    make_2d_datasets,
    make_3d_datasets,
    make_mri_dataset,
    make_nuclei_dataset,
    normalisation_for,
    normalisation_scheme,
    patient_kfold,
    read_array,
    threshold_dice,
    validate_dataset,
    write_dataset_json,
)
from nas_ops.data.demo import mri_affine, mri_case, nuclei_case
from nas_ops.errors import DatasetError

torch.set_num_threads(1)

MRI_SHAPE = (32, 32, 16)
NUCLEI_SIZE = 64


@pytest.fixture(scope="module")
def nuclei_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_nuclei_dataset(tmp_path_factory.mktemp("nuclei"), num_images=6, size=NUCLEI_SIZE, seed=0)


@pytest.fixture(scope="module")
def mri_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_mri_dataset(tmp_path_factory.mktemp("mri"), num_patients=5, shape=MRI_SHAPE, seed=0)


@pytest.fixture(scope="module")
def multimodal_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three MSD-style 4D NIfTI cases ``(x, y, z, 2)`` (T2 + ADC), channels last."""
    root = tmp_path_factory.mktemp("mm")
    (root / "imagesTr").mkdir()
    (root / "labelsTr").mkdir()
    affine = mri_affine(MRI_SHAPE)
    training = []
    for i in range(3):
        img, lab = mri_case(np.random.default_rng([7, i]), MRI_SHAPE)
        both = np.stack([img, np.sqrt(img)], axis=-1)
        nib.save(nib.Nifti1Image(both, affine), root / "imagesTr" / f"mm_{i}.nii.gz")
        nib.save(nib.Nifti1Image(lab, affine), root / "labelsTr" / f"mm_{i}.nii.gz")
        training.append({"image": f"./imagesTr/mm_{i}.nii.gz", "label": f"./labelsTr/mm_{i}.nii.gz"})
    write_dataset_json(root, "MM", {0: "background", 1: "inner", 2: "outer"}, ["T2", "ADC"], training)
    return root


def _listing(root: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


# ----------------------------------------------------------------------------------------------- demo data


def test_nuclei_demo_layout(nuclei_dir: Path) -> None:
    assert len(list((nuclei_dir / "imagesTr").glob("*.png"))) == 6
    assert len(list((nuclei_dir / "labelsTr").glob("*.png"))) == 6
    ds = load_msd_dataset(nuclei_dir)
    validate_dataset(ds)
    assert (ds.num_classes, ds.in_channels, ds.is_3d) == (2, 3, False)
    assert ds.labels == {0: "background", 1: "nucleus"}
    assert len({it["patient"] for it in ds.items}) == 6  # one patient per image
    image, affine = read_array(ds.items[0]["image"])
    label, _ = read_array(ds.items[0]["label"])
    assert image.shape == (NUCLEI_SIZE, NUCLEI_SIZE, 3) and image.dtype == np.uint8 and affine is None
    assert label.shape == (NUCLEI_SIZE, NUCLEI_SIZE)
    assert set(np.unique(label)) == {0, 1}
    reds = image[..., 0]
    assert reds[label == 1].mean() < reds[label == 0].mean()  # nuclei absorb more red (haematoxylin)


def test_mri_demo_layout(mri_dir: Path) -> None:
    assert len(list((mri_dir / "imagesTr").glob("*.nii.gz"))) == 5
    ds = load_msd_dataset(mri_dir)
    validate_dataset(ds)
    assert (ds.num_classes, ds.in_channels, ds.is_3d, ds.channel_names) == (3, 1, True, ["T2"])
    for item in ds.items:
        image, affine = read_array(item["image"])
        label, label_affine = read_array(item["label"])
        assert image.shape == MRI_SHAPE and image.dtype == np.float32
        assert set(np.unique(label)) == {0, 1, 2}
        np.testing.assert_allclose(affine, label_affine)
        np.testing.assert_allclose(np.diag(affine)[:3], (1.0, 1.0, 2.0))  # anisotropic, non-identity
        np.testing.assert_allclose(affine, mri_affine(MRI_SHAPE))


def test_demo_seeded() -> None:
    for make, arg in ((nuclei_case, NUCLEI_SIZE), (mri_case, MRI_SHAPE)):
        a_img, a_lab = make(np.random.default_rng([3, 1]), arg)
        b_img, b_lab = make(np.random.default_rng([3, 1]), arg)
        c_img, _ = make(np.random.default_rng([4, 1]), arg)
        assert a_img.tobytes() == b_img.tobytes() and a_lab.tobytes() == b_lab.tobytes()
        assert not np.array_equal(a_img, c_img)


def test_demo_files_identical_for_a_seed(tmp_path: Path, nuclei_dir: Path) -> None:
    again = make_nuclei_dataset(tmp_path / "again", num_images=6, size=NUCLEI_SIZE, seed=0)
    other = make_nuclei_dataset(tmp_path / "other", num_images=6, size=NUCLEI_SIZE, seed=1)
    for sub in ("imagesTr/nuclei_002.png", "labelsTr/nuclei_002.png"):
        assert np.array_equal(read_array(nuclei_dir / sub)[0], read_array(again / sub)[0])
    assert not np.array_equal(
        read_array(nuclei_dir / "imagesTr/nuclei_002.png")[0], read_array(other / "imagesTr/nuclei_002.png")[0]
    )


def test_ensure_demo_data_idempotent(tmp_path: Path) -> None:
    out = tmp_path / "Task902_DemoMRI"
    (out / "imagesTr").mkdir(parents=True)
    write_dataset_json(out, "x", {0: "bg", 1: "fg"}, ["T2"], [])  # a dataset.json already there: left alone
    before = _listing(out)
    assert ensure_demo_data(out, "mri") == out
    assert _listing(out) == before
    fresh = ensure_demo_data(tmp_path / "new", "nuclei")
    assert len(load_msd_dataset(fresh).items) == 24
    with pytest.raises(ValueError, match="unknown demo dataset kind"):
        ensure_demo_data(tmp_path / "bad", "ct")


def test_threshold_baseline_is_modest() -> None:
    """An intensity window tuned on the very cases scores well below a usable segmentation on every class."""
    nuclei = [nuclei_case(np.random.default_rng([0, i]), 96) for i in range(6)]
    best = max(
        threshold_dice([x[..., c].astype(float) for x, _ in nuclei], [m for _, m in nuclei], 1) for c in range(3)
    )
    assert best < 0.7
    mri = [mri_case(np.random.default_rng([0, i]), (48, 48, 24)) for i in range(4)]
    zs = [(x - x.mean()) / x.std() for x, _ in mri]
    for cls in (1, 2):
        assert threshold_dice(zs, [lab for _, lab in mri], cls) < 0.7
    # the measure itself: a separable case scores 1
    img = np.arange(100.0).reshape(10, 10)
    assert threshold_dice([img], [(img >= 30) & (img < 60)], 1) == pytest.approx(1.0)


def test_cli_writes_both_datasets(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "make_demo_data", Path(__file__).parents[1] / "scripts" / "make_demo_data.py"
    )
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = cli.mri(str(tmp_path / "m"), num_patients=2, shape=(16, 16, 8), seed=0)
    assert read_array(Path(out) / "imagesTr" / "mri_001.nii.gz")[0].shape == (16, 16, 8)
    out = cli.nuclei(str(tmp_path / "n"), num_images=2, size=32)
    assert load_msd_dataset(out).in_channels == 3


# ----------------------------------------------------------------------------------------------- folds


def _items(patients: list[str]) -> list[dict[str, str]]:
    return [{"image": f"{i}.nii.gz", "label": f"{i}.nii.gz", "patient": p} for i, p in enumerate(patients)]


def test_patient_kfold_partitions_patients() -> None:
    items = _items([f"p{i // 2}" for i in range(14)] + ["p99"])  # 8 patients, most with two cases
    folds = patient_kfold(items, n_folds=3, seed=0)
    assert len(folds) == 3
    seen: list[int] = []
    for train, val in folds:
        train_p = {items[i]["patient"] for i in train}
        val_p = {items[i]["patient"] for i in val}
        assert not train_p & val_p
        assert sorted(train + val) == list(range(len(items)))
        seen += val
    assert sorted(seen) == list(range(len(items)))  # each case validated exactly once
    assert sorted(len({items[i]["patient"] for i in v}) for _, v in folds) == [2, 3, 3]
    assert patient_kfold(items, 3, seed=0) == folds
    assert patient_kfold(items, 3, seed=1) != folds


def test_patient_kfold_refuses_too_few_patients(mri_dir: Path) -> None:
    with pytest.raises(DatasetError, match=r"field 'training': 2 patient\(s\) cannot fill 3 folds"):
        patient_kfold(_items(["a", "a", "b"]), n_folds=3, seed=0)
    ds = load_msd_dataset(mri_dir)
    with pytest.raises(DatasetError, match=r"dataset\.json: field 'training': 5 patient"):
        fold_items(ds, fold=0, n_folds=6)
    with pytest.raises(DatasetError, match=r"dataset\.json: field 'fold'"):
        fold_items(ds, fold=5, n_folds=5)
    train, val = fold_items(ds, fold=4, n_folds=5, seed=0)
    assert len(val) == 1 and len(train) == 4


# ----------------------------------------------------------------------------------------------- bad input


def _set_json(root: Path, change) -> None:
    doc = json.loads((root / "dataset.json").read_text())
    change(doc)
    (root / "dataset.json").write_text(json.dumps(doc))


def _rewrite_nifti(path: Path, change) -> None:
    nii = nib.load(str(path))
    data, affine = change(np.asanyarray(nii.dataobj).copy(), nii.affine.copy())
    nib.save(nib.Nifti1Image(data, affine), path)


BAD_INPUTS = {
    "missing dataset.json": (lambda r: (r / "dataset.json").unlink(), r"dataset\.json: field '<file>': .*not found"),
    "invalid JSON": (
        lambda r: (r / "dataset.json").write_text("{nope"),
        r"dataset\.json: field '<file>': not valid JSON",
    ),
    "missing training": (
        lambda r: _set_json(r, lambda d: d.pop("training")),
        r"dataset\.json: field 'training': missing",
    ),
    "empty training": (
        lambda r: _set_json(r, lambda d: d.update(training=[], numTraining=0)),
        r"dataset\.json: field 'training': is empty",
    ),
    "training not a list": (
        lambda r: _set_json(r, lambda d: d.update(training={"a": 1})),
        r"dataset\.json: field 'training': expected a list, got dict",
    ),
    "label path of wrong type": (
        lambda r: _set_json(r, lambda d: d["training"][3].update(label=7)),
        r"dataset\.json: field 'training\[3\]\.label': expected a path string",
    ),
    "missing label key": (
        lambda r: _set_json(r, lambda d: d["training"][1].pop("label")),
        r"dataset\.json: field 'training\[1\]\.label': missing key",
    ),
    "labels without 0": (
        lambda r: _set_json(r, lambda d: d.update(labels={"1": "a", "2": "b"})),
        r"dataset\.json: field 'labels': indices must be consecutive",
    ),
    "labels not consecutive": (
        lambda r: _set_json(r, lambda d: d.update(labels={"0": "bg", "1": "a", "3": "b"})),
        r"dataset\.json: field 'labels': indices must be consecutive",
    ),
    "missing modality": (
        lambda r: _set_json(r, lambda d: d.pop("modality")),
        r"dataset\.json: field 'modality': missing",
    ),
    "numTraining mismatch": (
        lambda r: _set_json(r, lambda d: d.update(numTraining=9)),
        r"dataset\.json: field 'numTraining': is 9 but 'training' lists 5",
    ),
    "missing image file": (
        lambda r: (r / "imagesTr" / "mri_002.nii.gz").unlink(),
        r"dataset\.json: field 'training\[2\]\.image': file does not exist: .*mri_002\.nii\.gz",
    ),
    "shape mismatch": (
        lambda r: _rewrite_nifti(r / "imagesTr" / "mri_001.nii.gz", lambda a, m: (a[:, :, :-1], m)),
        r"mri_001\.nii\.gz: field 'training\[1\]\.image': shape \(32, 32, 15\) does not match label shape",
    ),
    "affine mismatch": (
        lambda r: _rewrite_nifti(r / "labelsTr" / "mri_004.nii.gz", lambda a, m: (a, m @ np.diag([1, 1, 1.5, 1]))),
        r"labelsTr/mri_004\.nii\.gz: field 'training\[4\]\.label': affine differs",
    ),
    "label value outside labels": (
        lambda r: _rewrite_nifti(r / "labelsTr" / "mri_000.nii.gz", lambda a, m: (np.where(a == 2, 5, a), m)),
        r"labelsTr/mri_000\.nii\.gz: field 'training\[0\]\.label': values \[5\] are not declared",
    ),
    "NaN voxel": (
        lambda r: _rewrite_nifti(
            r / "imagesTr" / "mri_003.nii.gz", lambda a, m: (np.where(a > a.max() * 0.9, np.nan, a), m)
        ),
        r"imagesTr/mri_003\.nii\.gz: field 'training\[3\]\.image': contains NaN",
    ),
    "unreadable image": (
        lambda r: (r / "imagesTr" / "mri_001.nii.gz").write_bytes(b"not a nifti"),
        r"imagesTr/mri_001\.nii\.gz: field 'training\[1\]\.image': cannot be read",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_names_file_and_field(case: str, mri_dir: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(mri_dir, tmp_path / "ds"))
    spoil, message = BAD_INPUTS[case]
    spoil(root)
    with pytest.raises(DatasetError, match=message):
        validate_dataset(load_msd_dataset(root), deep=True)


def test_rgb_channel_count_checked(nuclei_dir: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(nuclei_dir, tmp_path / "ds"))
    Image.fromarray(np.zeros((NUCLEI_SIZE, NUCLEI_SIZE), np.uint8)).save(root / "imagesTr" / "nuclei_001.png")
    with pytest.raises(DatasetError, match=r"nuclei_001\.png: field 'training\[1\]\.image': shape \(64, 64\)"):
        validate_dataset(load_msd_dataset(root))


def test_validation_writes_nothing(mri_dir: Path, nuclei_dir: Path) -> None:
    for root in (mri_dir, nuclei_dir):
        before = _listing(root)
        validate_dataset(load_msd_dataset(root), deep=True)
        assert _listing(root) == before


def test_nnunet_v2_style_json(mri_dir: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(mri_dir, tmp_path / "ds"))
    _set_json(root, lambda d: d.update(labels={"background": 0, "a": 1, "b": 2}, channel_names=d.pop("modality")))
    ds = load_msd_dataset(root)
    assert ds.labels == {0: "background", 1: "a", 2: "b"} and ds.channel_names == ["T2"]
    assert ds.items[0]["patient"] == "mri_000"


# ----------------------------------------------------------------------------------------------- pipelines


def test_normalisation_by_modality() -> None:
    schemes = [normalisation_scheme(n) for n in ("CT", "T2", "ADC", "FLAIR", "t1gd", "MRI", "R", "microscopy")]
    assert schemes == ["ct", "zscore", "zscore", "zscore", "zscore", "zscore", "scale", "scale"]
    ct = normalisation_for(["CT"])({"image": torch.tensor([[-1000.0, -175.0, 37.5, 250.0, 3000.0]])})["image"]
    np.testing.assert_allclose(np.asarray(ct), [[0.0, 0.0, 0.5, 1.0, 1.0]], atol=1e-6)
    mr = torch.cat([torch.zeros(2, 10), torch.rand(2, 30) * torch.tensor([[5.0], [500.0]])], dim=1)
    z = torch.as_tensor(normalisation_for(["T2", "ADC"])({"image": mr})["image"])
    assert torch.all(z[:, :10] == 0)  # background left at zero
    np.testing.assert_allclose(z[:, 10:].mean(1), [0, 0], atol=1e-5)
    np.testing.assert_allclose(z[:, 10:].std(1, unbiased=False), [1, 1], atol=1e-4)
    mixed = torch.stack([torch.linspace(-500, 500, 8), torch.linspace(0, 10, 8)])
    out = torch.as_tensor(normalisation_for(["CT", "T1"])({"image": mixed})["image"])
    assert out.shape == (2, 8) and out[0].min() == 0 and out[0].max() == 1 and abs(float(out[1].mean())) < 1e-5


def test_2d_from_rgb(nuclei_dir: Path) -> None:
    ds = load_msd_dataset(nuclei_dir)
    train_items, val_items = fold_items(ds, 0, n_folds=3, seed=0)
    train, val = make_2d_datasets(ds, train_items, val_items, spatial_size=(48, 40), seed=0)
    assert (len(train), len(val)) == (4, 2)  # one sample per image
    sample = train[0]
    assert sample["image"].shape == (3, 48, 40) and sample["image"].dtype == torch.float32
    assert sample["label"].shape == (1, 48, 40) and sample["label"].dtype == torch.int64
    v = val[0]["image"]
    assert float(v.min()) >= 0.0 and float(v.max()) <= 1.0  # RGB scaled to 0..1
    batch = next(iter(DataLoader(train, batch_size=2)))
    assert batch["image"].shape == (2, 3, 48, 40)
    draws = []
    for seed in (5, 5, 6):  # augmentation repeats for a seed
        fresh, _ = make_2d_datasets(ds, train_items, [], spatial_size=(48, 40), seed=seed)
        draws.append(torch.stack([fresh[i % 4]["image"] for i in range(8)]))
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


def test_2d_slices_from_volumes(mri_dir: Path) -> None:
    ds = load_msd_dataset(mri_dir)
    train_items, val_items = fold_items(ds, 0, n_folds=5, seed=0)
    train, val = make_2d_datasets(ds, train_items, val_items, spatial_size=(32, 32), augment=False, cache=False)
    assert len(val) == MRI_SHAPE[2]  # every slice of the one validation volume
    labels = [read_array(it["label"])[0] for it in train_items]
    fg = sum(int(lab.reshape(-1, MRI_SHAPE[2]).any(0).sum()) for lab in labels)
    empty = len(train_items) * MRI_SHAPE[2] - fg
    assert fg < len(train) < fg + empty  # all foreground slices plus about a quarter of the empty ones
    only_fg, _ = make_2d_datasets(ds, train_items, [], spatial_size=(32, 32), keep_empty_fraction=0.0, cache=False)
    assert len(only_fg) == fg and all(int(s["label"].max()) > 0 for s in only_fg)
    sideways, val_x = make_2d_datasets(ds, [], val_items, spatial_size=(16, 16), slice_axis=0, cache=False)
    assert len(val_x) == MRI_SHAPE[0] and val_x[0]["image"].shape == (1, 16, 16)
    assert set(torch.unique(val[10]["label"]).tolist()) <= {0, 1, 2}


def test_multimodal_channels(multimodal_dir: Path) -> None:
    ds = load_msd_dataset(multimodal_dir)
    validate_dataset(ds)
    assert ds.in_channels == 2 and ds.is_3d
    _, val2d = make_2d_datasets(ds, [], ds.items[:1], spatial_size=(24, 24))
    assert val2d[0]["image"].shape == (2, 24, 24)
    train3d, val3d = make_3d_datasets(ds, ds.items[:2], ds.items[2:], patch_size=(16, 16, 8), samples_per_volume=3)
    patches = train3d[0]
    assert len(patches) == 3 and patches[0]["image"].shape == (2, 16, 16, 8)
    assert val3d[0]["image"].shape == (2, *MRI_SHAPE)
    case = load_case(ds.items[0], ds)
    assert case.image.shape == (2, *MRI_SHAPE) and case.shape == MRI_SHAPE


def test_3d_patches_and_volumes(mri_dir: Path) -> None:
    ds = load_msd_dataset(mri_dir)
    train_items, val_items = fold_items(ds, 1, n_folds=5, seed=0)
    train, val = make_3d_datasets(ds, train_items, val_items, patch_size=(24, 24, 24), samples_per_volume=2)
    assert len(train) == 4 and len(val) == 1
    patches = train[0]
    assert len(patches) == 2
    assert patches[0]["image"].shape == (1, 24, 24, 24) and patches[0]["image"].dtype == torch.float32
    assert patches[0]["label"].shape == (1, 24, 24, 24) and patches[0]["label"].dtype == torch.int64
    batch = next(iter(DataLoader(train, batch_size=2)))
    assert batch["image"].shape == (4, 1, 24, 24, 24)  # 2 volumes x 2 patches
    whole = val[0]
    assert whole["image"].shape == (1, *MRI_SHAPE) and whole["label"].shape == (1, *MRI_SHAPE)
    with pytest.raises(DatasetError, match="field 'training'"):
        make_3d_datasets(ds, train_items, val_items, patch_size=(24, 24))


def test_load_case_keeps_affine(mri_dir: Path, nuclei_dir: Path) -> None:
    ds = load_msd_dataset(mri_dir)
    case = load_case(ds.items[2]["image"], ds)
    _, affine = read_array(ds.items[2]["image"])
    np.testing.assert_allclose(case.affine, affine)
    assert case.shape == MRI_SHAPE and case.image.shape == (1, *MRI_SHAPE)
    assert abs(float(case.image.mean())) < 1e-3  # z-scored
    rgb = load_case(load_msd_dataset(nuclei_dir).items[0], load_msd_dataset(nuclei_dir))
    assert rgb.image.shape == (3, NUCLEI_SIZE, NUCLEI_SIZE) and rgb.shape == (NUCLEI_SIZE, NUCLEI_SIZE)
    raw, _ = read_array(load_msd_dataset(nuclei_dir).items[0]["image"])
    # (H, W) order kept, not transposed: the channel-0 pattern matches the PNG's red channel
    corr = np.corrcoef(rgb.image[0].numpy().ravel(), raw[..., 0].astype(float).ravel())[0, 1]
    assert corr > 0.99
