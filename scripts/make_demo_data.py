"""Generate the seeded synthetic demo datasets in MSD layout (offline, a few seconds each).

python scripts/make_demo_data.py nuclei OUT_DIR --num_images 24 --size 256 --seed 0
python scripts/make_demo_data.py mri OUT_DIR --num_patients 10 --shape "(64,64,32)" --seed 0
python scripts/make_demo_data.py all OUT_ROOT   # OUT_ROOT/Task901_DemoNuclei and OUT_ROOT/Task902_DemoMRI
"""

from __future__ import annotations

from pathlib import Path

import fire

from nas_ops.data.demo import DEMO_TASK_DIRS, make_mri_dataset, make_nuclei_dataset


def nuclei(out_dir: str, num_images: int = 24, size: int = 256, seed: int = 0) -> str:
    """2D H&E-like nuclei tiles (RGB PNG) with binary masks."""
    return str(make_nuclei_dataset(out_dir, num_images=num_images, size=size, seed=seed))


def mri(out_dir: str, num_patients: int = 10, shape: tuple[int, int, int] = (64, 64, 32), seed: int = 0) -> str:
    """3D T2-like volumes (NIfTI, 1x1x2 mm) with two zonal structures."""
    return str(make_mri_dataset(out_dir, num_patients=num_patients, shape=tuple(shape), seed=seed))


def all_(out_root: str, seed: int = 0) -> list[str]:
    """Both demo datasets with default sizes under ``out_root``."""
    root = Path(out_root)
    return [nuclei(str(root / DEMO_TASK_DIRS["nuclei"]), seed=seed), mri(str(root / DEMO_TASK_DIRS["mri"]), seed=seed)]


if __name__ == "__main__":
    fire.Fire({"nuclei": nuclei, "mri": mri, "all": all_})
