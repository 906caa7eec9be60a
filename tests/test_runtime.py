"""Process set-up of the command-line entry points: the lean MONAI import."""

from __future__ import annotations

import json
import math
import subprocess
import sys

LEAN = """
import gc, json, sys
from s2dc.runtime import MONAI_UNUSED_EXTRAS, import_monai_lean
frozen_before = gc.get_freeze_count()
import_monai_lean()
loaded_after_monai = [name for name in MONAI_UNUSED_EXTRAS if name in sys.modules]
frozen = gc.get_freeze_count() - frozen_before
import torch
from monai.losses import DiceCELoss
from monai.utils import OptionalImportError
from monai.data import ultrasound_confidence_map as ucm
loss = float(DiceCELoss(to_onehot_y=True, softmax=True)(torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 1, 4, 4, 4)))
from monai.metrics import DiceMetric, SSIMMetric
half = torch.zeros(1, 1, 8, 8, 8)
half[..., :4] = 1
dice = float(DiceMetric(reduction="mean")(half, torch.ones(1, 1, 8, 8, 8)).mean())
ssim = float(SSIMMetric(spatial_dims=3, data_range=1.0, win_size=3)(half, half).mean())
from monai.metrics import utils as metric_utils
try:
    metric_utils.KDTree([[0.0]])
    kdtree_raises = False
except OptionalImportError:
    kdtree_raises = True
try:
    ucm.hilbert([1.0, 0.0])
    stand_in_raises = False
except OptionalImportError:
    stand_in_raises = True
import pandas  # s2dc's own later imports are normal
from sklearn.manifold import TSNE
garbage = [[]]
garbage[0].append(garbage)  # a cycle made after the import: still collected
del garbage
import scipy.ndimage  # as the synthetic twins import it
print(json.dumps({"loaded_after_monai": loaded_after_monai, "loss": loss, "stand_in_raises": stand_in_raises,
                  "dice": dice, "ssim": ssim, "kdtree_raises": kdtree_raises,
                  "edt": float(scipy.ndimage.distance_transform_edt([0, 1, 1, 1]).max()),
                  "pandas": pandas.DataFrame({"a": [1, 2]})["a"].sum().item(), "tsne": TSNE.__name__,
                  "frozen": frozen, "collected": gc.collect()}))
"""


def test_monai_imports_without_its_unused_extras_and_they_import_normally_after():
    """While MONAI imports, none of its unused extras (scipy.signal, scikit-learn, ...) is loaded; the MONAI features s2dc
    calls work, MONAI's stand-in for a hidden one raises if used, and a hidden one imports normally afterwards; what
    the import made is frozen out of the garbage collector's walks, and later garbage is collected."""
    done = subprocess.run([sys.executable, "-c", LEAN], capture_output=True, text=True, check=True)
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["loaded_after_monai"] == []
    # zero logits: p = 1/2 for both classes, all 64 voxels are class 0. CE = ln 2; Dice loss of class 0 is
    # 1 - 2·32/(64 + 32) = 1/3, of class 1 (absent) 1 - 1e-5/(32 + 1e-5) ~ 1; mean over the classes, plus CE.
    assert abs(out["loss"] - ((1 / 3 + 1 - 1e-5 / (32 + 1e-5)) / 2 + math.log(2))) < 1e-5
    assert out["stand_in_raises"] is True and out["kdtree_raises"] is True
    # half of the prediction's 512 voxels on the all-ones label: Dice 2·256/(256 + 512) = 2/3; SSIM of an image
    # with itself is 1; the hidden scipy.ndimage imports normally after (distance of the last 1 to the 0: 3)
    assert abs(out["dice"] - 2 / 3) < 1e-6 and abs(out["ssim"] - 1) < 1e-6 and out["edt"] == 3.0
    assert out["pandas"] == 3 and out["tsne"] == "TSNE"
    # what the import made is frozen out of the collector's walks (torch and MONAI: some 10^5 objects and more); the
    # garbage made after it is still collected
    assert out["frozen"] > 100_000 and out["collected"] >= 2


DENORMAL = """
import sys, torch
import s2dc.cli as cli
def state():  # below float32's smallest normal number (1.2e-38), and a masked attention weight: exp(-100) = 3.7e-44
    return (torch.tensor([1e-39]) * 1.0).item(), torch.softmax(torch.tensor([[0.0, -100.0]]), dim=-1)[0, 1].item()
cli.main = lambda: 0
seen = {}
for command in sys.argv[1:]:
    before = state()
    sys.argv = ["s2dc", command]
    try:
        cli.entry()
    except SystemExit:
        pass
    seen[command] = (state(), before)
    torch.set_flush_denormal(False)  # the next command starts as in a new process
print(repr(seen))
"""


def test_the_training_commands_compute_denormals_as_zero_and_the_others_do_not_care():
    """`s2dc pretrain` (and finetune, probe, figures, export-encoder) start with denormal floats flushed: a masked
    attention weight, exp(-100) = 3.7e-44, is 0 in them (it was 3.7e-44 before the entry ran, and is in `s2dc synth`,
    which computes no attention). The three entries run one after the other in one process (the CPU of two new ones'
    imports saved), with the flush undone after each."""
    env = {"S2DC_MALLOC_TUNING": "0", "PATH": ""}
    commands = {"synth": False, "pretrain": True, "probe": True}
    done = subprocess.run([sys.executable, "-c", DENORMAL, *commands], capture_output=True, text=True, check=True,
                          env=env)
    seen = eval(done.stdout.strip().splitlines()[-1])  # noqa: S307 (our own repr of floats)
    assert list(seen) == list(commands)
    for command, flushed in commands.items():
        (tiny, masked), before = seen[command]
        assert before[0] > 0 and math.isclose(before[1], math.exp(-100), rel_tol=0.05)  # a denormal keeps few bits, before
        if flushed:
            assert tiny == 0.0 and masked == 0.0, command
        else:
            assert tiny > 0 and masked > 0, command
