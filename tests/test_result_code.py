"""A result records the version of the code that made it, and the tables never compare results of two versions.

A fine-tuning's metrics.json recorded no trace of its code: `s2dc report` run by hand averaged the seeds of one row,
or set the methods of one dataset side by side, fine-tuned by two versions of the fine-tuning code, without a word
(only the workflow reran a run whose code changed). Each metrics.json now records ``code``, its run identity's hash
of the fine-tuning code, and each probe result the hash of the probe code; the report, the ablation table and the
plots refuse the results of one dataset made by two versions, and a result of an s2dc that recorded none, naming the
files and saying which to make again; the report's averages over datasets refuse datasets of two versions."""

from __future__ import annotations

import json

import pytest
import torch

from s2dc.cli import main
from s2dc.fingerprint import code_fingerprint
from s2dc.report.versions import current_code
from s2dc.train.outputs import is_edited, result_sha256

from conftest import CODE, sealed
from test_finetune import _interrupted_at_step_2, finetune, ft_config  # noqa: F401  (a fixture)
from test_probe_refusals import _regression_probe
from test_report import probe_doc, write_run
from test_report_checks import run_in

#: The code hash of another version than the fixtures' (conftest.CODE).
OTHER = "0" * 64


def _commands(out):
    return {"report": ["report", "--out", str(out)], "plots": ["plots", "--figures", str(out), "--curves", str(out)]}


def _refused(tmp_path, capsys, files, *named, commands=("report", "plots")):
    """Each command exits 2 on ``files``, with no traceback and nothing written; returns the messages (each naming
    every one of ``named``)."""
    out, said = tmp_path / "out", []
    for command in commands:
        assert main([*_commands(out)[command], *map(str, files)]) == 2, command
        err = capsys.readouterr().err
        assert all(str(n) in err for n in named) and "Traceback" not in err, err
        assert not out.exists()
        said.append(err)
    return said


def test_a_finetunings_metrics_record_the_code_of_its_run_identity(ft_config, seg_dir, tmp_path):  # noqa: F811
    """metrics.json records ``code``: the hash of the fine-tuning code that its run's identity records (in every
    checkpoint: the value a user matches a result to its run with), inside what result_sha256 covers."""
    out = tmp_path / "run"
    common = _interrupted_at_step_2(ft_config, seg_dir / "dataset.json", out, tmp_path / "cache")
    identity = torch.load(out / "checkpoints" / "step_00000002.pt", weights_only=True)["identity"]
    assert finetune(ft_config, seg_dir / "dataset.json", out, *common, "--eval.every", "2") == 0  # resumed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == 2
    assert metrics["code"] == identity["code"] == code_fingerprint("s2dc.downstream.engine")
    assert metrics["code"] == current_code("fine-tuning")  # what the report takes for this s2dc's
    assert metrics["result_sha256"] == result_sha256(metrics) and is_edited({**metrics, "code": OTHER})


def test_a_probe_result_records_the_code_of_the_probe(tmp_path):
    """A probe result records ``code``, the hash of the probe code (s2dc.eval.probe and all it imports), inside what
    its result_sha256 covers."""
    from s2dc.eval.probe import write_probe
    from s2dc.report.tables import collect_probes

    out = tmp_path / "probe.json"
    write_probe(_regression_probe(), out)
    doc = json.loads(out.read_text())
    assert doc["code"] == code_fingerprint("s2dc.eval.probe") == current_code("probe")
    assert doc["result_sha256"] == result_sha256(doc) and is_edited({**doc, "code": OTHER})
    assert collect_probes([out]).score.tolist() == [0.8123]


def test_seeds_of_one_row_made_by_two_versions_of_the_code_are_refused(tmp_path, capsys):
    """Two seeds of one row (dataset, method, protocol, label ratio) fine-tuned by two versions of the code: the
    report and the plots refuse them, naming both files, both versions and what to do."""
    new = run_in(tmp_path, "s2dc", 0, 0.5)
    old = run_in(tmp_path, "s2dc", 1, 0.6, code=OTHER)
    for err in _refused(tmp_path, capsys, [new, old], new, old, CODE[:12], OTHER[:12]):
        assert "two versions of s2dc's fine-tuning code" in err and "synthetic_btcv" in err, err
        assert "neither is of this s2dc's code" in err and "run" in err and "again" in err, err


def test_the_run_of_another_version_than_this_s2dcs_is_named_to_be_run_again(tmp_path, capsys):
    """Where one of the two is of this s2dc's fine-tuning code, the message names the other as the one to run
    again."""
    current = code_fingerprint("s2dc.downstream.engine")
    new = run_in(tmp_path, "s2dc", 0, 0.5, code=current)
    old = run_in(tmp_path, "s2dc", 1, 0.6, code=OTHER)
    for err in _refused(tmp_path, capsys, [old, new], new, old):
        assert f"'{old}' is not of this s2dc's code: run it again" in err, err
        assert f"'{new}' is not of" not in err, err


@pytest.mark.parametrize("other", ["method", "label ratio"])
def test_methods_and_label_ratios_of_one_dataset_made_by_two_versions_are_refused(tmp_path, capsys, other):
    """The methods compared on one dataset, and its label ratios (one curve, one table), made by two versions of the
    code: refused, naming both files; the same seeds of one row, of one version, are read."""
    first = run_in(tmp_path, "s2dc", 0, 0.5)
    changed = {"method": dict(method="scratch", ratio=0.1), "label ratio": dict(method="s2dc", ratio=1.0)}[other]
    folder = tmp_path / "second"
    folder.mkdir()
    from test_report_checks import with_curve

    second = with_curve(write_run(folder, changed["method"], 0, 0.4, ratio=changed["ratio"], name="metrics.json",
                                  code=OTHER))
    _refused(tmp_path, capsys, [first, second], first, second, "two versions of s2dc's fine-tuning code")
    same = with_curve(write_run(folder, changed["method"], 0, 0.4, ratio=changed["ratio"], name="metrics.json"))
    for command in _commands(tmp_path / "out").values():
        assert main([*command, str(first), str(same)]) == 0


def test_the_ablation_refuses_variants_of_one_dataset_made_by_two_versions(tmp_path, capsys):
    files = [write_run(tmp_path, "lg", 0, 0.3), write_run(tmp_path, "s2dc", 0, 0.4, code=OTHER)]
    assert main(["ablation-table", "--out", str(tmp_path / "out"), *map(str, files), "--terms",
                 "lg=global:dual_softmax", "s2dc=global+p2p+p2s:dual_softmax"]) == 2
    err = capsys.readouterr().err
    assert all(f"'{f}'" in err for f in files) and "two versions of s2dc's fine-tuning code" in err, err
    assert not (tmp_path / "out").exists()


def test_datasets_made_by_two_versions_are_each_their_own(tmp_path):
    """The check is per dataset: the runs of one dataset are compared with each other; another dataset's runs, of
    one version among themselves, may be of another (each row compares its own arms): the plots draw each dataset
    apart, and the report averages no two datasets that are never at one label ratio (btcv at 10 %, liver at 50 %):
    each average is its one dataset's mean over seeds, by hand. Liver has no scratch arm, so the counts under 'Does
    pretraining show?' tally btcv's verdict alone (verdicts of two versions counted together are refused:
    test_effect.py)."""
    dice = {"s2dc": [0.5, 0.7], "scratch": [0.3, 0.2]}
    files = [run_in(tmp_path / "btcv", m, s, d, ratio=0.1) for m, ds in dice.items() for s, d in enumerate(ds)]
    files += [run_in(tmp_path / "liver", "s2dc", s, d / 2, ratio=0.5, dataset="synthetic_msd_liver", code=OTHER)
              for s, d in enumerate(dice["s2dc"])]
    for command in _commands(tmp_path / "out").values():
        assert main([*command, *map(str, files)]) == 0
    averages = json.loads((tmp_path / "out" / "metrics.json").read_text())["averages"]["segmentation"]
    for method, ds in dice.items():
        assert averages[method]["labels_10%"]["mean"] == pytest.approx(100 * sum(ds) / 2, abs=1e-4)
        assert averages[method]["labels_10%"]["datasets"] == 1
    assert averages["s2dc"]["labels_50%"]["mean"] == pytest.approx(100 * sum(dice["s2dc"]) / 4, abs=1e-4)
    assert averages["s2dc"]["labels_50%"]["datasets"] == 1 and "labels_50%" not in averages["scratch"]


@pytest.mark.parametrize("current", [True, False], ids=["one of this s2dc", "none of this s2dc"])
def test_the_averages_refuse_datasets_made_by_two_versions(tmp_path, capsys, current):
    """The averages over datasets (per task, over all datasets) took btcv fine-tuned by one version of the code and
    liver by another as one number, though each dataset's runs were of one version. The report refuses them, naming
    each version with its datasets and a file of each, and which datasets to run again: those not of this s2dc's code
    (or, where none is, all of them). The plots average no two datasets: they draw them."""
    code = current_code("fine-tuning") if current else CODE
    btcv = [run_in(tmp_path / "btcv", m, 0, 0.5, code=code) for m in ("s2dc", "scratch")]
    liver = [run_in(tmp_path / "liver", m, 0, 0.4, dataset="synthetic_msd_liver", code=OTHER)
             for m in ("s2dc", "scratch")]
    (err,) = _refused(tmp_path, capsys, [*btcv, *liver], btcv[0], liver[0], code[:12], OTHER[:12],
                      commands=("report",))
    assert "synthetic_btcv" in err and "synthetic_msd_liver" in err, err
    assert "two versions of s2dc's fine-tuning code" in err and "average" in err, err
    if current:
        assert ("the results of synthetic_msd_liver are not of this s2dc's code: run them again with this s2dc"
                in err), err
        assert "synthetic_btcv are not" not in err, err
    else:
        assert "none is of this s2dc's code: run all of them again with this s2dc" in err, err
    plots = ["plots", "--figures", str(tmp_path / "f"), "--curves", str(tmp_path / "c")]
    assert main([*plots, *map(str, btcv + liver)]) == 0


@pytest.mark.parametrize("code, expected", [
    (None, "records no code"),
    ("", "code is ''; expected the SHA-256"),
    ("v2", "code is 'v2'; expected the SHA-256"),
])
def test_a_metrics_file_without_its_code_is_refused_as_an_older_s2dcs(tmp_path, capsys, code, expected):
    """A metrics.json that records no code was written by an s2dc older than this record: its version cannot be
    told, so it is refused, naming the file and saying to run it again (the workflow reruns every such run: its code
    changed)."""
    run = run_in(tmp_path, "s2dc", 0, 0.5)
    doc = json.loads(run.read_text())
    if code is None:
        del doc["code"]
    else:
        doc["code"] = code
    run.write_text(json.dumps({**doc, "result_sha256": result_sha256(doc)}))
    for err in _refused(tmp_path, capsys, [run], f"bad metrics file '{run}'", expected):
        if code is None:
            assert "an s2dc older" in err and "run it again" in err, err


def test_probe_results_of_one_dataset_made_by_two_versions_are_refused(tmp_path, capsys):
    """Two probe results of one dataset (the ablation's: one file per variant's encoder) set side by side in its probe
    table, probed by two versions of the probe code: refused naming both files; a probe result that records no code
    is an older s2dc's, refused by the report and the ablation table alike."""
    files = [write_run(tmp_path, "lg", 0, 0.3), write_run(tmp_path, "s2dc", 0, 0.4)]
    terms = ["--terms", "lg=global:dual_softmax", "s2dc=global+p2p+p2s:dual_softmax"]
    first, second = tmp_path / "p_lg.json", tmp_path / "p_s2dc.json"
    doc = probe_doc()
    first.write_text(json.dumps(sealed({**doc, "encoders": {"lg": doc["encoders"]["s2dc"]}})))
    second.write_text(json.dumps(sealed({**doc, "code": OTHER, "encoders": {"s2dc": doc["encoders"]["s2dc"]}})))
    out = tmp_path / "out"
    assert main(["ablation-table", "--out", str(out), *map(str, files), *terms, "--probe", str(first),
                 str(second)]) == 2
    err = capsys.readouterr().err
    assert f"'{first}'" in err and f"'{second}'" in err and "two versions of s2dc's probe code" in err, err
    assert CODE[:12] in err and OTHER[:12] in err and "Traceback" not in err and not out.exists()
    second.write_text(json.dumps(sealed({**doc, "encoders": {"s2dc": doc["encoders"]["s2dc"]}})))
    assert main(["ablation-table", "--out", str(out), *map(str, files), *terms, "--probe", str(first),
                 str(second)]) == 0

    older = {k: v for k, v in probe_doc().items() if k != "code"}
    second.write_text(json.dumps({**older, "result_sha256": result_sha256(older)}))
    for command in (["ablation-table", "--out", str(tmp_path / "o2"), *map(str, files), *terms],
                    ["report", "--out", str(tmp_path / "o3"), str(files[1])]):
        assert main([*command, "--probe", str(second)]) == 2
        err = capsys.readouterr().err
        assert f"bad probe file '{second}'" in err and "records no code" in err and "probe it again" in err, err


def test_the_start_check_still_takes_an_older_s2dcs_results_for_its_own(tmp_path, monkeypatch):
    """A metrics.json and a probe result of an s2dc older than the record of their code are s2dc's outputs all the
    same: the workflow's start check lets them pass (the jobs, whose code changed, run again and replace them), and
    refuses them edited as before."""
    import yaml
    from snakemake.utils import validate

    from conftest import REPO
    from s2dc.workflow_checks import ForeignOutputError, check_job_outputs

    config = {**yaml.safe_load((REPO / "params.yaml").read_text()), "scale": "smoke"}
    validate(config, str(REPO / "workflow/schemas/params.schema.yaml"))
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "results/smoke/finetune/segmentation/btcv/s2dc/labels50pct/seed0/metrics.json"
    run.parent.mkdir(parents=True)
    doc = {k: v for k, v in json.loads(write_run(run.parent, "s2dc", 0, 0.5, name="metrics.json").read_text()).items()
           if k != "code"}
    doc = {**doc, "steps": 2, "result_sha256": result_sha256({**doc, "steps": 2})}
    run.write_text(json.dumps(doc))
    probe = tmp_path / "results/smoke/probe/btcv.json"
    probe.parent.mkdir(parents=True)
    older = {k: v for k, v in probe_doc().items() if k != "code"}
    probe.write_text(json.dumps({**older, "result_sha256": result_sha256(older)}))
    check_job_outputs(config)
    run.write_text(json.dumps({**doc, "seed": 1}))
    with pytest.raises(ForeignOutputError, match="result_sha256 differs"):
        check_job_outputs(config)
    # one of this s2dc (it records its code) whose checksum was deleted with the edit
    run.write_text(json.dumps({k: v for k, v in doc.items() if k != "result_sha256"} | {"code": CODE, "seed": 1}))
    with pytest.raises(ForeignOutputError, match="result_sha256 is missing"):
        check_job_outputs(config)
    run.write_text(json.dumps(doc))
    edited_probe = {k: v for k, v in probe_doc().items() if k != "result_sha256"} | {"stage": 3}  # alike, a probe's
    probe.write_text(json.dumps(edited_probe))
    with pytest.raises(ForeignOutputError, match=r"btcv\.json.*result_sha256 is missing"):
        check_job_outputs(config)
