"""params.yaml entries the workflow took at parse and a job refused after the twins were drawn and the encoders
pretrained, or that crashed the parse with a traceback naming no key: each is now refused when the workflow is
parsed, naming the key (or file) and what was expected."""

from __future__ import annotations

import copy

import pytest
import yaml

from conftest import REPO, params_error, run_here, snakemake

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def _with(change) -> dict:
    params = copy.deepcopy(PARAMS)
    change(params["scales"]["smoke"])
    return params


@pytest.mark.parametrize("change, config, key, message", [
    (lambda p: None, {"scal": "quick"}, "the top level", "'scal' was unexpected"),
    (lambda p: p["datasets"]["btcv"].update(cases="many"), {}, "scales.smoke.datasets.btcv.cases",
     "'many' is not of type 'integer'"),
])
def test_a_schema_error_names_the_key_and_leaves_out_the_schema(change, config, key, message):
    """The schema's refusal (`--config scal=quick`, a wrong type) printed the whole schema and the whole config
    (~960 lines, the key at the top): now what is wrong, and where, in a few lines."""
    said = params_error(_with(change), scale="smoke", **config)
    assert f"at {key}: " in said and message in said, said[:2000]
    assert len(said.splitlines()) < 10 and "$schema" not in said, said[:2000]


@pytest.mark.parametrize("change, message", [
    (lambda p: p["finetune"]["options"].update(segment={"pos": 3.0}),
     "segment.pos (from finetune.options or datasets.cc_ccii.finetune) is an option of segmentation, but cc_ccii is "
     "classification"),
    (lambda p: p["datasets"]["btcv"].update(finetune={"data": {"input_channel": "CT"}}),
     "data.input_channel (from finetune.options or datasets.btcv.finetune) is for translation, but btcv is "
     "segmentation"),
    (lambda p: p["sweep"]["space"].update({"finetune.classify.head_hidden": {"choices": [64, 128]}}),
     "classify.head_hidden (from finetune.options, datasets.btcv.finetune, sweep.trial or sweep.space) is an option "
     "of classification, but btcv is segmentation"),
    (lambda p: p["datasets"]["cc_ccii"].update(val_fraction=0.9),
     "scales.smoke.datasets.cc_ccii: val_fraction 0.9 of 9 cases leaves 1 training case(s); a classification twin "
     "of kind 'cc_ccii' needs at least 3 (one of each class)"),
    (lambda p: p["experiments"].update(seeds=[2**32]), "4294967296 is greater than the maximum of 4294967295"),
    (lambda p: p["probe"].update(seed=2**32), "4294967296 is greater than the maximum of 4294967295"),
])
def test_an_entry_a_job_would_refuse_is_refused_at_parse(change, message):
    """Each of these passed the parse (`snakemake -n` exit 0): options of one task given to a dataset of another,
    a twin whose validation fraction left one class to train on, seeds NumPy refuses."""
    assert message in params_error(_with(change), scale="smoke")


def test_a_scale_option_error_names_params_yaml_and_a_number_written_1e_1_is_read(tmp_path, caplog):
    """An unknown key in scales.<scale>.pretrain.options crashed the parse with a traceback naming only common.smk
    (options were built before they were checked); YAML 1.1 reads `1e-1` as a string, which `s2dc pretrain` takes as
    0.1 but the parse compared to a number (TypeError traceback)."""
    wrong = _with(lambda p: p["pretrain"]["options"]["loss"].update(match_temperatur=0.1))
    config = tmp_path / "params.yaml"
    config.write_text(yaml.safe_dump(wrong))
    plan = snakemake(tmp_path, "-n", "--config", "scale=smoke", configfile=config)
    said = plan.stderr + caplog.text  # Snakemake logs the error to its logger
    assert plan.returncode != 0 and "WorkflowError" in said and "ValueError" not in said, said[-2000:]
    assert "params.yaml: scales.smoke.pretrain.options" in said and "loss.match_temperatur" in said, said[-2000:]
    text = (REPO / "params.yaml").read_text().replace("loss: {queue_size: 8, match_temperature: 0.1}",
                                                      "loss: {queue_size: 8, match_temperature: 1e-1}")
    assert "1e-1" in text
    config.write_text(text)
    plan = snakemake(tmp_path, "-n", "--config", "scale=smoke", configfile=config)
    assert plan.returncode == 0, plan.stderr[-2000:]


def test_a_key_given_twice_in_params_yaml_is_refused_naming_it(tmp_path, caplog):
    """A params.yaml with `scale:` twice ran the second (Snakemake keeps the last; DVC refuses the file)."""
    config = tmp_path / "params.yaml"
    config.write_text((REPO / "params.yaml").read_text() + "scale: smoke\n")
    plan = snakemake(tmp_path, "-n", configfile=config)
    said = plan.stderr + caplog.text
    assert plan.returncode != 0 and "key 'scale' is given twice" in said and str(config) in said, said[-2000:]


@pytest.mark.parametrize("edit", [("      btcv: {source: synthetic, cases: 6", "       btcv: {source: synthetic, cases: 6"),
                                  ("  smoke:\n", "  smoke:\n\t\n")], ids=["indent", "tab"])
def test_a_yaml_error_in_params_yaml_is_named_with_its_line(tmp_path, caplog, edit):
    """Snakemake's reader of the workflow's `configfile: "params.yaml"` said only "Config file is not valid JSON or
    YAML" (no file, line or column): the workflow reads the file first and names where the error is."""
    text = (REPO / "params.yaml").read_text()
    assert edit[0] in text
    (tmp_path / "params.yaml").write_text(text.replace(edit[0], edit[1], 1))
    line = 1 + text[: text.index(edit[0])].count("\n") + edit[0].count("\n")  # the edited line, as YAML counts it
    plan = run_here(tmp_path, ["--snakefile", str(REPO / "Snakefile"), "-n"])
    said = plan.stderr + caplog.text
    assert plan.returncode != 0 and "params.yaml" in said, said[-2000:]
    assert f"line {line}," in said or f"line {line + 1}," in said, said[-2000:]


@pytest.mark.parametrize("line", ["only: btcv", "methods: scratch"])
def test_a_command_line_choice_written_in_a_config_file_is_refused_naming_it(tmp_path, line):
    """`only:` or `methods:` written in params.yaml (the schema says: command line only) narrowed every run of the file,
    and dvc.yaml, which does not track them, would have recorded the narrowed tables as the benchmark's."""
    from s2dc.workflow_checks import ParamsError, check_config_files

    config = tmp_path / "params.yaml"
    config.write_text((REPO / "params.yaml").read_text() + line + "\n")
    key = line.split(":")[0]
    with pytest.raises(ParamsError, match=rf"{config}: {key}: a choice of the command line \(`--config {key}="):
        check_config_files([config])
    check_config_files([REPO / "params.yaml"])


def test_a_config_file_or_schema_edited_between_two_parses_in_one_process_is_read_anew(tmp_path):
    """The parse reads a config file's keys and builds the schema's strict validator once per text in a process (the
    tests parse the workflow again and again): a file edited after a first parse is checked as it reads now."""
    from s2dc.workflow_checks import ParamsError, _check_integers, check_config_files

    config = tmp_path / "params.yaml"
    config.write_text("scale: smoke\n")
    check_config_files([config])
    config.write_text("scale: smoke\nscale: quick\n")
    with pytest.raises(ParamsError, match="key 'scale' is given twice"):
        check_config_files([config])
    config.write_text("scale: smoke\nonly: btcv\n")
    with pytest.raises(ParamsError, match=r"only: a choice of the command line"):
        check_config_files([config])

    schema = tmp_path / "schema.yaml"
    schema.write_text("type: object\nproperties:\n  seed: {type: number}\n")
    _check_integers({"seed": 1.0}, schema)
    schema.write_text("type: object\nproperties:\n  seed: {type: integer}\n")
    with pytest.raises(ParamsError, match=r"params.yaml: seed: 1.0 is not an integer"):
        _check_integers({"seed": 1.0}, schema)
    _check_integers({"seed": 1}, schema)


def test_the_parse_knows_each_tasks_options_as_the_task_modules_declare_them():
    """The workflow checks the task options without importing the task modules (torch): its map must be theirs."""
    from s2dc.data.registry import INPUT_CHANNEL_TASKS, TASK_OPTION_SECTIONS
    from s2dc.downstream.tasks import TASKS

    assert dict(TASK_OPTION_SECTIONS) == {t.name: t.options_section for t in TASKS.values() if t.options_section}
    assert set(INPUT_CHANNEL_TASKS) == {t.name for t in TASKS.values() if t.picks_input_channel}


def test_a_pool_given_a_validation_fraction_is_refused_and_a_twin_may_leave_it_to_the_writer():
    """The schema required val_fraction of every synthetic dataset, a pool's too, whose writer lists every case for
    pretraining and used none: a value there was taken and ignored."""
    message = params_error(_with(lambda p: p["datasets"]["ct_pool"].update(val_fraction=0.5)), scale="smoke")
    assert "scales.smoke.datasets.ct_pool: val_fraction 0.5 is given, but a pretraining pool lists every case for " \
           "pretraining (it has no validation cases): give none" in message, message
    assert params_error(_with(lambda p: p["datasets"]["btcv"].pop("val_fraction")), scale="smoke") == ""
    assert all("val_fraction" not in entry for name, entry in PARAMS["scales"]["smoke"]["datasets"].items()
               if name.endswith("_pool"))


def test_a_release_folder_that_is_its_conversions_folder_is_refused():
    """`raw` set to `resources/<scale>`: a release's folder, RAW/<name>, was the folder its conversion writes, so the
    converted dataset.json changed the release's fingerprint and every run converted it again (CC-CCII's volumes
    written among the user's files); refused naming both. Beside or above it, or for a synthetic twin, it is not."""
    params = copy.deepcopy(PARAMS)
    params["scales"]["paper"]["raw"] = "resources/paper"
    said = params_error(params, scale="paper")
    assert "params.yaml: scales.paper.raw 'resources/paper': the release of ct_pool would be read from " \
           "'resources/paper/ct_pool', where its conversion is written ('resources/paper/ct_pool') (and so for 12 " \
           "more datasets)" in said, said
    params["scales"]["paper"]["raw"] = "resources"  # resources/btcv: beside resources/paper/btcv
    assert params_error(params, scale="paper") == ""
    params["scales"]["paper"]["raw"] = "./resources/paper/../paper"
    assert "where its conversion is written" in params_error(params, scale="paper")
    params["scales"]["smoke"]["raw"] = "resources/smoke"  # every smoke dataset is a twin: no release is read
    assert params_error(params, scale="smoke") == ""
    params["scales"]["smoke"]["raw"] = "resources/quick"  # another scale's conversion folder: written by its runs
    params["scales"]["smoke"]["datasets"]["btcv"] = {"source": "real"}
    assert "the release of btcv would be read from 'resources/quick/btcv', where its conversion is written " \
           "('resources/quick/btcv')" in params_error(params, scale="smoke")
