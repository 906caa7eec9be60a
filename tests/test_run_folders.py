"""A pretraining's run folder is named after what it computes: the launcher's words, not how they are spelled. A
launcher rewritten as `--nproc_per_node=4` for `--nproc_per_node 4` named another folder, and scale paper retrained
its encoders from step 0; a launcher of another process count (another batch) names another one."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

from conftest import REPO, params_error, snakemake


def _pretrain_folders(tmp_path, launcher: str) -> set[str]:
    """The --run.out_dir of every pretraining job of scale paper's dry run, with pretrain.launcher ``launcher``."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["scales"]["paper"]["pretrain"]["launcher"] = launcher
    config = tmp_path / f"params{abs(hash(launcher))}.yaml"
    config.write_text(yaml.safe_dump(params))
    plan = snakemake(tmp_path, "-n", "-p", "--config", "scale=paper", configfile=config)
    assert plan.returncode == 0, plan.stderr[-3000:]
    folders = set(re.findall(r" pretrain .*--run\.out_dir '?([^' ]+)'?", plan.stdout))
    assert len(folders) >= 3, plan.stdout[-3000:]  # one per modality at least
    return folders


def test_a_launcher_spelled_another_way_finds_the_same_run_folders(tmp_path):
    spaced = _pretrain_folders(tmp_path, "torchrun --nproc_per_node 4 -m s2dc.cli")
    assert _pretrain_folders(tmp_path, "torchrun  --nproc_per_node=4 -m 's2dc.cli'") == spaced
    assert not _pretrain_folders(tmp_path, "torchrun --nproc_per_node 2 -m s2dc.cli") & spaced


def test_a_launcher_a_shell_cannot_split_is_refused_at_parse():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["scales"]["smoke"]["pretrain"]["launcher"] = "torchrun --nproc_per_node 4 -m 's2dc.cli"
    assert "scales.smoke.pretrain.launcher \"torchrun --nproc_per_node 4 -m 's2dc.cli\": No closing quotation" \
        in params_error(params, scale="smoke")


def test_a_launcher_of_no_command_is_refused_at_parse():
    """A launcher of blanks passed the schema's minLength and ran `pretrain ...` as the command; one starting with #
    made the shell read the whole command line as a comment and run nothing."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for launcher in ("   ", "# s2dc"):
        params["scales"]["smoke"]["pretrain"]["launcher"] = launcher
        assert f"scales.smoke.pretrain.launcher {launcher!r}: no command in it" in params_error(params, scale="smoke")
    # one that runs something else: the jobs failed after the twins were drawn (`python pretrain ...`)
    for launcher in ("python", "torchrun --nproc_per_node 4", "s2dc pretrain", "torchrun --nproc_per_node 4 s2dc/cli.py"):
        params["scales"]["smoke"]["pretrain"]["launcher"] = launcher
        assert f"scales.smoke.pretrain.launcher {launcher!r}: it does not end in the s2dc command" in \
            params_error(params, scale="smoke"), launcher
    for launcher in ("srun s2dc", "python -m s2dc.cli", "torchrun --no-python s2dc", "torchrun --module s2dc.cli"):
        params["scales"]["smoke"]["pretrain"]["launcher"] = launcher
        assert params_error(params, scale="smoke") == "", launcher
    # torchrun runs its script with Python unless --no-python: `torchrun ... s2dc` ran `python -u s2dc` (the package's
    # folder here), each pretraining failing after the downloads and conversions; a path to the console script is a
    # Python file it can run
    for launcher in ("torchrun --nproc_per_node 1 s2dc", "python -m torch.distributed.run s2dc",
                     "srun torchrun --nproc_per_node 1 s2dc", "env OMP_NUM_THREADS=1 torchrun --nproc_per_node 1 s2dc"):
        params["scales"]["smoke"]["pretrain"]["launcher"] = launcher
        assert f"scales.smoke.pretrain.launcher {launcher!r}: torchrun runs 's2dc' with Python" in \
            params_error(params, scale="smoke"), launcher
    # a module that is no command: `python -m s2dc` finds no s2dc.__main__
    for launcher in ("torchrun --nproc_per_node 1 -m s2dc", "torchrun --nproc_per_node 1 --module s2dc",
                     "python -m s2dc"):
        params["scales"]["smoke"]["pretrain"]["launcher"] = launcher
        assert "runs the module 's2dc', which is no command: write s2dc.cli" in params_error(params, scale="smoke"), \
            launcher
    # torchrun's options in any order (its parser's order put -m before --master_port: refused, though it runs)
    for launcher in ("torchrun --nproc_per_node 4 --master_port 29501 -m s2dc.cli", "srun torchrun --no-python s2dc",
                     "torchrun -m --nproc_per_node 2 --rdzv_backend c10d s2dc.cli"):
        params["scales"]["smoke"]["pretrain"]["launcher"] = launcher
        assert params_error(params, scale="smoke") == "", launcher
    params["scales"]["smoke"]["pretrain"]["launcher"] = f"torchrun --nproc_per_node 1 {Path(sys.executable).parent / 's2dc'}"
    assert params_error(params, scale="smoke") == ""


def test_the_usual_spelling_of_a_launcher_keeps_the_folder_it_had():
    """Folders were named after the launcher's text; the words of its usual spelling, joined, are that text: runs
    found before are found again."""
    import hashlib
    import json
    import shlex

    from s2dc.workflow_checks import launcher_words

    for launcher in ("s2dc", "torchrun --nproc_per_node 4 -m s2dc.cli"):
        old = hashlib.sha1(json.dumps([launcher, {"a": 1}], sort_keys=True).encode()).hexdigest()[:10]
        new = hashlib.sha1(json.dumps([shlex.join(launcher_words(launcher)), {"a": 1}], sort_keys=True).encode())
        assert new.hexdigest()[:10] == old


def test_either_spelling_of_a_torchrun_option_names_one_run_folder():
    """torchrun takes `--nproc-per-node` and `--nproc_per_node` (and so `--rdzv-backend`, `--master-port`, ...) as one
    option; the launcher's words named two run folders after them, and a respelled launcher retrained from step 0.
    Another process count still names another folder."""
    from s2dc.workflow_checks import launcher_words

    usual = launcher_words("torchrun --nproc_per_node 4 --rdzv_backend c10d -m s2dc.cli")
    for launcher in ("torchrun --nproc-per-node 4 --rdzv-backend c10d -m s2dc.cli",
                     "torchrun --nproc_per_node=4 --rdzv-backend=c10d -m s2dc.cli",
                     "torchrun --nproc-per-node=4 --rdzv_backend c10d -m s2dc.cli"):
        assert launcher_words(launcher) == usual, launcher
    assert launcher_words("torchrun --nproc-per-node 2 --rdzv-backend c10d -m s2dc.cli") != usual
    assert launcher_words("torchrun --rdzv-endpoint=node-1:29400 -m s2dc.cli") != launcher_words(
        "torchrun --rdzv-endpoint=node_1:29400 -m s2dc.cli")  # a value as written


def _torchrun_reads(arguments: list[str]) -> dict | None:
    """What torchrun's own parser makes of ``arguments`` (a launcher's words after `torchrun`), or None if it refuses
    them: the premise of each case below, checked apart from s2dc's reading."""
    import contextlib
    import io

    from torch.distributed.run import get_args_parser

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return vars(get_args_parser().parse_args(arguments))
    except SystemExit:
        return None


def test_an_abbreviation_torchrun_takes_names_the_run_folder_of_its_option():
    """torchrun's argparse takes a prefix that only one of its option strings starts with for that option
    (`--nproc_per 4` runs `--nproc_per_node 4`, `--mod` runs `-m`), `-r3` and `-r=3` for `-r 3`, and each option by
    any of its names (`--redirects` is `-r`); the launcher's words kept each spelling, so a launcher respelled so named
    another run folder and retrained from step 0. Each option is named by its first name (`_` for `-`), so the usual
    spelling keeps its words."""
    from s2dc.workflow_checks import launcher_words

    usual = ["torchrun", "--nproc_per_node", "4", "-m", "s2dc.cli"]
    for launcher in ("torchrun --nproc_per 4 -m s2dc.cli", "torchrun --nproc_per=4 -m s2dc.cli",
                     "torchrun --nproc-per 4 --mod s2dc.cli", "torchrun --nproc_per_n=4 --module s2dc.cli"):
        assert _torchrun_reads(launcher.split()[1:]) == _torchrun_reads(usual[1:]), launcher
        assert launcher_words(launcher) == usual, launcher
    spelled = {  # in the order of torchrun's parser (test_options_in_another_order_name_one_run_folder)
        "torchrun --nn 1 -r3 --tee=2 -m s2dc.cli": "torchrun --nnodes 1 -m -r 3 -t 2 s2dc.cli",
        "torchrun --redirects 3 -mt2 s2dc.cli": "torchrun -m -r 3 -t 2 s2dc.cli",
        "torchrun -r=3 --standa -m s2dc.cli": "torchrun --standalone -m -r 3 s2dc.cli",
    }
    for launcher, words in spelled.items():
        assert _torchrun_reads(launcher.split()[1:]) == _torchrun_reads(words.split()[1:]) is not None, launcher
        assert launcher_words(launcher) == words.split(), launcher
    # python -m torch.distributed.run is torchrun (its entry point); the interpreter's words stay as written
    assert launcher_words("python -m torch.distributed.run --nproc_per=4 --mod s2dc.cli") == [
        "python", "-m", "torch.distributed.run", "--nproc_per_node", "4", "-m", "s2dc.cli"]
    # the words after the script are the script's: read as before (`=` split, `_` for `-`), not as torchrun's
    assert launcher_words("torchrun --nproc_per_node 4 -m s2dc.cli --nproc_per=2") == [*usual, "--nproc_per", "2"]


def test_an_option_torchrun_refuses_is_refused_at_parse():
    """An abbreviation that several of torchrun's option strings start with is ambiguous to argparse, even when they
    name one option (`--nproc`: `--nproc-per-node` and `--nproc_per_node`), and torchrun stops at start; so does a
    name it does not know. The workflow took them and named a run folder after them; the job failed only when
    started (on SLURM, after its wait in the queue)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    cases = {
        "torchrun --nproc 4 -m s2dc.cli": "'--nproc' is ambiguous to torchrun: it could match --nproc-per-node, "
                                          "--nproc_per_node",
        "torchrun --nproc=4 -m s2dc.cli": "'--nproc=4' is ambiguous to torchrun: it could match --nproc-per-node, "
                                          "--nproc_per_node",
        "python -m torch.distributed.run --no 4 -m s2dc.cli": "'--no' is ambiguous to torchrun: it could match "
                                                              "--no-python, --no_python, --node-rank, --node_rank",
        "torchrun --nprocs_per_node 4 -m s2dc.cli": "'--nprocs_per_node' is not an option of torchrun",
        "torchrun --standalone=1 -m s2dc.cli": "'--standalone=1': torchrun's --standalone takes no value",
        "torchrun -m s2dc.cli --data.workers 0": None,  # the script's words: passed on, not torchrun's
    }
    for launcher, error in cases.items():
        arguments = launcher.split()[3 if launcher.startswith("python") else 1:]
        assert (_torchrun_reads(arguments) is None) == (error is not None), launcher
        params["scales"]["smoke"]["pretrain"]["launcher"] = launcher
        message = params_error(params, scale="smoke")
        if error is None:  # torchrun reads it, but the command it runs is `s2dc.cli --data.workers 0 pretrain ...`
            assert f"scales.smoke.pretrain.launcher {launcher!r}: it does not end in the s2dc command" in message, \
                message
        else:
            assert f"scales.smoke.pretrain.launcher {launcher!r}: {error};" in message, message


def test_a_launcher_other_than_torchrun_keeps_its_words():
    """Only torchrun's options (`torchrun`, `python -m torch.distributed.run`) are read with its parser; another
    command's words are as before: `--opt=value` as `--opt value`, `_` for `-` in an option's name."""
    from s2dc.workflow_checks import launcher_words

    for launcher, words in {
        "srun --ntasks-per-node=4 --nproc 4 s2dc": "srun --ntasks_per_node 4 --nproc 4 s2dc",
        "python -m s2dc.cli --n=1": "python -m s2dc.cli --n 1",
        "mpirun --np 4 torchrun --nproc 4 -m s2dc.cli": "mpirun --np 4 torchrun --nproc 4 -m s2dc.cli",
        "s2dc --data.workers 0": "s2dc --data.workers 0",
    }.items():
        assert launcher_words(launcher) == words.split(), launcher


def test_options_in_another_order_name_one_run_folder():
    """torchrun's options each store one value or flag (argparse keeps the last of one given twice), so their order
    changes nothing it runs; the launcher's words kept the order written, so `-m --nproc_per_node 4` named another run
    folder than `--nproc_per_node 4 -m` and retrained from step 0. The words now list them in the order of torchrun's
    parser, each once; the usual spelling is in that order already (it keeps its folder)."""
    from s2dc.workflow_checks import launcher_words

    usual = "torchrun --nnodes 1 --nproc_per_node 4 -m s2dc.cli".split()
    for launcher in ("torchrun -m --nproc_per_node 4 --nnodes 1 s2dc.cli",
                     "torchrun --nproc_per_node 4 -m --nnodes 1 s2dc.cli",
                     "torchrun --nproc_per_node 2 --nnodes 1 -m --nproc-per-node=4 s2dc.cli"):
        assert _torchrun_reads(launcher.split()[1:]) == _torchrun_reads(usual[1:]), launcher
        assert launcher_words(launcher) == usual, launcher
    assert launcher_words(" ".join(usual)) == usual
    assert launcher_words("torchrun -m --nproc_per_node 2 s2dc.cli") != launcher_words("torchrun -m --nproc_per_node 4 "
                                                                                        "s2dc.cli")


def test_torchruns_options_come_from_its_parser_and_are_kept_per_installation(tmp_path, monkeypatch):
    """The table launchers are read with is torchrun's own parser's: each option's strings and nargs in its order,
    abbreviations as it allows them. Reading the parser imports torch (~2 s, most of a dry run of the paper DAG), so
    the table is kept under a hash of the parser's sources: a later process reads it without importing torch; a kept
    file that is not such a table is made again from the parser; the sources changed, another file is read."""
    import json
    import shutil
    import subprocess
    import types

    from torch.distributed.run import get_args_parser

    from conftest import with_venv_path
    from s2dc import workflow_checks as checks

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    parser = get_args_parser()
    expected = [(tuple(a.option_strings), a.nargs) for a in parser._actions if a.option_strings]
    assert (("--nproc-per-node", "--nproc_per_node"), None) in expected and (("-h", "--help"), 0) in expected

    def table():
        checks._torchrun_table.cache_clear()
        options, abbrev = checks._torchrun_table()
        return [(o.option_strings, o.nargs) for o in options], abbrev

    try:
        assert table() == (expected, parser.allow_abbrev)
        kept = list((tmp_path / "xdg/s2dc/torchrun").iterdir())
        assert len(kept) == 1 and kept[0].suffix == ".json"

        # A new process reads the kept table: the same words, torch never imported.
        launcher = "torchrun --nproc-per-node=4 --rdzv_back c10d -m s2dc.cli"
        code = ("import sys; from s2dc.workflow_checks import launcher_words; "
                "print(launcher_words(sys.argv[1])); print('torch' in sys.modules)")
        out = subprocess.run([sys.executable, "-c", code, launcher], capture_output=True, text=True, check=True,
                             env={**with_venv_path(), "XDG_CACHE_HOME": str(tmp_path / "xdg")}).stdout.splitlines()
        assert out == [repr(["torchrun", "--nproc_per_node", "4", "--rdzv_backend", "c10d", "-m", "s2dc.cli"]), "False"]

        # Read from the file indeed: a table written there is what the next process reads...
        kept[0].write_text(json.dumps([[[["--only"], None]], False]))
        assert table() == ([(("--only",), None)], False)
        # ...unless it is not a table: made again from the parser, and kept again.
        for broken in ("{", "[]", json.dumps([[[["--a"], None]]]), json.dumps([[[["a"], None]], True]),
                       json.dumps([[], True]), json.dumps([[[["--a"], [1]]], True]), json.dumps([[[["--a"], None]], 1])):
            kept[0].write_text(broken)
            assert table() == (expected, parser.allow_abbrev), broken
            assert json.loads(kept[0].read_text()) == [[[list(s), n] for s, n in expected], parser.allow_abbrev]

        # Other sources of the parser (another torch) are another file: the one kept for these is not read.
        kept[0].write_text(json.dumps([[[["--only"], None]], False]))
        torch_dir = Path(get_args_parser.__code__.co_filename).parent.parent
        other = tmp_path / "torch" / "distributed"
        other.mkdir(parents=True)
        for name in ("run.py", "argparse_util.py"):
            shutil.copy(torch_dir / "distributed" / name, other / name)
        with open(other / "run.py", "a") as source:
            source.write("\n# another release\n")
        found = types.SimpleNamespace(submodule_search_locations=[str(tmp_path / "torch")])
        monkeypatch.setattr(checks.importlib.util, "find_spec", lambda name: found if name == "torch" else None)
        assert table() == (expected, parser.allow_abbrev)
        assert len(list((tmp_path / "xdg/s2dc/torchrun").iterdir())) == 2
    finally:
        monkeypatch.undo()
        checks._torchrun_table.cache_clear()
