"""The report refuses what would make a wrong table with exit 0, and never leaves a mix of two reports: a run
without the score the average takes, a malformed probe checksum, an interrupted write, a dataset named as a key of
metrics.json, a probe of another task (found by an audit of the trust rules, 2026-12-05)."""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path

import pytest

from conftest import CODE, sealed, signal_at_line, stopped_at_third_replace
from s2dc.cli import main


def run_file(folder, method, seed, value, task="segmentation", dataset="synthetic_btcv", **extra):
    key, name, scale, more = {"segmentation": ("dice_mean", "Dice", 100.0, {}),
                              "reconstruction": ("psnr", "PSNR dB", 1.0, {"ssim": 0.5, "nrmse": 0.1})}[task]
    doc = {"task": task, "dataset": dataset, "method": method, "label_ratio": 0.2, "seed": seed, key: value,
           **more, "train_cases": 3, "seconds": 1.0, "score": {"key": key, "name": name, "value": scale * value},
           "history": [{"step": 1, key: value}], "code": CODE, **extra}
    path = folder / f"{dataset}_{method}_{seed}.json"
    path.write_text(json.dumps(sealed(doc)))
    return path


def test_a_run_without_the_metric_of_the_all_datasets_average_is_refused_not_left_out(tmp_path, capsys):
    """A reconstruction run whose metrics.json lacks ssim (the score % the average over all datasets takes) is refused
    naming the file and the key, as `s2dc plots` refuses it, instead of silently dropping its method from the
    average (only a null, a score its cases could not give, leaves a method out)."""
    files = [run_file(tmp_path, m, s, 30.0 + s, task="reconstruction", dataset="synthetic_udpet")
             for m in ("s2dc", "scratch") for s in (0, 1)]
    doc = json.loads(files[-1].read_text())
    del doc["ssim"]
    files[-1].write_text(json.dumps(sealed(doc)))
    assert main(["report", "--out", str(tmp_path / "out"), *map(str, files)]) == 2
    assert f"bad metrics file '{files[-1]}': ssim is missing" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_probe_results_malformed_encoder_checksums_are_refused_naming_the_file(tmp_path, capsys):
    """encoder_sha256 that is no {encoder: SHA-256} object: exit 2 naming the file and the key, no traceback."""
    run = run_file(tmp_path, "s2dc", 0, 0.5, init_sha256="a" * 64)
    probe = {"dataset": "synthetic_btcv", "task": "segmentation", "metric": "balanced accuracy", "stage": 2,
             "code": CODE, "encoders": {"s2dc": {"score": 0.6}}, "encoder_sha256": ["a" * 64]}
    path = tmp_path / "probe.json"
    path.write_text(json.dumps(sealed(probe)))
    assert main(["report", "--out", str(tmp_path / "out"), str(run), "--probe", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"bad probe file '{path}': encoder_sha256 is" in err
    assert not (tmp_path / "out").exists()


def test_an_interrupted_report_leaves_the_previous_tables_not_a_mix(tmp_path, monkeypatch):
    """Stopped (Ctrl-C, SIGTERM) between two of its files, a rerun of `s2dc report` leaves every table of the previous
    report, never a benchmark.csv of the new runs beside a metrics.json of the old ones."""
    out = tmp_path / "out"
    first = [run_file(tmp_path, "s2dc", s, 0.2 + 0.1 * s) for s in (0, 1)]
    assert main(["report", "--out", str(out), *map(str, first)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    second = tmp_path / "again"
    second.mkdir()
    runs = [run_file(second, "s2dc", s, 0.6 + 0.1 * s) for s in (0, 1)]
    monkeypatch.setattr("os.replace", stopped_at_third_replace(__import__("os").replace))
    with pytest.raises(KeyboardInterrupt):
        main(["report", "--out", str(out), *map(str, runs)])
    monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    record = json.loads(after.pop(".s2dc-tables.json"))  # the previous tables' SHA-256 and the new ones'
    before.pop(".s2dc-tables.json")
    assert after == before
    assert all(hashlib.sha256(data).hexdigest() in record[name] for name, data in after.items())


def _run_with_curve(folder, method, seed, value):
    run = folder / f"{method}{seed}"
    (run / "dvclive/plots/metrics/train").mkdir(parents=True)
    (run / "dvclive/plots/metrics/train/loss.tsv").write_text("step\tloss\n1\t2.0\n")
    doc = json.loads(run_file(run, method, seed, value).read_text())
    (run / "metrics.json").write_text(json.dumps(sealed(doc)))
    return run / "metrics.json"


@pytest.mark.parametrize("name", ["averages", "effect", "probe"])
def test_a_dataset_named_as_a_key_of_the_reports_metrics_json_is_refused(tmp_path, capsys, name):
    """metrics.json is {dataset: ..., "averages": ..., "effect": ..., "probe": ...}: a dataset of one of those names had
    its rows silently replaced there (exit 0); it is refused naming the file and the key."""
    files = [run_file(tmp_path, m, s, 0.3 + 0.1 * s, dataset=name) for m in ("s2dc", "scratch") for s in (0, 1)]
    assert main(["report", "--out", str(tmp_path / "out"), *map(str, files)]) == 2
    assert f"': dataset is '{name}', a key metrics.json keeps" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_probe_of_another_task_than_the_runs_of_its_dataset_is_refused(tmp_path, capsys):
    """A reconstruction probe (R²) of a dataset the runs fine-tune for segmentation was set in that dataset's effect
    row, counted among the segmentation datasets (exit 0); it is refused naming the probe file."""
    files = [_run_with_curve(tmp_path, m, s, 0.3 + 0.1 * s) for m in ("s2dc", "scratch") for s in (0, 1)]
    pair = {"difference": 0.1, "se": 0.01}
    probe = {"dataset": "synthetic_btcv", "task": "reconstruction", "metric": "R²", "stage": 2, "code": CODE,
             "encoders": {"s2dc": {"score": 0.7, "versus": {"random": pair, "voxels": pair}},
                          "random": {"score": 0.6}, "voxels": {"score": 0.6}}}
    path = tmp_path / "probe.json"
    path.write_text(json.dumps(sealed(probe)))
    for command in (["report", "--out", str(tmp_path / "out")],
                    ["plots", "--figures", str(tmp_path / "f"), "--curves", str(tmp_path / "c")]):
        assert main([*command, *map(str, files), "--probe", str(path)]) == 2
        assert f"probe result '{path}' is a reconstruction probe of synthetic_btcv" in capsys.readouterr().err


def test_plots_of_runs_without_a_comparison_leave_no_effect_figure_of_earlier_runs(tmp_path):
    """effect.png (S²DC against scratch) drawn by an earlier `s2dc plots` is not left in --figures by a rerun on runs
    that give no comparison: the folder would show an effect of runs this plot was not drawn from."""
    figures, curves = tmp_path / "figures", tmp_path / "curves"
    both = [_run_with_curve(tmp_path, m, s, 0.3 + 0.1 * s + (0.2 if m == "s2dc" else 0)) for m in ("s2dc", "scratch")
            for s in (0, 1)]
    assert main(["plots", *map(str, both), "--figures", str(figures), "--curves", str(curves)]) == 0
    assert (figures / "effect.png").is_file()
    alone = [f for f in both if "scratch" not in str(f)]
    assert main(["plots", *map(str, alone), "--figures", str(figures), "--curves", str(curves)]) == 0
    assert not (figures / "effect.png").exists()


def test_an_interrupted_write_of_recorded_tables_leaves_the_previous_ones_not_a_mix(tmp_path, monkeypatch):
    """`s2dc plots`' curve tables (and `sweep export`'s) are written by write_recorded, which replaced them one by one:
    stopped between two renames it left new tables beside old ones. Every table now keeps its previous bytes, and
    the record still lets the next write replace them."""
    from s2dc.recorded import check_recorded, write_recorded

    names = ["a.tsv", "b.tsv", "c.tsv", "d.tsv"]
    write_recorded(tmp_path, {n: f"old {n}\n" for n in names}, ".record.json")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != ".record.json"}
    monkeypatch.setattr("os.replace", stopped_at_third_replace(__import__("os").replace))
    with pytest.raises(KeyboardInterrupt):
        write_recorded(tmp_path, {n: f"new {n}\n" for n in names}, ".record.json")
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != ".record.json"} == before
    check_recorded(tmp_path, names, ".record.json", "a table")  # still ours: not refused
    write_recorded(tmp_path, {n: f"new {n}\n" for n in names}, ".record.json")
    assert [(tmp_path / n).read_text() for n in names] == [f"new {n}\n" for n in names]


def test_a_ctrl_c_just_after_a_rename_still_gives_that_file_its_previous_bytes(tmp_path, monkeypatch):
    """replace_all noted a file as renamed in only after os.replace returned: a Ctrl-C (SIGINT, SIGTERM) taken between
    the rename and that note (Python runs its signal handlers between two bytecodes) left that file new beside the
    older ones given back, the mix the all-or-none write is there to prevent."""
    import os

    from s2dc.recorded import replace_all

    names = ["a.md", "b.md", "c.md"]
    replace_all(tmp_path, {n: f"old {n}\n".encode() for n in names})
    real, calls = os.replace, []

    def signal_on_return(src, dst, *args, **kwargs):
        real(src, dst, *args, **kwargs)
        calls.append(dst)
        if len(calls) == 2:  # the signal taken as the second rename returns
            raise KeyboardInterrupt

    monkeypatch.setattr("os.replace", signal_on_return)
    with pytest.raises(KeyboardInterrupt):
        replace_all(tmp_path, {n: f"new {n}\n".encode() for n in names})
    monkeypatch.undo()
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {n: f"old {n}\n" for n in names}


def test_a_file_removed_with_the_others_comes_back_when_they_fail(tmp_path, monkeypatch):
    """replace_all's None removes a file as one with the others' renames (the plots' effect.png of earlier runs): the
    others failing after it was removed, it is given its previous bytes back; all done, it is gone."""
    import errno
    import os

    from s2dc.recorded import replace_all

    replace_all(tmp_path, {"a.png": b"old a", "effect.png": b"old effect"})
    real = os.replace

    def full_at_b(src, dst, *args, **kwargs):
        if str(dst).endswith("b.png"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr("os.replace", full_at_b)
    with pytest.raises(OSError):
        replace_all(tmp_path, {"a.png": b"new a", "effect.png": None, "b.png": b"new b"})
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {"a.png": b"old a", "effect.png": b"old effect"}
    assert replace_all(tmp_path, {"a.png": b"new a", "effect.png": None}) == [tmp_path / "a.png"]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {"a.png": b"new a"}


def test_a_step_of_the_rollback_that_fails_is_noted_and_the_others_are_done(tmp_path, monkeypatch):
    """replace_all gives the files it renamed in their previous bytes back when it fails on the way; a step of that
    rollback that fails (a full disk) is noted on the first error, the others are done, and the first error is the
    one raised."""
    import errno
    import os

    from s2dc.recorded import replace_all

    names = ["a.md", "b.md", "c.md"]
    replace_all(tmp_path, {n: f"old {n}\n".encode() for n in names})
    real, calls = os.replace, []
    full = OSError(errno.ENOSPC, "No space left on device")

    def failing(src, dst, *args, **kwargs):
        calls.append(dst)
        if len(calls) == 3:  # the third rename in fails (new.md and a.md are in)
            raise OSError(errno.EIO, "Input/output error")
        if len(calls) == 4:  # the first step giving a file back (a.md's)
            raise full
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr("os.replace", failing)
    with pytest.raises(OSError) as raised:
        replace_all(tmp_path, {n: f"new {n}\n".encode() for n in ["new.md", *names]})
    monkeypatch.undo()
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {**{n: f"old {n}\n" for n in names},
                                                                   "a.md": "new a.md\n"}
    assert raised.value.errno == errno.EIO
    assert raised.value.__notes__ == [f"'{tmp_path / 'a.md'}' could not be given its previous bytes back: {full}"]


@pytest.mark.parametrize("where", ["in a step", "between two steps"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_does_not_cut_the_rollback_short(tmp_path, monkeypatch, signum, where):
    """A second Ctrl-C (or a SIGTERM, which the command line turns into exit 143), taken while replace_all gives the
    files it renamed in their previous bytes back, stopped that rollback, leaving new files beside old ones (taken
    between two of its steps, even after these were each made to survive one): it is held until the rollback ends,
    then noted on the first error, which is raised."""
    import errno
    import os
    import sys
    from pathlib import Path

    from s2dc.recorded import replace_all

    names = ["a.md", "b.md", "c.md"]
    replace_all(tmp_path, {n: f"old {n}\n".encode() for n in names})
    previous = signal.signal(signal.SIGTERM, lambda s, frame: sys.exit(128 + s))  # as s2dc.cli does
    real_replace, real_exists, calls, sent = os.replace, Path.exists, [], []

    def send():
        if not sent:
            sent.append(signum)
            os.kill(os.getpid(), signum)  # Python runs the handler as soon as this returns

    def failing_replace(src, dst, *args, **kwargs):
        calls.append(dst)
        if len(calls) == 3:  # the third rename in fails (new.md and a.md are in)
            raise OSError(errno.EIO, "Input/output error")
        if len(calls) == 4 and where == "in a step":  # the first step giving a file back (a.md's)
            send()
        return real_replace(src, dst, *args, **kwargs)

    def exists(path):
        if len(calls) >= 4 and where == "between two steps":  # after a.md was given back, before new.md is removed
            send()
        return real_exists(path)

    monkeypatch.setattr("os.replace", failing_replace)
    monkeypatch.setattr(Path, "exists", exists)
    try:
        with pytest.raises(BaseException) as raised:
            replace_all(tmp_path, {n: f"new {n}\n".encode() for n in ["new.md", *names]})
    finally:
        monkeypatch.undo()
        signal.signal(signal.SIGTERM, previous)
    assert sent == [signum]
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {n: f"old {n}\n" for n in names}
    assert type(raised.value) is OSError and raised.value.errno == errno.EIO
    assert any(signal.Signals(signum).name in note for note in getattr(raised.value, "__notes__", []))


def _replace_all_with_a_signal_at(tmp_path, at: int | None, fail_third: bool) -> tuple[int, BaseException | None]:
    """Run replace_all of four files over three old ones with a real SIGINT sent at its ``at``-th line event (None:
    none sent; :func:`conftest.signal_at_line`), the third rename failing with EIO where ``fail_third``; returns the
    number of line events and what it raised."""
    import errno
    import os

    from s2dc.recorded import replace_all

    real_replace, calls = os.replace, []

    def failing_replace(src, dst, *args, **kwargs):
        calls.append(dst)
        if fail_third and len(calls) == 3:
            raise OSError(errno.EIO, "Input/output error")
        return real_replace(src, dst, *args, **kwargs)

    os.replace = failing_replace
    try:
        return signal_at_line(at, lambda: replace_all(tmp_path, {n: f"new {n}\n".encode()
                                                                 for n in ["new.md", "a.md", "b.md", "c.md"]}))
    finally:
        os.replace = real_replace


@pytest.mark.parametrize("fail_third", [False, True], ids=["renames succeed", "third rename fails"])
def test_a_signal_at_any_line_of_replace_all_leaves_all_old_or_all_new_files(tmp_path, fail_third):
    """A Ctrl-C may land between any two lines of replace_all (Python runs its handler there): wherever it lands, the
    folder holds the three old files or the four new ones, never a mix, and nothing staged is left; the command
    stops (the signal, or the rename's error noting it). Before, a signal in the instant between a failed rename and
    the rollback's hold skipped the rollback."""
    names = ["a.md", "b.md", "c.md"]
    old = {n: f"old {n}\n" for n in names}
    new = {n: f"new {n}\n" for n in ["new.md", *names]}
    total, raised = _replace_all_with_a_signal_at(tmp_path / "dry", None, fail_third)
    assert total > 20 and (raised is None) is not fail_third
    mixed = []
    for at in range(1, total + 1):
        folder = tmp_path / str(at)
        folder.mkdir()
        for n, text in old.items():
            (folder / n).write_text(text)
        _, raised = _replace_all_with_a_signal_at(folder, at, fail_third)
        found = {p.name: p.read_text() for p in folder.iterdir()}
        if found not in ([old] if fail_third else [old, new]) or raised is None:
            mixed.append((at, sorted(found.items()), repr(raised)))
    assert not mixed, f"{len(mixed)} of {total} signal places: first {mixed[:3]}"


def test_a_file_of_another_kind_is_named_as_such_not_as_an_older_result(tmp_path, capsys):
    """The report's own metrics.json (or a dataset.json) given as a run, or a run given as a probe result: refused as
    not that kind of file, not as a result of an older s2dc that records no code (which sent users to rerun it)."""
    run = run_file(tmp_path, "s2dc", 0, 0.5)
    assert main(["report", "--out", str(tmp_path / "first"), str(run)]) == 0
    summary = tmp_path / "first" / "metrics.json"
    dataset = tmp_path / "dataset.json"
    dataset.write_text(json.dumps({"name": "btcv", "training": [{"image": "a.nii.gz", "label": "b.nii.gz"}]}))
    for wrong in (summary, dataset):
        assert main(["report", "--out", str(tmp_path / "out"), str(wrong)]) == 2
        err = capsys.readouterr().err
        assert f"bad metrics file '{wrong}': it is not a fine-tuning run's metrics.json" in err, err
        assert "records no code" not in err, err
    assert main(["report", "--out", str(tmp_path / "out"), str(run), "--probe", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"bad probe file '{run}': it is not a probe result" in err and "records no code" not in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command, edited", [("report", "benchmark.md"), ("report", "benchmark.csv"),
                                             ("report", "metrics.json"), ("ablation-table", "ablation.md")])
def test_a_table_edited_by_hand_is_never_replaced_and_one_left_as_written_is(tmp_path, capsys, command, edited):
    """A user's hand edit of a table the command wrote (a note under benchmark.md, a corrected cell of benchmark.csv,
    the ablation's commentary) was replaced by the next run without a word: the tables were recognised by their
    first line (or shape) only. Each table is recorded by its SHA-256 beside them (.s2dc-tables.json): edited, the
    rerun exits 2 naming it and writes nothing; as written, or gone, the rerun writes every table."""
    out = tmp_path / "out"
    runs = [run_file(tmp_path, m, s, 0.2 + 0.1 * s + (m == "s2dc") * 0.05) for m in ("scratch", "s2dc") for s in (0, 1)]
    extra = ["--terms", "scratch=global:dual_softmax", "s2dc=global+p2p+p2s:dual_softmax"] * (command == "ablation-table")
    argv = [command, "--out", str(out), *map(str, runs), *extra]
    assert main(argv) == 0
    record = json.loads((out / ".s2dc-tables.json").read_text())
    tables = sorted(p.name for p in out.iterdir() if p.name != ".s2dc-tables.json")
    assert sorted(record) == tables and all(  # each table's SHA-256, computed here from its bytes
        record[n] == [hashlib.sha256((out / n).read_bytes()).hexdigest()] for n in tables)
    before = {n: (out / n).read_bytes() for n in tables}
    runs += [run_file(tmp_path, m, 2, 0.6 + (m == "s2dc") * 0.05) for m in ("scratch", "s2dc")]  # other tables
    argv = [command, "--out", str(out), *map(str, runs), *extra]

    path = out / edited
    path.write_bytes(path.read_bytes().replace(b"0", b"1", 1) + (b"\n" if edited.endswith(".md") else b""))
    edited_bytes = path.read_bytes()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"'{path}'" in err and "changed since" in err and ".s2dc-tables.json" in err, err
    assert path.read_bytes() == edited_bytes  # the user's edit kept,
    assert {n: (out / n).read_bytes() for n in tables if n != edited} == {n: b for n, b in before.items() if n != edited}

    path.write_bytes(before[edited])  # restored as written: replaced with the others
    assert main(argv) == 0
    assert all((out / n).read_bytes() != before[n] for n in tables if n != "probe.csv")  # (no probe given)
    (out / edited).unlink()  # gone: written again
    assert main(argv) == 0 and (out / edited).is_file()


def test_tables_written_before_their_record_was_kept_are_replaced_and_recorded(tmp_path):
    """Tables an s2dc that kept no record wrote (no .s2dc-tables.json beside them, e.g. a baseline committed then) are
    recognised by their text, as before, replaced, and recorded from then on; a user's notes named benchmark.md are
    still refused."""
    out = tmp_path / "out"
    runs = [run_file(tmp_path, m, s, 0.2 + 0.1 * s) for m in ("scratch", "s2dc") for s in (0, 1)]
    assert main(["report", "--out", str(out), *map(str, runs)]) == 0
    (out / ".s2dc-tables.json").unlink()
    runs += [run_file(tmp_path, m, 2, 0.6) for m in ("scratch", "s2dc")]
    assert main(["report", "--out", str(out), *map(str, runs)]) == 0
    assert "benchmark.md" in json.loads((out / ".s2dc-tables.json").read_text())
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "benchmark.md").write_text("# my notes\n")
    assert main(["report", "--out", str(notes), *map(str, runs)]) == 2
    assert (notes / "benchmark.md").read_text() == "# my notes\n"


def test_tables_without_a_record_stopped_while_replaced_are_replaced_by_the_rerun(tmp_path, monkeypatch):
    """Tables an s2dc that kept no record wrote (or whose record was deleted), stopped while a rerun replaced them
    (Ctrl-C between two files; alike a full disk or kill -9): the record the rerun left listed only the new bytes, so
    its next rerun refused the previous tables as 'edited by hand?'. The record lists their bytes before anything is
    replaced: the next rerun replaces them."""
    out = tmp_path / "out"
    runs = [run_file(tmp_path, m, s, 0.2 + 0.1 * s) for m in ("scratch", "s2dc") for s in (0, 1)]
    assert main(["report", "--out", str(out), *map(str, runs)]) == 0
    (out / ".s2dc-tables.json").unlink()  # as written before records were kept
    runs += [run_file(tmp_path, m, 2, 0.6) for m in ("scratch", "s2dc")]
    monkeypatch.setattr("os.replace", stopped_at_third_replace(__import__("os").replace))
    with pytest.raises(KeyboardInterrupt):
        main(["report", "--out", str(out), *map(str, runs)])
    monkeypatch.undo()
    assert main(["report", "--out", str(out), *map(str, runs)]) == 0
    assert "| 3 |" in (out / "benchmark.md").read_text()  # three seeds a row now


@pytest.mark.parametrize("record", ['<<<<<<< HEAD\n{"benchmark.md": []}\n=======\n{}\n>>>>>>> other\n', "", "[]",
                                    '{"benchmark.md": null}', '{"my": "settings"}', "folder"])
def test_a_record_that_is_not_one_is_refused_naming_it_and_nothing_is_written(tmp_path, capsys, record):
    """The tables' record left with a merge's conflict markers (it is committed with them), emptied, or of another
    shape was read as no record, so a table edited by hand was recognised by its first line and replaced, exit 0 (or
    a traceback, for a value that is no list); a folder there gave an error naming a temporary file. Each is refused
    naming the record, and nothing is written."""
    out = tmp_path / "out"
    runs = [run_file(tmp_path, m, s, 0.2 + 0.1 * s) for m in ("scratch", "s2dc") for s in (0, 1)]
    assert main(["report", "--out", str(out), *map(str, runs)]) == 0
    (out / "benchmark.md").write_text((out / "benchmark.md").read_text() + "\nmy note\n")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".s2dc-tables.json"}
    (out / ".s2dc-tables.json").unlink()
    if record == "folder":
        (out / ".s2dc-tables.json").mkdir()
    else:
        (out / ".s2dc-tables.json").write_text(record)
    assert main(["report", "--out", str(out), *map(str, runs)]) == 2
    err = capsys.readouterr().err
    assert f"'{out / '.s2dc-tables.json'}' is not the record" in err and "Traceback" not in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".s2dc-tables.json"} == before


def _locked_by_another(folder) -> bool:
    """Whether another open file description holds an exclusive flock on ``folder`` (a try without waiting)."""
    import fcntl
    import os

    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


@pytest.mark.parametrize("command", ["report", "ablation-table", "plots"])
def test_a_table_command_holds_its_folders_lock_while_it_reads_and_writes_the_record(tmp_path, monkeypatch, command):
    """Two table commands into one folder at once (`s2dc report` beside `ablation-table` into one --out, two reports)
    each read the record, then wrote it back with their own entries and renamed their files in: one command's entries
    were lost (a user's later edit of its table then replaced without a word, exit 0), or their renames interleaved
    (one report's benchmark.csv beside the other's metrics.json; a review reproduced both with two processes). Each
    now holds an exclusive lock on the folder (flock, no file added) from its check to its record's last write, so
    the second waits and reads the first one's record; so do `s2dc plots`' curve tables."""
    import s2dc.recorded
    from test_report_checks import run_in  # runs with their curves, which `s2dc plots` reads

    runs = [run_in(tmp_path, m, s, 0.2 + 0.1 * s + (m == "s2dc") * 0.05) for m in ("scratch", "s2dc") for s in (0, 1)]
    out = tmp_path / "out"
    seen = []
    real_read, real_replace = s2dc.recorded.read_record, s2dc.recorded.replace_all

    def read_record(folder, record):
        seen.append(("read", Path(folder).name, _locked_by_another(folder)))
        return real_read(folder, record)

    def replace_all(folder, contents):
        seen.append(("replace", Path(folder).name, _locked_by_another(folder)))
        return real_replace(folder, contents)

    monkeypatch.setattr(s2dc.recorded, "read_record", read_record)
    monkeypatch.setattr(s2dc.recorded, "replace_all", replace_all)
    argv = {"report": ["report", "--out", str(out), *map(str, runs)],
            "ablation-table": ["ablation-table", "--out", str(out), *map(str, runs), "--terms",
                               "scratch=global:dual_softmax", "s2dc=global+p2p+p2s:dual_softmax"],
            "plots": ["plots", "--figures", str(tmp_path / "figures"), "--curves", str(out), *map(str, runs)]}[command]
    assert main(argv) == 0
    ours = [step for step in seen if step[1] == "out"]
    assert {"read", "replace"} <= {step[0] for step in ours} and all(locked for _, _, locked in ours), seen
    assert not _locked_by_another(out)  # and released when it ends


def test_a_probe_result_given_twice_is_refused_not_counted_twice(tmp_path, capsys):
    """`--probe p.json p.json` (or a glob that lists one file twice) printed each probe row twice and tallied its
    dataset twice in the effect counts ('over all 2 datasets' of one), exit 0; a metrics.json given twice was already
    refused. Refused now, naming the file."""
    from test_report import probe_doc

    runs = [run_file(tmp_path, m, s, 0.3 + 0.1 * s + (m == "s2dc") * 0.2) for m in ("scratch", "s2dc") for s in (0, 1)]
    probe = tmp_path / "probe.json"
    probe.write_text(json.dumps(probe_doc()))
    out = tmp_path / "out"
    assert main(["report", "--out", str(out), *map(str, runs), "--probe", str(probe), str(probe)]) == 2
    err = capsys.readouterr().err
    assert f"'{probe}'" in err and "given twice" in err and "Traceback" not in err, err
    assert not out.exists()


@pytest.mark.parametrize("refused", ["folder", "all"])
def test_the_tables_are_written_where_the_file_system_refuses_a_folders_flock(tmp_path, monkeypatch, capsys, refused):
    """NFSv4 refuses an exclusive flock on a descriptor not open for writing (Linux fs/nfs/nfs4proc.c: EBADF), which
    a folder's always is, and Lustre without ``-o flock`` has none (ENOSYS); simulated here. Every table command
    failed with '[Errno 9] Bad file descriptor', naming no folder: a file of ours is locked there instead, and where
    no flock works at all the tables are written unlocked, said on stderr."""
    import errno
    import fcntl
    import os
    import stat

    real = fcntl.flock

    def refusing(fd, op):
        if (refused == "all" or stat.S_ISDIR(os.fstat(fd).st_mode)) and op & fcntl.LOCK_EX:
            raise OSError(errno.EBADF if refused == "folder" else errno.ENOSYS, "refused")
        return real(fd, op)

    monkeypatch.setattr(fcntl, "flock", refusing)
    runs = [run_file(tmp_path, m, s, 0.3 + 0.1 * s + (m == "s2dc") * 0.2) for m in ("scratch", "s2dc") for s in (0, 1)]
    out = tmp_path / "out"
    assert main(["report", "--out", str(out), *map(str, runs)]) == 0
    err = capsys.readouterr().err
    assert (out / "benchmark.csv").is_file() and (out / ".s2dc.lock").is_file()
    assert (f"note: '{out}' cannot be locked" in err) == (refused == "all"), err
