"""An encoder of another modality is named, not fine-tuned or probed: the pretraining's pool decides the modality an
export records, and `s2dc finetune` and `s2dc probe` compare it with the dataset's. A z-scoring PET encoder on an MRI
dataset passed the normalisation check (both z-score their volumes), and was fine-tuned and probed with exit 0."""

from __future__ import annotations

import json

import pytest
import torch

from s2dc.models.encoder import EncoderConfig


def fake_export(path, modality: str | None, intensity: str = "zscore"):
    """An exported encoder's dict (no weights needed: the checks run before any is loaded)."""
    blob = {"state_dict": {}, "encoder": EncoderConfig(feature_size=12).to_dict(), "preprocess": {"intensity": intensity},
            "source": "runs/x/checkpoints/step_00000002.pt", "step": 2, "which": "teacher"}
    torch.save({**blob, "modality": modality} if modality else blob, path)
    return path


def named_json(path, name: str):
    path.write_text(json.dumps({"name": name, "training": [], "validation": []}))
    return path


def test_an_export_records_the_modality_of_the_pool_it_was_pretrained_on(tmp_path):
    from s2dc.export import trained_modality

    pool = named_json(tmp_path / "pet.json", "synthetic_pet_pool")
    assert trained_modality({"data": {"source": str(pool)}}) == "PET"
    assert trained_modality({"data": {"source": str(named_json(tmp_path / "mine.json", "my_scans"))}}) is None
    assert trained_modality({"data": {"source": str(tmp_path)}}) is None  # a folder of volumes: unknown
    assert trained_modality({"data": {"source": str(tmp_path / "gone.json")}}) is None


def test_fine_tuning_refuses_an_encoder_of_another_modality(tmp_path):
    from s2dc.downstream.defaults import fill_finetune_defaults

    brats = named_json(tmp_path / "dataset.json", "synthetic_brats23")
    pet = fake_export(tmp_path / "pet.pt", "PET")
    with pytest.raises(ValueError) as refused:
        fill_finetune_defaults({"model": {"init": str(pet)}, "data": {"source": str(brats)}})
    assert f"'{pet}'" in str(refused.value) and "PET" in str(refused.value) and "MRI" in str(refused.value)
    fill_finetune_defaults({"model": {"init": str(fake_export(tmp_path / "mri.pt", "MRI"))},
                            "data": {"source": str(brats)}})
    fill_finetune_defaults({"model": {"init": str(fake_export(tmp_path / "old.pt", None))},  # records none: as before
                            "data": {"source": str(brats)}})
    fill_finetune_defaults({"model": {"init": str(pet)}, "data": {"source": str(brats)},  # chosen by hand
                            "preprocess": {"intensity": "zscore"}})


def test_the_probe_refuses_an_encoder_of_another_modality(tmp_path):
    from s2dc.eval.probe import load_labelled

    brats = named_json(tmp_path / "dataset.json", "synthetic_brats23")
    pet = fake_export(tmp_path / "pet.pt", "PET")
    with pytest.raises(ValueError) as refused:
        load_labelled(brats, {"voxels": "voxels", "s2dc": str(pet)}, 2, None, "cpu", None)
    assert f"'{pet}'" in str(refused.value) and "PET" in str(refused.value) and "MRI" in str(refused.value)
    ct = fake_export(tmp_path / "ct.pt", "CT", intensity="ct")  # another normalisation too
    with pytest.raises(ValueError, match="CT"):
        load_labelled(brats, {"s2dc": str(ct)}, 2, None, "cpu", None)
