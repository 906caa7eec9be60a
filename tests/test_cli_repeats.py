"""An option given twice on the command line is refused, as a YAML config refuses a key given twice: argparse kept
the last value silently (`s2dc finetune --train.steps 10 --train.steps 20` ran 20 steps)."""

import pytest

from s2dc.cli import _Parser, build_parser

SYNTH = ["synth", "--kind", "btcv", "--out", "o", "--cases", "2", "--seed", "0"]


def refusal(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        build_parser(argv[0]).parse_args(argv)
    assert exit_.value.code == 2, argv
    err = capsys.readouterr().err
    assert err.startswith(f"usage: s2dc {argv[0]}"), err
    return err


@pytest.mark.parametrize("argv, message", [
    (["finetune", "--train.steps", "10", "--train.steps", "20"], "argument --train.steps: given twice (10, then 20)"),
    (["finetune", "--train.steps=10", "--train.steps", "20"], "argument --train.steps: given twice (10, then 20)"),
    (["finetune", "--train.steps", "10", "--train.steps=20"], "argument --train.steps: given twice (10, then 20)"),
    (["pretrain", "--optim.lr", "1e-3", "--data.source", "d", "--optim.lr", "1e-2"],
     "argument --optim.lr: given twice (1e-3, then 1e-2)"),
    (["finetune", "--train.roi_size", "8", "8", "8", "--train.roi_size", "16", "16", "16"],
     "argument --train.roi_size: given twice (8 8 8, then 16 16 16)"),
    ([*SYNTH, "--shape", "8", "8", "8", "--shape", "16", "16", "16"], "argument --shape: given twice (8 8 8, then 16 16 16)"),
    (["report", "m.json", "--out", "o", "--probe", "a.json", "--probe", "b.json"],
     "argument --probe: given twice (a.json, then b.json)"),
    (["export-encoder", "c.pt", "e.pt", "--partial", "--partial"], "argument --partial: given twice: give it once"),
    (["pretrain", "--run.seed", "1", "--run.seed", "2", "--run.seed", "3"], "argument --run.seed: given 3 times (1, then 2, then 3)"),
])
def test_an_option_given_twice_is_refused_naming_it(argv, message, capsys):
    err = refusal(argv, capsys)
    assert message in err, err
    assert err.rstrip().endswith("give it once"), err


def test_an_option_of_a_nested_subcommand_given_twice_is_refused(capsys):
    argv = ["sweep", "work", "--storage", "a.journal", "--study", "s", "--budget", "1", "--budget", "2", "--spec", "{}"]
    with pytest.raises(SystemExit) as exit_:
        build_parser("sweep").parse_args(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: s2dc sweep work") and "argument --budget: given twice (1, then 2)" in err, err


def test_two_spellings_of_one_option_are_one_option(capsys):
    """No s2dc option has two names today; one that had would be counted once over both."""
    parser = _Parser(prog="s2dc x")
    parser.add_argument("-n", "--cases", type=int)
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["-n", "2", "--cases=3"])
    assert exit_.value.code == 2
    assert "argument -n/--cases: given twice (2, then 3): give it once" in capsys.readouterr().err
    assert parser.parse_args(["-n", "-2"]).cases == -2


def test_an_option_given_once_is_read_as_before():
    args = vars(build_parser("finetune").parse_args(["finetune", "--train.steps=10", "--train.roi_size", "8", "8", "8"]))
    assert args["train.steps"] == "10" and args["train.roi_size"] == ["8", "8", "8"]
    assert vars(build_parser("pretrain").parse_args(["pretrain", "--optim.lr", "1e-3"]))["optim.lr"] == "1e-3"
    assert build_parser("synth").parse_args([*SYNTH, "--shape", "8", "8", "8"]).shape == [8, 8, 8]
    args = build_parser("report").parse_args(["report", "m.json", "n.json", "--out", "o", "--probe", "a.json", "b.json"])
    assert args.metrics == ["m.json", "n.json"] and args.probe == ["a.json", "b.json"]


def test_words_after_a_bare_double_dash_are_not_options():
    """After `--` argparse reads every word as a positional value, however it looks."""
    args = build_parser("export-encoder").parse_args(["export-encoder", "--which", "student", "--", "--which", "e.pt"])
    assert (args.which, args.checkpoint, args.output) == ("student", "--which", "e.pt")


def test_help_is_untouched(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser("finetune").parse_args(["finetune", "-h"])
    assert exit_.value.code == 0 and "--train.steps" in capsys.readouterr().out


def test_no_command_of_the_workflow_gives_an_option_twice(tmp_path):
    """The rules wrote a dataset's intensity preset, then params.yaml's options: scale paper's BraTS 2023
    (`preprocess.intensity zscore_volume`) ran `s2dc finetune --preprocess.intensity zscore ... --preprocess.intensity
    zscore_volume`, which the command line now refuses."""
    import re

    from conftest import snakemake

    for scale in ("paper", "quick"):
        plan = snakemake(tmp_path, "-n", "-p", "--config", f"scale={scale}")
        assert plan.returncode == 0, plan.stderr[-3000:]
        commands = [line for line in plan.stdout.splitlines() if re.search(r"\b(pretrain|finetune) ", line)]
        assert len(commands) > 10, plan.stdout[-2000:]
        for line in commands:
            options = re.findall(r"(?<= )--[a-z_]+\.[a-z_]+(?==| )", line)
            twice = sorted({o for o in options if options.count(o) > 1})
            assert not twice, (twice, line)
        assert any("--preprocess.intensity zscore_volume" in line for line in commands) or scale != "paper"
