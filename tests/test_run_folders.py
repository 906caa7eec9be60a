"""A pretraining's run folder is named after what it computes: the launcher's words, not how they are spelled. A
launcher rewritten as `--nproc_per_node=4` for `--nproc_per_node 4` named another folder, and scale paper retrained
its encoders from step 0; a launcher of another process count (another batch) names another one."""

from __future__ import annotations

import re

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
