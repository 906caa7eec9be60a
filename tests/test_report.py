"""The benchmark table: aggregation over seeds, the paper's numbers, the probe table, bad files."""

from __future__ import annotations

import json
import math
import os
import re
import statistics

import pytest

from conftest import CODE, sealed
from s2dc.cli import main
from s2dc.files import file_sha256


def write_run(folder, method, seed, dice, dataset="synthetic_btcv", ratio=0.1, name=None, **extra):
    path = folder / (name or f"{method}_{seed}_{ratio}.json")
    path.write_text(json.dumps(sealed({"task": "segmentation", "dataset": dataset, "method": method, "label_ratio": ratio,
                                "seed": seed, "dice_mean": dice, "train_cases": 3, "seconds": 60.0,
                                "score": {"key": "dice_mean", "name": "Dice", "value": 100 * dice},
                                "history": [{"step": 1, "dice_mean": dice}], "code": CODE, **extra})))
    return path


def test_mean_and_sample_std_over_seeds(tmp_path, capsys):
    dice = {"scratch": [0.10, 0.20, 0.40], "s2dc": [0.30, 0.35, 0.50]}
    files = [write_run(tmp_path, m, s, d) for m, values in dice.items() for s, d in enumerate(values)]
    files.append(write_run(tmp_path, "s2dc", 0, 0.9, dataset="synthetic_btcv", ratio=1.0))
    assert main(["report", "--out", str(tmp_path / "out"), *map(str, files)]) == 0
    nested = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for method, values in dice.items():
        cell = nested["synthetic_btcv"][method]["labels_10%"]
        assert cell["mean"] == pytest.approx(100 * statistics.mean(values), abs=1e-4)
        assert cell["std"] == pytest.approx(100 * statistics.stdev(values), abs=1e-4)
        assert cell["seeds"] == 3
    assert nested["synthetic_btcv"]["s2dc"]["labels_100%"] == {"mean": 90.0, "std": None, "seeds": 1}  # one seed
    table = (tmp_path / "out" / "benchmark.md").read_text()
    assert "| synthetic_btcv | segmentation | Dice | s2dc | 100% | 90.00 ± — | 1 | 3 | 84.14 |" in table  # poster Table 2
    assert "| synthetic_btcv | segmentation | Dice | scratch | 10% | 23.33 ± 15.28 | 3 | 3 | — |" in table
    assert "Frozen-encoder protocol" not in table and "probe" not in nested
    assert "3 rows from 7 runs" in capsys.readouterr().out
    page = (tmp_path / "out" / "benchmark.html").read_text()  # the report's view: the same table as HTML
    benchmark = page.split("</table>")[0]  # the benchmark table, then the averages' table
    assert "<td>synthetic_btcv</td>" in benchmark and "<td>23.33 ± 15.28</td>" in benchmark
    assert benchmark.count("<tr>") == 4


def test_probe_results_become_a_second_table(tmp_path):
    run = write_run(tmp_path, "s2dc", 0, 0.5)
    probe = tmp_path / "probe.json"
    versus = {"random": {"difference": 0.1, "se": None}, "voxels": {"difference": 0.2, "se": None}}  # the effect table's
    probe.write_text(json.dumps(sealed({"dataset": "synthetic_btcv", "task": "segmentation", "metric": "balanced accuracy",
                                 "stage": 2, "code": CODE, "encoders": {
        "voxels": {"score": 0.406, "balanced_accuracy": 0.406, "se": 0.021, "organ_recall": 0.375, "recall": {},
                   "structure": {"consistency": 0.9, "inter": 0.8, "discrepancy": 0.2, "ratio": 2.0}},
        "s2dc": {"score": 0.75, "balanced_accuracy": 0.75, "organ_recall": None, "recall": {}, "versus": versus}}})))
    regression = tmp_path / "probe_udpet.json"
    regression.write_text(json.dumps(sealed({"dataset": "synthetic_udpet", "task": "reconstruction", "metric": "R²",
                                      "stage": 2, "code": CODE,
                                      "encoders": {"s2dc": {"score": 0.8123, "versus": versus}}})))
    assert main(["report", "--out", str(tmp_path / "out"), str(run), "--probe", str(probe), str(regression)]) == 0
    table = (tmp_path / "out" / "benchmark.md").read_text()
    assert "| synthetic_btcv | 2 | voxels | segmentation | balanced accuracy | 40.6 ± 2.1 | 37.5 | 0.900 | 0.200 | 2.00 |" in table
    assert "| synthetic_btcv | 2 | s2dc | segmentation | balanced accuracy | 75.0 | — | — | — | — |" in table
    assert "| synthetic_udpet | 2 | s2dc | reconstruction | R² | 0.812 | — | — | — | — |" in table
    nested = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert nested["probe"]["synthetic_btcv"]["voxels"] == {"balanced_accuracy": 40.6, "balanced_accuracy_se": 2.1,
                                                           "organ_recall": 37.5, "consistency": 0.9, "discrepancy": 0.2,
                                                           "ratio": 2.0}
    assert nested["probe"]["synthetic_btcv"]["s2dc"]["organ_recall"] is None
    assert nested["probe"]["synthetic_udpet"]["s2dc"] == {"r2": 0.8123, "organ_recall": None}
    rows = (tmp_path / "out" / "probe.csv").read_text().splitlines()  # the report's probe table
    assert len(rows) == 4 and rows[1].startswith("synthetic_btcv,segmentation,2,voxels,balanced accuracy,40.6000,2.1000,37.5000")


def test_bad_files_are_named(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["report", "--out", str(tmp_path / "out"), str(bad)]) == 2
    assert "bad metrics file" in capsys.readouterr().err and not (tmp_path / "out").exists()
    run = write_run(tmp_path, "s2dc", 0, 0.5)
    assert main(["report", "--out", str(tmp_path / "out"), str(run), "--probe", str(bad)]) == 2
    assert f"bad probe file '{bad}'" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_ablation_table_sets_variants_beside_the_poster_and_compares_the_orderings(tmp_path, capsys):
    """Means over seeds per variant, the poster's Table 2 beside, ranks, and Kendall's tau by hand: on BTCV ours
    swaps the poster's top two (1 discordant pair of 6: tau = 4/6), on AutoPET the two printed rows agree."""
    btcv = {"lg": [0.10, 0.12], "lg_p2p": [0.20, 0.22], "lg_p2s": [0.40, 0.44], "s2dc": [0.30, 0.36]}
    autopet = {"lg": [0.05, 0.07], "s2dc": [0.50, 0.52], "sinkhorn": [0.60, 0.60]}
    files = [write_run(tmp_path / d, m, s, v, dataset=d, ratio=0.2)
             for d, runs in (("btcv", btcv), ("autopet", autopet)) if (tmp_path / d).mkdir() is None
             for m, values in runs.items() for s, v in enumerate(values)]
    terms = ["lg=global:dual_softmax", "lg_p2p=global+p2p:dual_softmax", "lg_p2s=global+p2s:dual_softmax",
             "s2dc=global+p2p+p2s:dual_softmax", "sinkhorn=global+p2p+p2s:sinkhorn"]
    probe = tmp_path / "probe.json"
    probe.write_text(json.dumps(sealed({"dataset": "btcv", "task": "segmentation", "metric": "balanced accuracy", "stage": 2,
                                 "code": CODE,
                                 "encoders": {"lg": {"score": 0.5, "structure": {"consistency": 0.5, "inter": 0.4,
                                                                                   "discrepancy": 0.6, "ratio": 1.2}},
                                              "s2dc": {"score": 0.625}}})))
    assert main(["ablation-table", *map(str, files), "--terms", *terms, "--out", str(tmp_path / "out"),
                 "--probe", str(probe)]) == 0
    table = (tmp_path / "out" / "ablation.md").read_text()
    rows = [line.split(" | ")[0].lstrip("| ") for line in table.splitlines() if line.startswith("| ") and "±" in line]
    assert rows == ["lg", "lg_p2p", "lg_p2s", "s2dc", "sinkhorn"]  # the order of --terms; datasets sorted: autopet first
    assert "| lg_p2s | L_g + L_p2s | dual_softmax | — | — | 42.00 ± 2.83 (#1) | 84.02 (#2) |" in table
    assert "| sinkhorn | L_g + L_p2p + L_p2s | sinkhorn | 60.00 ± 0.00 (#1) | — | — | — |" in table
    assert "- btcv (among the variants run on it; not run: sinkhorn): ours lg_p2s > s2dc > lg_p2p > lg; poster s2dc > lg_p2s > lg_p2p > lg; Kendall τ +0.67; same best: no; 3 of 3 steps of our order beyond its seed spread" in table
    assert "- autopet (among the variants run on it; not run: lg_p2p, lg_p2s): ours s2dc > lg; poster s2dc > lg; Kendall τ +1.00; same best: yes; 1 of 1 step of our order beyond its seed spread" in table
    assert "not resolved" not in table
    assert "<td>lg_p2s</td>" in (tmp_path / "out" / "ablation.html").read_text()
    assert "| btcv | 2 | lg | segmentation | balanced accuracy | 50.0 | — | 0.500 | 0.600 | 1.20 |" in table
    nested = json.loads((tmp_path / "out" / "ablation.json").read_text())
    assert nested["btcv"]["ordering"]["kendall_tau"] == pytest.approx(4 / 6)
    assert nested["btcv"]["probe"] == {"lg": {"score": 50.0, "consistency": 0.5, "discrepancy": 0.6, "ratio": 1.2},
                                       "s2dc": {"score": 62.5}}
    assert nested["autopet"]["variants"]["s2dc"] == {"mean": 51.0, "std": pytest.approx(100 * statistics.stdev([0.5, 0.52]), abs=1e-4), "seeds": 2}
    assert "5 variants x 2 datasets from 14 runs" in capsys.readouterr().out
    assert main(["ablation-table", *map(str, files), "--terms", *terms[:-1], "--out", str(tmp_path / "o2")]) == 2
    assert "no loss terms given for variant(s) ['sinkhorn']" in capsys.readouterr().err


def test_plots_draw_the_runs_and_gather_their_curves_per_method(tmp_path, capsys):
    """per_class/<dataset>.png and label_ratio.png are PNGs; train_loss/<dataset>.tsv holds, per step, the mean over
    seeds of each method's DVCLive loss, and val_score/<dataset>.tsv the validation history in % (Dice)."""
    losses = {("scratch", 0): [3.0, 2.0], ("scratch", 1): [3.2, 2.4], ("s2dc", 0): [2.8, 1.6], ("s2dc", 1): [2.6, 1.2]}
    encoder = tmp_path / "pretrain" / "CT" / "s2dc" / "encoder.pt"  # its pretraining's curves beside it
    terms = encoder.parent / "dvclive/plots/metrics/pretrain"
    terms.mkdir(parents=True)
    encoder.write_bytes(b"the encoder's weights")
    (terms / "loss.tsv").write_text("step\tloss\n10\t5.0\n20\t4.0\n")
    (terms / "loss_p2p.tsv").write_text("step\tloss_p2p\n10\t1.5\n20\t1.25\n")
    files = []
    for (method, seed), values in losses.items():
        run = tmp_path / f"{method}{seed}"
        (run / "dvclive/plots/metrics/train").mkdir(parents=True)
        (run / "dvclive/plots/metrics/train/loss.tsv").write_text("step\tloss\n" + "".join(
            f"{10 * (i + 1)}\t{v}\n" for i, v in enumerate(values)))
        dice = 0.1 * (seed + 1) + (0.2 if method == "s2dc" else 0.0)
        (run / "metrics.json").write_text(json.dumps(sealed({
            "task": "segmentation", "dataset": "synthetic_btcv", "method": method, "label_ratio": 0.2, "seed": seed,
            "dice_mean": dice, "dice_per_class": {"liver": dice, "spleen": 0.0}, "train_cases": 3, "seconds": 1.0,
            "score": {"key": "dice_mean", "name": "Dice", "value": 100 * dice},
            "history": [{"step": 20, "dice_mean": dice}], "init_from": str(encoder) if method == "s2dc" else None,
            "init_sha256": file_sha256(encoder) if method == "s2dc" else None, "code": CODE})))
        files.append(run / "metrics.json")
    out = tmp_path / "out"
    assert main(["plots", *map(str, files), "--figures", str(out / "figures"), "--curves", str(out / "curves")]) == 0
    for png in ("per_class/synthetic_btcv.png", "label_ratio.png"):
        data = (out / "figures" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, png
    loss = (out / "curves/train_loss/synthetic_btcv.tsv").read_text().splitlines()
    assert loss[0].split("\t") == ["step", "scratch", "s2dc"]
    assert [[float(x) for x in line.split("\t")] for line in loss[1:]] == [[10, 3.1, 2.7], [20, 2.2, 1.4]]
    pretrain = (out / "curves/pretrain_loss/CT_s2dc.tsv").read_text().splitlines()  # the terms the run logged
    assert pretrain == ["step\tloss\tloss_p2p", "10\t5\t1.5", "20\t4\t1.25"]
    val = (out / "curves/val_score/synthetic_btcv.tsv").read_text().splitlines()
    assert [float(x) for x in val[1].split("\t")] == pytest.approx([20, 15.0, 35.0])
    assert "4 runs -> 3 figures" in capsys.readouterr().out  # and effect.png: S²DC against scratch, fine-tuned
    assert (out / "figures/effect.png").stat().st_size > 5000
    assert main(["plots", *map(str, files), "--figures", str(out / "figures"), "--curves", str(out / "curves")]) == 0
    mine = out / "figures/label_ratio.png"  # a user's file where a figure goes is never replaced
    mine.write_bytes(b"\x89PNG\r\n\x1a\n not drawn by s2dc")
    assert main(["plots", *map(str, files), "--figures", str(out / "figures"), "--curves", str(out / "curves")]) == 2
    assert f"'{mine}' exists and is not a figure s2dc drew" in capsys.readouterr().err
    assert mine.read_bytes() == b"\x89PNG\r\n\x1a\n not drawn by s2dc"
    (tmp_path / "s2dc1/dvclive/plots/metrics/train/loss.tsv").unlink()
    assert main(["plots", *map(str, files), "--figures", str(out / "f2"), "--curves", str(out / "c2")]) == 2
    assert f"bad DVCLive curve '{tmp_path / 's2dc1'}/dvclive/plots/metrics/train/loss.tsv'" in capsys.readouterr().err


def test_plots_of_runs_from_an_encoder_exported_by_hand(tmp_path, capsys):
    """README's own flow: `s2dc export-encoder run/checkpoints/step_N.pt encoder.pt`, fine-tune from encoder.pt (or
    from the checkpoint), then `s2dc plots`: it was refused for want of a DVCLive folder beside the encoder. The
    checkpoint's run keeps its curves one level up (run/dvclive); an exported file has none beside it, so its runs are
    drawn without a pretraining curve, and the command says so."""
    run = tmp_path / "ct"
    (run / "dvclive/plots/metrics/pretrain").mkdir(parents=True)
    (run / "dvclive/plots/metrics/pretrain/loss.tsv").write_text("step\tloss\n1\t5.0\n2\t4.0\n")
    for init, curve in ((run / "checkpoints" / "step_00000002.pt", True), (tmp_path / "exported" / "enc.pt", False)):
        init.parent.mkdir(parents=True, exist_ok=True)
        init.write_bytes(f"the weights of {init.name}".encode())
        ft = tmp_path / f"ft_{init.stem}"
        (ft / "dvclive/plots/metrics/train").mkdir(parents=True)
        (ft / "dvclive/plots/metrics/train/loss.tsv").write_text("step\tloss\n1\t3.0\n")
        (ft / "metrics.json").write_text(json.dumps(sealed({
            "task": "segmentation", "dataset": "synthetic_btcv", "method": "s2dc", "label_ratio": 0.2, "seed": 0,
            "dice_mean": 0.5, "dice_per_class": {"liver": 0.5}, "train_cases": 3, "seconds": 1.0,
            "score": {"key": "dice_mean", "name": "Dice", "value": 50.0},
            "history": [{"step": 1, "dice_mean": 0.5}], "init_from": str(init), "init_sha256": file_sha256(init),
            "code": CODE})))
        out = tmp_path / f"out_{init.stem}"
        assert main(["plots", str(ft / "metrics.json"), "--figures", str(out / "figures"),
                     "--curves", str(out / "curves")]) == 0, capsys.readouterr().err
        tables = sorted(p.relative_to(out / "curves").as_posix() for p in (out / "curves").rglob("*.tsv"))
        printed = capsys.readouterr()
        if curve:
            assert "pretrain_loss/ct_checkpoints.tsv" in tables, tables
        else:
            assert not [t for t in tables if t.startswith("pretrain_loss/")], tables
            assert f"no DVCLive curves of the pretraining that made '{init}'" in printed.err, printed.err
        assert "train_loss/synthetic_btcv.tsv" in tables


def test_two_encoders_whose_curves_would_share_a_table_are_refused(tmp_path):
    """Runs started from two encoders whose folders end alike (``quick/CT/s2dc/encoder.pt`` and
    ``paper/CT/s2dc/encoder.pt``) map to one ``pretrain_loss/CT_s2dc.tsv``: one pretraining's curve silently replaced
    the other's. Refused, naming both encoders."""
    from s2dc.report.curves import curve_tables

    runs = []
    for scale, loss in (("quick", 1.0), ("paper", 9.0)):
        encoder = tmp_path / scale / "CT" / "s2dc" / "encoder.pt"
        (encoder.parent / "dvclive/plots/metrics/pretrain").mkdir(parents=True)
        (encoder.parent / "dvclive/plots/metrics/pretrain/loss.tsv").write_text(f"step\tloss\n1\t{loss}\n")
        encoder.write_bytes(scale.encode())
        run = tmp_path / f"ft_{scale}"
        (run / "dvclive/plots/metrics/train").mkdir(parents=True)
        (run / "dvclive/plots/metrics/train/loss.tsv").write_text("step\tloss\n1\t0.5\n")
        runs.append({"_path": str(run / "metrics.json"), "init_from": str(encoder), "dataset": f"d_{scale}",
                     "init_sha256": file_sha256(encoder),
                     "label_ratio": 0.1, "method": "s2dc", "task": "segmentation", "score": {"key": "dice_mean"},
                     "history": [{"step": 1, "dice_mean": 0.5}]})
    with pytest.raises(ValueError, match=r"quick/CT/s2dc/encoder.pt' and '.*paper/CT/s2dc/encoder.pt'.*CT_s2dc.tsv"):
        curve_tables(runs)
    assert set(curve_tables(runs[:1])) == {"pretrain_loss/CT_s2dc.tsv", "train_loss/d_quick.tsv", "val_score/d_quick.tsv"}


def test_a_pretraining_curve_is_taken_only_from_the_encoder_its_runs_recorded(tmp_path, monkeypatch, capsys):
    """Runs started from ``enc.pt`` (a path relative to where they ran) drawn from another folder: the curve of
    whatever ``dvclive/`` lay there was taken as their pretraining's. Now the encoder must be at ``init_from`` with the
    SHA-256 the runs recorded, or the runs are drawn without a pretraining curve and the command says why; the
    encoder's own curve is named after its file (``pretrain_loss/enc.tsv``, not ``_.tsv``)."""
    from s2dc.report.curves import curve_tables

    ran = tmp_path / "ran"  # where the fine-tuning ran, its encoder and the encoder's curve beside it
    (ran / "dvclive/plots/metrics/pretrain").mkdir(parents=True)
    (ran / "dvclive/plots/metrics/pretrain/loss.tsv").write_text("step\tloss\n1\t5.0\n")
    (ran / "enc.pt").write_bytes(b"the encoder")
    ft = tmp_path / "ft"
    (ft / "dvclive/plots/metrics/train").mkdir(parents=True)
    (ft / "dvclive/plots/metrics/train/loss.tsv").write_text("step\tloss\n1\t0.5\n")
    run = {"_path": str(ft / "metrics.json"), "init_from": "enc.pt", "init_sha256": file_sha256(ran / "enc.pt"),
           "dataset": "d", "label_ratio": 0.1, "method": "s2dc", "task": "segmentation",
           "score": {"key": "dice_mean"}, "history": [{"step": 1, "dice_mean": 0.5}]}
    elsewhere = tmp_path / "elsewhere"  # another folder with a dvclive/ of its own, and no enc.pt
    (elsewhere / "dvclive/plots/metrics/pretrain").mkdir(parents=True)
    (elsewhere / "dvclive/plots/metrics/pretrain/loss.tsv").write_text("step\tloss\n1\t123.0\n")
    for folder in (elsewhere, ran):
        monkeypatch.chdir(folder)
        capsys.readouterr()
        tables = curve_tables([run])
        if folder == ran:
            assert tables["pretrain_loss/enc.tsv"]["loss"].tolist() == [5.0]
        else:
            assert not [t for t in tables if t.startswith("pretrain_loss/")], tables
            assert "'enc.pt' is not the encoder its runs started from" in capsys.readouterr().err
    (ran / "enc.pt").write_bytes(b"another encoder under its name")  # the file changed since the runs
    assert not [t for t in curve_tables([run]) if t.startswith("pretrain_loss/")]


@pytest.mark.parametrize("name", ["../../escaped", "MSD/Spleen", "..", "a\\b"])
def test_a_dataset_name_that_is_no_plain_name_is_refused_before_anything_is_written(tmp_path, capsys, name):
    """A metrics.json whose dataset is ``../../escaped`` made `s2dc plots` write ``per_class/../../escaped.png``
    outside its folder, over a user's file. The tables and plots refuse it, naming the file and the key, and write
    nothing."""
    path = write_run(tmp_path, "s2dc", 0, 0.5, dataset=name)
    (tmp_path / "escaped.png").write_text("a user's file")
    for argv in (["plots", str(path), "--figures", str(tmp_path / "out/f/g"), "--curves", str(tmp_path / "out/c")],
                 ["report", str(path), "--out", str(tmp_path / "out/r")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"bad metrics file '{path}': dataset is {name!r}" in err, err
    assert (tmp_path / "escaped.png").read_text() == "a user's file" and not (tmp_path / "out").exists()


def test_an_ablation_order_within_the_seed_noise_is_said_to_be_unresolved(tmp_path):
    """Means 1.0 and 1.5 with seed std 0.71 each: their gap (0.5) is below the noise, so the order is not resolved."""
    files = [write_run(tmp_path, m, s, v, dataset="btcv", ratio=0.2)
             for m, values in {"lg": [0.005, 0.015], "s2dc": [0.010, 0.020]}.items() for s, v in enumerate(values)]
    assert main(["ablation-table", *map(str, files), "--terms", "lg=global:dual_softmax",
                 "s2dc=global+p2p+p2s:dual_softmax", "--out", str(tmp_path / "out")]) == 0
    table = (tmp_path / "out" / "ablation.md").read_text()
    assert "0 of 1 step of our order beyond its seed spread (not resolved" in table
    assert json.loads((tmp_path / "out" / "ablation.json").read_text())["btcv"]["ordering"]["resolved"] is False


def test_an_ablation_lead_within_its_own_seed_std_is_not_resolved_by_zero_std_floor_variants(tmp_path):
    """The committed AutoPET twin's case: three variants at 0 Dice on both seeds and one whose lead is a single seed
    at 0.019 %. Its lead (0.0095) is below its own seed std (0.0134): one seed leaving the floor orders nothing,
    and the floor variants are tied. Averaging the stds with the floor variants' zeros (0.0034) must not call the
    lead resolved: 0 of 3 steps."""
    values = {"lg": [0.0, 0.0], "lg_p2p": [0.0, 0.00019], "lg_p2s": [0.0, 0.0], "s2dc": [0.0, 0.0]}
    files = [write_run(tmp_path, m, s, v, dataset="autopet", ratio=0.2)
             for m, seeds in values.items() for s, v in enumerate(seeds)]
    terms = ["lg=global:dual_softmax", "lg_p2p=global+p2p:dual_softmax", "lg_p2s=global+p2s:dual_softmax",
             "s2dc=global+p2p+p2s:dual_softmax"]
    assert main(["ablation-table", *map(str, files), "--terms", *terms, "--out", str(tmp_path / "out")]) == 0
    order = json.loads((tmp_path / "out" / "ablation.json").read_text())["autopet"]["ordering"]
    assert order["ours"] == [["lg_p2p"], ["lg", "lg_p2s", "s2dc"]] and order["resolved"] is False
    assert (order["steps"], order["steps_resolved"]) == (3, 0)
    table = (tmp_path / "out" / "ablation.md").read_text()
    assert ("0 of 3 steps of our order beyond its seed spread (not resolved: every step within the "
            "seeds’ noise)") in table, table


ABLATION_TERMS = {"lg": "global:dual_softmax", "lg_p2p": "global+p2p:dual_softmax", "lg_p2s": "global+p2s:dual_softmax",
                  "s2dc": "global+p2p+p2s:dual_softmax", "sinkhorn": "global+p2p+p2s:sinkhorn"}


def two_seeds(mean, std):
    """Two seeds' Dice (a fraction) whose mean and sample std, in %, are ``mean`` and ``std``: mean ± std/√2."""
    return [(mean - std / math.sqrt(2)) / 100, (mean + std / math.sqrt(2)) / 100]


def ablation_ordering(tmp_path, dice, dataset="btcv"):
    """`s2dc ablation-table` of runs with these Dice per seed per variant: the dataset's ordering in ablation.json
    and its line in ablation.md."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    files = [write_run(tmp_path, m, s, v, dataset=dataset, ratio=0.2) for m, seeds in dice.items()
             for s, v in enumerate(seeds)]
    terms = [f"{m}={ABLATION_TERMS[m]}" for m in dice]
    assert main(["ablation-table", *map(str, files), "--terms", *terms, "--out", str(tmp_path / "out")]) == 0
    order = json.loads((tmp_path / "out" / "ablation.json").read_text())[dataset]["ordering"]
    line = next(l for l in (tmp_path / "out" / "ablation.md").read_text().splitlines() if l.startswith(f"- {dataset}"))
    return order, line


def test_the_committed_btcv_ablation_order_is_not_resolved_as_no_step_of_it_is(tmp_path):
    """The committed BTCV twin's table: s2dc 3.67 ± 0.86, lg_p2p 3.61 ± 0.85, lg 3.51 ± 0.61, lg_p2s 1.53 ± 2.12
    (sinkhorn, 3.43 ± 0.57, no poster variant). The range, 3.67 − 1.53 = 2.14, passes the largest std, 2.12, which
    called it resolved; step by step no gap passes the larger std of its two variants: 0.06 < 0.86, 0.10 < 0.85,
    1.98 < 2.12. Not resolved, 0 of 3 steps."""
    stats = {"lg": (3.51, 0.61), "lg_p2p": (3.61, 0.85), "lg_p2s": (1.53, 2.12), "s2dc": (3.67, 0.86),
             "sinkhorn": (3.43, 0.57)}
    order, line = ablation_ordering(tmp_path, {m: two_seeds(*ms) for m, ms in stats.items()})
    assert order["ours"] == [["s2dc"], ["lg_p2p"], ["lg"], ["lg_p2s"]] and order["resolved"] is False
    assert (order["steps"], order["steps_resolved"]) == (3, 0)
    assert set(order) == {"ours", "poster", "kendall_tau", "same_best", "steps", "steps_resolved", "one_seed",
                          "resolved"} and order["one_seed"] == []
    assert line.endswith("same best: yes; 0 of 3 steps of our order beyond its seed spread "
                         "(not resolved: every step within the seeds’ noise)"), line


def test_an_ablation_order_whose_every_gap_passes_both_stds_is_resolved(tmp_path):
    """s2dc 40 ± 1, lg_p2s 30 ± 2, lg_p2p 20 ± 1.5, lg 10 ± 2: each gap, 10, passes both stds (at most 2)."""
    stats = {"lg": (10, 2), "lg_p2p": (20, 1.5), "lg_p2s": (30, 2), "s2dc": (40, 1)}
    order, line = ablation_ordering(tmp_path, {m: two_seeds(*ms) for m, ms in stats.items()})
    assert order["ours"] == [["s2dc"], ["lg_p2s"], ["lg_p2p"], ["lg"]]
    assert (order["steps"], order["steps_resolved"], order["resolved"]) == (3, 3, True)
    assert line.endswith("; 3 of 3 steps of our order beyond its seed spread"), line


def test_one_step_within_the_seed_noise_leaves_a_wide_ablation_order_unresolved(tmp_path):
    """s2dc 40 ± 1, lg_p2s 39.5 ± 1, lg_p2p 20 ± 1, lg 10 ± 1: the range (30) is far beyond every std, but the top
    step's gap, 0.5, is within its variants' std of 1: 2 of 3 steps, not resolved."""
    stats = {"lg": (10, 1), "lg_p2p": (20, 1), "lg_p2s": (39.5, 1), "s2dc": (40, 1)}
    order, line = ablation_ordering(tmp_path, {m: two_seeds(*ms) for m, ms in stats.items()})
    assert order["resolved"] is False and (order["steps"], order["steps_resolved"]) == (3, 2)
    assert line.endswith("; 2 of 3 steps of our order beyond its seed spread "
                         "(not resolved: 1 within the seeds’ noise)"), line


def test_ablation_means_equal_but_for_rounding_are_a_tie_not_a_resolved_step(tmp_path):
    """lg at 30 % on both seeds, s2dc at 100 · (0.1 + 0.2) = 30.000000000000004 %, both with std 0: their gap
    (3.6e-15) passes the stds (0) by rounding alone, which is a tie; lg_p2s at 50 ± 0 is a step above them."""
    two = ablation_ordering(tmp_path / "two", {"lg": [0.3, 0.3], "s2dc": [0.1 + 0.2, 0.1 + 0.2]})
    three = ablation_ordering(tmp_path / "three", {"lg": [0.3, 0.3], "lg_p2s": [0.5, 0.5],
                                                  "s2dc": [0.1 + 0.2, 0.1 + 0.2]})
    assert 0 < 100 * (0.1 + 0.2) - 100 * 0.3 < 1e-9  # the runs' scores differ, by rounding
    assert two[0]["ours"] == [["s2dc", "lg"]] and three[0]["ours"] == [["lg_p2s"], ["s2dc", "lg"]]  # a tie
    assert two[0]["resolved"] is False and three[0]["resolved"] is False
    assert [(o["steps"], o["steps_resolved"], o["resolved"]) for o, _ in (two, three)] == [(1, 0, False), (2, 1, False)]
    assert two[1].endswith("; 0 of 1 step of our order beyond its seed spread "
                           "(not resolved: every step within the seeds’ noise)"), two[1]


def test_one_seed_variants_leave_their_ablation_steps_unresolved(tmp_path):
    """s2dc at 81, lg_p2s at 50, lg at 11 on one seed each (the arms hold the same seeds): gaps of 31 and 39, but no
    seed std to weigh them against, so neither step is resolved: 0 of 2, and the text says why."""
    order, line = ablation_ordering(tmp_path, {"lg": [0.11], "lg_p2s": [0.50], "s2dc": [0.81]})
    assert order["ours"] == [["s2dc"], ["lg_p2s"], ["lg"]] and order["one_seed"] == ["s2dc", "lg_p2s", "lg"]
    assert (order["steps"], order["steps_resolved"], order["resolved"]) == (2, 0, False)
    assert line.endswith("; 0 of 2 steps of our order beyond its seed spread "
                         "(not resolved: a variant has one seed, so no seed std)"), line


def test_an_ablation_step_carried_by_one_seed_is_not_resolved(tmp_path):
    """The seeds pair the variants (one labelled subset and one new-layer init per seed), as they pair the benchmark's
    arms: s2dc at 13.17 / 18.83 % (16.00 ± 4.00), lg at 12.83 / 7.17 % (10.00 ± 4.00). The gap, 6.00, passes both
    stds, but seed by seed s2dc leads by 0.34 and by 11.66, whose std is 8.01: the step is within the seeds' noise."""
    import statistics

    dice = {"lg": [0.1283, 0.0717], "s2dc": [0.1317, 0.1883]}
    leads = [100 * (a - b) for a, b in zip(dice["s2dc"], dice["lg"])]
    assert statistics.stdev(leads) == pytest.approx(8.01, abs=0.01) and statistics.mean(leads) == pytest.approx(6.0)
    order, line = ablation_ordering(tmp_path, dice)
    assert order["ours"] == [["s2dc"], ["lg"]] and (order["steps"], order["steps_resolved"]) == (1, 0)
    assert order["resolved"] is False
    assert line.endswith("; 0 of 1 step of our order beyond its seed spread (not resolved: every step within the "
                         "seeds’ noise)"), line


def test_the_label_ratio_curve_joins_each_methods_ratios_with_their_seed_spread(tmp_path):
    """label_ratio.png's panel holds one line per method through its label ratios (x in %), at the mean over seeds
    with the sample std as error bars, computed here by hand from the runs."""
    from s2dc.report.figures import label_ratio_figure, summary
    from s2dc.report.runs import read_runs

    dice = {("scratch", 0.1): [0.20, 0.30], ("scratch", 1.0): [0.60, 0.64], ("s2dc", 0.1): [0.30, 0.34],
            ("s2dc", 1.0): [0.70, 0.80]}
    files = [write_run(tmp_path, m, s, d, ratio=r) for (m, r), ds in dice.items() for s, d in enumerate(ds)]
    fig = label_ratio_figure(summary(read_runs(files)[1]))
    panel = fig.axes[0]
    assert panel.get_title() == "synthetic_btcv"
    lines = {c.get_label(): c for c in panel.containers}  # one errorbar container per method
    for method in ("scratch", "s2dc"):
        xs, ys = lines[method].lines[0].get_data()
        assert list(xs) == [10.0, 100.0]
        want = [statistics.mean(100 * d for d in dice[(method, r)]) for r in (0.1, 1.0)]
        assert list(ys) == pytest.approx(want)
        (bars,) = lines[method].lines[2]
        spans = [seg[1][1] - seg[0][1] for seg in bars.get_segments()]
        assert spans == pytest.approx([2 * statistics.stdev(100 * d for d in dice[(method, r)]) for r in (0.1, 1.0)])


def test_the_label_ratio_panel_draws_the_posters_numbers_on_our_axis_and_keeps_equal_points_apart(tmp_path):
    """The poster's numbers (real data) stood on a second y-axis of their own range: our 2 % Dice on BTCV sat on the
    poster's 84 %, and a reader saw agreement where there is an 80-point gap. Now one axis per panel holds both (its
    limits span our means and the poster's), the two are labelled apart, two methods of the same score are drawn
    side by side (not one hidden behind the other), and a run of one label ratio says so."""
    from s2dc.report.figures import label_ratio_figure, summary
    from s2dc.report.runs import read_runs

    files = [write_run(tmp_path, m, s, 0.02, ratio=0.2) for m in ("scratch", "s2dc") for s in range(2)]
    fig = label_ratio_figure(summary(read_runs(files)[1]))
    fig.canvas.draw()
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == 1  # no twin axis beside the panel
    (panel,) = panels
    ours = [c.lines[0] for c in panel.containers]
    poster = [line for line in panel.get_lines() if "poster" in line.get_label()]
    assert [list(line.get_ydata()) for line in ours] == [[pytest.approx(2.0)]] * 2
    assert poster and list(poster[0].get_ydata()) == [pytest.approx(84.14)]  # poster Table 2, BTCV s2dc at 100 %
    low, high = panel.get_ylim()
    assert low <= 2.0 and high >= 84.14
    labels = [text.get_text() for text in fig.legends[0].get_texts()]
    assert any("poster (real data)" in label for label in labels) and any("this run" in label for label in labels)
    shown = [tuple(line.get_transform().transform(line.get_xydata())[0]) for line in ours]
    assert abs(shown[0][0] - shown[1][0]) >= 4  # pixels apart: scratch is not hidden behind s2dc
    assert list(ours[0].get_xdata()) == [20.0]  # the data stay at 20 %: only the drawing is dodged
    assert "one label ratio (20%)" in fig._suptitle.get_text()


def test_a_class_absent_from_the_validation_cases_is_left_out_not_an_error(tmp_path):
    """A fine-tuning run records a class that no validation case holds (and a classification's AUC with one class
    in its validation cases) as null: the runs are read without it, the scored classes and metrics kept."""
    from s2dc.report.runs import read_runs

    seg = write_run(tmp_path, "s2dc", 0, 0.5)
    doc = json.loads(seg.read_text())
    seg.write_text(json.dumps(sealed({**doc, "dice_per_class": {"bright": 0.5, "dark": None}})))
    cls = tmp_path / "cls.json"
    cls.write_text(json.dumps(sealed({"task": "classification", "dataset": "synthetic_adni", "method": "s2dc",
                               "label_ratio": 0.1, "seed": 0, "accuracy": 0.75, "auc": None, "train_cases": 3,
                               "seconds": 1.0, "score": {"key": "accuracy", "name": "accuracy", "value": 75.0},
                               "history": [], "code": CODE})))
    _, rows = read_runs([seg, cls])
    got = {(r.dataset, r.metric): r.value for r in rows.itertuples()}
    assert got == {("synthetic_btcv", "Dice %"): 50.0, ("synthetic_btcv", "Dice % bright"): 50.0,
                   ("synthetic_adni", "accuracy %"): 75.0}


def test_the_seeds_of_a_row_started_from_other_encoders_are_told_apart_by_the_files_content(tmp_path, capsys):
    """`init_from` is the path as typed: one path overwritten by another export between two seeds (CT, then MRI)
    was averaged as one row, exit 0, and one file named by two paths was refused. metrics.json records the encoder
    file's SHA-256 (`init_sha256`), and the seeds of a row must share it, whatever the paths."""
    ct = {"init_from": "exp/enc.pt", "init_sha256": "c" * 64}
    mri = {"init_from": "exp/enc.pt", "init_sha256": "a" * 64}
    a, b = write_run(tmp_path, "s2dc", 0, 0.2, **ct), write_run(tmp_path, "s2dc", 1, 0.4, **mri)
    out = tmp_path / "out"
    assert main(["report", "--out", str(out), str(a), str(b)]) == 2
    assert "differ in init_sha256" in capsys.readouterr().err and not out.exists()
    same = write_run(tmp_path, "s2dc", 1, 0.4, name="same.json", **{**ct, "init_from": "/elsewhere/enc.pt"})
    assert main(["report", "--out", str(out), str(a), str(same)]) == 0


def test_a_run_counts_once_and_a_row_holds_seeds_of_one_setting(tmp_path, capsys):
    """A seed given twice (the same file, or a copy), two label ratios that name one percent, and seeds of one row
    run with other settings (another scale's cases and encoder) are refused by every table and figure command,
    naming the files, before anything is written: averaging them prints a number no experiment gave."""
    a, b = write_run(tmp_path, "s2dc", 0, 0.2), write_run(tmp_path, "s2dc", 1, 0.4)
    copy = write_run(tmp_path, "s2dc", 1, 0.4, name="copy.json")
    near = write_run(tmp_path, "s2dc", 2, 0.3, ratio=0.104, name="near.json")
    other = write_run(tmp_path, "s2dc", 2, 0.6, name="other.json", train_cases=15, init_from="results/quick/CT.pt")
    terms = ["--terms", "s2dc=global+p2p+p2s:dual_softmax"]
    cases = {(a, b, copy): f"'{b}' and '{copy}' are both seed 1 of s2dc on synthetic_btcv at 10 % labels",
             (a, b, b): f"'{b}' and '{b}' are both seed 1",
             (a, b, near): f"label ratios 0.1 ('{a}') and 0.104 ('{near}') of synthetic_btcv both round to 10 %",
             (a, b, other): f"the seeds of s2dc on synthetic_btcv at 10 % labels differ in train_cases ('{a}': 3, "
                            f"'{other}': 15)"}
    for files, message in cases.items():
        out = tmp_path / "out"
        for command in (["report", "--out", str(out)], ["plots", "--figures", str(out), "--curves", str(out)],
                        ["ablation-table", *terms, "--out", str(out)]):
            assert main([*command, *map(str, files)]) == 2, (command, files)
            assert message in capsys.readouterr().err, (command, message)
            assert not out.exists()


def test_a_score_that_is_not_finite_or_missing_is_refused_naming_the_key(tmp_path, capsys):
    """metrics.json with a NaN or infinite score, a null accuracy as the score, or (for the curves) no validation
    history: exit 2 naming the file and the key; never a row whose seeds column counts a run it did not average."""
    good = write_run(tmp_path, "s2dc", 0, 0.2)
    nan = write_run(tmp_path, "s2dc", 1, float("nan"))  # json.dumps writes NaN
    inf = write_run(tmp_path, "s2dc", 1, float("inf"), name="inf.json")
    for bad, key in ((nan, "score.value is nan"), (inf, "score.value is inf")):
        for command in (["report", "--out", str(tmp_path / "out")],
                        ["plots", "--figures", str(tmp_path / "f"), "--curves", str(tmp_path / "c")],
                        ["ablation-table", "--terms", "s2dc=global+p2p+p2s:dual_softmax", "--out", str(tmp_path / "o")]):
            assert main([*command, str(good), str(bad)]) == 2
            assert f"bad metrics file '{bad}': {key}; expected a finite number" in capsys.readouterr().err
    no_history = write_run(tmp_path, "s2dc", 1, 0.3, name="nohist.json")
    doc = json.loads(no_history.read_text())
    del doc["history"]
    no_history.write_text(json.dumps(sealed(doc)))
    assert main(["report", "--out", str(tmp_path / "out"), str(good), str(no_history)]) == 0  # the table needs none
    assert main(["plots", "--figures", str(tmp_path / "f"), "--curves", str(tmp_path / "c"), str(good),
                 str(no_history)]) == 2
    assert f"bad metrics file '{no_history}': history is None" in capsys.readouterr().err
    assert not (tmp_path / "f").exists() and not (tmp_path / "c").exists()


def test_the_tables_never_overwrite_an_input_or_a_users_file(tmp_path, capsys):
    """--out may be any folder: a run's own metrics.json, a user's notes named benchmark.md or ablation.md, and a
    hand-made curve table are refused before anything is written; a file as --out is a clear error; the commands'
    own outputs are replaced on a rerun."""
    run = tmp_path / "run"
    run.mkdir()
    a, b = write_run(run, "s2dc", 0, 0.2, name="metrics.json"), write_run(tmp_path, "s2dc", 1, 0.4)
    (run / "dvclive/plots/metrics/train").mkdir(parents=True)
    (run / "dvclive/plots/metrics/train/loss.tsv").write_text("step\tloss\n1\t2.0\n")
    before = a.read_bytes()
    assert main(["report", "--out", str(run), str(a), str(b)]) == 2
    assert f"'{a}' exists and is not the metrics.json s2dc writes" in capsys.readouterr().err
    assert a.read_bytes() == before and sorted(p.name for p in run.iterdir()) == ["dvclive", "metrics.json"]
    notes = tmp_path / "notes"
    notes.mkdir()
    for name in ("benchmark.md", "ablation.md"):
        (notes / name).write_text("# my own notes\n")
    assert main(["report", "--out", str(notes), str(a), str(b)]) == 2
    assert main(["ablation-table", "--terms", "s2dc=global+p2p+p2s:dual_softmax", "--out", str(notes), str(a),
                 str(b)]) == 2
    assert sorted(p.name for p in notes.iterdir()) == ["ablation.md", "benchmark.md"]
    assert {(notes / n).read_text() for n in ("benchmark.md", "ablation.md")} == {"# my own notes\n"}
    capsys.readouterr()
    for option in ("--out", "--figures"):
        command = ["report", "--out"] if option == "--out" else ["plots", "--curves", str(tmp_path / "c"), "--figures"]
        assert main([*command, str(notes / "benchmark.md"), str(a)]) == 2
        assert f"{option} '{notes / 'benchmark.md'}' is a file, expected a folder" in capsys.readouterr().err
    out = tmp_path / "out"
    for _ in range(2):  # its own files: replaced
        assert main(["report", "--out", str(out), str(a), str(b)]) == 0
        assert main(["ablation-table", "--terms", "s2dc=global+p2p+p2s:dual_softmax", "--out", str(out), str(a),
                     str(b)]) == 0
    curves = tmp_path / "curves"
    (curves / "train_loss").mkdir(parents=True)
    (curves / "train_loss/synthetic_btcv.tsv").write_text("my hand-made loss table\n")
    (b.parent / "dvclive/plots/metrics/train").mkdir(parents=True)
    (b.parent / "dvclive/plots/metrics/train/loss.tsv").write_text("step\tloss\n1\t3.0\n")
    assert main(["plots", "--figures", str(tmp_path / "figs"), "--curves", str(curves), str(a), str(b)]) == 2
    assert "exists and is not a curve table s2dc wrote" in capsys.readouterr().err
    assert (curves / "train_loss/synthetic_btcv.tsv").read_text() == "my hand-made loss table\n"
    assert not (tmp_path / "figs").exists()  # nothing drawn before the refusal


def test_the_ablation_compares_one_label_ratio_and_takes_the_posters_row_by_its_terms(tmp_path, capsys):
    """Runs of a dataset at two label ratios, a --terms item that is no loss term or has two assignments, and a
    variant in --terms without runs are refused naming them; the poster's number is that of the Table 2 row that
    trains with the variant's terms (none for a name of the poster's rows with other terms, none from Table 1);
    one variant the poster prints is no order, so none is called resolved."""
    runs = [write_run(tmp_path, m, 0, v, dataset="btcv", ratio=1.0) for m, v in (("lg", 0.5), ("s2dc", 0.6))]
    mixed = write_run(tmp_path, "lg", 1, 0.9, dataset="btcv", ratio=0.2)
    good = ["lg=global:dual_softmax", "s2dc=global+p2p+p2s:dual_softmax"]
    out = str(tmp_path / "out")
    assert main(["ablation-table", *map(str, runs), str(mixed), "--terms", *good, "--out", out]) == 2
    assert "the ablation compares its variants at one label ratio, but btcv has runs at [0.2, 1.0]" in capsys.readouterr().err
    for item in ("lg=global+p2x:dual_softmax", "lg=global:dual:softmax", "lg=global+global:dual_softmax"):
        assert main(["ablation-table", *map(str, runs), "--terms", item, good[1], "--out", out]) == 2
        assert f"--terms {item!r}: expected VARIANT=TERMS:ASSIGNMENT" in capsys.readouterr().err
    assert main(["ablation-table", *map(str, runs), "--terms", *good, "lg_p2p=global+p2p:dual_softmax",
                 "--out", out]) == 2
    assert "--terms names ['lg_p2p'], of which no metrics file was given" in capsys.readouterr().err
    assert main(["ablation-table", *map(str, runs), "--terms", "lg=global+p2p+p2s:sinkhorn", good[1],
                 "--out", out]) == 0
    table = (tmp_path / "out" / "ablation.md").read_text()
    assert "| lg | L_g + L_p2p + L_p2s | sinkhorn | 50.00 ± — (#2) | — |" in table  # not the poster's L_g row
    assert "| s2dc | L_g + L_p2p + L_p2s | dual_softmax | 60.00 ± — (#1) | 84.14 (#1) |" in table
    assert "- btcv: ours s2dc; poster s2dc; Kendall τ —; same best: yes; one variant, no order to resolve\n" in table
    assert json.loads((tmp_path / "out" / "ablation.json").read_text())["btcv"]["ordering"]["resolved"] is False
    cls = [write_run(tmp_path, "s2dc", s, 0.6, dataset="cc_ccii", ratio=1.0, name=f"cc{s}.json") for s in (0, 1)]
    assert main(["ablation-table", *map(str, cls), "--terms", good[1], "--out", str(tmp_path / "cc")]) == 0
    assert "95.34" not in (tmp_path / "cc" / "ablation.md").read_text()  # Table 1's number is no Table 2 row


def test_one_probe_result_per_dataset_and_encoder_and_no_raw_html(tmp_path, capsys):
    """Two probe files giving one encoder on one dataset (say two stages) are refused naming both (the tables key on
    dataset and encoder); a method name carrying HTML is shown as text on the HTML page, not run."""
    run = write_run(tmp_path, "<img src=x onerror=alert(1)>", 0, 0.5)
    probes = []
    for stage in (2, 3):
        probes.append(tmp_path / f"probe{stage}.json")
        probes[-1].write_text(json.dumps(sealed({"dataset": "synthetic_btcv", "task": "segmentation", "stage": stage,
                                          "metric": "balanced accuracy", "code": CODE,
                                          "encoders": {"s2dc": {"score": 0.4}}})))
    assert main(["report", "--out", str(tmp_path / "out"), str(run), "--probe", *map(str, probes)]) == 2
    assert f"bad probe file '{probes[1]}': '{probes[0]}' gives the s2dc encoder on synthetic_btcv too" in capsys.readouterr().err
    assert main(["report", "--out", str(tmp_path / "out"), str(run)]) == 0
    page = (tmp_path / "out" / "benchmark.html").read_text()
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_variants_with_equal_means_are_shown_tied_not_ordered(tmp_path):
    """Every variant at the same Dice (all at 0, as on a twin none of them learns in the budget) is a tie: the
    ablation prints `lg = s2dc`, names no best, and calls nothing resolved."""
    files = [write_run(tmp_path, m, s, 0.0, dataset="autopet", ratio=0.2) for m in ("lg", "s2dc") for s in (0, 1)]
    assert main(["ablation-table", *map(str, files), "--terms", "lg=global:dual_softmax",
                 "s2dc=global+p2p+p2s:dual_softmax", "--out", str(tmp_path / "out")]) == 0
    table = (tmp_path / "out" / "ablation.md").read_text()
    assert "- autopet: ours lg = s2dc; poster s2dc > lg; Kendall τ —; same best: no;" in table, table
    order = json.loads((tmp_path / "out" / "ablation.json").read_text())["autopet"]["ordering"]
    assert order["ours"] == [["lg", "s2dc"]] and order["same_best"] is False and order["resolved"] is False


def test_a_null_in_the_validation_history_is_left_out_of_the_curve(tmp_path, capsys):
    """A validation step whose score could not be computed is recorded as null: the curve table leaves that step
    out (it was a TypeError traceback after the figures were written)."""
    files = [write_run(tmp_path, "s2dc", s, 0.2 + 0.1 * s, history=[{"step": 1, "dice_mean": None},
                                                                   {"step": 2, "dice_mean": 0.2 + 0.1 * s}])
             for s in (0, 1)]
    (tmp_path / "dvclive/plots/metrics/train").mkdir(parents=True)
    (tmp_path / "dvclive/plots/metrics/train/loss.tsv").write_text("step\tloss\n1\t2.0\n")
    out = tmp_path / "out"
    assert main(["plots", *map(str, files), "--figures", str(out / "f"), "--curves", str(out / "c")]) == 0
    rows = (out / "c/val_score/synthetic_btcv.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["step", "s2dc"] and [r.split("\t")[0] for r in rows[1:]] == ["2"]
    assert float(rows[1].split("\t")[1]) == pytest.approx(25.0)


def test_a_users_table_that_looks_like_a_curve_table_is_never_replaced(tmp_path, capsys):
    """The curve tables are recognised by what `s2dc plots` wrote (their SHA-256 in the folder's record), not by a
    `step` header: a user's step/loss table, or a table of ours the user edited, is refused naming it; our own
    tables are replaced on a rerun, also after a rerun interrupted between writes."""
    files = []
    for method, seed in (("scratch", 0), ("s2dc", 0)):
        run = tmp_path / f"{method}{seed}"
        (run / "dvclive/plots/metrics/train").mkdir(parents=True)
        (run / "dvclive/plots/metrics/train/loss.tsv").write_text("step\tloss\n10\t3.0\n20\t2.0\n")
        files.append(write_run(run, method, seed, 0.3, name="metrics.json"))
    figures, out = tmp_path / "figures", tmp_path / "curves"
    command = ["plots", *map(str, files), "--figures", str(figures), "--curves", str(out)]
    users = out / "train_loss/synthetic_btcv.tsv"
    users.parent.mkdir(parents=True)
    users.write_text("step\tloss\n1\t0.5\n")  # the user's own table, same header shape
    assert main(command) == 2
    assert f"'{users}' exists and is not a curve table s2dc wrote" in capsys.readouterr().err
    assert users.read_text() == "step\tloss\n1\t0.5\n"
    users.unlink()
    assert main(command) == 0 and main(command) == 0  # its own tables: replaced
    val = out / "val_score/synthetic_btcv.tsv"
    val.write_text(val.read_text() + "99\t1\t2\n")  # a table of ours, edited by the user
    assert main(command) == 2
    assert f"'{val}' exists and is not a curve table s2dc wrote" in capsys.readouterr().err
    val.unlink()
    real_replace = os.replace
    calls = []

    def dies_on_the_second_table(src, dst, *args, **kwargs):
        calls.append(dst)
        if str(dst).endswith(".tsv") and sum(str(p).endswith(".tsv") for p in calls) == 2:
            raise KeyboardInterrupt
        real_replace(src, dst, *args, **kwargs)
    os.replace = dies_on_the_second_table
    try:
        for method in ("s2dc", "scratch"):  # a new seed: both tables change; the first is renamed in, the second not
            run = tmp_path / f"{method}1"
            (run / "dvclive/plots/metrics/train").mkdir(parents=True)
            (run / "dvclive/plots/metrics/train/loss.tsv").write_text("step\tloss\n10\t1.0\n20\t0.5\n")
            files.append(write_run(run, method, 1, 0.5, name="metrics.json"))
        command = ["plots", *map(str, files), "--figures", str(figures), "--curves", str(out)]
        with pytest.raises(KeyboardInterrupt):
            main(command)
    finally:
        os.replace = real_replace
    assert main(command) == 0  # the previous tables given back, recorded: replaced


def test_a_posters_number_stands_only_beside_a_row_of_its_task_and_metric(tmp_path):
    """The poster's numbers are CC-CCII *accuracy* (Table 1: S²DC 88.29 at 10 % labels) and BTCV / AutoPET *Dice*
    (Table 2: all three losses 84.14 / 46.47; seed-poster.txt, method.md §7): a row of another task and metric on
    a dataset of that name (a user's segmentation data named cc_ccii, a classification one named btcv) gets none,
    in the benchmark table and in the ablation table."""
    runs = [write_run(tmp_path, "s2dc", 0, 0.5, dataset="cc_ccii", ratio=0.1, name="cc.json"),
            write_run(tmp_path, "s2dc", 0, 0.5, dataset="synthetic_cc_ccii", ratio=0.5, name="cc_twin.json")]
    classification = tmp_path / "btcv_cls.json"
    classification.write_text(json.dumps(sealed({
        "task": "classification", "dataset": "btcv", "method": "s2dc", "label_ratio": 1.0, "seed": 0,
        "accuracy": 0.5, "auc": 0.5, "train_cases": 3, "seconds": 60.0,
        "score": {"key": "accuracy", "name": "accuracy", "value": 50.0}, "history": [{"step": 1, "accuracy": 0.5}],
        "code": CODE})))
    assert main(["report", "--out", str(tmp_path / "out"), *map(str, runs), str(classification)]) == 0
    table = (tmp_path / "out" / "benchmark.md").read_text()
    assert "| cc_ccii | segmentation | Dice | s2dc | 10% | 50.00 ± — | 1 | 3 | — |" in table
    assert "| synthetic_cc_ccii | segmentation | Dice | s2dc | 50% | 50.00 ± — | 1 | 3 | — |" in table
    assert "| btcv | classification | accuracy | s2dc | 100% | 50.00 ± — | 1 | 3 | — |" in table
    rows = table.split("\n\n")[0]  # the table's rows (the poster's numbers are all listed under the averages)
    assert not any(n in rows for n in ("88.29", "93.89", "84.14"))
    assert main(["ablation-table", str(classification), "--terms", "s2dc=global+p2p+p2s:dual_softmax",
                 "--out", str(tmp_path / "ablation")]) == 0
    assert "84.14" not in (tmp_path / "ablation" / "ablation.md").read_text()


def test_the_benchmark_says_which_poster_table_each_number_comes_from(tmp_path):
    """Table 1 prints CC-CCII accuracy at 10/50/100 % of the labels; Table 2 prints BTCV/AutoPET Dice of the loss
    ablation without a label ratio, and its row markers were lost (seed-poster.txt; method.md §7: "this order is our
    reading"). The benchmark's paper column must say so under the table instead of passing a Table 2 number off as
    printed at 100 % labels; a table without a poster number (the quick scale's 20 % rows) has no such note."""
    runs = [write_run(tmp_path, "s2dc", 0, 0.5, dataset="btcv", ratio=1.0, name="btcv.json"),
            write_run(tmp_path, "s2dc", 0, 0.5, dataset="synthetic_btcv", ratio=0.2, name="twin.json")]
    assert main(["report", "--out", str(tmp_path / "out"), *map(str, runs)]) == 0
    table = (tmp_path / "out" / "benchmark.md").read_text()
    assert "| btcv | segmentation | Dice | s2dc | 100% | 50.00 ± — | 1 | 3 | 84.14 |" in table
    note = table.split("| synthetic_btcv |")[1]
    assert "poster Table 2" in note and "no label ratio" in note and "our reading" in note
    assert "poster Table 1" not in note
    assert main(["report", "--out", str(tmp_path / "twin"), str(runs[1])]) == 0
    assert "poster Table" not in (tmp_path / "twin" / "benchmark.md").read_text()


def _task_run(folder, dataset, task, method, seed, value, ratio=0.2, ssim=None):
    """A metrics.json of one fine-tuning run of ``task`` (value: the task's fraction, or PSNR in dB)."""
    key, name, scale = {"segmentation": ("dice_mean", "Dice", 100.0), "classification": ("accuracy", "accuracy", 100.0),
                        "reconstruction": ("psnr", "PSNR dB", 1.0)}[task]
    path = folder / f"{dataset}_{method}_{seed}_{ratio}.json"
    extra = {"ssim": ssim} if ssim is not None else {}
    path.write_text(json.dumps(sealed({"task": task, "dataset": dataset, "method": method, "label_ratio": ratio, "seed": seed,
                                key: value, **extra, "train_cases": 3, "seconds": 1.0,
                                "score": {"key": key, "name": name, "value": scale * value}, "code": CODE})))
    return path


def test_the_benchmark_averages_each_task_and_all_datasets_beside_the_posters_averages(tmp_path, capsys):
    """Per task: the mean over its datasets of each dataset's mean (the task's metric), ± the sample std over seeds of
    the per-seed average; over all datasets: the mean of a score in % (Dice, accuracy, SSIM x 100 for the image
    tasks), beside the poster's ten-dataset averages (scratch 77.93, S²DC 81.43; VoCo 80.65 listed). A method that
    lacks a dataset of a group gets no average for it (it would average other datasets)."""
    runs = {  # dataset, task, method -> per-seed values (ssim for the reconstruction)
        ("btcv", "segmentation", "s2dc"): [0.30, 0.50], ("btcv", "segmentation", "scratch"): [0.20, 0.40],
        ("msd_spleen", "segmentation", "s2dc"): [0.70, 0.90], ("msd_spleen", "segmentation", "scratch"): [0.60, 0.60],
        ("cc_ccii", "classification", "s2dc"): [0.50, 0.70], ("cc_ccii", "classification", "scratch"): [0.40, 0.40],
        ("udpet", "reconstruction", "s2dc"): [30.0, 32.0], ("udpet", "reconstruction", "scratch"): [29.0, 29.0],
    }
    ssim = {"s2dc": [0.80, 0.90], "scratch": [0.70, 0.70]}
    files = [_task_run(tmp_path, d, t, m, s, v, ssim=ssim[m][s] if t == "reconstruction" else None)
             for (d, t, m), values in runs.items() for s, v in enumerate(values)]
    files.append(_task_run(tmp_path, "btcv", "segmentation", "lg", 0, 0.1))  # lg: one dataset of two, one seed
    files.append(_task_run(tmp_path, "btcv", "segmentation", "lg", 1, 0.3))
    out = tmp_path / "out"
    assert main(["report", "--out", str(out), *map(str, files)]) == 0
    nested = json.loads((out / "metrics.json").read_text())["averages"]
    # segmentation, s2dc: seed 0 (30 + 70) / 2 = 50, seed 1 (50 + 90) / 2 = 70 -> 60 ± stdev(50, 70)
    assert nested["segmentation"]["s2dc"]["labels_20%"] == {"mean": 60.0, "std": pytest.approx(statistics.stdev([50, 70]), abs=1e-4),
                                                           "seeds": 2, "datasets": 2}
    assert nested["segmentation"]["scratch"]["labels_20%"]["mean"] == pytest.approx(45.0)
    assert "lg" not in nested["segmentation"]  # btcv only: no average over the task's two datasets
    assert nested["reconstruction"]["s2dc"]["labels_20%"]["mean"] == pytest.approx(31.0)  # its own metric, PSNR dB
    # all datasets, s2dc: seed 0 (30 + 70 + 50 + 80) / 4 = 57.5, seed 1 (50 + 90 + 70 + 90) / 4 = 75
    overall = nested["all datasets"]["s2dc"]["labels_20%"]
    assert overall["mean"] == pytest.approx(66.25) and overall["std"] == pytest.approx(statistics.stdev([57.5, 75.0]), abs=1e-4)
    assert overall["datasets"] == 4
    assert nested["all datasets"]["scratch"]["labels_20%"]["mean"] == pytest.approx((30 + 60 + 40 + 70) / 4)
    text = (out / "benchmark.md").read_text()
    # four datasets are not the poster's ten: its average is not set beside theirs (with `only=` one dataset's was)
    assert "| all datasets | score % (Dice, accuracy, SSIM × 100) | s2dc | 20% | 4 | 66.25 ± 12.37 | — |" in text
    assert "| all datasets | score % (Dice, accuracy, SSIM × 100) | scratch | 20% | 4 | 50.00 ± 3.54 | — |" in text
    assert "| segmentation | Dice | s2dc | 20% | 2 | 60.00 ± 14.14 | — |" in text
    assert "VoCo 80.65" in text and "SwinMM 87.87 / 93.50 / 94.80" in text  # the poster's numbers, all of them
    assert main(["report", "--out", str(out), *map(str, files)]) == 0  # its own metrics.json: replaced on a rerun


def test_the_posters_average_stands_beside_an_average_over_its_ten_datasets_only():
    """The poster averages over its ten datasets (the registry's ``PAPER_AVERAGE_DATASETS``, real or their twins): an
    average over nine of them, or over ten of which one is another dataset (an eleventh added to the registry in place
    of BTCV), is another quantity and has no poster number beside it."""
    import pandas as pd

    from s2dc.data.registry import PAPER_AVERAGE_DATASETS
    from s2dc.report.averages import averages

    def runs(datasets):
        return pd.DataFrame([{"dataset": d, "task": "segmentation", "metric": "Dice", "method": m,
                              "label_ratio": 0.2, "seed": 0, "score": 50.0, "percent": 50.0,
                              "path": f"{d}/{m}/metrics.json", "code": CODE}
                             for d in datasets for m in ("scratch", "s2dc")])

    ten = list(PAPER_AVERAGE_DATASETS)
    assert len(ten) == 10 and "btcv" in ten
    for datasets, poster in ((ten, {"scratch": 77.93, "s2dc": 81.43}),
                             ([f"synthetic_{d}" for d in ten], {"scratch": 77.93, "s2dc": 81.43}),
                             (ten[1:], {}),
                             (["msd_pancreas", *ten[1:]], {}),
                             ([f"d{i}" for i in range(10)], {})):
        overall = averages(runs(datasets)).query("scope == 'all datasets'").set_index("method")["poster"]
        assert {m: v for m, v in overall.items() if v == v} == poster, (datasets, overall)


def test_seeds_of_one_row_fine_tuned_with_other_options_are_refused_naming_the_option(tmp_path, capsys):
    """metrics.json records the options that change a fine-tuning's result: two seeds of one row at other learning
    rates (one rerun after params.yaml changed, under `--rerun-triggers mtime`) are refused naming train.lr, not
    averaged; a file without the record beside one with it is refused too."""
    options = {"train.lr": 0.01, "train.steps": 32, "precision": "fp32"}
    a = write_run(tmp_path, "s2dc", 0, 0.2, options=options)
    b = write_run(tmp_path, "s2dc", 1, 0.4, options={**options, "train.lr": 0.001})
    same = write_run(tmp_path, "s2dc", 1, 0.4, name="same.json", options=dict(options))
    old = write_run(tmp_path, "s2dc", 1, 0.4, name="old.json")
    assert main(["report", "--out", str(tmp_path / "ok"), str(a), str(same)]) == 0
    for files, message in {(a, b): f"differ in train.lr ('{a}': 0.01, '{b}': 0.001)",
                           (a, old): f"differ in the options they record ('{a}': 3 options, '{old}': none)"}.items():
        for command in (["report", "--out", str(tmp_path / "out")],
                        ["plots", "--figures", str(tmp_path / "out"), "--curves", str(tmp_path / "out")]):
            assert main([*command, *map(str, files)]) == 2
            assert message in capsys.readouterr().err
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("item", ["s2dc=global+p2p+p2s:dual_sofmax", "lg=global:hungarian"])
def test_a_terms_assignment_that_is_no_assignment_is_refused_naming_it(item):
    """A misspelt assignment matched no poster row: the poster column went blank with exit 0."""
    from s2dc.report.tables import parse_terms

    with pytest.raises(ValueError, match=rf"--terms '{re.escape(item)}'.*'dual_softmax', 'sinkhorn'"):
        parse_terms([item])
    assert parse_terms(["lg=global:sinkhorn"]) == {"lg": "global:sinkhorn"}


@pytest.mark.parametrize("edit, message", [
    (lambda doc: doc.pop("dice_mean"), "dice_mean is missing; expected a finite number or null"),
    (lambda doc: doc.update(dice_mean="high"), "dice_mean is 'high'; expected a finite number"),
    (lambda doc: doc.update(dice_per_class="x"), "dice_per_class is 'x'; expected {class: Dice}"),
])
def test_the_plots_refuse_a_metrics_file_without_its_tasks_metric_naming_the_key(tmp_path, capsys, edit, message):
    """`s2dc plots` read the task's metrics unchecked: a KeyError or AttributeError traceback, exit 1."""
    good = write_run(tmp_path, "s2dc", 0, 0.2)
    bad = write_run(tmp_path, "s2dc", 1, 0.3)
    doc = json.loads(bad.read_text())
    edit(doc)
    bad.write_text(json.dumps(sealed(doc)))
    assert main(["plots", "--figures", str(tmp_path / "f"), "--curves", str(tmp_path / "c"), str(good), str(bad)]) == 2
    assert f"bad metrics file '{bad}': {message}" in capsys.readouterr().err


def test_the_arms_of_one_comparison_fine_tuned_with_other_settings_are_refused(tmp_path, capsys):
    """S²DC and scratch of one dataset and label ratio are compared (the table's rows side by side, the effect's
    'beyond the seed spread'): arms fine-tuned for other steps, from other cases or with other options are refused
    naming the setting and both files, not compared; arms that differ only in their encoder are the comparison."""
    options = {"train.lr": 0.01, "train.steps": 32, "precision": "fp32"}
    ours = [write_run(tmp_path, "s2dc", s, 0.5 + 0.01 * s, steps=32, options=options) for s in (0, 1)]
    base = [write_run(tmp_path, "scratch", s, 0.2 + 0.01 * s, steps=32, options=options) for s in (0, 1)]
    assert main(["report", "--out", str(tmp_path / "ok"), *map(str, ours + base)]) == 0
    longer = [write_run(tmp_path, "scratch", s, 0.2, name=f"long{s}.json", steps=384, options=options) for s in (0, 1)]
    faster = [write_run(tmp_path, "scratch", s, 0.2, name=f"fast{s}.json", steps=32,
                        options={**options, "train.lr": 0.1}) for s in (0, 1)]
    fewer = [write_run(tmp_path, "scratch", s, 0.2, name=f"few{s}.json", steps=32, options=options,
                       train_cases=2) for s in (0, 1)]
    cases = {tuple(longer): f"differ in steps ('{ours[0]}': 32, '{longer[0]}': 384)",
             tuple(faster): f"differ in train.lr ('{ours[0]}': 0.01, '{faster[0]}': 0.1)",
             tuple(fewer): f"differ in train_cases ('{ours[0]}': 3, '{fewer[0]}': 2)"}
    for other, message in cases.items():
        out = tmp_path / "out"
        for command in (["report", "--out", str(out)], ["plots", "--figures", str(out), "--curves", str(out)]):
            assert main([*command, *map(str, ours + list(other))]) == 2, (command, message)
            err = capsys.readouterr().err
            assert "s2dc and scratch on synthetic_btcv at 10 % labels" in err and message in err, err
            assert not out.exists()


def test_two_label_ratios_of_one_percent_are_refused_across_datasets_too(tmp_path, capsys):
    """The averages over datasets are keyed by the percent of labels: 12.5 % of one dataset and 12 % of another
    both print as 12 %, and one average overwrote the other in metrics.json; refused, naming both files."""
    a = write_run(tmp_path, "s2dc", 0, 0.3, ratio=0.125)
    b = write_run(tmp_path, "s2dc", 0, 0.7, ratio=0.12, dataset="synthetic_msd_spleen", name="spleen.json")
    assert main(["report", "--out", str(tmp_path / "out"), str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert f"label ratios 0.125 ('{a}') and 0.12 ('{b}')" in err and "round to 12 %" in err, err
    assert not (tmp_path / "out").exists()


def probe_doc(**changes) -> dict:
    """A probe result as `s2dc probe voxels random s2dc=...` writes it (segmentation), with ``changes`` applied
    (``{"encoders.s2dc.se": -0.5}``: a dotted key set to the value), and its checksum (``sealed``)."""
    doc = {"source": "d/dataset.json", "dataset": "synthetic_btcv", "task": "segmentation",
           "metric": "balanced accuracy", "stage": 2, "code": CODE, "encoders": {
               name: {"score": score, "balanced_accuracy": score, "se": 0.02, "organ_recall": 0.5, "recall": {},
                      "versus": {other: {"difference": score - s, "se": 0.01}
                                 for other, s in (("voxels", 0.4), ("random", 0.45), ("s2dc", 0.6)) if other != name}}
               for name, score in (("voxels", 0.4), ("random", 0.45), ("s2dc", 0.6))}}
    for key, value in changes.items():
        *parents, last = key.split(".")
        target = doc
        for part in parents:
            target = target[part]
        target[last] = value
    return sealed(doc)


def _refused_by_report_and_plots(tmp_path, capsys, doc, message):
    """``s2dc report`` and ``s2dc plots`` exit 2 on the probe file ``doc``, naming the file and ``message``; nothing
    written."""
    (tmp_path / "run/dvclive/plots/metrics/train").mkdir(parents=True, exist_ok=True)  # the loss curve that `s2dc plots` gathers
    (tmp_path / "run/dvclive/plots/metrics/train/loss.tsv").write_text("step\tloss\n1\t1.0\n")
    run = write_run(tmp_path / "run", "s2dc", 0, 0.5, name="metrics.json")
    probe = tmp_path / "probe.json"
    probe.write_text(json.dumps(sealed(doc)))
    out = tmp_path / "out"
    for command in (["report", "--out", str(out)], ["plots", "--figures", str(out), "--curves", str(out)]):
        assert main([*command, str(run), "--probe", str(probe)]) == 2, command
        err = capsys.readouterr().err
        assert f"bad probe file '{probe}'" in err and message in err, err
        assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("key, value, message", [
    ("encoders.s2dc.versus.random.difference", None, "encoders.s2dc.versus.random.difference is None; expected a "
                                                      "finite number"),
    ("encoders.s2dc.versus.random.difference", "abc", "encoders.s2dc.versus.random.difference is 'abc'"),
    ("encoders.s2dc.versus", ["random", "voxels"], "encoders.s2dc.versus is ['random', 'voxels']; expected an object"),
    ("encoders.s2dc.versus.random", 0.2, "encoders.s2dc.versus.random is 0.2; expected an object"),
    ("encoders.s2dc.versus.voxels.se", -0.01, "encoders.s2dc.versus.voxels.se is -0.01; expected a finite number >= 0"),
    ("encoders.s2dc.versus.voxels.se", "x", "encoders.s2dc.versus.voxels.se is 'x'"),
])
def test_a_malformed_paired_difference_is_refused_naming_the_file_and_key(tmp_path, capsys, key, value, message):
    """A probe file's ``versus`` that is not {baseline: {difference: number, se: number >= 0 or null}} crashed the
    report and the plots with a traceback (exit 1, no file named); refused as a bad probe file naming the key."""
    _refused_by_report_and_plots(tmp_path, capsys, probe_doc(**{key: value}), message)


def test_a_well_formed_paired_difference_without_standard_error_is_read(tmp_path):
    run = write_run(tmp_path, "s2dc", 0, 0.5)
    probe = tmp_path / "probe.json"
    probe.write_text(json.dumps(probe_doc(**{"encoders.s2dc.versus.random.se": None})))
    assert main(["report", "--out", str(tmp_path / "out"), str(run), "--probe", str(probe)]) == 0


@pytest.mark.parametrize("key, value, message", [
    ("encoders.s2dc.score", 1.7, "encoders.s2dc.score is 1.7; expected a balanced accuracy in [0, 1]"),
    ("encoders.s2dc.score", -0.1, "encoders.s2dc.score is -0.1; expected a balanced accuracy in [0, 1]"),
    ("encoders.s2dc.se", -0.5, "encoders.s2dc.se is -0.5; expected a finite number >= 0 or null"),
    ("encoders.s2dc.se", float("nan"), "encoders.s2dc.se is nan; expected a finite number >= 0 or null"),
    ("encoders.s2dc.versus.random.difference", 1.5, "encoders.s2dc.versus.random.difference is 1.5; expected a "
                                                    "difference of balanced accuracies in [-1, 1]"),
    ("metric", "R²", "metric is 'R²'; a segmentation probe is scored by 'balanced accuracy'"),
    ("task", "nonsense", "task is 'nonsense'; expected one of"),
    ("stage", 99, "stage is 99; expected a Swin stage 0..4"),
    ("stage", "2", "stage is '2'; expected a Swin stage 0..4"),
    ("encoders.s2dc.organ_recall", 1.2, "encoders.s2dc.organ_recall is 1.2; expected a recall in [0, 1] or null"),
])
def test_impossible_probe_values_are_refused_naming_the_file_and_key(tmp_path, capsys, key, value, message):
    """A balanced accuracy outside [0, 1] (shown as 170 %), a negative or NaN standard error, a segmentation file
    scored by R², a stage outside 0..4: refused as a bad probe file naming the key."""
    _refused_by_report_and_plots(tmp_path, capsys, probe_doc(**{key: value}), message)


@pytest.mark.parametrize("task", ["reconstruction", "translation"])
def test_r2_probes_may_be_negative_but_not_above_one(tmp_path, capsys, task):
    """R² of a regression probe may be below 0 (worse than the mean) but never above 1; its task's metric is R²."""
    doc = probe_doc(task=task, metric="R²", dataset="synthetic_udpet",  # not the segmentation run's dataset
                    **{"encoders.s2dc.score": -3.5, "encoders.s2dc.versus.random.difference": -4.0})
    run = write_run(tmp_path, "s2dc", 0, 0.5)
    (tmp_path / "ok.json").write_text(json.dumps(sealed(doc)))
    assert main(["report", "--out", str(tmp_path / "ok"), str(run), "--probe", str(tmp_path / "ok.json")]) == 0
    _refused_by_report_and_plots(tmp_path, capsys, probe_doc(task=task, metric="R²", **{"encoders.s2dc.score": 1.2}),
                                 "encoders.s2dc.score is 1.2; expected an R² <= 1")
    _refused_by_report_and_plots(tmp_path, capsys, probe_doc(task=task), f"metric is 'balanced accuracy'; a {task} probe "
                                 "is scored by 'R²'")


def test_a_label_ratio_that_is_no_whole_percent_is_printed_as_it_is(tmp_path):
    """12.5 % of the labels (0.125) is shown as 12.5 %, not rounded to 12 % (Python's '.0%' rounds half to even), in
    the table, the averages and metrics.json's keys; a whole percent stays '20%'."""
    files = [write_run(tmp_path, m, s, d, ratio=0.125) for m, values in {"scratch": [0.1, 0.2], "s2dc": [0.3, 0.4]}.items()
             for s, d in enumerate(values)]
    files.append(write_run(tmp_path, "s2dc", 0, 0.5, ratio=0.2))
    assert main(["report", "--out", str(tmp_path / "out"), *map(str, files)]) == 0
    text = (tmp_path / "out" / "benchmark.md").read_text()
    assert "| synthetic_btcv | segmentation | Dice | s2dc | 12.5% | 35.00 ± 7.07 | 2 | 3 | — |" in text
    assert "| synthetic_btcv | segmentation | Dice | s2dc | 20% | 50.00 ± — | 1 | 3 | — |" in text
    assert "| segmentation | Dice | s2dc | 12.5% | 1 | 35.00 ± 7.07 | — |" in text
    assert "12%" not in text and "| 13% |" not in text
    nested = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(nested["synthetic_btcv"]["s2dc"]) == {"labels_12.5%", "labels_20%"}
    assert set(nested["averages"]["segmentation"]["s2dc"]) == {"labels_12.5%", "labels_20%"}
    from s2dc.report.runs import ratio_text

    assert [ratio_text(r) for r in (0.125, 0.2, 0.29, 1.0, 0.005, 1 / 3)] == ["12.5%", "20%", "29%", "100%", "0.5%",
                                                                             "33.3333%"]


def test_the_arms_of_one_comparison_fine_tuned_on_other_seeds_are_refused(tmp_path, capsys):
    """Each seed draws its own training cases (split.json) and crops, so S²DC at seed 1 set beside scratch at seed 0
    compares two draws as much as two methods: the report printed "fine-tuning: S²DC − scratch +1.47 Dice", exit 0.
    The arms of one dataset and label ratio must hold the same seeds; the tables and the plots refuse others, naming
    both arms' seeds and a file of each."""
    ours = [write_run(tmp_path, "s2dc", 1, 0.5)]
    base = [write_run(tmp_path, "scratch", s, 0.2) for s in (0,)]
    for command in (["report", "--out", str(tmp_path / "out")],
                    ["plots", "--figures", str(tmp_path / "out"), "--curves", str(tmp_path / "out")]):
        assert main([*command, *map(str, ours + base)]) == 2, command
        err = capsys.readouterr().err
        assert "s2dc and scratch on synthetic_btcv at 10 % labels" in err and "seeds [1]" in err and "[0]" in err, err
        assert str(ours[0]) in err and str(base[0]) in err, err
        assert not (tmp_path / "out").exists()
    both = [*ours, write_run(tmp_path, "s2dc", 0, 0.4), *base, write_run(tmp_path, "scratch", 1, 0.3)]
    assert main(["report", "--out", str(tmp_path / "ok"), *map(str, both)]) == 0


def test_a_probe_of_another_encoder_than_the_runs_started_from_is_refused(tmp_path, capsys):
    """The benchmark sets each dataset's fine-tuned S²DC runs beside the probe's s2dc row (*Does pretraining show?*),
    but a probe result named nothing of the file it read: a probe of another encoder (an earlier export, the student,
    another variant) given by hand as the s2dc row was reported as S²DC's frozen score, exit 0. The probe records each
    encoder file's SHA-256, and the tables and plots refuse a row whose method's runs on that dataset started from
    another file, naming both; a probe that records none is read as before."""
    runs = []
    for method, sha in (("s2dc", "a" * 64), ("scratch", None)):
        (tmp_path / method / "dvclive/plots/metrics/train").mkdir(parents=True)
        (tmp_path / method / "dvclive/plots/metrics/train/loss.tsv").write_text("step\tloss\n1\t3.0\n")
        runs.append(write_run(tmp_path / method, method, 0, 0.5, name="metrics.json", init_sha256=sha))
    same, other, unknown = (tmp_path / f"{name}.json" for name in ("same", "other", "unknown"))
    same.write_text(json.dumps(probe_doc(encoder_sha256={"s2dc": "a" * 64})))
    other.write_text(json.dumps(probe_doc(encoder_sha256={"s2dc": "b" * 64})))
    unknown.write_text(json.dumps(probe_doc()))
    for probe in (same, unknown):
        assert main(["report", "--out", str(tmp_path / probe.stem), *map(str, runs), "--probe", str(probe)]) == 0
    for command in (["report", "--out", str(tmp_path / "out")],
                    ["plots", "--figures", str(tmp_path / "out"), "--curves", str(tmp_path / "out")]):
        assert main([*command, *map(str, runs), "--probe", str(other)]) == 2, command
        err = capsys.readouterr().err
        assert f"'{other}'" in err and f"'{runs[0]}'" in err and "s2dc" in err, err
        assert not (tmp_path / "out").exists()


def test_a_runs_metrics_edited_after_the_run_wrote_them_are_refused(tmp_path, capsys):
    """A run's metrics.json edited by hand (its score raised to 99) is newer than its inputs, so Snakemake kept it and
    the tables printed 99.00 as the run's result, exit 0. A run records the checksum of what it wrote
    (``result_sha256``); the tables and plots refuse a file whose content no longer matches it, naming the file, or
    that records the code that made it (the s2dc of every run they read) but no checksum."""
    from s2dc.train.outputs import result_sha256

    doc = json.loads(write_run(tmp_path, "s2dc", 0, 0.5).read_text())
    ours = tmp_path / "ours.json"
    ours.write_text(json.dumps({**doc, "result_sha256": result_sha256(doc)}))
    assert main(["report", "--out", str(tmp_path / "ok"), str(ours)]) == 0
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps({**json.loads(ours.read_text()), "score": {**doc["score"], "value": 99.0}}))
    for command in (["report", "--out", str(tmp_path / "out")],
                    ["plots", "--figures", str(tmp_path / "out"), "--curves", str(tmp_path / "out")]):
        assert main([*command, str(edited)]) == 2, command
        err = capsys.readouterr().err
        assert f"'{edited}'" in err and "result_sha256 differs" in err, err
    # the edit hidden by deleting the checksum too (the refusal names it): refused, as the code it records says an s2dc
    # that writes one made it
    hidden = tmp_path / "hidden.json"
    written = {k: v for k, v in doc.items() if k != "result_sha256"}
    hidden.write_text(json.dumps({**written, "dice_mean": 0.99, "score": {**doc["score"], "value": 99.0}}))  # consistent
    for command in (["report", "--out", str(tmp_path / "out")],
                    ["plots", "--figures", str(tmp_path / "out"), "--curves", str(tmp_path / "out")]):
        assert main([*command, str(hidden)]) == 2, command
        err = capsys.readouterr().err
        assert f"'{hidden}'" in err and "result_sha256 is missing" in err, err


def test_is_edited_tells_a_result_from_one_changed_after_its_checksum():
    """``is_edited``, the one test of a recorded ``result_sha256`` (metrics.json and probe results alike), and the tables'
    ``edit_found`` on top of it, against a checksum computed here by hand: the SHA-256 of the other keys as sorted,
    default-separated JSON."""
    import hashlib

    from s2dc.train.outputs import edit_found, is_edited

    body = {"seed": 1, "score": {"value": 41.5, "key": "dice"}, "method": "s2dc"}
    text = '{"method": "s2dc", "score": {"key": "dice", "value": 41.5}, "seed": 1}'
    ours = {**body, "result_sha256": hashlib.sha256(text.encode()).hexdigest()}
    assert not is_edited(ours) and not is_edited(body)  # its own checksum; an older file with none
    assert is_edited({**ours, "seed": 2}) and is_edited({**ours, "extra": None})
    assert is_edited({**ours, "result_sha256": "0" * 64})
    # the tables': every s2dc that records the code behind a result (which they require) also records its checksum
    # (result_sha256 since 2026-12-03, code since 2026-12-05): a result with a code and no checksum had it deleted
    coded = {**body, "code": "c0de" * 16}
    assert "result_sha256 is missing" in edit_found(coded) and edit_found(body) is None
    assert "result_sha256 differs" in edit_found({**ours, "seed": 2})
    assert edit_found({**coded, "result_sha256": hashlib.sha256(json.dumps(coded, sort_keys=True).encode()).hexdigest()}) is None


def test_the_per_class_figure_names_each_bar_by_its_class_or_metric(tmp_path):
    """A segmentation's panel: one bar per class and the mean of them, named by the class; a classification's: one
    panel per metric, its bar named by the metric (the 'mean' of a segmentation's panel named the accuracy bar once)."""
    from s2dc.report.figures import per_class_figure, summary
    from s2dc.report.runs import read_runs

    seg = [write_run(tmp_path, m, s, 0.5, dice_per_class={"liver": 0.6, "spleen": 0.4}) for m in ("scratch", "s2dc")
           for s in (0, 1)]
    cls = []
    for method in ("scratch", "s2dc"):
        path = tmp_path / f"cls_{method}.json"
        path.write_text(json.dumps(sealed({"task": "classification", "dataset": "synthetic_adni", "method": method,
                                    "label_ratio": 0.1, "seed": 0, "accuracy": 0.5, "auc": 0.6, "train_cases": 4,
                                    "seconds": 1.0, "score": {"key": "accuracy", "name": "accuracy", "value": 50.0},
                                    "history": [{"step": 1, "accuracy": 0.5}], "code": CODE})))
        cls.append(path)
    table = summary(read_runs(seg + cls)[1])
    ticks = lambda ax: [t.get_text() for t in ax.get_xticklabels()]
    (panel,) = per_class_figure(table, "synthetic_btcv").axes[:1]
    assert ticks(panel) == ["liver", "spleen", "mean"] and panel.get_ylabel() == "Dice %"
    accuracy, auc = per_class_figure(table, "synthetic_adni").axes[:2]
    assert ticks(accuracy) == ["accuracy %"] and ticks(auc) == ["AUC %"] and accuracy.get_ylabel() == "accuracy %"


def test_an_average_over_datasets_with_unequal_seeds_weights_the_datasets_alike():
    """Each dataset's mean first, then their mean: BTCV over three seeds (30, 50, 70: mean 50) and MSD Spleen over one
    (90) average to (50 + 90) / 2 = 70, not to the pooled (30 + 50 + 70 + 90) / 4 = 60 (the other fixtures ran every
    dataset on the same seeds, where the two agree); with no common seeds there is no per-seed spread (seeds 0)."""
    import math

    import pandas as pd

    from s2dc.report.averages import averages

    scores = {"btcv": [30.0, 50.0, 70.0], "msd_spleen": [90.0]}
    runs = pd.DataFrame([{"dataset": d, "task": "segmentation", "metric": "Dice", "method": "s2dc", "label_ratio": 0.2,
                          "seed": seed, "score": value, "percent": value, "path": f"{d}/{seed}", "code": CODE}
                         for d, values in scores.items() for seed, value in enumerate(values)])
    rows = averages(runs).set_index("scope")
    for scope in ("segmentation", "all datasets"):
        assert rows.loc[scope, "mean"] == pytest.approx(70.0), scope
        assert math.isnan(rows.loc[scope, "std"]) and rows.loc[scope, "seeds"] == 0 and rows.loc[scope, "datasets"] == 2
