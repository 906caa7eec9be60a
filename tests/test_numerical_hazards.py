"""Numerical hazards end to end: what each stage does with NaN or infinite values it computes itself from finite
inputs (a diverged encoder's features, ...), checked against small independent computations."""

from __future__ import annotations

import json

import pytest
import torch

from s2dc.cli import main
from s2dc.data.synthetic import write_dataset
from s2dc.export import swinunetr_for
from s2dc.models.encoder import EncoderConfig
from test_trust import finetune_argv

SIZES = EncoderConfig(feature_size=12, num_heads=(1, 2, 3, 4), window_size=4)


def diverged_encoder(path):
    """An exported encoder whose weights are all finite but whose features are not: the patch embedding scaled to
    overflow float32 (as a partial export of a pretraining that diverged on its next step reads, `--partial`)."""
    torch.manual_seed(5)
    weights = swinunetr_for(SIZES).swinViT.state_dict()
    weights["patch_embed.proj.weight"] = weights["patch_embed.proj.weight"] * 1e38
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    torch.save({"state_dict": {f"swinViT.{k}": v for k, v in weights.items()}, "encoder": SIZES.to_dict()}, path)
    return path


def test_an_encoder_whose_features_are_not_finite_is_not_probed(tmp_path, capsys):
    """A classification probe fitted L-BFGS on NaN features, chose its weight decay among NaN losses and read
    argmax(NaN) = class 0 for every volume: `balanced accuracy 0.0 ± 0.0`, exit 0. It fails as a diverged model
    fails fine-tuning: exit 1, naming the encoder, nothing written."""
    source = write_dataset(tmp_path / "adni", "adni", cases=4, seed=1, shape=(32, 32, 32), val_fraction=0.5)
    encoder = diverged_encoder(tmp_path / "enc.pt")
    out = tmp_path / "probe" / "adni.json"
    assert main(["probe", "voxels", f"s2dc={encoder}", "--source", str(source), "--out", str(out),
                 "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "not finite" in err and str(encoder) in err, err
    assert not out.exists() and not out.with_suffix(".md").exists()


def test_a_starting_encoder_whose_features_are_not_finite_is_named_not_the_learning_rate(seg_dir, tmp_path, capsys):
    """Fine-tuning from such an encoder fails at step 1, before any update: the message told to 'try a lower train.lr'
    (which changes nothing: no update was applied); it names the starting encoder instead. Exit 1, no result."""
    encoder = diverged_encoder(tmp_path / "enc.pt")
    out = tmp_path / "run"
    assert main(finetune_argv(tmp_path, seg_dir / "dataset.json", out, "--model.init", str(encoder))) == 1
    err = capsys.readouterr().err
    assert "step 1" in err and str(encoder) in err and "lower train.lr" not in err, err
    assert not (out / "metrics.json").exists() and not (out / "model.pt").exists()


def test_ssim_of_predictions_beyond_float32s_reach_fails_as_a_diverged_model():
    """Finite predictions of ~1e20 (a diverged network whose outputs pass the finite check): MONAI's float32 SSIM
    overflowed to NaN, which metrics.json recorded as null ('cannot be scored on these cases') beside an exit 0, and the
    report dropped the method's average without a word; PSNR (in double) is still scored, as numpy computes it."""
    import numpy as np

    from s2dc.downstream.metrics import psnr, ssim

    torch.manual_seed(0)
    target = torch.rand(1, 16, 16, 16)
    pred = target * 1e20
    t, p = target.double().numpy(), pred.double().numpy()
    want = 10 * np.log10((t.max() - t.min()) ** 2 / ((p - t) ** 2).mean())
    assert psnr(pred, target) == pytest.approx(want, rel=1e-12)
    with pytest.raises(FloatingPointError, match="SSIM.*not finite"):
        ssim(pred, target)
    assert 0.99 < ssim(target, target) <= 1.0  # an ordinary prediction is scored as before


def test_a_network_whose_validation_outputs_are_not_finite_still_fails_as_diverged(seg_dir, tmp_path, capsys,
                                                                                  monkeypatch):
    """Finite weights whose outputs at validation are not finite (a diverged model's: here the patch embedding scaled
    after the last step) fail the run as diverged, exit 1, with no result; validation labels that cannot be scored
    are bad input instead (exit 2, test_trust.py)."""
    from s2dc.downstream.engine import Finetuner

    evaluate = Finetuner.evaluate

    def diverged_then_evaluated(self, val):
        with torch.no_grad():
            self.model.swinViT.patch_embed.proj.weight.mul_(1e38)
        return evaluate(self, val)

    monkeypatch.setattr(Finetuner, "evaluate", diverged_then_evaluated)
    out = tmp_path / "run"
    assert main(finetune_argv(tmp_path, seg_dir / "dataset.json", out)) == 1
    err = capsys.readouterr().err
    assert "outputs are not finite" in err and "diverged" in err and "Traceback" not in err, err
    assert not (out / "metrics.json").exists() and not (out / "model.pt").exists()
