"""What the report refuses or says outright rather than print a table no experiment gave: a dataset under two tasks,
runs scored on other validation cases, a score that is not its task's metric, damaged loss curves, a user's json
where the report writes, an ablation variant missing on a dataset; and a fine-tuning lead or deficit beyond the seed
spread, a frozen lead without standard error, an average left out for a null score — each said as it is."""

from __future__ import annotations

import json
import statistics

import pytest

from conftest import CODE, sealed
from s2dc.cli import main
from test_report import probe_doc, write_run


def with_curve(path, rows="step\tloss\n1\t1.0\n2\t0.5\n"):
    """``path`` (a metrics.json) with a DVCLive loss table beside it, as `s2dc finetune` leaves one."""
    folder = path.parent / "dvclive" / "plots" / "metrics" / "train"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "loss.tsv").write_text(rows)
    return path


def run_in(tmp_path, method, seed, dice, **extra):
    """A run in its own folder (metrics.json and its loss curve)."""
    folder = tmp_path / f"{method}{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    return with_curve(write_run(folder, method, seed, dice, name="metrics.json", **extra))


def refused(tmp_path, capsys, files, *named, commands=("report", "plots")):
    """Each command exits 2 on ``files``, naming every one of ``named``, with no traceback and nothing written."""
    out = tmp_path / "out"
    for command in commands:
        argv = ["report", "--out", str(out)] if command == "report" else [
            "plots", "--figures", str(out), "--curves", str(out)]
        assert main([*argv, *map(str, files)]) == 2, command
        err = capsys.readouterr().err
        assert all(str(n) in err for n in named) and "Traceback" not in err, err
        assert not out.exists()


def test_a_dataset_fine_tuned_under_two_tasks_is_refused(tmp_path, capsys):
    """A dataset is one task (its registry entry): runs of one dataset name under two tasks would share its row of
    metrics.json, its probe verdict and its curves, so they are refused naming both files."""
    seg = run_in(tmp_path, "s2dc", 0, 0.5, dataset="synthetic_brats21")
    tr = tmp_path / "tr" / "metrics.json"
    tr.parent.mkdir()
    tr.write_text(json.dumps(sealed({
        "task": "translation", "dataset": "synthetic_brats21", "method": "s2dc", "label_ratio": 0.1, "seed": 0,
        "train_cases": 3, "seconds": 1.0, "psnr": 25.0, "ssim": 0.5, "mse": 0.1,
        "score": {"key": "psnr", "name": "PSNR dB", "value": 25.0}, "history": [{"step": 1, "psnr": 25.0}],
        "code": CODE})))
    with_curve(tr)
    refused(tmp_path, capsys, [seg, tr], seg, tr, "two tasks")


def test_runs_scored_on_other_validation_cases_are_refused(tmp_path, capsys):
    """The seeds of a row, or the two arms of a comparison, scored on other numbers of validation cases are runs of
    other data: refused naming the key and both files."""
    a = run_in(tmp_path, "s2dc", 0, 0.5, val_cases=25)
    b = run_in(tmp_path, "s2dc", 1, 0.4, val_cases=10)
    refused(tmp_path, capsys, [a, b], "val_cases", a, b)
    c = run_in(tmp_path, "scratch", 0, 0.5, val_cases=10)
    refused(tmp_path, capsys, [a, c], "val_cases", a, c)


@pytest.mark.parametrize("score, message", [
    ({"key": "dice", "name": "Dice", "value": 50.0}, "score.key is 'dice'; expected 'dice_mean'"),
    ({"key": "dice_mean", "name": "Dice", "value": 99.0}, "score.value is 99.0; expected 100 × dice_mean = 50"),
])
def test_a_score_that_is_not_its_tasks_metric_is_refused(tmp_path, capsys, score, message):
    """The score a row shows is the task's metric (Dice % of dice_mean): another key, or a value that is not the
    metric scaled, is refused naming the file and the key (the plots died on it with a KeyError)."""
    path = run_in(tmp_path, "s2dc", 0, 0.5, score=score)
    refused(tmp_path, capsys, [path], path, message)


def test_seeds_whose_score_is_named_otherwise_are_refused(tmp_path, capsys):
    """Two seeds of one row whose score is named otherwise would split the row in two rows of one seed each."""
    a = run_in(tmp_path, "s2dc", 0, 0.5)
    b = run_in(tmp_path, "s2dc", 1, 0.4, score={"key": "dice_mean", "name": "Dice %", "value": 40.0})
    refused(tmp_path, capsys, [a, b], "score.name", a, b)


@pytest.mark.parametrize("rows, message", [
    ("step\tloss\n1\t1.0\n2\tnan\n", "finite"),
    ("step\tloss\n1\t1.0\n2\tabc\n", "finite"),
    ("step\tloss\n1\t1.0\n1\t0.5\n", "once"),
])
def test_a_damaged_loss_curve_is_refused_naming_it(tmp_path, capsys, rows, message):
    """A loss table with a NaN, a word or a step twice (a run killed while DVCLive wrote it, an edit) is refused by
    `s2dc plots` naming the table, not averaged over the seeds that have the step nor a traceback."""
    path = with_curve(run_in(tmp_path, "s2dc", 0, 0.5), rows)
    table = path.parent / "dvclive/plots/metrics/train/loss.tsv"
    refused(tmp_path, capsys, [path], table, message, commands=("plots",))


def test_the_seeds_of_a_curve_must_log_the_same_steps(tmp_path, capsys):
    """A seed whose loss table stops short (cut off) would make the mean at its missing steps the other seeds' alone."""
    a = run_in(tmp_path, "s2dc", 0, 0.5)
    b = with_curve(run_in(tmp_path, "s2dc", 1, 0.4), "step\tloss\n1\t1.0\n")
    refused(tmp_path, capsys, [a, b], "steps", commands=("plots",))


def test_the_report_never_takes_a_users_nearly_empty_json_for_its_own(tmp_path, capsys):
    """A user's metrics.json of ``{}`` or ``{"baseline": {}}`` in --out is not the report's: never replaced."""
    run = run_in(tmp_path, "s2dc", 0, 0.5)
    out = tmp_path / "out"
    out.mkdir()
    for text in ("{}", '{"baseline": {}}', '{"probe": {"mine": 1}}'):
        (out / "metrics.json").write_text(text)
        assert main(["report", "--out", str(out), str(run)]) == 2, text
        assert "metrics.json" in capsys.readouterr().err
        assert (out / "metrics.json").read_text() == text
    (out / "metrics.json").unlink()
    assert main(["report", "--out", str(out), str(run)]) == 0
    assert main(["report", "--out", str(out), str(run)]) == 0  # its own file, replaced


def test_a_deficit_beyond_the_spread_is_said_to_be_behind(tmp_path, capsys):
    """S²DC below scratch by more than the seed spread is "behind", counted apart from the leads and from the
    rows within the spread (it read "no", as a row within the noise)."""
    dice = {"s2dc": [0.10, 0.12], "scratch": [0.40, 0.41]}
    files = [run_in(tmp_path, m, s, d) for m, values in dice.items() for s, d in enumerate(values)]
    assert main(["report", "--out", str(tmp_path / "out"), *map(str, files)]) == 0
    text = (tmp_path / "out/benchmark.md").read_text()
    difference = 100 * (statistics.mean(dice["s2dc"]) - statistics.mean(dice["scratch"]))
    leads = [a - b for a, b in zip(dice["s2dc"], dice["scratch"])]
    spread = 100 * max(*(statistics.stdev(v) for v in dice.values()), statistics.stdev(leads))
    assert difference < -spread
    assert f"| synthetic_btcv | segmentation | {difference:+.2f} Dice | 10% | {spread:.2f} | behind |" in text, text
    assert ("above scratch by more than the seed spread (the largest std of either arm and of their per-seed "
            "differences) on 0 of 1 with a spread, below it on 1") in text, text


def test_a_frozen_lead_without_standard_error_does_not_claim_one(tmp_path, capsys):
    """A probe's paired differences without standard errors are leads without a measure of their noise: "yes (no
    s.e.)", not "yes, within 2 s.e." nor counted as by two standard errors."""
    files = [run_in(tmp_path, m, s, d) for m in ("s2dc", "scratch") for s, d in enumerate((0.3, 0.31))]
    probe = tmp_path / "probe.json"
    probe.write_text(json.dumps(probe_doc(**{"encoders.s2dc.versus.random.se": None,
                                             "encoders.s2dc.versus.voxels.se": None})))
    assert main(["report", "--out", str(tmp_path / "out"), *map(str, files), "--probe", str(probe)]) == 0
    text = (tmp_path / "out/benchmark.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| synthetic_btcv | segmentation | +"))
    assert row.endswith("| +15.0 | +20.0 | yes (no s.e.) |"), row
    assert "by two standard errors on 0 of 1 probed (point estimates above both on 1)" in text


def test_an_ablation_variant_missing_on_a_dataset_is_said_beside_its_ordering(tmp_path, capsys):
    """The ranks and Kendall's tau of a dataset compare the variants run on it (poster Table 2 prints fewer on
    AutoPET): a variant without runs there is named beside that dataset's ordering, not left to a dash in its cell."""
    files = [write_run(tmp_path, v, 0, d, name=f"{v}_btcv.json") for v, d in (("lg", 0.3), ("s2dc", 0.4))]
    files.append(write_run(tmp_path, "s2dc", 0, 0.2, dataset="synthetic_autopet", name="s2dc_autopet.json"))
    assert main(["ablation-table", "--out", str(tmp_path / "out"), *map(str, files), "--terms",
                 "lg=global:dual_softmax", "s2dc=global+p2p+p2s:dual_softmax"]) == 0
    lines = (tmp_path / "out/ablation.md").read_text().splitlines()
    assert any(line.startswith("- synthetic_autopet (among the variants run on it; not run: lg): ours s2dc;")
               for line in lines), lines
    assert any(line.startswith("- synthetic_btcv: ours s2dc > lg;") for line in lines), lines


CONFLICT = '<<<<<<< HEAD\n{"train_loss/synthetic_btcv.tsv": []}\n=======\n{}\n>>>>>>> other\n'


@pytest.mark.parametrize("record", ['{"train_loss/synthetic_btcv.tsv": null}', CONFLICT])
def test_a_curves_record_that_is_not_one_is_refused_naming_it(tmp_path, capsys, record):
    """The curve tables' record (.s2dc-curves.json) was read without the check the tables' record gets: a value that
    is no list ended `s2dc plots` with a TypeError traceback naming no file, and a record a merge left conflict
    markers in was read as empty, so every curve table was refused as not s2dc's. The record is named now."""
    figures, curves = tmp_path / "figures", tmp_path / "curves"
    runs = [run_in(tmp_path, m, s, 0.3 + 0.1 * s) for m in ("scratch", "s2dc") for s in (0, 1)]
    argv = ["plots", "--figures", str(figures), "--curves", str(curves), *map(str, runs)]
    assert main(argv) == 0
    (curves / ".s2dc-curves.json").write_text(record)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"'{curves / '.s2dc-curves.json'}' is not the record of the curve tables" in err, err
