"""What the frozen-encoder probe and its figures took without a word or failed on obscurely: an unfinished
pretraining probed as a finished one, map values no name is given for, a score undefined on a resample (its error
named nothing, after the earlier table was deleted), a figure left beside the other figure of another run."""

from __future__ import annotations

import json

import pytest
import torch

from s2dc.cli import main
from s2dc.eval.bootstrap import bootstrap, r_squared_from_sums, regression_sums
from s2dc.export import swinunetr_for

from test_figures import SIZES, twin_and_encoder  # noqa: F401  (a module fixture)


def test_an_unfinished_pretraining_checkpoint_is_not_probed(twin_and_encoder, tmp_path, capsys):  # noqa: F811
    """A checkpoint at step 10 of its run's 1000: `export-encoder` and the fine-tuning refuse it (an unfinished run is
    not read as a finished one); the probe read it and exited 0, its result saying nothing of it."""
    source, _ = twin_and_encoder
    torch.manual_seed(5)
    weights = {f"encoder.{k}": v for k, v in swinunetr_for(SIZES).swinViT.state_dict().items()}
    checkpoint = tmp_path / "checkpoints" / "step_00000010.pt"
    checkpoint.parent.mkdir()
    torch.save({"config": {"encoder": SIZES.to_dict(), "optim": {"steps": 1000}, "data": {}}, "teacher": weights,
                "student": weights, "step": 10}, checkpoint)
    out = tmp_path / "probe" / "p.json"
    assert main(["probe", "voxels", f"s2dc={checkpoint}", "--source", str(source), "--out", str(out),
                 "--device", "cpu"]) == 2
    assert "stopped at step 10 of its 1000" in capsys.readouterr().err and not out.exists()


def test_a_score_undefined_on_a_resample_is_refused_naming_the_remedy():
    """One token a validation case (a late --stage on small volumes): a resample of one distinct case has no R²
    (its targets hold one value), the standard error was NaN, and the run stopped on the json's NaN check, naming
    neither cause nor remedy."""
    pred, y = torch.tensor([[0.1], [0.5], [0.9]]), torch.tensor([[0.0], [0.6], [1.0]])
    sums = regression_sums(pred, y, torch.arange(3), 3)
    with pytest.raises(ValueError, match=r"the score of a is undefined on \d+ of 1000 resamples of the 3 validation "
                                         r"cases .* probe an earlier --stage"):
        bootstrap({"a": sums}, r_squared_from_sums)
    two = regression_sums(pred.repeat(2, 1), y.repeat(2, 1) + torch.tensor([[0.0]] * 3 + [[0.3]] * 3),
                          torch.arange(3).repeat(2), 3)
    assert bootstrap({"a": two}, r_squared_from_sums)["a"]["se"] > 0  # two tokens of two values a case: defined


def test_a_map_value_without_a_name_is_refused_naming_the_file(tmp_path, capsys):
    """`figures --labels anatomy` with a value of the maps that anatomy_labels leaves out drew it as a class with no
    legend entry and exited 0."""
    from s2dc.data.synthetic import write_dataset

    source = write_dataset(tmp_path / "brats21", "brats21", cases=2, seed=3, shape=(32, 32, 32), val_fraction=0.5)
    torch.manual_seed(5)
    encoder = tmp_path / "enc.pt"
    torch.save({"state_dict": {f"swinViT.{k}": v for k, v in swinunetr_for(SIZES).swinViT.state_dict().items()},
                "encoder": SIZES.to_dict()}, encoder)
    doc = json.loads(source.read_text())
    named = {int(k): v for k, v in doc["anatomy_labels"].items()}
    gap = next(v for v in sorted(named) if v > 0)  # a tissue every brain holds
    named.pop(gap)
    doc["anatomy_labels"] = {str(k): v for k, v in named.items()}
    source.write_text(json.dumps(doc))
    structure = named[max(named)]
    code = main(["figures", f"s2dc={encoder}", "--source", str(source), "--structure", structure, "--labels",
                 "anatomy", "--tsne-tokens", "50", "--out-dir", str(tmp_path / "fig"), "--stage", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "must hold the integers" in err and "its dataset json names" in err, err


def test_a_figures_run_that_fails_leaves_no_figure_of_an_earlier_run_beside_its_own(twin_and_encoder, tmp_path,
                                                                                    monkeypatch):  # noqa: F811
    """similarity.png was written, then the t-SNE failed (killed, or scikit-learn missing): the new similarity.png
    stood beside the earlier run's tsne.png, of other encoders."""
    from s2dc.eval import figures

    source, encoder = twin_and_encoder
    out = tmp_path / "fig"
    argv = ["figures", "random", f"s2dc={encoder}", "--source", str(source), "--structure", "liver",
            "--tsne-tokens", "50", "--out-dir", str(out)]
    assert main(argv) == 0

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(figures, "tsne_figure", killed)
    with pytest.raises(KeyboardInterrupt):
        main(argv[:1] + ["voxels"] + argv[2:])
    assert not (out / "tsne.png").exists()


def test_an_encoder_of_another_channel_count_is_refused_with_a_remedy_the_probe_has(twin_and_encoder, tmp_path,
                                                                                   capsys):  # noqa: F811
    """A two-channel encoder on one-channel cases: refused, but the message said to 'set the model sizes to the
    checkpoint's', which the probe has no option for."""
    import dataclasses

    source, _ = twin_and_encoder
    sizes = dataclasses.replace(SIZES, in_channels=2)
    torch.manual_seed(5)
    encoder = tmp_path / "enc2.pt"
    torch.save({"state_dict": {f"swinViT.{k}": v for k, v in swinunetr_for(sizes).swinViT.state_dict().items()},
                "encoder": sizes.to_dict()}, encoder)
    assert main(["probe", f"s2dc={encoder}", "--source", str(source), "--out", str(tmp_path / "p.json"),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "reads 2 input channels, the cases of" in err and "have 1" in err and "model sizes" not in err, err


def _regression_probe() -> dict:
    return {"source": "d.json", "dataset": "synthetic_udpet", "task": "reconstruction", "metric": "R²", "stage": 2,
            "val_cases": 1, "resamples": 1,
            "encoders": {"s2dc": {"score": 0.8123, "se": 0.01, "versus": {}}}}


def test_a_probe_result_edited_after_the_probe_is_neither_read_nor_overwritten(tmp_path):
    """A probe result was recognised by its keys alone: edited by hand (a score raised), the report read it as the
    probe's and the next `s2dc probe --out` replaced it without a word. It now records the checksum of its content
    (``result_sha256``, as a fine-tuning's metrics.json does): an edited result is refused by the report and kept by
    the probe; an unedited one is read and replaced as before, and one written before the checksum replaced (the
    report refuses it now: it records no code either, tests/test_result_code.py)."""
    import hashlib

    from s2dc.eval.outputs import check_probe_out
    from s2dc.eval.probe import write_probe
    from s2dc.report.tables import collect_probes

    out = tmp_path / "probe" / "udpet.json"
    write_probe(_regression_probe(), out)
    doc = json.loads(out.read_text())
    body = {k: v for k, v in doc.items() if k != "result_sha256"}
    assert doc["result_sha256"] == hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    assert collect_probes([out]).score.tolist() == [0.8123]
    check_probe_out(out, tmp_path / "d.json")  # the probe's own: replaced by the next run

    doc["encoders"]["s2dc"]["score"] = 0.95
    out.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"bad probe file '.*udpet\.json': its content is not what the probe wrote "
                                         r"\(its result_sha256 differs\)"):
        collect_probes([out])
    with pytest.raises(ValueError, match=r"--out '.*udpet\.json' is a probe result edited after the probe wrote it"):
        check_probe_out(out, tmp_path / "d.json")
    del doc["result_sha256"]  # the checksum deleted with the edit (this probe records its code)
    out.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"--out '.*udpet\.json' is a probe result edited after the probe wrote it "
                                         r"\(its result_sha256 is missing"):
        check_probe_out(out, tmp_path / "d.json")

    older = tmp_path / "older.json"  # written before results recorded their checksum (and their code)
    older.write_text(json.dumps(_regression_probe()))
    with pytest.raises(ValueError, match=r"bad probe file '.*older\.json': it records no code"):
        collect_probes([older])
    check_probe_out(older, tmp_path / "d.json")
