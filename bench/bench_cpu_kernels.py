"""Two slow paths of PyTorch's CPU kernels that the quick scale's one-thread jobs run into.

    python bench/bench_cpu_kernels.py [--repeats 5]

1. Denormal floats. SwinUNETR's shifted windows mask attention with -100 before the softmax, so a masked weight is
   about exp(-100) = 3.7e-44, below float32's smallest normal number (1.2e-38): a denormal, which Intel cores
   compute with a microcode assist, many times slower (AMD's Zen cores much less so). Timed: the products
   ``attention @ values`` of one window-attention layer at the quick scale's shapes (256 windows of 4³ tokens, head
   dimension 12), and the forward and backward of the quick CT encoder (``SwinUNETR.swinViT``, feature size 12) on
   one 64×64×32 view, each without and with ``torch.set_flush_denormal(True)`` (denormals read and written as 0).
2. PyTorch's choice of convolution kernel. With a batch of one and one thread, a 3-D convolution whose input has
   N·C·D·H ≤ 20,480 (e.g. 12 channels on a 32×32×16 grid, the decoder's half-resolution stage at the quick crop)
   runs the native ``slow_conv3d`` path instead of oneDNN's (``ConvParams::use_mkldnn``): timed forward and
   backward of that convolution for a batch of one and a batch of two (oneDNN), per sample, and for a batch of one
   computed as a batch of two with zeros (``s2dc.models.cpu_conv``, what fine-tuning does since it was measured
   here); and the quick fine-tuning network's forward and backward on one crop, without and with that.
3. Memory layout: that network (as fine-tuning runs it) in PyTorch's default layout and in ``channels_last_3d``.

With ``--pool resources/quick/ct_pool/dataset.json`` (made by the main job; run from the repository's root) it also
times ``s2dc pretrain`` with the quick scale's CT options for ``--steps`` steps, without and with denormals flushed,
and prints the loss of the last step beside each (what flushing changed).

Nothing here changes s2dc; it measures what a change gains (docs/benchmarks.md, "CPU kernels").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_name, machine, median_time  # noqa: E402

from s2dc.runtime import import_monai_lean  # noqa: E402

FLOAT32_TINY = torch.finfo(torch.float32).tiny


def _flushed(flush: bool, fn, repeats: int) -> float:
    torch.set_flush_denormal(flush)
    try:
        return median_time(fn, repeats)
    finally:
        torch.set_flush_denormal(False)


def attention_products(repeats: int) -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(256, 64, 64, generator=gen)
    scores[:, :, 32:] -= 100.0  # half of each window's keys masked, as a shifted window at the grid's edge
    weights = torch.softmax(scores, dim=-1)
    values = torch.randn(256, 64, 12, generator=gen)
    share = ((weights > 0) & (weights < FLOAT32_TINY)).float().mean().item()
    plain = _flushed(False, lambda: torch.bmm(weights, values), repeats)
    flush = _flushed(True, lambda: torch.bmm(weights, values), repeats)
    print(f"attention @ values, [256, 64, 64] x [256, 64, 12], {share:.0%} of the weights denormal: "
          f"{plain * 1e3:.2f} ms, with denormals flushed {flush * 1e3:.2f} ms ({plain / flush:.1f}x)")


def encoder_step(repeats: int) -> None:
    import_monai_lean()
    from s2dc.export import swinunetr_for
    from s2dc.models.encoder import EncoderConfig

    torch.manual_seed(0)
    cfg = EncoderConfig(feature_size=12, num_heads=(1, 2, 3, 4), window_size=4)
    encoder = swinunetr_for(cfg).swinViT
    view = torch.randn(1, 1, 64, 64, 32)

    def step():
        encoder.zero_grad(set_to_none=True)
        sum(f.float().square().mean() for f in encoder(view)).backward()

    plain = _flushed(False, step, repeats)
    flush = _flushed(True, step, repeats)
    print(f"quick CT encoder (swinViT, feature size 12), forward + backward of one 64x64x32 view: {plain:.3f} s, "
          f"with denormals flushed {flush:.3f} s ({plain / flush:.1f}x)")


def convolution_paths(repeats: int) -> None:
    from s2dc.models.cpu_conv import batch_of_one_convs_on_onednn

    gen = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv3d(12, 12, 3, padding=1, bias=False)
    per_sample = {}
    for name, batch in (("one", 1), ("two", 2), ("as two", 1)):
        x = torch.randn(batch, 12, 32, 32, 16, generator=gen, requires_grad=True)
        if name == "as two":
            batch_of_one_convs_on_onednn(conv)  # what fine-tuning runs

        def step():
            conv(x).sum().backward()

        per_sample[name] = median_time(step, repeats) / batch
    print(f"conv3d 12->12, 3x3x3, on 32x32x16, forward + backward per sample: batch of one (native slow_conv3d) "
          f"{per_sample['one'] * 1e3:.1f} ms, batch of two (oneDNN) {per_sample['two'] * 1e3:.1f} ms "
          f"({per_sample['one'] / per_sample['two']:.1f}x), batch of one computed as two with zeros "
          f"(s2dc.models.cpu_conv) {per_sample['as two'] * 1e3:.1f} ms ({per_sample['one'] / per_sample['as two']:.1f}x)")


def finetuning_network(repeats: int) -> None:
    """The quick fine-tuning network (SwinUNETR, feature size 12, 14 classes) on one 64x64x32 crop, forward + backward:
    as MONAI builds it, with its batch-of-one convolutions computed as two (what ``s2dc finetune`` runs), and that
    with network and crop in ``channels_last_3d`` (channels innermost, oneDNN's layout; a measurement only)."""
    from s2dc.export import swinunetr_for
    from s2dc.models.cpu_conv import batch_of_one_convs_on_onednn
    from s2dc.models.encoder_config import EncoderConfig

    torch.manual_seed(0)
    model = swinunetr_for(EncoderConfig(feature_size=12, num_heads=(1, 2, 3, 4), window_size=4), out_channels=14)
    x = torch.randn(1, 1, 64, 64, 32)

    def step():
        model(x).sum().backward()

    plain = median_time(step, repeats)
    batch_of_one_convs_on_onednn(model)
    converted = median_time(step, repeats)
    print(f"quick fine-tuning network (SwinUNETR, feature size 12), forward + backward of one 64x64x32 crop: "
          f"{plain:.3f} s, its batch-of-one convolutions as two {converted:.3f} s ({plain / converted:.2f}x)")
    model.to(memory_format=torch.channels_last_3d)
    x = x.to(memory_format=torch.channels_last_3d)
    last = median_time(step, repeats)
    print(f"quick fine-tuning network as s2dc finetune runs it, forward + backward of one 64x64x32 crop: {converted:.3f} s, "
          f"in channels_last_3d {last:.3f} s ({converted / last:.2f}x)")


def pretraining(pool: str, steps: int) -> None:
    import json
    import tempfile

    import yaml

    from s2dc.cli import main as s2dc_main
    from s2dc.workflow_checks import cli_arguments, preset_sections

    options = yaml.safe_load(Path("params.yaml").read_text())["scales"]["quick"]["pretrain"]["options"]
    options = {**options, "optim": {**options["optim"], "steps": steps},
               "run": {**options["run"], "checkpoint_every": steps, "log_every": 1, "progress": False}}
    for flush in (False, True):
        with tempfile.TemporaryDirectory() as out:
            torch.set_flush_denormal(flush)
            start = time.perf_counter()
            try:
                code = s2dc_main(["pretrain", *cli_arguments({**preset_sections("ct_pool"), **options}),
                                  "--data.source", pool, "--run.out_dir", out])
            finally:
                torch.set_flush_denormal(False)
            seconds = time.perf_counter() - start
            assert code == 0, f"s2dc pretrain exited {code}"
            losses = json.loads((Path(out) / "summary.json").read_text())["losses_this_run"]
        print(f"s2dc pretrain, quick CT options, {steps} steps (with data loading and start-up): {seconds:.1f} s"
              f"{', denormals flushed' if flush else ''}; loss of the last step {losses[-1]:.6f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (the workflow's jobs use one)")
    parser.add_argument("--pool", help="a CT pool's dataset.json: also time s2dc pretrain on it")
    parser.add_argument("--steps", type=int, default=40, help="pretraining steps with --pool")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{cpu_name()}; {machine()}")
    attention_products(args.repeats)
    encoder_step(args.repeats)
    convolution_paths(args.repeats)
    finetuning_network(args.repeats)
    if args.pool:
        pretraining(args.pool, args.steps)


if __name__ == "__main__":
    main()
