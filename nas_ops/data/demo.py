"""Seeded synthetic demo datasets in MSD layout: 2D H&E-like nuclei (PNG) and 3D zonal MRI-like volumes (NIfTI).

Both are built so that an intensity threshold scores clearly worse than a network: the classes overlap in
intensity (pale nuclei, basophilic stroma; bias field, bright fat and fluid, dark muscle) and only shape and
context separate them. Case ``i`` of seed ``s`` draws from ``numpy.random.default_rng([s, i])``: same seed,
byte-identical arrays.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image
from scipy import ndimage

from nas_ops.data.msd import DATASET_JSON, write_dataset_json

log = logging.getLogger(__name__)

NUCLEI_LABELS = {0: "background", 1: "nucleus"}
MRI_LABELS = {0: "background", 1: "inner_zone", 2: "outer_zone"}
MRI_SPACING = (1.0, 1.0, 2.0)
# Optical density per unit stain in (R, G, B): Ruifrok & Johnston's haematoxylin and eosin vectors.
_HAEMATOXYLIN = np.array([0.65, 0.70, 0.29])
_EOSIN = np.array([0.07, 0.99, 0.11])


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma: float | Sequence[float]) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to zero mean and unit std: smooth random fields of a given scale."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-12)


def _blob(
    coords: Sequence[np.ndarray], centre: Sequence[float], radii: Sequence[float], angle: float, wobble: np.ndarray
) -> np.ndarray:
    """Normalised radius of a rotated ellipse/ellipsoid (< 1 inside); ``wobble`` perturbs the boundary."""
    d = [c - m for c, m in zip(coords, centre, strict=True)]
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = cos * d[0] + sin * d[1], -sin * d[0] + cos * d[1]
    r2 = (u / radii[0]) ** 2 + (v / radii[1]) ** 2
    if len(d) == 3:
        r2 = r2 + (d[2] / radii[2]) ** 2
    return np.sqrt(r2) - wobble


# --------------------------------------------------------------------------------------------------- 2D nuclei


def nuclei_case(rng: np.random.Generator, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """One H&E-like tile: ``(H, W, 3)`` uint8 RGB and a ``(H, W)`` uint8 mask of nuclei (0/1)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    scale = size / 256.0
    # Eosin: stroma with fibres along a random direction and pale gaps (lumen, fat).
    theta = rng.uniform(0, np.pi)
    fibres = ndimage.rotate(
        _smooth_noise(rng, (size, size), (1.0 * scale, 7.0 * scale)), np.degrees(theta), reshape=False, mode="wrap"
    )
    tissue = _smooth_noise(rng, (size, size), 22 * scale)
    eosin = np.clip(0.45 + 0.15 * tissue + 0.15 * fibres, 0.05, None)
    eosin *= np.clip((tissue + 1.6) / 0.6, 0.08, 1.0)  # near-white gaps
    # Haematoxylin in the background: basophilic regions and fibre tint, the threshold's main confound.
    basophil = np.clip(0.12 + 0.10 * _smooth_noise(rng, (size, size), 14 * scale) + 0.06 * fibres, 0.0, None)
    basophil += rng.uniform(0.4, 0.8) * np.clip(_smooth_noise(rng, (size, size), 9 * scale) - 0.5, 0.0, None)
    haem = basophil.copy()
    mask = np.zeros((size, size), dtype=bool)
    chromatin = _smooth_noise(rng, (size, size), 1.0)
    centres = [rng.uniform(0, size, 2) for _ in range(rng.integers(3, 7))]
    nuclei = []
    for cy, cx in centres:  # clusters of touching/overlapping nuclei
        for _ in range(rng.integers(6, 16)):
            nuclei.append((cy + rng.normal(0, 18 * scale), cx + rng.normal(0, 18 * scale)))
    nuclei += [tuple(rng.uniform(0, size, 2)) for _ in range(rng.integers(8, 20))]
    for cy, cx in nuclei:
        a = rng.uniform(4.0, 11.0) * scale
        b = a * rng.uniform(0.55, 1.0)
        angle = rng.uniform(0, np.pi)
        pad = int(np.ceil(a * 1.4)) + 2
        y0, y1 = max(int(cy) - pad, 0), min(int(cy) + pad + 1, size)
        x0, x1 = max(int(cx) - pad, 0), min(int(cx) + pad + 1, size)
        if y0 >= y1 or x0 >= x1:
            continue
        ys, xs = yy[y0:y1, x0:x1], xx[y0:y1, x0:x1]
        ang = np.arctan2(ys - cy, xs - cx)
        wobble = sum(rng.uniform(0, 0.07) * np.cos(k * ang + rng.uniform(0, 2 * np.pi)) for k in range(2, 6))
        r = _blob((ys, xs), (cy, cx), (a, b), angle, wobble)
        inside = r < 1.0
        if not inside.any():
            continue
        density = rng.uniform(0.25, 1.25)  # pale (vesicular) to dark (hyperchromatic) nuclei
        texture = 1.0 + 0.35 * chromatin[y0:y1, x0:x1] + 0.25 * np.clip(r - 0.7, 0, None) / 0.3  # membrane rim
        haem[y0:y1, x0:x1] += np.where(inside, density * texture, 0.0)
        mask[y0:y1, x0:x1] |= inside
    haem = np.clip(haem, 0.0, 2.5)
    # Per-tile stain jitter, Beer-Lambert mixing, blur and noise.
    h_vec = np.clip(_HAEMATOXYLIN + rng.normal(0, 0.05, 3), 0.05, None)
    e_vec = np.clip(_EOSIN + rng.normal(0, 0.04, 3), 0.02, None)
    density = (haem[..., None] * h_vec + eosin[..., None] * e_vec) * rng.uniform(0.7, 1.3)
    rgb = 255.0 * np.exp(-density) * rng.uniform(0.92, 1.0, 3)
    rgb = ndimage.gaussian_filter(rgb, (rng.uniform(0.6, 1.2) * scale,) * 2 + (0,))
    rgb += rng.normal(0, rng.uniform(4.0, 9.0), rgb.shape)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), mask.astype(np.uint8)


def make_nuclei_dataset(out_dir: str | Path, num_images: int = 24, size: int = 256, seed: int = 0) -> Path:
    """Write a 2D nuclei dataset (PNG, one patient per image) in MSD layout; returns ``out_dir``."""
    out = Path(out_dir)
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    training = []
    for i in range(num_images):
        rgb, mask = nuclei_case(np.random.default_rng([seed, i]), size)
        name = f"nuclei_{i:03d}.png"
        Image.fromarray(rgb, mode="RGB").save(out / "imagesTr" / name)
        Image.fromarray(mask, mode="L").save(out / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    log.info("wrote %d nuclei tiles of %dx%d to %s", num_images, size, size, out)
    write_dataset_json(
        out,
        "DemoNuclei",
        NUCLEI_LABELS,
        ["R", "G", "B"],
        training,
        description=f"Synthetic H&E-like nuclei, {num_images} tiles of {size}x{size}, seed {seed}",
    )
    return out


# --------------------------------------------------------------------------------------------------- 3D MRI


def _voxels(mm: float) -> tuple[float, ...]:
    """A length in mm as voxels along each axis of the demo grid (for isotropic smoothing in mm)."""
    return tuple(mm / s for s in MRI_SPACING)


def mri_case(rng: np.random.Generator, shape: Sequence[int] = (64, 64, 32)) -> tuple[np.ndarray, np.ndarray]:
    """One T2-like volume ``(X, Y, Z)`` float32 and its labels (0 background, 1 inner zone, 2 outer zone).

    A body ellipsoid with a bright fat rim holds a darker inner blob wrapped posteriorly by a brighter crescent,
    next to a bright fluid sac and dark muscle bands of overlapping intensity; then partial-volume blur, a smooth
    multiplicative bias field and Rician noise.
    """
    shape = tuple(int(s) for s in shape)
    spacing = MRI_SPACING
    axes = [(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing, strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    ext = [n * s / 2.0 for n, s in zip(shape, spacing, strict=True)]  # half extent in mm
    coords = (x, y, z)

    body_r = _blob(
        coords,
        (0, 0, 0),
        (ext[0] * rng.uniform(0.80, 0.92), ext[1] * rng.uniform(0.68, 0.8), ext[2] * 1.3),
        rng.uniform(-0.15, 0.15),
        0.05 * _smooth_noise(rng, shape, _voxels(8)),
    )
    body = body_r < 1.0
    fat = body & (body_r > 1.0 - rng.uniform(0.08, 0.13))
    scale = min(ext[0], ext[1]) / 32.0  # structure sizes follow the field of view

    c = np.array([rng.uniform(-5, 5), rng.uniform(-3, 5), rng.uniform(-6, 6)]) * scale
    radii = np.array([rng.uniform(8, 12), rng.uniform(6, 9), rng.uniform(8, 13)]) * scale
    angle = rng.uniform(-0.4, 0.4)
    inner_r = _blob(coords, c, radii, angle, 0.12 * _smooth_noise(rng, shape, _voxels(4)))
    inner = (inner_r < 1.0) & body
    thickness = rng.uniform(3.0, 6.0) * scale
    outer_r = _blob(coords, c, radii + thickness, angle, 0.10 * _smooth_noise(rng, shape, _voxels(4)))
    posterior = (y - c[1]) < rng.uniform(-0.1, 0.3) * radii[1]  # crescent opens anteriorly (+y)
    outer = (outer_r < 1.0) & ~inner & posterior & body

    sac_c = (rng.uniform(-4, 4) * scale, c[1] + radii[1] + rng.uniform(6, 10) * scale, rng.uniform(-4, 4) * scale)
    sac_r = _blob(
        coords,
        sac_c,
        np.array([rng.uniform(7, 11), rng.uniform(4, 7), rng.uniform(7, 11)]) * scale,
        rng.uniform(-0.5, 0.5),
        0.08 * _smooth_noise(rng, shape, _voxels(5)),
    )
    sac = (sac_r < 1.0) & body & ~inner & ~outer
    muscle = np.zeros(shape, dtype=bool)
    for side in (-1, 1):  # obturator-like bands either side
        mc = (side * (np.abs(c[0]) + radii[0] + rng.uniform(5, 9) * scale), c[1] + rng.uniform(-6, 2) * scale, c[2])
        mr = np.array([rng.uniform(3, 5), rng.uniform(10, 16), rng.uniform(10, 16)]) * scale
        muscle |= _blob(coords, mc, mr, side * rng.uniform(0.1, 0.5), 0.1 * _smooth_noise(rng, shape, 3)) < 1.0
    muscle &= body & ~inner & ~outer & ~sac

    tissue = 1.0 + 0.07 * _smooth_noise(rng, shape, _voxels(6))
    img = np.where(body, tissue, 0.03)
    img = np.where(fat, rng.uniform(1.4, 1.6) + 0.08 * _smooth_noise(rng, shape, 2), img)
    img = np.where(muscle, rng.uniform(0.72, 0.80) + 0.05 * _smooth_noise(rng, shape, 2), img)
    img = np.where(sac, rng.uniform(1.3, 1.5) + 0.04 * _smooth_noise(rng, shape, 3), img)
    nodules = _smooth_noise(rng, shape, _voxels(2.0))
    img = np.where(inner, rng.uniform(0.74, 0.82) + 0.08 * nodules, img)
    img = np.where(outer, rng.uniform(1.25, 1.35) + 0.07 * nodules, img)

    img = ndimage.gaussian_filter(img, _voxels(1.0))  # partial volume / PSF
    img *= np.exp(0.18 * _smooth_noise(rng, shape, _voxels(20)))  # coil bias field
    sigma = rng.uniform(0.05, 0.07)
    img = np.sqrt((img + rng.normal(0, sigma, shape)) ** 2 + rng.normal(0, sigma, shape) ** 2)  # Rician
    img *= rng.uniform(300.0, 700.0)  # arbitrary MR units
    label = np.zeros(shape, dtype=np.uint8)
    label[inner] = 1
    label[outer] = 2
    return img.astype(np.float32), label


def mri_affine(shape: Sequence[int]) -> np.ndarray:
    """RAS affine of the demo volumes: spacing ``MRI_SPACING`` and the volume centred on the origin."""
    affine = np.diag([*MRI_SPACING, 1.0])
    affine[:3, 3] = [-(n - 1) / 2.0 * s for n, s in zip(shape, MRI_SPACING, strict=True)]
    return affine


def make_mri_dataset(
    out_dir: str | Path, num_patients: int = 10, shape: Sequence[int] = (64, 64, 32), seed: int = 0
) -> Path:
    """Write a 3D MRI-like dataset (NIfTI, spacing 1x1x2 mm) in MSD layout; returns ``out_dir``."""
    out = Path(out_dir)
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    affine = mri_affine(shape)
    training = []
    for i in range(num_patients):
        img, label = mri_case(np.random.default_rng([seed, i]), shape)
        name = f"mri_{i:03d}.nii.gz"
        for arr, sub in ((img, "imagesTr"), (label, "labelsTr")):
            nii = nib.Nifti1Image(arr, affine)
            nii.header.set_xyzt_units("mm")
            nib.save(nii, out / sub / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    log.info("wrote %d MRI volumes of %s to %s", num_patients, tuple(shape), out)
    write_dataset_json(
        out,
        "DemoMRI",
        MRI_LABELS,
        ["T2"],
        training,
        description=f"Synthetic zonal T2-like MRI, {num_patients} patients of {tuple(shape)}, seed {seed}",
    )
    return out


# --------------------------------------------------------------------------------------------------- helpers

DEMO_KINDS = {"nuclei": make_nuclei_dataset, "mri": make_mri_dataset}
DEMO_TASK_DIRS = {"nuclei": "Task901_DemoNuclei", "mri": "Task902_DemoMRI"}


def ensure_demo_data(dataset_dir: str | Path, kind: str, seed: int = 0) -> Path:
    """Generate the demo dataset ``kind`` into ``dataset_dir`` unless its dataset.json exists; returns the path."""
    if kind not in DEMO_KINDS:
        raise ValueError(f"unknown demo dataset kind {kind!r}; choose from {sorted(DEMO_KINDS)}")
    out = Path(dataset_dir)
    if not (out / DATASET_JSON).is_file():
        log.info("generating demo dataset %r into %s", kind, out)
        DEMO_KINDS[kind](out, seed=seed)
    return out


def threshold_dice(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], cls: int, bins: int = 128) -> float:
    """Mean per-case Dice of the best single global intensity window ``lo <= I < hi`` for class ``cls``.

    The baseline a network must beat: the window is tuned on the very cases it is scored on (an upper bound).
    ``images`` are single-channel arrays on a common scale, one per case, shaped like their ``labels``.
    """
    pooled = np.concatenate([np.ravel(i) for i in images])
    edges = np.quantile(pooled, np.linspace(0, 1, bins + 1))
    edges[-1] = np.inf
    fg, total = [], []
    for img, lab in zip(images, labels, strict=True):
        idx = np.clip(np.searchsorted(edges, np.ravel(img), side="right") - 1, 0, bins - 1)
        total.append(np.bincount(idx, minlength=bins))
        fg.append(np.bincount(idx, weights=(np.ravel(lab) == cls), minlength=bins))
    cum_fg = np.concatenate([np.zeros((len(images), 1)), np.cumsum(fg, axis=1)], axis=1)  # (N, bins + 1)
    cum_all = np.concatenate([np.zeros((len(images), 1)), np.cumsum(total, axis=1)], axis=1)
    tp = cum_fg[:, None, :] - cum_fg[:, :, None]  # [case, lo, hi]
    pred = cum_all[:, None, :] - cum_all[:, :, None]
    gt = cum_fg[:, -1][:, None, None]
    dice = np.where(pred + gt > 0, 2 * tp / np.maximum(pred + gt, 1e-9), 1.0)
    valid = np.triu(np.ones((bins + 1, bins + 1), dtype=bool), k=1)
    mean = np.where(valid, dice.mean(axis=0), -1.0)
    return float(mean.max())
