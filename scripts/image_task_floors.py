"""Floors of the two image tasks' scores at a scale of the pipeline: what a network that learned nothing scores.

Translation (BraTS 2023): a prediction of zero everywhere (the brain's mean after z-scoring). Reconstruction (UDPET):
the low-dose input itself as the full-dose prediction. Each is scored by the task's own ``evaluate`` on the
pipeline's validation cases and preprocessing: the fine-tuning command of ``<task>/<dataset>/scratch`` seed 0 is
taken from ``snakemake -n -p`` and parsed by s2dc's command line; nothing is trained and nothing is written but the
run folder's cache, in a temporary folder.

    python scripts/image_task_floors.py [--scale quick]
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import tempfile

import torch

from s2dc.cli import build_parser
from s2dc.config import values_from_args
from s2dc.downstream.defaults import fill_finetune_defaults
from s2dc.downstream.engine import Finetuner
from s2dc.train.finetune_config import build_config


class Constant(torch.nn.Module):
    """Zeros of ``channels`` channels on the input's grid, (N, C, X, Y, Z) -> (N, channels, X, Y, Z)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # the engine's hooks expect parameters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], self.channels, *x.shape[2:]) + 0 * self.anchor


class Input(torch.nn.Module):
    """The input itself, (N, 1, X, Y, Z) -> (N, 1, X, Y, Z)."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0 * self.anchor


def pipeline_command(scale: str, task: str, dataset: str) -> list[str]:
    """The pipeline's ``s2dc finetune`` arguments for the scratch arm, seed 0, of ``dataset`` at ``scale``."""
    target = f"results/{scale}/finetune/{task}/{dataset}/scratch/labels20pct/seed0/metrics.json"
    dry = subprocess.run(["snakemake", "-n", "-p", "-f", target, "--config", f"scale={scale}"], capture_output=True,
                         text=True, check=True).stdout
    line = re.search(r"s2dc finetune[^)\n]*", dry)
    if line is None:
        raise SystemExit(f"no 's2dc finetune' command in the dry run of {target}")
    return shlex.split(line.group(0))[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="quick")
    scale = parser.parse_args().scale
    for task, dataset, model in (("translation", "brats23", None), ("reconstruction", "udpet", Input())):
        argv = pipeline_command(scale, task, dataset)
        with tempfile.TemporaryDirectory() as tmp:
            for option, value in (("--run.out_dir", f"{tmp}/run"), ("--data.cache_dir", f"{tmp}/cache"),
                                  ("--run.resume", "never")):
                argv[argv.index(option) + 1] = value
            values, _ = fill_finetune_defaults(values_from_args(build_parser("finetune").parse_args(argv)))
            run = Finetuner(build_config(values))
            try:
                _, val = run._datasets()
                image = val[0]["image"]
                floor = model or Constant(len(image) - 1)
                inside = float((image[run.task.source] != 0).float().mean()) if task == "translation" else None
                with torch.no_grad():
                    scores = run.task.evaluate(floor.eval(), val, run.setting)
            finally:
                run.close()
        what = "zero everywhere" if task == "translation" else "the low-dose input"
        brain = f"; the brain (input non-zero) {100 * inside:.1f} % of the first validation case" if inside else ""
        print(f"{dataset} ({task}), {len(val)} validation cases, prediction = {what}: "
              + ", ".join(f"{k} {v:.4f}" for k, v in scores.items() if isinstance(v, float)) + brain)


if __name__ == "__main__":
    main()
