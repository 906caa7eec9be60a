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
