"""What the frozen-encoder probe's forward passes would gain from two changes that s2dc does not make (yet).

    OMP_NUM_THREADS=1 python bench/bench_probe_forward.py --encoder results/quick/pretrain/PET/s2dc/encoder.pt

A classification probe of the quick scale (ADNI, CC-CCII: 160 volumes of 64×64×48, zero-padded to 64×64×64, read by
the S²DC encoder and three random ones) spends most of its ~106 s in the frozen ``SwinUNETR.swinViT``'s forward
passes, one volume at a time (docs/benchmarks.md, the test suite's Zen 3 entry). Timed here on ``--volumes`` random
volumes of ``--shape`` padded as the probe pads them, ``--repeats`` rounds of every way in turn (the
median of each), with tuned malloc and denormals flushed as the s2dc commands run:

1. the forward passes one volume at a time (what ``s2dc probe`` does), then in batches of ``--batches`` volumes
   (the stage maps compared with the one-at-a-time ones: the largest absolute difference, as batched convolutions
   take oneDNN's kernel where a batch of one takes PyTorch's native one, with other rounding);
2. one volume at a time with MONAI's shifted-window attention mask (``compute_mask``, rebuilt in every
   ``BasicLayer.forward`` from the input's shape alone) built once per shape and reused (the stage maps compared
   bit for bit with the first timing's).

Nothing here changes s2dc; either change would alter every probe job's code hash (a relock), and the first the rows'
last digits.
"""

from __future__ import annotations

import argparse
import functools
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

from s2dc.runtime import flush_denormals, import_monai_lean, reexec_with_tuned_malloc  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", required=True, help="an exported encoder (encoder.pt)")
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 64, 48], help="each volume's size before padding")
    parser.add_argument("--volumes", type=int, default=16)
    parser.add_argument("--batches", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    reexec_with_tuned_malloc()  # allocate as the s2dc commands do (s2dc.runtime)
    flush_denormals()
    import_monai_lean()
    import monai.networks.nets.swin_unetr as swin_unetr

    from s2dc.eval.probe import encoder_sizes, model_sizes, pad_to_multiple
    from s2dc.export import load_encoder_weights, swinunetr_for

    sizes = model_sizes(encoder_sizes(args.encoder), 1)
    model = swinunetr_for(sizes)
    load_encoder_weights(model, args.encoder, which=None, expected=sizes)
    swin = model.swinViT.eval()
    gen = torch.Generator().manual_seed(0)
    volumes = pad_to_multiple(torch.randn(args.volumes, 1, *args.shape, generator=gen), sizes.patch_size * 16)

    @torch.no_grad()
    def forward(batch: int) -> list[torch.Tensor]:
        return [m for start in range(0, args.volumes, batch)
                for m in swin(volumes[start:start + batch], True)[-1].split(1)]  # the deepest stage, per volume

    print(f"{machine()}, {platform.processor() or platform.machine()}; {args.volumes} volumes of "
          f"{'x'.join(map(str, args.shape))} padded to {'x'.join(map(str, volumes.shape[-3:]))}, encoder feature "
          f"size {sizes.feature_size}")
    original = swin_unetr.compute_mask
    built = functools.lru_cache(maxsize=None)(
        lambda dims, window, shift, device: original(list(dims), window, shift, device))

    def with_mask_built_once() -> list[torch.Tensor]:
        swin_unetr.compute_mask = lambda dims, window, shift, device: built(tuple(dims), tuple(window), tuple(shift),
                                                                              device)
        try:
            return forward(1)
        finally:
            swin_unetr.compute_mask = original

    as_probe = "one volume at a time (as s2dc probe)"
    ways = {as_probe: lambda: forward(1),
            **{f"batches of {b}": functools.partial(forward, b) for b in args.batches},
            "one volume at a time, the attention mask built once per shape": with_mask_built_once}
    outputs = {name: way() for name, way in ways.items()}  # also the warm-up
    reference = outputs[as_probe]
    times = {name: [] for name in ways}
    for _ in range(args.repeats):  # interleaved, so that the machine's slow spells fall on every way alike
        for name, way in ways.items():
            start = time.perf_counter()
            way()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times[as_probe])
    for name in ways:
        took = statistics.median(times[name])
        diff = max(float((a - b).abs().max()) for a, b in zip(reference, outputs[name]))
        same = all(torch.equal(a, b) for a, b in zip(reference, outputs[name]))
        print(f"{name}: {took:.3f} s ({took / args.volumes * 1e3:.0f} ms a volume, {base / took:.2f}x); stage maps "
              f"{'bit-identical' if same else f'differ by up to {diff:.2e}'}")

if __name__ == "__main__":
    main()
