"""GPU check of the training path: correctness on the device, then speed and memory.

    python bench/gpu_check.py [--device cuda] [--out DIR] [--small]

1. Correctness on the device, against the CPU (the reference the test-suite pins):
   - views: ``make_views`` from the same generator gives the same correspondences (exactly) and the
     same crops (to float32 rounding) on the device as on the CPU, at the release geometry;
   - losses: ``S2DCLoss`` on the device vs the CPU, same inputs (fp32 both);
   - one whole pretraining step (ROI 128x128x64, feature size 24) from the same initial weights and
     ROI: loss on the device in fp32
     and under bf16 autocast vs the CPU's fp32 loss; then 30 bf16 steps stay finite (bf16 is refused
     on the CPU: see ``s2dc.train.precision``).
2. Speed and peak memory of one pretraining step at the release configuration (SwinViT-B,
   ROI 384×384×96 in 2×2 crops, heads 2048/512, Sinkhorn/dual-softmax in fp32), fp32 vs bf16, with
   the split over phases; and of one fine-tuning step (SwinUNETR fs48, 4 crops of 96³), fp32 vs bf16.

``--small`` shrinks every size so that the script can be tried on a CPU. Results: a Markdown table on
stdout and ``gpu_check.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

from s2dc.export import swinunetr_for  # noqa: E402
from s2dc.models.encoder import EncoderConfig  # noqa: E402
from s2dc.models.queue import KeyQueue  # noqa: E402
from s2dc.train.config import build_config  # noqa: E402
from s2dc.losses.s2dc_loss import S2DCLoss  # noqa: E402
from s2dc.train.pretrain import Pretrainer  # noqa: E402
from s2dc.views import ViewConfig, make_views  # noqa: E402

RESULTS: dict = {}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_views(device: torch.device, cfg: ViewConfig, warps: int) -> dict:
    """Same generator seed -> same views on the device as on the CPU."""
    roi = torch.rand(1, 1, *cfg.roi_size, generator=torch.Generator().manual_seed(0))
    mismatched, crop_errors, positives = 0, [], []
    for seed in range(warps):
        cpu = make_views(roi, cfg, torch.Generator().manual_seed(seed))
        dev = make_views(roi.to(device), cfg, torch.Generator().manual_seed(seed))
        mismatched += int((cpu.correspondence != dev.correspondence.cpu()).sum())
        positives.append(int(cpu.correspondence.sum()))
        crop_errors += [rel_err(dev.student, cpu.student), rel_err(dev.patch, cpu.patch), rel_err(dev.crops, cpu.crops)]
    return {"warps": warps, "correspondence_entries_differing": mismatched,
            "mean_positives": statistics.mean(positives), "max_crop_rel_err": max(crop_errors)}


def check_losses(device: torch.device, cfg) -> dict:
    """S2DCLoss on the device vs the CPU on the same random inputs (fp32 both)."""
    g = torch.Generator().manual_seed(1)
    b, p2, e, n = cfg.optim.batch_size, cfg.views.grid**2, cfg.head.embed_dim, cfg.views.num_tokens
    inputs = {
        "student_tokens": F.normalize(torch.randn(b, n, e, generator=g), dim=-1),
        "teacher_tokens": F.normalize(torch.randn(b, n, e, generator=g), dim=-1),
        "gt": torch.rand(b, n, n, generator=g) < 2.0 / n,
        "query": torch.randn(b, e, generator=g),
        "keys": torch.randn(b * p2, e, generator=g),
        "chosen": torch.randint(p2, (b,), generator=g),
    }
    negatives = torch.randn(cfg.loss.queue_size, e, generator=g)
    out = {}
    for assignment in ("dual_softmax", "sinkhorn"):
        loss = S2DCLoss(cfg.loss, assignment=assignment)
        values = []
        for dev in (torch.device("cpu"), device):
            queue = KeyQueue(cfg.loss.queue_size, e).to(dev)
            queue.push(negatives.to(dev), gather=False)
            moved = {k: v.to(dev) for k, v in inputs.items()}
            terms = loss(moved["student_tokens"], moved["teacher_tokens"], moved["gt"], cfg.views.token_grid[2],
                         moved["query"], moved["keys"], moved["chosen"], queue.negatives())
            values.append(torch.stack([terms[k] for k in ("loss", "loss_global", "loss_p2p", "loss_p2s")]))
        out[assignment] = {"cpu": values[0].tolist(), "device": values[1].cpu().tolist(),
                           "rel_err": rel_err(values[1], values[0])}
    return out


SIZES = {  # "release": the defaults (SwinViT-B, ROI 384x384x96); "medium" fits a CPU step in seconds
    "small": {"encoder": {"feature_size": 12, "num_heads": [1, 2, 3, 4], "window_size": 4, "token_stage": 2},
              "views": {"roi_size": [64, 64, 32], "grid": 2}, "head": {"hidden_dim": 64, "embed_dim": 32},
              "loss": {"queue_size": 8}},
    "medium": {"encoder": {"feature_size": 24, "num_heads": [3, 6, 12, 24]}, "views": {"roi_size": [128, 128, 64]},
               "head": {"hidden_dim": 1024, "embed_dim": 256}},
    "release": {},
}


def pretrain_config(device: torch.device, amp: str, size: str, **sections) -> object:
    spec = {"run": {"device": device.type, "amp": amp, "progress": False, "seed": 0}, "optim": {"warmup_steps": 5}}
    spec |= SIZES[size]
    for key, value in sections.items():
        spec[key] = {**spec.get(key, {}), **value}
    return build_config(spec)


def check_step(device: torch.device, size: str, steps: int) -> dict:
    """First-step loss on the device (fp32, bf16) vs the CPU (fp32), same weights and ROI; then bf16 steps."""
    cfg = pretrain_config(torch.device("cpu"), "off", size)
    roi = torch.rand(1, 1, *cfg.views.roi_size, generator=torch.Generator().manual_seed(2))
    first = {}
    runs = [("cpu_fp32", torch.device("cpu"), "off"), ("device_fp32", device, "off")]
    amp = "bf16" if device.type == "cuda" else "off"  # bf16 is refused on the CPU
    runs += [("device_bf16", device, "bf16")] if amp == "bf16" else []
    for name, dev, amp_ in runs:
        trainer = Pretrainer(pretrain_config(dev, amp_, size))
        first[name] = trainer.train_step(roi)
    out = {name: {k: v for k, v in terms.items() if k.startswith("loss")} for name, terms in first.items()}
    ref = torch.tensor([first["cpu_fp32"][k] for k in ("loss", "loss_global", "loss_p2p", "loss_p2s")])
    for name in list(first)[1:]:
        got = torch.tensor([first[name][k] for k in ("loss", "loss_global", "loss_p2p", "loss_p2s")])
        out[name]["rel_err_vs_cpu"] = rel_err(got, ref)
    trainer = Pretrainer(pretrain_config(device, amp, size, optim={"steps": steps, "warmup_steps": min(5, steps - 1)}))
    g = torch.Generator().manual_seed(3)
    losses = [trainer.train_step(torch.rand(1, 1, *cfg.views.roi_size, generator=g))["loss"] for _ in range(steps)]
    out["run"] = {"amp": amp, "steps": steps, "first": losses[0], "last": losses[-1],
                       "all_finite": all(map(lambda x: x == x and abs(x) != float("inf"), losses))}
    return out


def time_pretrain(device: torch.device, amp: str, small: bool, repeats: int) -> dict:
    cfg = pretrain_config(device, amp, "small" if small else "release", optim={"steps": 1000})
    trainer = Pretrainer(cfg)
    roi = torch.rand(cfg.optim.batch_size, 1, *cfg.views.roi_size)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(2):
        trainer.train_step(roi)
    per_step, totals = [], []
    for _ in range(repeats):
        trainer.timer.totals.clear()
        trainer.timer.enabled = True
        sync(device)
        start = time.perf_counter()
        trainer.train_step(roi)
        sync(device)
        totals.append(time.perf_counter() - start)
        per_step.append(dict(trainer.timer.totals))
    trainer.timer.enabled = False
    # Untimed steps (no per-phase synchronisation): the honest step time.
    plain = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        trainer.train_step(roi)
        sync(device)
        plain.append(time.perf_counter() - start)
    phases = {name: statistics.median(s[name] for s in per_step) for name in per_step[0]}
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"amp": amp, "roi": list(cfg.views.roi_size), "feature_size": cfg.encoder.feature_size,
            "tokens": cfg.views.num_tokens, "step_s": statistics.median(plain), "phases_s": phases,
            "peak_gib": peak}


def time_finetune(device: torch.device, amp: str, small: bool, repeats: int) -> dict:
    fs, roi, crops = (12, (64, 64, 32), 2) if small else (48, (96, 96, 96), 4)
    enc = EncoderConfig(feature_size=fs, num_heads=(1, 2, 3, 4) if small else (3, 6, 12, 24),
                        window_size=4 if small else 7)
    torch.manual_seed(0)
    model = swinunetr_for(enc, out_channels=14).to(device)
    from monai.losses import DiceCELoss

    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    image = torch.rand(crops, 1, *roi, device=device)
    label = torch.randint(14, (crops, 1, *roi), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
            logits = model(image)
        loss = loss_fn(logits.float(), label)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(2):
        step()
    times, losses = [], []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        losses.append(step())
        sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"amp": amp, "roi": list(roi), "crops": crops, "feature_size": fs, "step_s": statistics.median(times),
            "peak_gib": peak, "loss_finite": all(x == x for x in losses)}


def save(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(RESULTS, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default="bench/out")
    parser.add_argument("--small", action="store_true", help="tiny sizes, to try the script on a CPU")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device, out = torch.device(args.device), Path(args.out)
    RESULTS["machine"] = machine()
    print(f"# gpu_check on {RESULTS['machine']}, device {device}", flush=True)

    cfg = pretrain_config(device, "off", "small" if args.small else "release")
    t0 = time.perf_counter()
    RESULTS["views"] = check_views(device, cfg.views, 4 if args.small else 20)
    print("views:", RESULTS["views"], f"({time.perf_counter() - t0:.1f} s)", flush=True)
    RESULTS["losses"] = check_losses(device, cfg)
    print("losses:", {k: v["rel_err"] for k, v in RESULTS["losses"].items()}, flush=True)
    save(out)
    RESULTS["step"] = check_step(device, "small" if args.small else "medium", 5 if args.small else 30)
    print("step:", json.dumps(RESULTS["step"]), flush=True)
    save(out)

    amps = ("bf16", "off") if device.type == "cuda" else ("off",)  # bf16 is refused on the CPU
    for what, timer in (("pretrain", time_pretrain), ("finetune", time_finetune)):
        RESULTS[f"{what}_timing"] = []
        for amp in amps:
            RESULTS[f"{what}_timing"].append(timer(device, amp, args.small, args.repeats))
            print(f"{what}:", json.dumps(RESULTS[f"{what}_timing"][-1]), flush=True)
            save(out)
            if device.type == "cuda":
                torch.cuda.empty_cache()

    print("\n| what | amp | step (s) | peak memory (GiB) |\n|---|---|---|---|")
    for r in RESULTS["pretrain_timing"]:
        print(f"| pretrain ROI {'x'.join(map(str, r['roi']))}, fs {r['feature_size']} | {r['amp']} | "
              f"{r['step_s']:.3f} | {r['peak_gib']:.1f} |")
    for r in RESULTS["finetune_timing"]:
        print(f"| finetune {r['crops']} x {'x'.join(map(str, r['roi']))}, fs {r['feature_size']} | {r['amp']} | "
              f"{r['step_s']:.3f} | {r['peak_gib']:.1f} |")
    print(f"\nphases ({amps[0]}):", {k: round(v, 4) for k, v in RESULTS["pretrain_timing"][0]["phases_s"].items()})


if __name__ == "__main__":
    main()
