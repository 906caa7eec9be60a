"""Views + correspondences and every loss (forward + backward) at the release's sizes.

Release sizes: 384×384×96 ROI, 4×4 crops of 96³, 12×12×3 tokens, 512-d embeddings, 2 ROIs.

    python bench/bench_core.py [--repeats 7] [--device cpu] [--release-dir DIR]

``--release-dir`` points at a checkout of the authors' release (github.com/Ashespt/S2DC); its
``Pretrain/losses`` are then timed on the very same inputs (per-slice, as the release matches),
with ``.cuda()`` made a no-op so that they run on the CPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, median_time  # noqa: E402

from s2dc.losses.global_contrast import global_infonce, split_chosen_crop  # noqa: E402
from s2dc.losses.matching import per_slice  # noqa: E402
from s2dc.losses.p2p import p2p_loss  # noqa: E402
from s2dc.losses.p2s import p2s_loss  # noqa: E402
from s2dc.views import ViewConfig, make_views  # noqa: E402


def release_losses(release_dir: Path):
    """Import the release's GeometricLoss and SharpeLoss with ``.cuda()`` as a no-op."""
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    sys.path.insert(0, str(release_dir / "Pretrain"))
    from losses.loss import GeCoContrast, GeometricLoss, SharpeLoss  # type: ignore

    return GeometricLoss, SharpeLoss, GeCoContrast


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--release-dir", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"# bench_core on {machine()}, device {device}, median of {args.repeats}\n")

    cfg = ViewConfig()
    roi = torch.rand(2, 1, *cfg.roi_size, device=device)
    gen = torch.Generator().manual_seed(0)
    views = make_views(roi, cfg, gen)
    t = median_time(lambda: make_views(roi, cfg, gen), args.repeats, device=device)
    print("| measurement | seconds |\n|---|---|")
    print(f"| views + correspondences, per ROI (2 ROIs per call) | {t / 2:.3f} |")

    b, n, d = 2, cfg.num_tokens, 512
    gt = views.correspondence
    k = F.normalize(torch.randn(b, n, d, device=device), dim=-1)
    q_leaf = torch.randn(b, n, d, device=device, requires_grad=True)

    def timed(loss_fn):
        def step():
            q_leaf.grad = None
            loss_fn(F.normalize(q_leaf, dim=-1)).backward()
        return median_time(step, args.repeats, device=device)

    scopes = {"volume": lambda q: (q, k, gt), "slice": lambda q: per_slice(q, k, gt, cfg.token_grid[2])}
    rows = {}
    for scope, split in scopes.items():
        rows[f"L_p2p dual-softmax, positive+negative ({scope})"] = timed(lambda q: p2p_loss(*split(q), "dual_softmax"))
        rows[f"L_p2p dual-softmax, positive ({scope})"] = timed(lambda q: p2p_loss(*split(q), "dual_softmax", "positive"))
        rows[f"L_p2p Sinkhorn 100 it., positive+negative ({scope})"] = timed(lambda q: p2p_loss(*split(q), "sinkhorn"))
        rows[f"L_p2s release form ({scope})"] = timed(lambda q: p2s_loss(*split(q), "release"))
        rows[f"L_p2s poster form, dual-softmax ({scope})"] = timed(lambda q: p2s_loss(*split(q), "poster"))
    crops = torch.randn(b, cfg.grid**2, d, device=device)
    queue = torch.randn(90, d, device=device)
    chosen = torch.tensor([3, 11], device=device)
    q_glob = torch.randn(b, d, device=device, requires_grad=True)

    positive, others = split_chosen_crop(crops, chosen)

    def global_step(normalize: bool):
        def step():
            q_glob.grad = None
            global_infonce(q_glob, positive, others, queue, normalize=normalize).backward()
        return step

    for normalize in (False, True):
        rows[f"L_g InfoNCE, 15 crop negatives + 90 queue, normalize={normalize}"] = median_time(
            global_step(normalize), 5 * args.repeats, device=device)
    for name, value in rows.items():
        print(f"| {name} | {value:.4f} |")

    if args.release_dir:
        geometric, sharpe, contrast = release_losses(args.release_dir)
        qs, ks, gs = per_slice(F.normalize(q_leaf, dim=-1).detach(), k, gt, cfg.token_grid[2])
        labels = gs.float()
        qr = qs.clone().requires_grad_(True)

        def release_step(fn):
            def step():
                qr.grad = None
                fn().backward()
            return median_time(step, args.repeats, device=device)

        print("\n| the release's code, same inputs (per slice) | seconds |\n|---|---|")
        dual, sink, sharp = geometric(sinkhorn=False), geometric(sinkhorn=True), sharpe()
        print(f"| GeometricLoss dual-softmax (L_p2p) | {release_step(lambda: dual(qr, ks, labels)[0]):.4f} |")
        print(f"| GeometricLoss Sinkhorn 100 it. (L_p2p) | {release_step(lambda: sink(qr, ks, labels)[0]):.4f} |")
        print(f"| SharpeLoss (L_p2s) | {release_step(lambda: sharp(qr, ks, labels)[1]):.4f} |")
        all_keys = torch.cat([positive, others.reshape(-1, d), queue])

        def release_global():
            q_glob.grad = None
            contrast()(q_glob, all_keys).backward()

        print(f"| GeCoContrast (L_g, not normalised), same keys | "
              f"{median_time(release_global, 5 * args.repeats, device=device):.4f} |")


if __name__ == "__main__":
    from s2dc.runtime import reexec_with_tuned_malloc

    reexec_with_tuned_malloc()
    main()
