"""What do the frozen-encoder protocol's rows read? An `s2dc` command run with one read-out or twin swapped.

A diagnostic of the probe rows where S²DC does not win (BraTS 2021, ADNI); the pipeline never runs it. Options
before the `s2dc` command line:

* ``--blocks means|meansd``: the ``voxels`` row of a segmentation probe reads each token block's mean (``meansd``:
  and standard deviation) per channel instead of its raw voxels: intensity alone, no pattern inside the block;
* ``--pooling meansd``: classification features are each grid cell's mean and standard deviation per channel (every
  row alike: the voxels' 4³ grid, the encoders' 2³ grid), so that a spread within a cell (a texture) is linear;
* ``--alike``: the MRI twins render the necrotic core exactly as CSF and the edema exactly as white-matter
  hyperintensities in all four sequences (for ``s2dc synth``);
* ``--brain-share N``: the PET pool holds a brain PET (ADNI-like) in 1 of every N cases, a torso PET in the others
  (the twin's own share: 1 in 4; for ``s2dc synth --kind pet_pool``);
* ``--core-radius LOW HIGH``: the MRI twins' glioma core (enhancing rim and necrosis) has a radius drawn from LOW-HIGH
  of the brain's radius instead of the twin's 0.15-0.28 (for ``s2dc synth --kind brats21`` and ``mri_pool``);
* ``--pool-sequences``: the MRI pool's cases are rendered as T1w, T2w and FLAIR in turn (OASIS-3's sessions hold all
  three), not all as T1w (for ``s2dc synth --kind mri_pool``).

Usage::

    python scripts/probe_readouts.py --blocks means probe voxels s2dc=results/quick/pretrain/MRI/s2dc/encoder.pt \\
        --source resources/quick/brats21/dataset.json --stage 1 --out /tmp/means.json
    python scripts/probe_readouts.py --alike synth --kind brats21 --out /tmp/alike --cases 40 --seed 1 \\
        --shape 64 64 48 --val-fraction 0.625
    python scripts/probe_readouts.py --pooling meansd probe voxels random s2dc=results/quick/pretrain/PET/s2dc/encoder.pt \\
        --source resources/quick/adni/dataset.json --stage 2 --out /tmp/adni.json
    python scripts/probe_readouts.py --brain-share 2 synth --kind pet_pool --out /tmp/pool2 --cases 16 --seed 0 \\
        --shape 96 96 64
    python scripts/probe_readouts.py --core-radius 0.24 0.38 synth --kind brats21 --out /tmp/big --cases 40 --seed 1 \\
        --shape 64 64 48 --val-fraction 0.625

then the quick PET pretraining (``snakemake -n -p --forcerun results/quick/pretrain/PET/s2dc/encoder.pt`` prints it)
with ``--data.source /tmp/pool2/dataset.json`` and another ``--run.out_dir`` and ``--export-encoder``, and
``s2dc probe`` on ADNI with that encoder (likewise the MRI pretraining on a pool drawn with ``--core-radius`` or
``--pool-sequences``, and ``s2dc probe`` on BraTS 2021).
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from dataclasses import replace
from unittest import mock

import torch
import torch.nn.functional as F


def block_means_and_sds(image: torch.Tensor, stride: int) -> torch.Tensor:
    """(C, X, Y, Z) -> (blocks, 2 C): each ``stride³`` block's mean per channel (:func:`s2dc.eval.probe.block_means`,
    the probe's token order), then its standard deviation."""
    mean = F.avg_pool3d(image[None].float(), stride)[0]
    sd = (F.avg_pool3d(image[None].float() ** 2, stride)[0] - mean**2).clamp_min(0).sqrt()
    return torch.cat([mean, sd]).flatten(1).T


def pooled_means_and_sds(fmap: torch.Tensor, grid: int) -> torch.Tensor:
    """(1, C, X, Y, Z) -> (1, 2 C grid³): each cell's mean per channel, then its standard deviation."""
    mean = F.adaptive_avg_pool3d(fmap, grid)
    sd = (F.adaptive_avg_pool3d(fmap * fmap, grid) - mean * mean).clamp_min(0).sqrt()
    return torch.cat([mean.flatten(), sd.flatten()])[None]


def with_brain_share(pet_pool_case, every: int):
    """The PET pool's case function ``(seed, shape, index) -> Case`` with a brain PET in 1 of every ``every`` cases:
    the twin's own function, told an index of its brain (3) or torso (0) kind; its seed draws the rest."""
    if every < 1:
        raise ValueError(f"--brain-share must be at least 1, not {every}")
    return lambda seed, shape, index: pet_pool_case(seed, shape, 3 if index % every == every - 1 else 0)


#: The twin's own range of the glioma core's radius, a fraction of the brain's (``brain.brain_anatomy``).
CORE_RADIUS = (0.15, 0.28)
#: The sequences the MRI pool's cases are rendered as in turn with ``--pool-sequences`` (registry channel names).
POOL_SEQUENCES = ("T1w", "t2", "flair")


def with_core_radius(uniform, low: float, high: float):
    """``geometry.uniform(rng, a, b)`` as ``brain.brain_anatomy`` calls it, but the draw of the core's radius (the one
    with the bounds :data:`CORE_RADIUS`) taken from ``low``-``high``; every other draw unchanged."""
    if not 0 < low <= high < 0.5:
        raise ValueError(f"--core-radius needs 0 < LOW <= HIGH < 0.5 (of the brain's radius), not {low} {high}")
    return lambda rng, a, b: uniform(rng, low, high) if (a, b) == CORE_RADIUS else uniform(rng, a, b)


def in_sequences(mri_pool_case, mri_case):
    """The MRI pool's case function ``(seed, shape, index) -> Case`` with case ``index`` rendered as the sequence
    ``POOL_SEQUENCES[index % 3]``: the twin's own function, its ``mri_case`` told another channel."""
    from s2dc.data.synthetic import twins

    def case(seed, shape, index):
        sequence = [POOL_SEQUENCES[index % len(POOL_SEQUENCES)]]
        with mock.patch.object(twins, "mri_case", lambda s, sh, channels, **kw: mri_case(s, sh, sequence, **kw)):
            return mri_pool_case(seed, shape, index)

    return case


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", choices=("means", "meansd"))
    parser.add_argument("--pooling", choices=("meansd",))
    parser.add_argument("--alike", action="store_true")
    parser.add_argument("--brain-share", type=int, metavar="N")
    parser.add_argument("--core-radius", type=float, nargs=2, metavar=("LOW", "HIGH"))
    parser.add_argument("--pool-sequences", action="store_true")
    options, command = parser.parse_known_args(argv)

    from s2dc.runtime import import_monai_lean

    import_monai_lean()
    import s2dc.data.synthetic.brain as brain
    import s2dc.data.synthetic.render_mri as render_mri
    import s2dc.data.synthetic.twins as twins
    import s2dc.eval.probe as probe
    from s2dc.cli import main as s2dc

    with ExitStack() as swaps:
        if options.blocks:
            read = probe.block_means if options.blocks == "means" else block_means_and_sds
            swaps.enter_context(mock.patch.object(probe, "voxel_blocks", read))
        if options.pooling:
            swaps.enter_context(mock.patch.object(probe, "pooled_features", pooled_means_and_sds))
        if options.alike:
            tables = {seq: {**table, 7: table[1], 8: table[6]} for seq, table in render_mri.CONTRAST.items()}
            swaps.enter_context(mock.patch.dict(render_mri.CONTRAST, tables))
        if options.brain_share is not None:
            pool = twins.TWINS["pet_pool"]
            twin = replace(pool, make=with_brain_share(pool.make, options.brain_share),
                           description=f"{pool.description}; here brain PET in 1 of every {options.brain_share} cases")
            swaps.enter_context(mock.patch.dict(twins.TWINS, {"pet_pool": twin}))
        if options.core_radius is not None:
            swaps.enter_context(mock.patch.object(brain, "uniform", with_core_radius(brain.uniform, *options.core_radius)))
        if options.pool_sequences:
            pool = twins.TWINS["mri_pool"]
            twin = replace(pool, make=in_sequences(pool.make, twins.mri_case),
                           description=f"{pool.description}; here rendered as {', '.join(POOL_SEQUENCES)} in turn")
            swaps.enter_context(mock.patch.dict(twins.TWINS, {"mri_pool": twin}))
        return s2dc(command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
