"""Does pretraining show (s2dc.report.effect): each verdict against numbers worked out by hand."""

from __future__ import annotations

import json
import math
import statistics

import pytest
from conftest import CODE, sealed
from test_report import write_run

from s2dc.cli import main
from s2dc.pyplot import is_s2dc_png

#: The counts' words for the fine-tuning spread and the random baseline's standard error.
SPREAD = "seed spread (the largest std of either arm and of their per-seed differences)"
RANDOM = "the random encoder (its ± over the cases and its draws)"

#: Dice per seed: BTCV's S²DC arm ahead by more than either arm's spread, Liver's ahead within it, Lung at one seed.
DICE = {("synthetic_btcv", "s2dc"): [0.40, 0.44], ("synthetic_btcv", "scratch"): [0.20, 0.26],
        ("synthetic_msd_liver", "s2dc"): [0.30, 0.50], ("synthetic_msd_liver", "scratch"): [0.25, 0.35],
        ("synthetic_msd_lung", "s2dc"): [0.10], ("synthetic_msd_lung", "scratch"): [0.05]}


def probe_file(folder, dataset, task, metric, versus, draws=None):
    """An `s2dc probe` result whose S²DC encoder carries the paired ``versus`` {baseline: (difference, se)}, its
    random row each of its ``draws``' score where given (as `s2dc probe` writes the mean of its random encoders)."""
    path = folder / f"probe_{dataset}.json"
    encoders = {name: {"score": 0.5, "se": 0.01} for name in ("voxels", "random")} | {"s2dc": {
        "score": 0.6, "se": 0.01, "versus": {b: {"difference": d, "se": s} for b, (d, s) in versus.items()}}}
    if draws is not None:
        encoders["random"]["draws"] = draws
    path.write_text(json.dumps(sealed({"dataset": dataset, "task": task, "metric": metric, "stage": 2, "code": CODE,
                                "encoders": encoders})))
    return path


def run_folder(folder, method, seed, dice, dataset, ratio):
    """A fine-tuning run's folder: its metrics.json and the DVCLive loss curve that `s2dc plots` gathers."""
    folder.mkdir()
    (folder / "dvclive/plots/metrics/train").mkdir(parents=True)
    (folder / "dvclive/plots/metrics/train/loss.tsv").write_text("step\tloss\n1\t1.0\n")
    return write_run(folder, method, seed, dice, dataset=dataset, ratio=ratio, name="metrics.json")


@pytest.fixture
def benchmark(tmp_path):
    runs = [run_folder(tmp_path / f"{dataset}_{method}_{seed}", method, seed, dice, dataset, 0.2)
            for (dataset, method), values in DICE.items() for seed, dice in enumerate(values)]
    runs.append(run_folder(tmp_path / "all_labels", "s2dc", 0, 0.01, "synthetic_btcv", 1.0))
    probes = [probe_file(tmp_path, "synthetic_btcv", "segmentation", "balanced accuracy",
                         {"random": (0.20, 0.05), "voxels": (0.30, 0.04)}),  # above both, by two s.e.
              probe_file(tmp_path, "synthetic_msd_liver", "segmentation", "balanced accuracy",
                         {"random": (0.05, 0.04), "voxels": (-0.01, 0.03)}),  # below the voxels
              probe_file(tmp_path, "synthetic_udpet", "reconstruction", "R²",
                         {"random": (0.18, 0.01), "voxels": (0.02, 0.015)})]  # above both, not by two s.e.
    return runs, probes


def test_the_verdicts_of_both_protocols(tmp_path, benchmark):
    runs, probes = benchmark
    assert main(["report", "--out", str(tmp_path / "out"), *map(str, runs), "--probe", *map(str, probes)]) == 0
    effect = json.loads((tmp_path / "out" / "metrics.json").read_text())["effect"]

    def spread(dataset):  # the arms' seed stds and that of their per-seed differences
        ours, scratch = (DICE[(dataset, m)] for m in ("s2dc", "scratch"))
        leads = [a - b for a, b in zip(ours, scratch)]
        return 100 * max(statistics.stdev(ours), statistics.stdev(scratch), statistics.stdev(leads))

    # BTCV at 20 % (its 100 % run has no scratch arm): 42 - 23 = +19 Dice points, the larger std 4.24 (scratch's)
    assert effect["synthetic_btcv"]["finetune_difference"] == pytest.approx(19.0, abs=1e-4)
    assert effect["synthetic_btcv"]["finetune_spread"] == pytest.approx(spread("synthetic_btcv"), abs=1e-4)
    assert effect["synthetic_btcv"]["versus_random"] == pytest.approx(20.0) and \
        effect["synthetic_btcv"]["versus_se_voxels"] == pytest.approx(4.0)
    assert effect["synthetic_msd_liver"]["finetune_difference"] == pytest.approx(10.0, abs=1e-4)  # 40 - 30
    assert effect["synthetic_msd_liver"]["finetune_spread"] == pytest.approx(spread("synthetic_msd_liver"), abs=1e-4)
    assert "finetune_spread" not in effect["synthetic_msd_lung"]  # one seed: no spread
    assert (effect["synthetic_btcv"]["finetune_ahead"], effect["synthetic_btcv"]["finetune_behind"]) == (2, 0)
    assert effect["synthetic_udpet"] == {"versus_random": 0.18, "versus_se_random": 0.01, "versus_voxels": 0.02,
                                         "versus_se_voxels": 0.015}  # R² stays a fraction; no fine-tuning runs

    table = (tmp_path / "out" / "benchmark.md").read_text()
    assert "| synthetic_btcv | segmentation | +19.00 Dice | 20% | 4.24 | yes | 2 / 0 of 2 | +20.0 ± 5.0 | +30.0 ± 4.0 " \
           "| yes, by 2 s.e. |" in table
    assert "| synthetic_msd_liver | segmentation | +10.00 Dice | 20% | 14.14 | no | 2 / 0 of 2 | +5.0 ± 4.0 | -1.0 ± " \
           "3.0 | no |" in table
    assert "| synthetic_msd_lung | segmentation | +5.00 Dice | 20% | — | — | 1 / 0 of 1 | — | — | — |" in table
    assert "| synthetic_udpet | reconstruction | — | — | — | — | — | +0.180 ± 0.010 | +0.020 ± 0.015 | yes, within 2 " \
           "s.e. |" in table
    assert ("Over the 3 segmentation and classification datasets: fine-tuned, S²DC above scratch by more than the "
            f"{SPREAD} on 1 of 2 with a spread, below it on 0; frozen, above both {RANDOM} and the voxels by two "
            "standard errors on 1 of 2 probed (point estimates above both on 1).") in table
    assert f"Over all 4 datasets: fine-tuned, S²DC above scratch by more than the {SPREAD} on 1 of 2 with a " \
           f"spread, below it on 0; frozen, above both {RANDOM} and the voxels by two standard errors on 1 of 3 " \
           "probed (point estimates above both on 2)." in table
    assert ("| seed spread (largest std: arms, paired differences) | beyond the spread | seeds S²DC ahead / behind | "
            "frozen: S²DC − random (± cases and draws) |") in table


def test_no_scratch_arm_and_no_probe_give_no_section(tmp_path):
    run = write_run(tmp_path, "s2dc", 0, 0.5)
    assert main(["report", "--out", str(tmp_path / "out"), str(run)]) == 0
    assert "Does pretraining show?" not in (tmp_path / "out" / "benchmark.md").read_text()
    assert "effect" not in json.loads((tmp_path / "out" / "metrics.json").read_text())


def test_plots_draw_the_effect_figure_and_refuse_a_users_file(tmp_path, benchmark, capsys):
    runs, probes = benchmark
    figures, curves = tmp_path / "figures", tmp_path / "curves"
    assert main(["plots", *map(str, runs), "--probe", *map(str, probes), "--figures", str(figures),
                 "--curves", str(curves)]) == 0
    assert is_s2dc_png(figures / "effect.png")
    (figures / "effect.png").write_text("my notes")
    assert main(["plots", *map(str, runs), "--probe", *map(str, probes), "--figures", str(figures),
                 "--curves", str(curves)]) == 2
    assert "effect.png' exists and is not a figure s2dc drew" in capsys.readouterr().err
    assert (figures / "effect.png").read_text() == "my notes"


def test_a_probe_result_without_the_s2dc_encoder_or_a_baseline_is_refused_naming_it(tmp_path, benchmark, capsys):
    """`s2dc probe enc.pt voxels` names the row `enc.pt`: the plots and the report silently left every frozen column
    '—'. Refused, naming the file, what it lacks and how to name the encoders."""
    runs, probes = benchmark
    unnamed = tmp_path / "unnamed.json"
    doc = json.loads(probes[0].read_text())
    doc["encoders"]["enc.pt"] = doc["encoders"].pop("s2dc")
    unnamed.write_text(json.dumps(sealed(doc)))
    no_random = tmp_path / "no_random.json"
    doc = json.loads(probes[0].read_text())
    del doc["encoders"]["random"], doc["encoders"]["s2dc"]["versus"]["random"]
    no_random.write_text(json.dumps(sealed(doc)))
    for probe, missing in ((unnamed, "no 's2dc' encoder (it has 'voxels', 'random', 'enc.pt')"),
                           (no_random, "no paired difference of 's2dc' against 'random'")):
        for command in (["report", "--out", str(tmp_path / "out")],
                        ["plots", "--figures", str(tmp_path / "f"), "--curves", str(tmp_path / "c")]):
            assert main([*command, *map(str, runs), "--probe", str(probe), *map(str, probes[1:])]) == 2, command
            err = capsys.readouterr().err
            assert f"'{probe}'" in err and missing in err and "s2dc probe s2dc=<encoder.pt> random voxels --source" in err, err
            assert not (tmp_path / "out").exists() and not (tmp_path / "f").exists()


def test_a_one_seed_difference_is_drawn_at_no_position(tmp_path, benchmark):
    """One seed has no spread (the table says undecided, '—'), yet the figure drew its difference at the +3 edge
    labelled 'std nan', as if far beyond the spread: it gets no marker, only its difference said in words."""
    from s2dc.report.effect import effect_figure, effect_table, finetune_points
    from s2dc.report.runs import read_runs
    from s2dc.report.tables import runs_frame, summarise

    runs, probes = benchmark
    frame = runs_frame(read_runs(runs)[0])
    effect = effect_table(summarise(frame), frame, probes)
    rows = effect.iloc[::-1].reset_index(drop=True)
    points = {rows.dataset[i]: (x, label) for i, x, label in finetune_points(rows)}
    assert points["synthetic_msd_lung"] == (None, "+5.00 Dice (one seed: no spread)")
    assert points["synthetic_btcv"][0] == 3.0  # 19 / 4.24: beyond the panel's edge
    liver = 10.0 / (100 * statistics.stdev([0.30, 0.50]))
    assert points["synthetic_msd_liver"] == (pytest.approx(liver), "+10.00 Dice (spread 14.14)")
    assert "synthetic_udpet" not in points  # no fine-tuning runs
    left = effect_figure(effect).axes[0]
    drawn = [float(line.get_xdata()[0]) for line in left.get_lines() if line.get_marker() == "o"]
    assert sorted(drawn) == [pytest.approx(liver), 3.0]  # btcv and liver; none for lung
    assert "nan" not in " ".join(t.get_text() for t in left.texts)


def test_a_tie_at_zero_spread_is_no_comparison_and_a_lead_within_two_se_is_said_so(tmp_path, benchmark):
    """Both arms at 0 Dice on every seed (the committed MSD Lung and Spleen twins) have no spread: the row says
    'tie' and is not counted among the datasets 'with a spread'. A frozen lead whose paired difference is within two
    standard errors of a baseline (UDPET here: +0.020 ± 0.015 against the voxels) is labelled so in its row, and the
    counts lead with the lead by two standard errors, the point estimates after it."""
    runs, probes = benchmark
    runs += [run_folder(tmp_path / f"spleen_{m}_{s}", m, s, 0.0, "synthetic_msd_spleen", 0.2)
             for m in ("s2dc", "scratch") for s in (0, 1)]
    assert main(["report", "--out", str(tmp_path / "out"), *map(str, runs), "--probe", *map(str, probes)]) == 0
    table = (tmp_path / "out" / "benchmark.md").read_text()
    assert "| synthetic_msd_spleen | segmentation | +0.00 Dice | 20% | 0.00 | tie | 0 / 0 of 2 | — | — | — |" in table, \
        table  # level on both seeds: neither ahead nor behind
    assert "| synthetic_udpet | reconstruction | — | — | — | — | — | +0.180 ± 0.010 | +0.020 ± 0.015 | " \
           "yes, within 2 s.e. |" in table
    assert ("Over the 4 segmentation and classification datasets: fine-tuned, S²DC above scratch by more than the "
            f"{SPREAD} on 1 of 2 with a spread, below it on 0 (1 tie, both arms at one same score on every seed); "
            f"frozen, above both {RANDOM} and the voxels by two standard errors on 1 of 2 probed (point estimates "
            "above both on 1).") in table, table
    assert (f"Over all 5 datasets: fine-tuned, S²DC above scratch by more than the {SPREAD} on 1 of 2 with a "
            "spread, below it on 0 (1 tie, both arms at one same score on every seed); frozen, above both "
            f"{RANDOM} and the voxels by two standard errors on 1 of 3 probed (point estimates above both on "
            "2).") in table, table



def test_two_arms_equal_on_every_seed_are_a_tie_whatever_the_rounding_of_their_std():
    """Three seeds at 4/9 accuracy in both arms: pandas' sample std of three equal values is 8.7e-15, not 0, and the
    row came out 'no' and was counted among the datasets with a spread (found by review); a spread that is rounding
    noise is no spread."""
    import pandas as pd

    from s2dc.report.effect import TIE, finetune_differences

    value = 100 * 4 / 9
    seeds = pd.Series([value] * 3)
    assert seeds.std() != 0  # what made the defect
    rows = [dict(dataset="synthetic_adni", task="classification", metric="accuracy", method=method, label_ratio=0.1,
                 mean=seeds.mean(), std=seeds.std(), seeds=3) for method in ("s2dc", "scratch")]
    runs = pd.DataFrame([dict(dataset="synthetic_adni", task="classification", metric="accuracy", method=method,
                              label_ratio=0.1, seed=seed, score=value) for method in ("s2dc", "scratch")
                         for seed in range(3)])
    row = finetune_differences(pd.DataFrame(rows), runs).iloc[0]
    assert row.finetune_beyond == TIE
    assert (row.finetune_paired, row.finetune_ahead, row.finetune_behind) == (3, 0, 0)  # level on every seed


def test_seeds_are_paired_by_seed_not_by_the_order_of_the_files(tmp_path):
    """Three seeds, the files given out of seed order: S²DC 50 / 20 / 30 against scratch 40 / 30 / 30 (seeds 0, 1, 2)
    is ahead on seed 0, behind on seed 1, level on seed 2 -> "1 / 1 of 3"; paired in file order it would be other
    counts. Only the lowest label ratio both arms ran is counted (the 100 % runs are S²DC-only)."""
    scores = {"s2dc": {0: 0.50, 1: 0.20, 2: 0.30}, "scratch": {0: 0.40, 1: 0.30, 2: 0.30}}
    files = [write_run(tmp_path, method, seed, scores[method][seed], ratio=0.2)
             for method, seed in (("s2dc", 2), ("scratch", 0), ("s2dc", 0), ("scratch", 1), ("s2dc", 1), ("scratch", 2))]
    files.append(write_run(tmp_path, "s2dc", 0, 0.9, ratio=1.0))
    assert main(["report", "--out", str(tmp_path / "out"), *map(str, files)]) == 0
    effect = json.loads((tmp_path / "out" / "metrics.json").read_text())["effect"]["synthetic_btcv"]
    lead = {seed: scores["s2dc"][seed] - scores["scratch"][seed] for seed in range(3)}
    ahead, behind = sum(d > 1e-12 for d in lead.values()), sum(d < -1e-12 for d in lead.values())
    assert (ahead, behind) == (1, 1)
    assert (effect["finetune_paired"], effect["finetune_ahead"], effect["finetune_behind"]) == (3, ahead, behind)
    assert "| synthetic_btcv | segmentation | +0.00 Dice | 20% | 15.28 | no | 1 / 1 of 3 |" in \
        (tmp_path / "out" / "benchmark.md").read_text()


#: The code hash of another version than the fixtures' (conftest.CODE).
OTHER = "0" * 64


@pytest.mark.parametrize("kind", ["fine-tuning", "probe"])
def test_the_counts_refuse_verdicts_made_by_two_versions_of_the_code(tmp_path, benchmark, capsys, kind):
    """The counts under the table ("above scratch ... on 1 of 2", "above both ... on 1 of 3 probed") tally the
    verdicts of several datasets, but took BTCV fine-tuned (or probed) by one version of the code and another dataset
    by another as one count, though the averages refuse such datasets. Refused by the report, naming both versions,
    the datasets of each and a file of each; BTCV and Liver fine-tuned at two label ratios share no average, so only
    the counts take them together. The plots draw each dataset apart and count nothing: they still draw them."""
    runs, probes = benchmark
    if kind == "fine-tuning":  # Liver's four runs at 50 % by another version; BTCV's and Lung's at 20 % by CODE
        runs = [r for r in runs if "liver" not in str(r)]
        liver = [run_folder(tmp_path / f"liver50_{m}_{s}", m, s, d, "synthetic_msd_liver", 0.5)
                 for (dataset, m), values in DICE.items() if dataset == "synthetic_msd_liver"
                 for s, d in enumerate(values)]
        for path in liver:
            path.write_text(json.dumps(sealed({**json.loads(path.read_text()), "code": OTHER})))
        runs, old, new = runs + liver, liver[0], runs[0]
    else:  # UDPET's probe by another version; BTCV's and Liver's by CODE
        doc = json.loads(probes[2].read_text())
        probes[2].write_text(json.dumps(sealed({**doc, "code": OTHER})))
        old, new = probes[2], probes[0]
    out = tmp_path / "out"
    assert main(["report", "--out", str(out), *map(str, runs), "--probe", *map(str, probes)]) == 2
    err = capsys.readouterr().err
    assert f"two versions of s2dc's {kind} code" in err and "Traceback" not in err, err
    assert f"'{old}'" in err and f"'{new}'" in err and CODE[:12] in err and OTHER[:12] in err, err
    stale = "synthetic_msd_liver" if kind == "fine-tuning" else "synthetic_udpet"
    assert "synthetic_btcv" in err and stale in err and "counts" in err, err
    assert not out.exists()
    assert main(["plots", *map(str, runs), "--probe", *map(str, probes), "--figures", str(tmp_path / "f"),
                 "--curves", str(tmp_path / "c")]) == 0


def test_the_verdicts_turn_at_their_thresholds():
    """Near each threshold, by hand: frozen, a lead of 2.5 standard errors over both baselines is "by 2 s.e." and one of
    1.5 is "within"; fine-tuned, S²DC ahead by 1.5 times the larger seed std is beyond the spread, by 0.8 times it is
    not (the report's fixtures sit far from both thresholds, so a factor of 3 for 2 there passed them)."""
    import math
    from types import SimpleNamespace

    import pandas as pd

    from s2dc.report.effect import _frozen_verdict, finetune_differences

    def row(difference, se):
        return SimpleNamespace(versus_random=difference, versus_voxels=difference, versus_se_random=se,
                               versus_se_voxels=se)

    assert _frozen_verdict(row(0.25, 0.10)) == "yes, by 2 s.e."
    assert _frozen_verdict(row(0.15, 0.10)) == "yes, within 2 s.e."
    assert _frozen_verdict(row(-0.01, 0.001)) == "no"

    # scratch at 10 and 14 (std 2.828...), S²DC at 12 + lead (the same std): lead 1.5x and 0.8x that std
    std = math.sqrt(8.0)
    for name, lead, beyond in (("ahead", 1.5 * std, True), ("level", 0.8 * std, False), ("behind", -1.5 * std, "behind")):
        runs = pd.DataFrame([{"dataset": name, "task": "segmentation", "metric": "Dice", "method": method,
                              "label_ratio": 0.2, "seed": seed, "score": score + (lead if method == "s2dc" else 0.0)}
                             for method in ("s2dc", "scratch") for seed, score in ((0, 10.0), (1, 14.0))])
        table = runs.groupby(["dataset", "task", "metric", "method", "label_ratio"], as_index=False).score.agg(
            mean="mean", std="std", seeds="count")
        got = finetune_differences(table, runs).iloc[0]
        assert got.finetune_difference == pytest.approx(lead) and got.finetune_spread == pytest.approx(std)
        assert got.finetune_beyond == beyond, (name, got.finetune_beyond)


def test_the_random_draws_spread_joins_the_standard_error_against_them(tmp_path, benchmark):
    """The random row is the mean of K draws: S²DC's lead over it is uncertain by the cases (the bootstrap s.e., the
    draws held fixed) and by the draws themselves, sqrt(se² + s²/K) (MSD Liver's S²DC 59.6 against draws 54.0 / 59.5 /
    55.8 was "by two standard errors" though within the draws' own spread). BTCV: +20 ± 5 points against draws of 20,
    60 and 40 % is within two of them; the voxels, one deterministic baseline, keep their bootstrap s.e."""
    runs, probes = benchmark
    draws = [0.20, 0.60, 0.40]
    probes[0] = probe_file(tmp_path, "synthetic_btcv", "segmentation", "balanced accuracy",
                           {"random": (0.20, 0.05), "voxels": (0.30, 0.04)}, draws=draws)
    assert main(["report", "--out", str(tmp_path / "out"), *map(str, runs), "--probe", *map(str, probes)]) == 0
    btcv = json.loads((tmp_path / "out" / "metrics.json").read_text())["effect"]["synthetic_btcv"]
    se = math.sqrt(5.0 ** 2 + statistics.variance([100 * d for d in draws]) / 3)  # sqrt(25 + 400 / 3) = 12.58
    assert 20.0 < 2 * se and 20.0 > 2 * 5.0  # by two bootstrap s.e., within two of the total
    assert btcv["versus_se_random"] == pytest.approx(se, abs=1e-4)
    assert btcv["versus_random"] == pytest.approx(20.0) and btcv["versus_se_voxels"] == pytest.approx(4.0)
    table = (tmp_path / "out" / "benchmark.md").read_text()
    assert f"| +20.0 ± {se:.1f} | +30.0 ± 4.0 | yes, within 2 s.e. |" in table, table


def test_the_bootstrap_se_alone_where_the_probe_gives_fewer_than_two_draws(tmp_path):
    """An older probe result (no ``draws``) or one of a single draw has no spread of draws: its bootstrap s.e. stays.
    Two draws or more of an R² probe add s²/K in R² (not in points: R² is no percentage)."""
    from s2dc.report.effect import paired_differences

    versus = {"random": (0.18, 0.01), "voxels": (0.02, 0.015)}
    files = [probe_file(tmp_path, f"synthetic_{name}", "reconstruction", "R²", versus, draws=draws)
             for name, draws in (("old", None), ("one", [0.7]), ("two", [0.6, 0.7]))]
    se = paired_differences(files).set_index("dataset")["versus_se_random"]
    assert se["synthetic_old"] == pytest.approx(0.01) and se["synthetic_one"] == pytest.approx(0.01)
    assert se["synthetic_two"] == pytest.approx(math.sqrt(0.01 ** 2 + statistics.variance([0.6, 0.7]) / 2))
    assert list(paired_differences(files).versus_se_voxels) == pytest.approx([0.015] * 3)  # deterministic


def test_a_probe_result_whose_draws_are_not_numbers_is_refused(tmp_path, benchmark, capsys):
    """The report reads the random row's ``draws`` into the standard error: draws that are not numbers are refused,
    naming the key, not a traceback of NumPy's."""
    runs, probes = benchmark
    probes[0] = probe_file(tmp_path, "synthetic_btcv", "segmentation", "balanced accuracy",
                           {"random": (0.20, 0.05), "voxels": (0.30, 0.04)}, draws=[0.4, "0.5"])
    assert main(["report", "--out", str(tmp_path / "out"), *map(str, runs), "--probe", *map(str, probes)]) == 2
    err = capsys.readouterr().err
    assert "encoders.random.draws is [0.4, '0.5']" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_the_fine_tuning_spread_takes_the_seeds_paired_differences():
    """Each seed pairs the arms (the same labelled subset, the same first weights of the new layers): a gain carried
    by one seed is no gain. Scratch 10 / 11 (std 0.71), S²DC 11.96 / 11.15 (std 0.57): the means differ by 1.055,
    beyond either arm's std, but seed by seed by +1.96 and +0.15, whose std 1.28 the mean does not exceed: not
    beyond. S²DC 12.0 / 13.1 against the same scratch, +2.0 and +2.1 seed by seed: beyond (the arms' std 0.78)."""
    import pandas as pd

    from s2dc.report.effect import finetune_differences

    scratch = [10.0, 11.0]
    for name, ours, beyond in (("one_seed_gain", [11.96, 11.15], False), ("steady_gain", [12.0, 13.1], True)):
        leads = [a - b for a, b in zip(ours, scratch)]
        spread = max(statistics.stdev(ours), statistics.stdev(scratch), statistics.stdev(leads))
        runs = pd.DataFrame([{"dataset": name, "task": "segmentation", "metric": "Dice", "method": method,
                              "label_ratio": 0.2, "seed": seed, "score": score}
                             for method, scores in (("s2dc", ours), ("scratch", scratch))
                             for seed, score in enumerate(scores)])
        table = runs.groupby(["dataset", "task", "metric", "method", "label_ratio"], as_index=False).score.agg(
            mean="mean", std="std", seeds="count")
        got = finetune_differences(table, runs).iloc[0]
        assert got.finetune_difference == pytest.approx(statistics.mean(leads))
        assert got.finetune_spread == pytest.approx(spread), name
        assert got.finetune_beyond == beyond, (name, got.finetune_beyond)
    assert statistics.mean([1.96, 0.15]) > max(statistics.stdev([11.96, 11.15]), statistics.stdev(scratch))  # old: yes
