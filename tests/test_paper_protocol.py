"""What scale paper runs where it is not the release's protocol is written where a user reads it.

The release (github.com/Ashespt/S2DC, HEAD b65c9aa) is the reference where the poster is silent (method.md, opening
paragraph). Each test below pairs a default or params.yaml value that departs from the release's scripts with the
documentation that must say so: README's *Where we differ from the release* (pretraining) and *Fine-tuning at scale
paper against the release's scripts* (downstream).
"""

from __future__ import annotations

import re

import torch
import yaml

from s2dc.data import registry
from s2dc.data.preprocess_config import PreprocessConfig
from s2dc.losses.options import LossConfig
from s2dc.train.config import OptimConfig
from s2dc.train.finetune_config import RELEASE_BRAIN_FLOOR, TrainConfig

from conftest import REPO


def _section(text: str, title: str) -> str:
    """The body of the README section ``## <title>`` (up to the next ``## ``)."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, flags=re.MULTILINE | re.DOTALL)
    assert match, f"README has no section '## {title}'"
    return match.group(1)


def _rows(section: str) -> dict[str, str]:
    """First cell of each table row -> the whole row."""
    return {cells[1].strip(): line for line in section.splitlines()
            if line.startswith("|") and len(cells := line.split("|")) > 2}


def _paper() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())["scales"]["paper"]


def test_the_pretraining_table_names_the_release_scripts_sinkhorn_and_unclipped_gradients():
    # Release Pretrain/train.sh:25 passes --sinkhorn (optimal-transport assignment); main.py:45 clips gradients only
    # with --grad_clip, which train.sh does not pass. Here the defaults are dual-softmax (poster Eq. 2,
    # s2dc/losses/options.py) and a clip at 3.0 (s2dc/train/config.py).
    assert LossConfig().assignment == "dual_softmax" and OptimConfig().grad_clip == 3.0
    rows = _rows(_section((REPO / "README.md").read_text(), "Where we differ from the release"))
    assignment = rows.get("`L_p2p` assignment", "")
    assert "--sinkhorn" in assignment and "dual-softmax" in assignment and "--loss.assignment sinkhorn" in assignment
    clip = rows.get("gradient clipping", "")
    assert "3.0" in clip and "--optim.grad_clip 0" in clip


def test_the_pretraining_table_names_the_roi_count_per_step_of_scale_paper():
    # Release Pretrain/train.sh:1,3,12,20: CUDA_VISIBLE_DEVICES=0, one process (--nproc_per_node 1), batch_size 1:
    # one ROI per step. Scale paper launches 4 processes of optim.batch_size 1 (params.yaml scales.paper.pretrain).
    paper = _paper()["pretrain"]
    assert "--nproc_per_node 4" in paper["launcher"] and paper["resources"]["gpu"] == 4
    row = _rows(_section((REPO / "README.md").read_text(), "Where we differ from the release")).get("ROIs per step", "")
    assert "one GPU" in row and "4" in row and "--nproc_per_node 1" in row
    # and nothing claims the release pretrained on four GPUs
    assert "the release used four GPUs" not in (REPO / "docs" / "benchmarks.md").read_text()


def test_the_finetuning_table_names_each_departure_of_scale_paper_from_the_release_scripts():
    # Fine-tuning options of scale paper: the code defaults (s2dc/train/finetune_config.py) plus params.yaml's.
    paper = _paper()["finetune"]["options"]
    assert paper["preprocess"]["spacing"] == [1.5, 1.5, 2.0]
    # the release's own spacing where it has a script: BTCV 1.5 mm isotropic, CC-CCII and BraTS 2023 none
    own = {name: entry.get("finetune", {}).get("preprocess", {}).get("spacing", "scale's")
           for name, entry in _paper()["datasets"].items()}
    assert (own["btcv"], own["cc_ccii"], own["brats23"]) == ([1.5, 1.5, 1.5], None, None)
    train = TrainConfig()
    assert (train.lr, train.steps, train.warmup_steps, train.flip_prob, tuple(train.roi_size)) == \
        (1e-4, 30_000, 500, 0.1, (96, 96, 96))
    rows = _rows(_section((REPO / "README.md").read_text(), "Fine-tuning at scale paper against the release's scripts"))
    expected = {
        # BTCV/train.sh:4 1.5 mm isotropic; RECON and CC-CCII resample no spacing (their own loaders)
        "spacing": ("1.5 1.5 2.0", "--space_z=1.5", "BTCV (1.5 1.5 1.5), CC-CCII and BraTS 2023 (none)"),
        # BTCV/train.sh:5 --optim_lr 2e-3 --max_epochs=3000; main.py:88 100 warm-up epochs
        "BTCV schedule": ("2e-3", "3000 epochs"),
        # BTCV/utils/data_utils.py:88-89 pos=3, neg=1; main.py:82-85 flips 0.2, rotate90 0.2, intensity 0.1 / 0.5;
        # here the same through the segment options and train.rot90_prob
        "BTCV crops and augmentation": ("pos=3", "segment.pos 3", "train.rot90_prob 0.2",
                                        "segment.intensity_shift_prob 0.5"),
        # CC-CCII/utils/data_utils.py:58,65 whole scan resampled to (64, 384, 384); main.py:62-66 100 epochs,
        # batch 4, lr 3e-4; here the same through the classify and epoch options, but nearest at voxel centres
        "CC-CCII input, head and optimiser": ("64×384×384", "768→1024→3", "amsgrad=True", "classify.view whole",
                                              "nearest-exact", "train.epochs 100", "train.warmup_epochs 5"),
        # RECON/trainer.py: each sequence as input, masked MSE x10, a step per sequence; train.sh --out_channels 4;
        # main.py scheduler None; here the same through the translate options (a crop's four sequences a step each)
        "BraTS 2023 inputs, outputs, loss and schedule": ("masked MSE ×10", "no scheduler", "translate.inputs cycle",
                                                          "train.schedule constant", "a crop serves 4 steps",
                                                          "train: {epochs: 2000}",
                                                          "rot90_prob 0.2", "over the whole volume"),
        # RECON/test.py: NormalizeIntensity(channel_wise=True) on the output, outside data.ge(-0.35) the target's voxels,
        # skimage ssim/psnr with data_range the larger range, all 16 pairs; here the other 3 sequences, in the brain
        "BraTS 2023 scores": ("NormalizeIntensity(channel_wise=True)", "data.ge(-0.35)", "all 16", "other than the input",
                              "translate: {score: release}", "pairs_psnr"),
        # BTCV/main.py and CC-CCII/main.py load the student (keys with "teacher" dropped); the pipeline exports the teacher
        "starting encoder": ("the student", "EMA teacher", "--which student"),
        # CC-CCII/utils/data_utils.py:71 one subset (random_state=1) for every run; here the same for CC-CCII through
        # data.split_seed 1 (numpy's draw, not pandas'), one per seed elsewhere
        "label-ratio subset": ("random_state=1", "data.split_seed 1", "not the release's very cases", "run.seed"),
    }
    for topic, words in expected.items():
        assert topic in rows, f"no row '{topic}'"
        for word in words:
            assert word in rows[topic], (topic, word)


def test_scale_paper_fine_tunes_cc_ccii_as_the_release_does():
    """The release's CC-CCII fine-tuning, read from its scripts, is what scale paper sets for cc_ccii: the input
    (utils/data_utils.py: /255, slices cropped from 512 to 384 at (512 - 384) / 2 with `randint(-18, 18)` in training,
    brightness `randint(-7, 7) / 100`, contrast `1 + randint(-5, 5) / 100`, clip to [0, 1], `np.flipud` at 0.5 on the
    (slices, rows, columns) array, resampled to (64, 384, 384)), the head (model.py: projection_head(768, 1024, 3),
    two nn.Linear), the optimiser (main.py: `AdamW(lr=3e-4, amsgrad=True)`, torch's default weight decay 0.01, one
    rate for all parameters, batch 4, 5 of 100 epochs warm-up, `max_steps = max_epochs * len(loader)`), and one
    label-ratio subset for every run (utils/data_utils.py: `sample(frac=args.data_ratio, random_state=1)`)."""
    entry = _paper()["datasets"]["cc_ccii"]["finetune"]
    assert entry["data"] == {"split_seed": 1}
    classify, train, preprocess = entry["classify"], entry["train"], entry["preprocess"]
    assert classify == {"view": "whole", "in_plane": 384 / 512, "shift": round(18 / 512, 3), "head_hidden": 1024,
                        "brightness": 7 / 100, "contrast": 5 / 100}
    assert round(classify["shift"] * 512) == 18
    assert train["roi_size"] == [384, 384, 64]  # (X, Y) the rows and columns, Z the slices (s2dc.data.sources.cc_ccii)
    assert (train["flip_axes"], train["flip_prob"]) == ([2], 0.5)  # flipud on (slices, ...): the slice axis, Z
    assert (train["lr"], train["weight_decay"], train["amsgrad"], train["batch_size"]) == (3e-4, 0.01, True, 4)
    assert torch.optim.AdamW([torch.zeros(1)]).defaults["weight_decay"] == train["weight_decay"]
    assert (train["epochs"], train["warmup_epochs"]) == (100, 5) and "steps" not in train  # main.py: 100, 5
    assert "warmup_steps" not in train
    assert "encoder_lr_scale" not in train and TrainConfig().encoder_lr_scale == 1.0  # one rate for all
    assert (preprocess["spacing"], preprocess["crop_foreground"]) == (None, False)  # the whole scan, as stacked
    window = PreprocessConfig.from_preset(registry.get("cc_ccii").preset)
    assert (window.intensity, window.a_min, window.a_max) == ("ct", 0.0, 255.0)  # /255, clipped to [0, 1]


def test_scale_paper_fine_tunes_brats23_as_the_release_does():
    """The release's BraTS 2023 fine-tuning, read from Downstream/RECON: trainer.py (the four sequences t1n, t1c, t2w,
    t2f each as input `data[:, i][:, None]`, the model's four outputs against all of `data`,
    `MSELoss(reduction='sum')(out1 * mask, data * mask) * 10 / mask.sum()`), train.sh (`--in_channels 1
    --out_channels 4 --optim_lr 0.0002 --batch_size=1 --roi_x=96 --roi_y=96 --roi_z=96`), main.py (`AdamW(...,
    weight_decay=args.reg_weight)` with reg_weight 1e-5, `scheduler = None`, RandFlipd_prob 0.2), utils/data_utils.py
    (one `RandSpatialCropd` a volume, no Spacingd, `NormalizeIntensityd(keys=modal_keys)`: each whole sequence
    z-scored, before `CropForegroundD(... select_fn=lambda x: (x >= -0.35))`; trainer.py `mask = data.ge(-0.35)`)."""
    entry = _paper()["datasets"]["brats23"]["finetune"]
    translate, train = entry["translate"], entry["train"]
    assert translate == {"inputs": "cycle", "targets": "all", "loss": "mse", "loss_weight": 10.0, "mask": "release"}
    assert RELEASE_BRAIN_FLOOR == -0.35
    assert (train["lr"], train["schedule"], train["warmup_steps"]) == (2e-4, "constant", 0)
    assert (train["samples_per_volume"], train["flip_prob"], train["rot90_prob"]) == (1, 0.2, 0.2)  # main.py:91-92
    defaults = TrainConfig()
    assert (defaults.batch_size, defaults.roi_size, defaults.weight_decay) == (1, (96, 96, 96), 1e-5)
    assert "batch_size" not in train and "roi_size" not in train and "weight_decay" not in train
    assert entry["preprocess"] == {"spacing": None, "intensity": "zscore_volume"}
    assert registry.get("brats23").preset == "mri_zscore"


def test_scale_paper_augments_btcv_as_the_release_does():
    """The release's BTCV training transforms (Downstream/BTCV/utils/data_utils.py: `RandCropByPosNegLabeld(pos=3,
    neg=1, num_samples=args.sw_batch_size)`, `RandFlipd` on each axis at `RandFlipd_prob`, `RandRotate90d(prob=
    RandRotate90d_prob, max_k=3)`, `RandScaleIntensityd(factors=0.1, prob=RandScaleIntensityd_prob)`,
    `RandShiftIntensityd(offsets=0.1, prob=RandShiftIntensityd_prob)`; main.py: those probabilities 0.2, 0.2, 0.1, 0.5;
    train.sh: `--sw_batch_size 4`) are what scale paper sets for btcv."""
    entry = _paper()["datasets"]["btcv"]["finetune"]
    assert entry["segment"] == {"pos": 3, "neg": 1, "intensity_scale": 0.1, "intensity_scale_prob": 0.1,
                                "intensity_shift": 0.1, "intensity_shift_prob": 0.5}
    assert entry["train"] == {"flip_prob": 0.2, "rot90_prob": 0.2}
    assert TrainConfig().samples_per_volume == 4 and TrainConfig().flip_axes == (0, 1, 2)  # 4 crops, three axes
