"""The benchmark table: aggregation over seeds, the paper's numbers, the probe table, bad files."""

from __future__ import annotations

import json
import statistics

import pytest

from s2dc.cli import main


def write_run(folder, method, seed, dice, dataset="synthetic_btcv", ratio=0.1):
    path = folder / f"{method}_{seed}_{ratio}.json"
    path.write_text(json.dumps({"task": "segmentation", "dataset": dataset, "method": method, "label_ratio": ratio,
                                "seed": seed, "dice_mean": dice, "train_cases": 3, "seconds": 60.0,
                                "score": {"key": "dice_mean", "name": "Dice", "value": 100 * dice}}))
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
    assert nested["synthetic_btcv"]["s2dc"]["labels_100%"] == {"mean": 90.0, "std": 0.0, "seeds": 1}
    table = (tmp_path / "out" / "benchmark.md").read_text()
    assert "| synthetic_btcv | segmentation | Dice | s2dc | 100% | 90.00 ± 0.00 | 1 | 3 | 84.14 |" in table  # poster Table 2
    assert "| synthetic_btcv | segmentation | Dice | scratch | 10% | 23.33 ± 15.28 | 3 | 3 | — |" in table
    assert "Frozen-encoder protocol" not in table and "probe" not in nested
    assert "3 rows from 7 runs" in capsys.readouterr().out
    page = (tmp_path / "out" / "benchmark.html").read_text()  # the report's view: the same table as HTML
    assert "<td>synthetic_btcv</td>" in page and "<td>23.33 ± 15.28</td>" in page and page.count("<tr>") == 4


def test_probe_results_become_a_second_table(tmp_path):
    run = write_run(tmp_path, "s2dc", 0, 0.5)
    probe = tmp_path / "probe.json"
    probe.write_text(json.dumps({"dataset": "synthetic_btcv", "task": "segmentation", "metric": "balanced accuracy",
                                 "stage": 2, "encoders": {
        "voxels": {"score": 0.406, "balanced_accuracy": 0.406, "se": 0.021, "organ_recall": 0.375, "recall": {},
                   "structure": {"consistency": 0.9, "inter": 0.8, "discrepancy": 0.2, "ratio": 2.0}},
        "s2dc": {"score": 0.75, "balanced_accuracy": 0.75, "organ_recall": None, "recall": {}}}}))
    regression = tmp_path / "probe_udpet.json"
    regression.write_text(json.dumps({"dataset": "synthetic_udpet", "task": "reconstruction", "metric": "R²",
                                      "stage": 2, "encoders": {"s2dc": {"score": 0.8123}}}))
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
    probe.write_text(json.dumps({"dataset": "btcv", "task": "segmentation", "metric": "balanced accuracy", "stage": 2,
                                 "encoders": {"lg": {"score": 0.5, "structure": {"consistency": 0.5, "inter": 0.4,
                                                                                   "discrepancy": 0.6, "ratio": 1.2}},
                                              "s2dc": {"score": 0.625}}}))
    assert main(["ablation-table", *map(str, files), "--terms", *terms, "--out", str(tmp_path / "out"),
                 "--probe", str(probe)]) == 0
    table = (tmp_path / "out" / "ablation.md").read_text()
    rows = [line.split(" | ")[0].lstrip("| ") for line in table.splitlines() if line.startswith("| ") and "±" in line]
    assert rows == ["lg", "lg_p2p", "lg_p2s", "s2dc", "sinkhorn"]  # the order of --terms; datasets sorted: autopet first
    assert "| lg_p2s | L_g + L_p2s | dual_softmax | — | — | 42.00 ± 2.83 (#1) | 84.02 (#2) |" in table
    assert "| sinkhorn | L_g + L_p2p + L_p2s | sinkhorn | 60.00 ± 0.00 (#1) | — | — | — |" in table
    assert "- btcv: ours lg_p2s > s2dc > lg_p2p > lg; poster s2dc > lg_p2s > lg_p2p > lg; Kendall τ +0.67; same best: no; range of our means 31.00 against a mean seed std of 2.47" in table
    assert "- autopet: ours s2dc > lg; poster s2dc > lg; Kendall τ +1.00; same best: yes; range of our means 45.00" in table
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
    files = []
    for (method, seed), values in losses.items():
        run = tmp_path / f"{method}{seed}"
        (run / "dvclive/plots/metrics/train").mkdir(parents=True)
        (run / "dvclive/plots/metrics/train/loss.tsv").write_text("step\tloss\n" + "".join(
            f"{10 * (i + 1)}\t{v}\n" for i, v in enumerate(values)))
        dice = 0.1 * (seed + 1) + (0.2 if method == "s2dc" else 0.0)
        (run / "metrics.json").write_text(json.dumps({
            "task": "segmentation", "dataset": "synthetic_btcv", "method": method, "label_ratio": 0.2, "seed": seed,
            "dice_mean": dice, "dice_per_class": {"liver": dice, "spleen": 0.0}, "train_cases": 3, "seconds": 1.0,
            "score": {"key": "dice_mean", "name": "Dice", "value": 100 * dice},
            "history": [{"step": 20, "dice_mean": dice}]}))
        files.append(run / "metrics.json")
    out = tmp_path / "out"
    assert main(["plots", *map(str, files), "--figures", str(out / "figures"), "--curves", str(out / "curves")]) == 0
    for png in ("per_class/synthetic_btcv.png", "label_ratio.png"):
        data = (out / "figures" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, png
    loss = (out / "curves/train_loss/synthetic_btcv.tsv").read_text().splitlines()
    assert loss[0].split("\t") == ["step", "scratch", "s2dc"]
    assert [[float(x) for x in line.split("\t")] for line in loss[1:]] == [[10, 3.1, 2.7], [20, 2.2, 1.4]]
    val = (out / "curves/val_score/synthetic_btcv.tsv").read_text().splitlines()
    assert [float(x) for x in val[1].split("\t")] == pytest.approx([20, 15.0, 35.0])
    assert "4 runs -> 2 figures" in capsys.readouterr().out
    assert main(["plots", *map(str, files), "--figures", str(out / "figures"), "--curves", str(out / "curves")]) == 0
    mine = out / "figures/label_ratio.png"  # a user's file where a figure goes is never replaced
    mine.write_bytes(b"\x89PNG\r\n\x1a\n not drawn by s2dc")
    assert main(["plots", *map(str, files), "--figures", str(out / "figures"), "--curves", str(out / "curves")]) == 2
    assert f"'{mine}' exists and is not a figure s2dc drew" in capsys.readouterr().err
    assert mine.read_bytes() == b"\x89PNG\r\n\x1a\n not drawn by s2dc"
    (tmp_path / "s2dc1/dvclive/plots/metrics/train/loss.tsv").unlink()
    assert main(["plots", *map(str, files), "--figures", str(out / "f2"), "--curves", str(out / "c2")]) == 2
    assert f"bad DVCLive curve '{tmp_path / 's2dc1'}/dvclive/plots/metrics/train/loss.tsv'" in capsys.readouterr().err


def test_an_ablation_order_within_the_seed_noise_is_said_to_be_unresolved(tmp_path):
    """Means 1.0 and 1.5 with seed std 0.71 each: the range (0.5) is below the noise, so the order is not resolved."""
    files = [write_run(tmp_path, m, s, v, dataset="btcv", ratio=0.2)
             for m, values in {"lg": [0.005, 0.015], "s2dc": [0.010, 0.020]}.items() for s, v in enumerate(values)]
    assert main(["ablation-table", *map(str, files), "--terms", "lg=global:dual_softmax",
                 "s2dc=global+p2p+p2s:dual_softmax", "--out", str(tmp_path / "out")]) == 0
    table = (tmp_path / "out" / "ablation.md").read_text()
    assert "range of our means 0.50 against a mean seed std of 0.71 (not resolved" in table
    assert json.loads((tmp_path / "out" / "ablation.json").read_text())["btcv"]["ordering"]["resolved"] is False


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


def test_a_class_absent_from_the_validation_cases_is_left_out_not_an_error(tmp_path):
    """A fine-tuning run records a class that no validation case holds (and a classification's AUC with one class
    in its validation cases) as null: the runs are read without it, the scored classes and metrics kept."""
    from s2dc.report.runs import read_runs

    seg = write_run(tmp_path, "s2dc", 0, 0.5)
    doc = json.loads(seg.read_text())
    seg.write_text(json.dumps({**doc, "dice_per_class": {"bright": 0.5, "dark": None}}))
    cls = tmp_path / "cls.json"
    cls.write_text(json.dumps({"task": "classification", "dataset": "synthetic_adni", "method": "s2dc",
                               "label_ratio": 0.1, "seed": 0, "accuracy": 0.75, "auc": None, "train_cases": 3,
                               "score": {"key": "accuracy", "name": "accuracy", "value": 75.0}}))
    _, rows = read_runs([seg, cls])
    got = {(r.dataset, r.metric): r.value for r in rows.itertuples()}
    assert got == {("synthetic_btcv", "Dice %"): 50.0, ("synthetic_btcv", "Dice % bright"): 50.0,
                   ("synthetic_adni", "accuracy %"): 75.0}
