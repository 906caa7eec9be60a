"""The ADNI twin with its class told by regional uptake alone, probed frozen (docs/quick_scale.md, section 10).

The pipeline's ADNI twin gives CN focal atrophy in the AD pattern's region, matched so that the regional mean uptake
does not tell the classes (``s2dc.data.synthetic.brain_pet``: the texture does). This draws the same twin with CN's
focal atrophy from AD's range (``FOCAL_CN = FOCAL_AD``), so that the classes differ by AD's hypometabolism alone, and
runs the pipeline's ADNI probe command on it (voxels, a random encoder and the given PET encoder, stage 2).

Usage: ``python scripts/adni_uptake_only.py OUT_DIR [--encoder results/quick/pretrain/PET/s2dc/encoder.pt]``
(the quick twin's options: 160 cases of 64x64x48, seed 1, 100 of them validating; the table is printed and written
to ``OUT_DIR/probe.json`` / ``.md``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from s2dc.cli import main
from s2dc.data.synthetic import brain_pet


def run(out: Path, encoder: str) -> int:
    brain_pet.FOCAL_CN = brain_pet.FOCAL_AD  # the one change: CN without the matched focal atrophy
    twin = out / "adni_uptake_only"
    code = main(["synth", "--kind", "adni", "--out", str(twin), "--cases", "160", "--seed", "1",
                 "--shape", "64", "64", "48", "--val-fraction", "0.625"])
    if code:
        return code
    return main(["probe", "voxels", "random", f"s2dc={encoder}", "--source", str(twin / "dataset.json"),
                 "--stage", "2", "--seed", "0", "--cache-dir", str(out / "cache"), "--out", str(out / "probe.json")])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the twin, its cache and the probe's table")
    parser.add_argument("--encoder", default="results/quick/pretrain/PET/s2dc/encoder.pt", help="PET encoder file")
    args = parser.parse_args()
    sys.exit(run(args.out, args.encoder))
