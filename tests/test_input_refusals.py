"""Input the command line, option files and dataset lists used to take without a word, each now refused naming the
option, key, file or entry: abbreviated options, non-ASCII digits, keys given twice, a case listed twice or shared
with validation through a link, a CT window on a volume with one negative voxel, a window beside a z-score."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from s2dc.cli import build_parser, main
from s2dc.config import build_config, coerce, load_yaml, values_from_args
from s2dc.data.datalist import list_cases, read_datalist
from s2dc.data.errors import DataError
from s2dc.data.preprocess import PreprocessConfig
from s2dc.data.splits import refuse_training_cases_in_validation
from s2dc.data.volumes import CachedVolumes
from s2dc.train.finetune_config import FinetuneConfig

from test_data_layer import brain, save


def test_an_abbreviated_option_is_refused_not_read_as_the_option_it_begins():
    """`--optim.warmup 10` was read as --optim.warmup_steps (argparse's prefix matching), where a YAML config refuses
    the key; so were `--eval.sw` and, under `sweep work`, `--stor`."""
    for argv in (["pretrain", "--optim.warmup", "3"], ["finetune", "--eval.sw", "2"],
                 ["sweep", "work", "--stor", "x.journal", "--study", "s", "--budget", "1", "--spec", "{}"]):
        with pytest.raises(SystemExit) as exit_:
            build_parser(argv[0]).parse_args(argv)
        assert exit_.value.code == 2, argv


@pytest.mark.parametrize("value, annotation", [("²", int), ("４", int), ("1_000", int), ("１.5", float), ("1_0", float)])
def test_a_number_not_in_ascii_digits_is_refused_naming_the_option(value, annotation):
    """`--optim.steps ²` failed in int() naming no option; `--run.seed ４` (a full-width digit) was read as 4 and
    float() read '１.5' and '1_0'."""
    with pytest.raises(ValueError, match=r"^optim\.steps must be (an integer|a number), got"):
        coerce("optim.steps", value, annotation)
    assert coerce("optim.steps", "-12", int) == -12 and coerce("optim.lr", "1e-3", float) == 1e-3


def test_a_key_given_twice_in_a_yaml_file_is_refused_naming_it(tmp_path):
    """PyYAML keeps the last of two equal keys: `optim: {steps: 10, steps: 20}` ran 20 steps, a `--config` file's
    earlier section was dropped, and a params.yaml with `scale` twice ran the second (DVC refuses that file)."""
    config = tmp_path / "c.yaml"
    config.write_text("optim:\n  steps: 10\n  steps: 20\n")
    args = build_parser("pretrain").parse_args(["pretrain", "--config", str(config)])
    with pytest.raises(ValueError, match=r"config file '.*c\.yaml' is not YAML text .*key 'steps' is given twice"):
        values_from_args(args)
    with pytest.raises(Exception, match="key 'scale' is given twice"):
        load_yaml("scale: quick\nother: 1\nscale: smoke\n")
    assert load_yaml("a: {b: 1}\nc: [1, 2]\n") == {"a": {"b": 1}, "c": [1, 2]}


def test_a_config_file_with_keys_that_are_not_names_is_refused_naming_it(tmp_path):
    """`1: {a: 1}` beside `foo: {}` crashed sorting the unknown keys (TypeError traceback, exit 1)."""
    config = tmp_path / "c.yaml"
    config.write_text("1: {a: 1}\nfoo: {}\n")
    args = build_parser("pretrain").parse_args(["pretrain", "--config", str(config)])
    with pytest.raises(ValueError, match=r"config file '.*c\.yaml' must hold a mapping"):
        values_from_args(args)
    with pytest.raises(ValueError, match="unknown config section"):
        build_config(FinetuneConfig, {1: {}, "foo": {}})


def test_no_flips_is_written_none_as_the_message_says():
    """`train.flip_axes` refused 'none', which its own message offered for no flips."""
    assert build_config(FinetuneConfig, {"train": {"flip_axes": "none"}}).train.flip_axes == ()
    args = build_parser("finetune").parse_args(["finetune", "--train.flip_axes", "none"])
    assert build_config(FinetuneConfig, values_from_args(args)).train.flip_axes == ()


def test_a_window_beside_a_z_score_is_refused():
    """`--preprocess.intensity zscore --preprocess.a_min -5` was taken, ignored by the z-score, and named another cache
    and run than the z-score alone."""
    with pytest.raises(ValueError, match=r"preprocess\.a_min \(-5\) sets a CT window, but preprocess\.intensity is "
                                         r"'zscore'"):
        PreprocessConfig(intensity="zscore", a_min=-5.0)
    PreprocessConfig(intensity="zscore")
    PreprocessConfig(intensity="ct", a_min=-5.0)


def test_a_hu_window_on_a_volume_with_one_negative_voxel_is_refused(tmp_path):
    """An MR volume (0 and 100-900) with one voxel at -1, as resampling leaves, passed the "not HU" check (no negative
    value) and trained on a window that clipped most of the body to 1."""
    mr = brain()
    mr[0, 0, 0] = -1.0
    path = save(tmp_path / "mr.nii.gz", mr)
    for preset in ("ct_abdomen", "ct_pretrain"):
        with pytest.raises(DataError, match=r"mr\.nii\.gz' has intensities in \[-1, 900\], 0\.00% of its voxels at or "
                                            r"below -50 .*not CT in HU"):
            CachedVolumes([path], PreprocessConfig.from_preset(preset), (8, 8, 8), None)[0]
    ct = save(tmp_path / "ct.nii.gz", np.where(brain() > 0, brain() - 500, -1000.0))  # air around a body
    CachedVolumes([ct], PreprocessConfig.from_preset("ct_abdomen"), (8, 8, 8), None)[0]
    # CT the review found refused by a first version (voxels at or below -200 required): clipped to the preset's own
    # window (its floor, -175, outside the body), and cropped to the abdomen (fat at -100, no air)
    clipped = save(tmp_path / "clipped.nii.gz", np.clip(np.where(brain() > 0, brain() - 500, -1000.0), -175, 250))
    CachedVolumes([clipped], PreprocessConfig.from_preset("ct_abdomen"), (8, 8, 8), None)[0]
    abdomen = np.full((12, 12, 12), 40.0, np.float32)
    abdomen[:2] = -100.0  # a layer of fat, 1/6 of the crop
    abdomen[5:7, 5:7, 5:7] = 200.0
    cropped = save(tmp_path / "cropped.nii.gz", abdomen)
    CachedVolumes([cropped], PreprocessConfig.from_preset("ct_abdomen"), (8, 8, 8), None)[0]


def test_a_key_given_twice_in_a_dataset_json_is_refused_naming_it(tmp_path):
    """json.loads keeps the last of two equal keys: a second "training" section replaced the first, and a class
    name given twice under "1" dropped one."""
    source = tmp_path / "dataset.json"
    source.write_text('{"training": ["a.nii.gz"], "labels": {"0": "bg", "1": "spleen"}, "training": ["c.nii.gz"]}')
    with pytest.raises(DataError, match=r"dataset json '.*dataset\.json': key\(s\) 'training' given twice in one object"):
        read_datalist(source)


def test_a_case_listed_twice_or_shared_with_validation_through_a_link_is_refused(tmp_path):
    """A case listed twice counted twice (a 40 % subset of ['a', 'a', 'b', 'c', 'd'] was 'a' twice); a validation
    case that is a hard link to a training case passed the overlap check, which compared paths."""
    for name in "abc":
        save(tmp_path / f"{name}.nii.gz", brain())
    os.link(tmp_path / "a.nii.gz", tmp_path / "a_again.nii.gz")
    source = tmp_path / "dataset.json"
    source.write_text(json.dumps({"training": ["a.nii.gz", "b.nii.gz", "./a.nii.gz"], "validation": ["c.nii.gz"]}))
    with pytest.raises(DataError, match=r"entries 0 and 2 of section 'training' .* list the same image file"):
        list_cases(source, "training")
    source.write_text(json.dumps({"training": ["a.nii.gz", "b.nii.gz"], "validation": ["a_again.nii.gz"]}))
    train, val = list_cases(source, "training"), list_cases(source, "validation")
    with pytest.raises(DataError, match=r"1 of the 1 validation cases of section 'validation' are training cases"):
        refuse_training_cases_in_validation(train, val, source, "training", "validation")
    assert main(["finetune", "--data.source", str(source)]) == 2  # the command refuses it too, before any training


def test_unreadable_data_is_refused_naming_what_is_wrong(tmp_path):
    """A grid mismatch of axes only (LPS against RAS) printed two identical grids; a float64 volume of 1e39 was said
    to hold NaN or infinite values; a cache folder behind a broken link was 'a file', one that cannot be made gave a
    bare PermissionError; a listed name too long for the file system gave a bare OSError."""
    from s2dc.data.grids import describe_grid
    from s2dc.data.preprocess import read_volume

    assert describe_grid(np.diag([-1.5, -1.5, 1.5, 1.0])).endswith("axes LPS")
    assert describe_grid(np.diag([1.5, 1.5, 1.5, 1.0])).endswith("axes RAS")
    import nibabel as nib

    big = np.full((4, 4, 4), 1.0, np.float64)
    big[0, 0, 0] = 1e39
    nib.save(nib.Nifti1Image(big, np.eye(4)), str(tmp_path / "big.nii.gz"))
    with pytest.raises(DataError, match=r"big\.nii\.gz' holds values beyond float32's range"):
        read_volume(tmp_path / "big.nii.gz")
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    path = save(tmp_path / "mr.nii.gz", brain())
    with pytest.raises(ValueError, match=r"cache folder '.*gone' is a link to '.*nowhere', which does not exist"):
        CachedVolumes([path], PreprocessConfig(intensity="zscore"), (8, 8, 8), tmp_path / "gone")
    source = tmp_path / "dataset.json"
    source.write_text(json.dumps({"training": ["x" * 300 + ".nii.gz"]}))
    with pytest.raises(DataError, match=r"image 'x+\.nii\.gz' of entry 0 listed in section 'training' .* cannot be "
                                        r"looked up"):
        list_cases(source, "training")


def test_a_cache_folder_that_cannot_be_made_is_refused_naming_the_option(tmp_path, monkeypatch):
    from pathlib import Path

    path = save(tmp_path / "mr.nii.gz", brain())

    def refused(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", refused)
    with pytest.raises(ValueError, match=r"preprocessing cache folder '.*' cannot be made \(Permission denied\); give "
                                         r"data\.cache_dir"):
        CachedVolumes([path], PreprocessConfig(intensity="zscore"), (8, 8, 8), tmp_path / "cache")


def test_the_reviews_input_findings(tmp_path):
    """A review of the fixes above found: YAML merge keys (`<<: *common`), which Snakemake, DVC and PyYAML read,
    refused by the duplicate-key check; an encoder file an older s2dc wrote with a window beside its z-score (taken
    then, and ignored) refused by the new window check, which only options a user gives should meet."""
    import torch

    from s2dc.export import encoder_plan, swinunetr_for
    from s2dc.models.encoder import EncoderConfig

    text = "base: &b {steps: 10, lr: 0.1}\noptim:\n  <<: *b\n  steps: 20\nrun: {<<: [*b], seed: 1}\n"
    assert load_yaml(text) == {"base": {"steps": 10, "lr": 0.1}, "optim": {"steps": 20, "lr": 0.1},
                               "run": {"steps": 10, "lr": 0.1, "seed": 1}}
    with pytest.raises(Exception, match="key 'steps' is given twice"):
        load_yaml("base: &b {steps: 10}\noptim:\n  <<: *b\n  steps: 20\n  steps: 30\n")
    sizes = EncoderConfig(feature_size=12, num_heads=(1, 2, 3, 4), window_size=4)
    old = tmp_path / "old_encoder.pt"
    torch.save({"state_dict": {f"swinViT.{k}": v for k, v in swinunetr_for(sizes).swinViT.state_dict().items()},
                "encoder": sizes.to_dict(), "preprocess": {"intensity": "zscore", "a_min": -175.0, "a_max": 250.0}}, old)
    assert encoder_plan(old)["preprocess"] == {"intensity": "zscore"}
