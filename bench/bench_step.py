"""Where the time of one pretraining step goes, at a small configuration.

    python bench/bench_step.py [--steps 6] [--device cpu]

Phases (``s2dc.train.timing.PhaseTimer`` inside ``Pretrainer.train_step``): views (augmentations +
correspondences), student forward, teacher forward, losses forward, backward (losses + student),
optimiser + EMA + queue. The losses' own backward share is measured apart on inputs of the same
shapes, so that "views + losses + EMA/optimiser" can be given as a fraction of the step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, median_time  # noqa: E402

from s2dc.models.queue import KeyQueue  # noqa: E402
from s2dc.train.config import build_config  # noqa: E402
from s2dc.losses.s2dc_loss import S2DCLoss  # noqa: E402
from s2dc.train.pretrain import Pretrainer  # noqa: E402

SMALL = {
    "encoder": {"feature_size": 24, "num_heads": [3, 6, 12, 24]},
    "views": {"roi_size": [128, 128, 64], "grid": 2},
    "head": {"hidden_dim": 1024, "embed_dim": 256},
    "optim": {"steps": 1000, "batch_size": 1},
    "run": {"progress": False},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="measured steps (after 2 warm-up steps)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    SMALL["run"]["device"] = args.device
    cfg = build_config(SMALL)
    trainer = Pretrainer(cfg)
    device = trainer.dist.device
    roi = torch.rand(cfg.optim.batch_size, 1, *cfg.views.roi_size)
    for _ in range(2):
        trainer.train_step(roi)
    per_step = []
    for _ in range(args.steps):
        trainer.timer.totals.clear()
        trainer.timer.enabled = True
        trainer.train_step(roi)
        per_step.append(dict(trainer.timer.totals))
    phases = {name: statistics.median(s[name] for s in per_step) for name in per_step[0]}
    total = sum(phases.values())

    # The losses' forward + backward alone, on leaf inputs of the step's shapes.
    b, p2, e = cfg.optim.batch_size, cfg.views.grid**2, cfg.head.embed_dim
    n = cfg.views.num_tokens
    s_tok = torch.randn(b, n, e, device=device, requires_grad=True)
    t_tok = F.normalize(torch.randn(b, n, e, device=device), dim=-1)
    query = torch.randn(b, e, device=device, requires_grad=True)
    keys = torch.randn(b * p2, e, device=device)
    gt = torch.eye(n, dtype=torch.bool, device=device).expand(b, n, n)
    queue = KeyQueue(cfg.loss.queue_size, e).to(device)
    queue.push(torch.randn(cfg.loss.queue_size, e, device=device), gather=False)
    chosen = torch.zeros(b, dtype=torch.long, device=device)

    def losses():
        S2DCLoss(cfg.loss)(F.normalize(s_tok, dim=-1), t_tok, gt, cfg.views.token_grid[2], query, keys,
                           chosen, queue.negatives())["loss"].backward()

    loss_fb = median_time(losses, 5, device=device)
    print(f"# bench_step on {machine()}, device {device}, median of {args.steps} steps")
    print(f"# config: ROI {cfg.views.roi_size}, grid {cfg.views.grid}, feature_size {cfg.encoder.feature_size}, "
          f"{n} tokens, embed {e}, batch {b}\n")
    print("| phase | seconds | share of step |\n|---|---|---|")
    for name, value in phases.items():
        print(f"| {name} | {value:.3f} | {100 * value / total:.1f} % |")
    print(f"| **step** | {total:.3f} | 100 % |")
    overhead = phases["views"] + loss_fb + phases["optimizer_ema_queue"]
    print(f"\nlosses forward + backward alone: {loss_fb:.4f} s")
    print(f"views + losses (fwd+bwd) + optimiser/EMA/queue = {overhead:.3f} s = {100 * overhead / total:.1f} % of the step")


if __name__ == "__main__":
    from s2dc.runtime import reexec_with_tuned_malloc

    reexec_with_tuned_malloc()
    main()
