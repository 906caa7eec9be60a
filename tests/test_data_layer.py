"""The one data layer: dataset lists with every task's roles, intensity presets and the check that a preset fits."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from s2dc.data.datalist import list_cases, registry_spec
from s2dc.data.errors import DataError
from s2dc.data.preprocess import PreprocessConfig
from s2dc.data.sources.common import nifti_grid
from s2dc.data.volumes import CachedVolumes, LabelledCases, plain
from s2dc.downstream.tasks import TASKS


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array, np.float32), np.eye(4)), str(path))
    return path


def test_cases_of_every_task(tmp_path):
    for name in ("t1", "t2", "seg", "low", "full"):
        save(tmp_path / f"{name}.nii.gz", np.ones((4, 4, 4)))
    doc = {"training": [{"id": "c1", "image": ["t1.nii.gz", "t2.nii.gz"], "label": "seg.nii.gz", "class": 2,
                         "target": "full.nii.gz"}]}
    js = tmp_path / "dataset.json"
    js.write_text(json.dumps(doc))
    seg = list_cases(js, "training", TASKS["segmentation"].roles)
    assert seg == [{"id": "c1", "image": [tmp_path / "t1.nii.gz", tmp_path / "t2.nii.gz"], "label": tmp_path / "seg.nii.gz"}]
    assert list_cases(js, "training", TASKS["classification"].roles)[0]["class"] == 2
    assert list_cases(js, "training", TASKS["reconstruction"].roles)[0]["target"] == tmp_path / "full.nii.gz"
    # the id defaults to the image's file name
    js.write_text(json.dumps({"training": [{"image": "low.nii.gz"}]}))
    assert list_cases(js, "training") == [{"id": "low.nii.gz", "image": tmp_path / "low.nii.gz"}]


@pytest.mark.parametrize("entry, roles, message", [
    ({"image": "a.nii.gz"}, ("image", "label"), "must be a dict with 'image', 'label'"),
    ({"image": "a.nii.gz", "class": "CP"}, ("image", "class"), "'class' must be a class index"),
    ({"image": "a.nii.gz", "class": True}, ("image", "class"), "'class' must be a class index"),
    ({"image": ["a.nii.gz", "gone.nii.gz"]}, ("image",), "image channel 1 '.*gone.nii.gz' of entry 0"),
])
def test_bad_entries_are_named(tmp_path, entry, roles, message):
    save(tmp_path / "a.nii.gz", np.ones((4, 4, 4)))
    js = tmp_path / "dataset.json"
    js.write_text(json.dumps({"training": [entry]}))
    with pytest.raises(DataError, match=message):
        list_cases(js, "training", roles)


def test_presets_map_to_intensity_settings():
    assert PreprocessConfig.from_preset("ct_abdomen") == PreprocessConfig(intensity="ct", a_min=-175, a_max=250)
    assert PreprocessConfig.from_preset("ct_8bit", crop_foreground=False) == PreprocessConfig(
        intensity="ct", a_min=0, a_max=255, crop_foreground=False)
    assert PreprocessConfig.from_preset("mri_zscore").intensity == "zscore"
    with pytest.raises(ValueError, match="unknown intensity preset 'ct'"):
        PreprocessConfig.from_preset("ct")
    assert registry_spec({"name": "synthetic_btcv"}).preset == "ct_abdomen"
    assert registry_spec({"name": "Task09_Spleen"}) is None


def test_a_listed_path_is_the_file_the_file_system_opens_behind_a_link(tmp_path):
    """`s2dc prepare --out resources/...` where ``resources`` links to a scratch disk: the json lists each release file
    relative to the folder the link leads to (``sources.common.relative``), so its ``..`` climb from there, as the
    file system reads them. The reader climbed from the link's own path instead: it named a file that does not
    exist ("does not exist" while the release was there) or, where one did, read that other file, exit 0."""
    import os

    from s2dc.data.sources.common import relative

    project, scratch = tmp_path / "p" / "q" / "r" / "proj", tmp_path / "s"
    release = save(project / "data" / "raw" / "case.nii.gz", brain())
    scratch.mkdir()
    (project / "resources").symlink_to(scratch, target_is_directory=True)
    out = project / "resources" / "ds"
    out.mkdir()
    listed = relative(release, out)
    assert os.path.samefile(out / listed, release)  # what the file system opens
    doc = {"labels": {"0": "background", "1": "organ"}, "training": [{"image": listed}]}
    (out / "dataset.json").write_text(json.dumps(doc))
    assert os.path.samefile(list_cases(out / "dataset.json", "training")[0]["image"], release)
    decoy = save(Path(os.path.normpath(out / listed)), 2 * brain())  # where climbing from the link's path leads
    assert not os.path.samefile(decoy, release)
    assert os.path.samefile(list_cases(out / "dataset.json", "training")[0]["image"], release)
    plain = save(tmp_path / "plain" / "imagesTr" / "a.nii.gz", brain())  # no link: listed as before, relative kept
    (tmp_path / "plain" / "dataset.json").write_text(json.dumps({**doc, "training": [{"image": "imagesTr/a.nii.gz"}]}))
    assert list_cases(tmp_path / "plain" / "dataset.json", "training")[0]["image"] == plain


def brain(shape=(12, 12, 12)) -> np.ndarray:
    """MR-like: zero background, positive tissue."""
    a = np.zeros(shape, np.float32)
    a[3:9, 3:9, 3:9] = np.linspace(100, 900, 216).reshape(6, 6, 6)
    return a


def test_z_scoring_a_volume_of_one_value_inside_is_refused_naming_the_file(tmp_path):
    """z-scoring over the non-zero voxels makes a volume with one value on all of them all 0 (std 0): the network
    saw nothing and the run exited 0 with a score. Refused, naming the file; a one-voxel variation is enough."""
    flat = save(tmp_path / "flat.nii.gz", np.where(brain() > 0, 5.0, 0.0))
    with pytest.raises(DataError, match=r"flat.nii.gz' has one value \(5\) on every non-zero voxel"):
        CachedVolumes([flat], PreprocessConfig.from_preset("mri_zscore"), (8, 8, 8), None)[0]
    almost = np.where(brain() > 0, 5.0, 0.0)
    almost[4, 4, 4] = 6.0
    out = CachedVolumes([save(tmp_path / "almost.nii.gz", almost)], PreprocessConfig.from_preset("mri_zscore"),
                        (8, 8, 8), None)[0]
    assert float(out.abs().max()) > 0


def test_a_window_that_does_not_fit_is_reported_naming_the_file(tmp_path):
    mr = save(tmp_path / "mr.nii.gz", brain())
    with pytest.raises(DataError, match=r"mr.nii.gz' has intensities in \[0, 900\], 0.00% of its voxels at or below -50 .*: it is not CT in HU"):
        CachedVolumes([mr], PreprocessConfig.from_preset("ct_abdomen"), (8, 8, 8), None)[0]
    hu = save(tmp_path / "ct.nii.gz", brain() - 1000)
    with pytest.raises(DataError, match=r"ct.nii.gz' has intensities in \[-1000, -100\], with negative values"):
        CachedVolumes([hu], PreprocessConfig.from_preset("ct_8bit"), (8, 8, 8), None)[0]
    lungs = save(tmp_path / "dark.nii.gz", np.where(brain() > 0, -900.0, -1000.0))
    with pytest.raises(DataError, match=r"all outside the window \[-175, 250\]"):
        CachedVolumes([lungs], PreprocessConfig.from_preset("ct_abdomen"), (8, 8, 8), None)[0]
    # the presets that fit: z-score for MR, a HU window for HU, 8-bit for [0, 255]
    out = CachedVolumes([mr], PreprocessConfig.from_preset("mri_zscore"), (8, 8, 8), None)[0]
    tissue = out[out != 0]
    assert abs(float(tissue.mean())) < 1e-5 and abs(float(tissue.std(unbiased=False)) - 1) < 1e-4
    # uncropped, the background must stay 0 and the tissue be z-scored over itself alone (the cropped volume above is
    # all tissue, so a z-score over every voxel passed there): by hand with NumPy
    whole = CachedVolumes([mr], PreprocessConfig.from_preset("mri_zscore", crop_foreground=False), (8, 8, 8), None)[0]
    inside = brain() > 0
    values = brain()[inside].astype(np.float64)
    assert tuple(whole.shape[-3:]) == (12, 12, 12) and int((~inside).sum()) == 1512
    assert float(whole[0][torch.from_numpy(~inside)].abs().max()) == 0.0
    np.testing.assert_allclose(whole[0].numpy()[inside], (values - values.mean()) / values.std(), rtol=0, atol=1e-5)
    assert float(CachedVolumes([hu], PreprocessConfig.from_preset("ct_pretrain"), (8, 8, 8), None)[0].max()) == pytest.approx(0.45)


def test_channels_are_stacked_and_must_share_a_grid(tmp_path):
    t1, t2 = save(tmp_path / "t1.nii.gz", brain()), save(tmp_path / "t2.nii.gz", 2 * brain())
    label = save(tmp_path / "seg.nii.gz", (brain() > 500).astype(np.float32))
    cfg = PreprocessConfig.from_preset("mri_zscore", crop_foreground=False)
    item = LabelledCases([{"image": [t1, t2], "label": label}], cfg, (8, 8, 8), 2, None)[0]
    assert tuple(item["image"].shape) == (2, 12, 12, 12) and tuple(item["label"].shape) == (1, 12, 12, 12)
    # z-score per channel: both channels (t2 = 2 * t1) become the same image
    assert np.allclose(item["image"][0], item["image"][1], atol=1e-5)
    assert int(item["label"].sum()) == int((brain() > 500).sum())
    small = save(tmp_path / "small.nii.gz", brain((10, 12, 12)))
    with pytest.raises(DataError, match=r"channel '.*small.nii.gz' has shape \(10, 12, 12\), channel '.*t1.nii.gz'"):
        LabelledCases([{"image": [t1, small], "label": label}], cfg, (8, 8, 8), 2, None)[0]


def test_a_label_whose_header_gives_no_finite_affine_is_refused(tmp_path):
    """A label whose pixdim holds NaN (no qform, no sform) has an affine of NaNs: every comparison with its image's was
    False, so it passed as "a header's rounding" (a warning), even when its x axis ran the other way. Images are
    refused for this when read; the label must be too, naming it."""
    image = save(tmp_path / "ct.nii.gz", brain())
    label = np.flip((brain() > 500).astype(np.float32), 0).copy()
    header = nib.Nifti1Image(label, np.diag([-1.0, 1.0, 1.0, 1.0])).header.copy()
    header.set_qform(None, code=0)
    header.set_sform(None, code=0)
    header["pixdim"][1:4] = [1.0, np.nan, 1.0]
    nib.save(nib.Nifti1Image(label, None, header), str(tmp_path / "seg.nii.gz"))
    assert not np.isfinite(nib.load(str(tmp_path / "seg.nii.gz")).affine).all()
    cfg = PreprocessConfig.from_preset("mri_zscore", crop_foreground=False)
    cases = LabelledCases([{"image": image, "label": tmp_path / "seg.nii.gz"}], cfg, (8, 8, 8), 2, None)
    with pytest.raises(DataError, match=r"seg.nii.gz' has the affine .*nan.*expected finite voxel axes"):
        cases[0]


def test_a_complex_valued_label_is_refused_naming_it(tmp_path):
    image = save(tmp_path / "ct.nii.gz", brain())
    label = (brain() > 500).astype(np.complex64)
    nib.save(nib.Nifti1Image(label, np.eye(4)), str(tmp_path / "seg.nii.gz"))
    cfg = PreprocessConfig.from_preset("mri_zscore", crop_foreground=False)
    cases = LabelledCases([{"image": image, "label": tmp_path / "seg.nii.gz"}], cfg, (8, 8, 8), 2, None)
    with pytest.raises(DataError, match=r"seg\.nii\.gz' holds complex values \(complex64\)"):
        cases[0]


@pytest.mark.parametrize("change, refused", [("voxels", True), ("shift", True), ("rounding", False)])
def test_a_channel_of_the_shape_but_not_the_grid_of_the_first_is_refused(tmp_path, change, refused):
    """Channels were stacked when their shapes agreed, whatever their headers: a T2 of twice the voxel size or 6 mm
    away (another part of the head) was read as if aligned with the T1, exit 0. It must be refused naming both
    channels and both grids; a difference of a header's rounding (0.01 mm) warns and is stacked."""
    t1, label = save(tmp_path / "t1.nii.gz", brain()), save(tmp_path / "seg.nii.gz", (brain() > 500).astype(np.float32))
    affine = np.eye(4)
    if change == "voxels":
        affine[:3, :3] *= 2
    else:
        affine[0, 3] = 6.0 if change == "shift" else 0.01
    t2 = tmp_path / "t2.nii.gz"
    nib.save(nib.Nifti1Image(2 * brain(), affine), str(t2))
    cfg = PreprocessConfig.from_preset("mri_zscore", crop_foreground=False)
    cases = LabelledCases([{"image": [t1, t2], "label": label}], cfg, (8, 8, 8), 2, None)
    if refused:
        with pytest.raises(DataError, match=r"t2.nii.gz.*t1.nii.gz") as caught:
            cases[0]
        assert ("2.0" in str(caught.value)) if change == "voxels" else ("6.0" in str(caught.value))
    else:
        with pytest.warns(UserWarning, match="by a header's rounding"):
            assert tuple(cases[0]["image"].shape) == (2, 12, 12, 12)


@pytest.mark.parametrize("labels", [{"0": "background", "1": "liver", "01": "tumour"},
                                    {"0": "background", "1": "liver", " 1": "tumour"}])
def test_two_labels_keys_that_name_one_class_are_refused(labels):
    from s2dc.data.datalist import class_names

    with pytest.raises(DataError, match=r"'1'.*'0?1'|name class 1 twice"):
        class_names({"labels": labels}, "dataset.json")


def ct_with_cube(shape=(24, 24, 12)) -> tuple[np.ndarray, np.ndarray]:
    """CT-like int16 (air, a body at 40 HU, a bright 800 HU cube off-centre) and the label of the cube."""
    image = np.full(shape, -1000, np.int16)
    image[2:-2, 2:-2, 1:-1] = 40
    image[14:20, 4:9, 6:10] = 800
    label = (image == 800).astype(np.uint8)
    return image, label


def save_header(path: Path, array: np.ndarray, affine: np.ndarray, unit: str = "mm") -> Path:
    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units(unit, "sec")
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize("unit, per_mm", [("meter", 1e-3), ("micron", 1e3)])
def test_a_header_in_metres_or_microns_is_read_in_millimetres(tmp_path, unit, per_mm):
    """nibabel's affine is in the units of the header's xyzt_units, which NIfTI allows to be metres or microns; read
    as millimetres, a scan in metres (voxels of 0.0008 "mm") was resampled to 1.5 mm as one voxel: a blank image,
    exit 0. Both files are read in millimetres, as the same scan saved in mm."""
    image, label = ct_with_cube()
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = [-10.0, -10.0, -15.0]
    mm = [save_header(tmp_path / f"{n}_mm.nii.gz", a, affine) for n, a in (("ct", image), ("seg", label))]
    scaled = affine.copy()
    scaled[:3, :] *= per_mm
    other = [save_header(tmp_path / f"{n}_{unit}.nii.gz", a, scaled, unit) for n, a in (("ct", image), ("seg", label))]
    cfg = PreprocessConfig.from_preset("ct_abdomen", spacing=(1.5, 1.5, 2.0))
    want, got = (LabelledCases([{"image": i, "label": s}], cfg, (8, 8, 8), 2, None)[0] for i, s in (mm, other))
    assert tuple(got["image"].shape) == tuple(want["image"].shape) != (1, 8, 8, 8)
    assert torch.allclose(plain(got["image"]), plain(want["image"]), atol=1e-4)  # the header's float32 rounding
    assert torch.equal(plain(got["label"]), plain(want["label"]))
    assert int(got["label"].sum()) > 0 and bool((got["image"][got["label"] == 1] == 1).all())  # on the cube
    assert np.allclose(nifti_grid(other[0])[1], affine)  # the converters read the same grid


@pytest.mark.parametrize("bad", ["both", "label"])
@pytest.mark.parametrize("size", [0.0, -0.8])
def test_a_zero_or_negative_voxel_size_without_an_sform_is_refused_naming_the_file(tmp_path, bad, size):
    """A file without an sform takes its voxel sizes from pixdim; nibabel reads a 0 there as 1 mm and -0.8 as 0.8 mm
    (nifti1_io, which ITK reads with, takes both as 1 mm), with a log line that names no file, and training resampled
    image and label at that made-up size, exit 0. Refused, naming the file (the image first) and its pixdim."""
    image, label = ct_with_cube()
    paths = {"ct": tmp_path / "ct.nii.gz", "seg": tmp_path / "seg.nii.gz"}
    for name, array in (("ct", image), ("seg", label)):
        header = nib.Nifti1Header()
        header.set_data_shape(array.shape)
        header.set_qform(np.diag([0.8, 0.8, 2.5, 1.0]), code=1)
        header.set_sform(None, code=0)
        raw = bytearray(nib.Nifti1Image(array, None, header).to_bytes())
        pixdim = size if name == "seg" or bad == "both" else 0.8
        struct.pack_into("<f", raw, 76 + 4 * 2, pixdim)  # pixdim[2]; nibabel's writer turns a 0 into 1, -0.8 into 0.8
        paths[name].write_bytes(gzip.compress(bytes(raw)))
        with gzip.open(paths[name]) as stream:  # as stored (nibabel's check on loading "fixes" it)
            assert nib.Nifti1Header.from_fileobj(stream, check=False)["pixdim"][2] == np.float32(pixdim)
    named = paths["ct" if bad == "both" else "seg"]
    cfg = PreprocessConfig.from_preset("ct_abdomen", spacing=(1.5, 1.5, 2.0))
    cases = LabelledCases([{"image": paths["ct"], "label": paths["seg"]}], cfg, (8, 8, 8), 2, None)
    message = rf"'{named}' has the voxel sizes \(pixdim\) \[0.8, {size}, 2.5\] and no sform; expected positive"
    with pytest.raises(DataError, match=message):
        cases[0]
    with pytest.raises(DataError, match=message):  # the converters too
        nifti_grid(named)


@pytest.mark.parametrize("method", ["symmetric", "end"])
def test_the_extent_of_a_padded_volume_cuts_it_back_to_its_own_voxels(method):
    """The padding's record (what segmentation and reconstruction are scored on): an odd padding (7 voxels before and
    after along X: 3 and 4 or 0 and 7), none along an axis larger than the size (Y), and an even one (Z)."""
    from s2dc.data.preprocess import EXTENT, PadRecordingExtentd, own_voxels

    image = torch.arange(1.0, 1 + 9 * 20 * 4).reshape(1, 9, 20, 4)
    out = PadRecordingExtentd(["image", "label"], (16, 8, 8), method)({"image": image, "label": image.clone()})
    assert tuple(out["image"].shape) == tuple(out["label"].shape) == (1, 16, 20, 8)
    start = [3, 0, 2] if method == "symmetric" else [0, 0, 0]
    assert out[EXTENT].tolist() == [start, [s + n for s, n in zip(start, (9, 20, 4))]]
    for key in ("image", "label"):
        assert torch.equal(own_voxels(out[key], out[EXTENT]), image)
    assert out["image"].sum() == image.sum()  # all else is zero padding
