"""Shared fixtures: tiny NIfTI volumes and a tiny pretraining configuration."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import yaml

TINY = {
    "encoder": {"feature_size": 12, "num_heads": [1, 2, 3, 4], "window_size": 4, "token_stage": 3},
    "views": {"roi_size": [64, 64, 32], "grid": 2},
    "head": {"hidden_dim": 64, "embed_dim": 32},
    "loss": {"queue_size": 8},
    "optim": {"steps": 6, "warmup_steps": 2, "lr": 1e-3},
    "run": {"checkpoint_every": 3, "keep_last": 10, "log_every": 1, "progress": False},
    "data": {"workers": 0},
}


def write_volume(path, rng, shape=(72, 70, 40)):
    """A CT-like volume: air outside a soft-tissue body holding two bright, randomly placed structures."""
    vol = np.full(shape, -1000.0, np.float32)
    vol[6:-6, 6:-6, 3:-3] = rng.normal(40, 25, (shape[0] - 12, shape[1] - 12, shape[2] - 6))
    size = (16, 14, 8)
    for value in (300.0, -200.0):
        x, y, z = (int(rng.integers(4, max(5, s - d - 4))) for s, d in zip(shape, size))
        vol[x : x + size[0], y : y + size[1], z : z + size[2]] = value
    nib.save(nib.Nifti1Image(vol, np.diag([1.5, 1.5, 2.0, 1.0])), str(path))
    return path


@pytest.fixture(scope="session")
def volumes_dir(tmp_path_factory):
    """A folder of four small CT-like volumes and an MSD-style dataset.json pointing at them."""
    root = tmp_path_factory.mktemp("volumes")
    (root / "imagesTr").mkdir()
    rng = np.random.default_rng(0)
    names = [f"case{i}.nii.gz" for i in range(4)]
    for name in names:
        write_volume(root / "imagesTr" / name, rng)
    (root / "dataset.json").write_text(json.dumps({"training": [{"image": f"./imagesTr/{n}"} for n in names]}))
    return root


@pytest.fixture
def tiny_config(tmp_path):
    """Write the tiny YAML config; returns its path."""
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path
