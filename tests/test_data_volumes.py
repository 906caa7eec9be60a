"""Tests for s2dc.data.volumes: listing, checked loading, preprocessing and caching."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from s2dc.data.datalist import list_volumes
from s2dc.data.errors import DataError
from s2dc.data.preprocess import PreprocessConfig, preprocess_transforms
from s2dc.data.volumes import CachedVolumes

SHAPE = (40, 36, 20)
AFFINE = np.diag([1.5, 1.5, 1.5, 1.0])


def save(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array, dtype=np.float32), affine), str(path))
    return path


def box_volume(shape=SHAPE, value=500.0) -> np.ndarray:
    """Bright box foreground inside an air background (HU -1000), like CT."""
    a = np.full(shape, -1000.0, np.float32)
    a[10:30, 8:28, 5:15] = value
    return a


def get(path: Path, cfg: PreprocessConfig = PreprocessConfig(), min_size=(8, 8, 8), cache_root=None) -> torch.Tensor:
    return CachedVolumes([path], cfg, min_size, cache_root)[0]


# ----------------------------------------------------------------------------- 1. listing


def test_list_volumes_dataset_json_and_folder(tmp_path):
    a = save(tmp_path / "imagesTr" / "a.nii.gz", box_volume())
    b = save(tmp_path / "imagesTr" / "b.nii", box_volume())
    save(tmp_path / "imagesTr" / "sub" / "c.nii.gz", box_volume())  # not listed: non-recursive
    (tmp_path / "imagesTr" / "notes.txt").write_text("ignore me")
    spec = {
        "training": [{"image": "./imagesTr/b.nii", "label": "./labelsTr/b.nii"}, "imagesTr/a.nii.gz"],
        "test": ["./imagesTr/a.nii.gz"],
    }
    js = tmp_path / "dataset.json"
    js.write_text(json.dumps(spec))

    assert list_volumes(js) == [b, a]  # json order, dict and plain-string entries
    assert list_volumes(js, key="test") == [a]
    assert list_volumes(tmp_path / "imagesTr") == [a, b]  # sorted, *.nii and *.nii.gz only


def test_list_volumes_errors(tmp_path):
    js = tmp_path / "dataset.json"
    js.write_text(json.dumps({"training": [{"image": "./imagesTr/missing.nii.gz"}], "test": []}))

    with pytest.raises(DataError, match="'validation'") as exc:
        list_volumes(js, key="validation")
    assert str(js) in str(exc.value) and "training" in str(exc.value)  # names json and available keys

    with pytest.raises(DataError) as exc:
        list_volumes(js)
    assert str(tmp_path / "imagesTr" / "missing.nii.gz") in str(exc.value)
    assert str(js) in str(exc.value)

    with pytest.raises(DataError, match="lists no images"):
        list_volumes(js, key="test")
    with pytest.raises(DataError, match="does not exist"):
        list_volumes(tmp_path / "nope.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .nii"):
        list_volumes(tmp_path / "empty")


def test_list_volumes_names_a_broken_link_in_a_folder(tmp_path):
    """A volume that is a symbolic link to nothing (a DVC / git-annex link never pulled) is named, not skipped."""
    save(tmp_path / "pool" / "a.nii.gz", box_volume())
    (tmp_path / "pool" / "b.nii.gz").symlink_to(tmp_path / "cache" / "ab12")
    with pytest.raises(DataError, match=r"pool/b\.nii\.gz' is a broken symbolic link") as exc:
        list_volumes(tmp_path / "pool")
    assert str(tmp_path / "cache" / "ab12") in str(exc.value)


# ----------------------------------------------------------------------------- 2./3. checked loading


@pytest.mark.parametrize("cached", [False, True])
def test_truncated_file_raises_data_error(tmp_path, cached):
    path = save(tmp_path / "trunc.nii.gz", box_volume())
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="trunc.nii.gz") as exc:
        get(path, cache_root=tmp_path / "cache" if cached else None)
    assert "expected a readable NIfTI volume" in str(exc.value)
    assert exc.value.__cause__ is not None  # raised from the original nibabel/gzip error


@pytest.mark.parametrize("damage", ["trailer cut", "byte flipped"])
def test_a_gzip_stream_that_fails_its_own_check_is_refused(tmp_path, damage):
    """nibabel reads a .nii.gz only as far as the voxels go, so the gzip trailer (CRC-32 and length) that tells a
    truncated download or a flipped byte is never checked: such a file must not be read as a volume."""
    import gzip
    import zlib

    path = save(tmp_path / "vol.nii.gz", box_volume())
    raw = bytearray(path.read_bytes())
    if damage == "trailer cut":
        raw = raw[:-8]
    else:  # a byte inside the compressed voxels: find one whose flip still inflates (so only the CRC can tell)
        for i in range(len(raw) // 2, len(raw) - 8):
            trial = bytearray(raw)
            trial[i] ^= 0x01
            try:
                data = zlib.decompress(bytes(trial[10:]), -15)
            except zlib.error:
                continue
            if len(data) == len(gzip.decompress(bytes(raw))):
                raw = trial
                break
        else:
            pytest.skip("no flip inflated to the same length")
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="vol.nii.gz") as exc:
        get(path)
    assert "expected a readable NIfTI volume" in str(exc.value)


@pytest.mark.parametrize("affine", ["nan", "singular"])
def test_an_affine_that_places_no_voxel_is_refused_naming_the_file(tmp_path, affine):
    """A NaN in the header's affine, or an axis of zero length, leaves no orientation or spacing to resample by."""
    path = save(tmp_path / "vol.nii", box_volume())
    header = nib.load(str(path)).header.copy()
    header.set_qform(None, code=0)
    if affine == "nan":
        header.set_sform(None, code=0)  # the affine from pixdim alone, as an old or hand-made header has it
        header["pixdim"][1:4] = [1.5, np.nan, 1.5]
    else:  # a scanner's sform whose second axis has no length
        header.set_sform(np.diag([1.5, 0.0, 1.5, 1.0]), code=1)
    nib.save(nib.Nifti1Image(box_volume(), None, header), str(path))
    loaded = nib.load(str(path)).affine
    assert not np.isfinite(loaded).all() if affine == "nan" else np.linalg.det(loaded[:3, :3]) == 0
    with pytest.raises(DataError, match="vol.nii") as exc:
        get(path)
    assert "affine" in str(exc.value)


def test_a_rewritten_file_with_its_old_size_and_time_is_not_read_from_the_cache(tmp_path):
    """`cp -p`, `tar x` or a coarse clock can give a changed file its old size and modification time: the cache
    entry is keyed by what changes with any write (as Git's index is: inode and status-change time too)."""
    import os

    path = save(tmp_path / "vol.nii", box_volume(value=500.0))
    first = get(path, cache_root=tmp_path / "cache")
    stat = path.stat()
    replacement = save(tmp_path / "other.nii", box_volume(value=300.0))
    os.replace(replacement, path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    fresh = get(path)
    assert not torch.equal(fresh, first)
    torch.testing.assert_close(get(path, cache_root=tmp_path / "cache"), fresh)


def test_data_error_survives_dataloader_worker(tmp_path):
    path = tmp_path / "garbage.nii.gz"
    path.write_bytes(b"not a nifti file at all")
    ds = CachedVolumes([path], PreprocessConfig(), (8, 8, 8), tmp_path / "cache")
    batches = iter(torch.utils.data.DataLoader(ds, num_workers=1))
    # The re-raised exception's traceback forms a reference cycle through the iterator; left to the
    # garbage collector, torch's worker shutdown then waits 5 s. Drop the traceback so `del batches`
    # shuts the worker down at once.
    try:
        next(batches)
    except DataError as exc:
        message = str(exc)
        exc.__traceback__ = None
    else:
        pytest.fail("DataLoader did not raise DataError")
    del batches
    assert "garbage.nii.gz" in message and "expected a readable NIfTI volume" in message


def test_non_3d_and_degenerate_volumes(tmp_path):
    two_d = save(tmp_path / "slice.nii.gz", np.ones((64, 64)), np.eye(4))
    with pytest.raises(DataError, match=r"slice\.nii\.gz.*\(64, 64\).*3-D"):
        get(two_d)

    thin = save(tmp_path / "thin.nii.gz", np.ones((64, 64, 1)), np.eye(4))
    with pytest.raises(DataError, match=r"thin\.nii\.gz.*at least 2 voxels"):
        get(thin)

    flat = save(tmp_path / "flat.nii.gz", np.full(SHAPE, 7.0))
    with pytest.raises(DataError, match=r"flat\.nii\.gz.*no foreground"):
        get(flat)

    # a 4-D image with a trailing singleton axis is accepted as 3-D
    four_d = save(tmp_path / "four.nii.gz", box_volume()[..., None])
    out = get(four_d, PreprocessConfig(crop_foreground=False))
    assert out.shape == (1, *SHAPE)


# ----------------------------------------------------------------------------- 4. padding


def test_a_complex_valued_volume_is_refused_naming_the_file(tmp_path):
    """MR complex / phase data was read as its real part only, silently."""
    rng = np.random.default_rng(0)
    array = (box_volume() + 1j * rng.uniform(-1000, 1000, SHAPE)).astype(np.complex64)
    nib.save(nib.Nifti1Image(array, AFFINE), str(tmp_path / "cx.nii.gz"))
    with pytest.raises(DataError, match=r"cx\.nii\.gz' holds complex values \(complex64\)"):
        get(tmp_path / "cx.nii.gz")


def test_small_volume_is_padded_to_min_size(tmp_path):
    a = box_volume()
    path = save(tmp_path / "small.nii.gz", a)
    out = get(path, PreprocessConfig(crop_foreground=False), min_size=(16, 48, 32))
    assert out.dtype == torch.float32 and type(out) is torch.Tensor
    assert tuple(out.shape) == (1, 40, 48, 32)  # x already large enough: unchanged

    expected = np.clip((a + 1000.0) / 2000.0, 0.0, 1.0)
    # symmetric constant padding: (48 - 36) / 2 = 6 and (32 - 20) / 2 = 6 on each side
    np.testing.assert_allclose(out[0, :, 6:42, 6:26].numpy(), expected, atol=1e-6)
    assert torch.all(out[0, :, :6] == 0) and torch.all(out[0, :, :, 26:] == 0)


def test_crop_foreground_then_pad(tmp_path):
    path = save(tmp_path / "box.nii.gz", box_volume())
    out = get(path, min_size=(8, 8, 16))
    # the 20 x 20 x 10 box is cropped, then z is padded 10 -> 16
    assert tuple(out.shape) == (1, 20, 20, 16)
    np.testing.assert_allclose(out[0, :, :, 3:13].numpy(), 0.75, atol=1e-6)  # (500 + 1000) / 2000
    assert torch.all(out[0, :, :, :3] == 0)


# ----------------------------------------------------------------------------- 5. intensity


def test_ct_window_and_clipping(tmp_path):
    a = np.full(SHAPE, -1000.0, np.float32)
    a[1, 1, 1], a[2, 2, 2], a[3, 3, 3], a[4, 4, 4], a[5, 5, 5] = 1000.0, 0.0, 3000.0, -2000.0, 250.0
    out = get(save(tmp_path / "ct.nii.gz", a), PreprocessConfig(crop_foreground=False))[0]
    expected = {(0, 0, 0): 0.0, (1, 1, 1): 1.0, (2, 2, 2): 0.5, (3, 3, 3): 1.0, (4, 4, 4): 0.0, (5, 5, 5): 0.625}
    for idx, value in expected.items():
        assert out[idx].item() == pytest.approx(value, abs=1e-6), idx
    assert out.min() >= 0 and out.max() <= 1


def test_zscore_over_nonzero_voxels(tmp_path):
    rng = np.random.default_rng(0)
    a = np.zeros(SHAPE, np.float32)
    a[5:35, 5:30, 3:17] = rng.uniform(50.0, 400.0, size=(30, 25, 14))
    out = get(save(tmp_path / "mr.nii.gz", a), PreprocessConfig(intensity="zscore", crop_foreground=False))[0]
    out = out.numpy()
    mask = a != 0
    assert abs(out[mask].mean()) < 1e-4
    assert out[mask].std() == pytest.approx(1.0, abs=1e-4)
    assert np.all(out[~mask] == 0)
    expected = (a[mask] - a[mask].mean()) / a[mask].std()
    np.testing.assert_allclose(out[mask], expected, atol=1e-4)


# ----------------------------------------------------------------------------- 6. orientation


def test_lps_volume_is_reoriented_to_ras(tmp_path):
    a = np.full(SHAPE, -1000.0, np.float32)
    a[3, 4, 5] = 1000.0
    lps = save(tmp_path / "lps.nii.gz", a, np.diag([-1.5, -1.5, 2.0, 1.0]))
    ras = save(tmp_path / "ras.nii.gz", a, np.diag([1.5, 1.5, 2.0, 1.0]))
    cfg = PreprocessConfig(crop_foreground=False)

    out = get(lps, cfg)
    assert tuple(out.shape) == (1, *SHAPE)
    # x and y point left/posterior in the file: RAS flips them, z is kept
    assert torch.nonzero(out[0] == 1.0).tolist() == [[40 - 1 - 3, 36 - 1 - 4, 5]]
    assert torch.nonzero(get(ras, cfg)[0] == 1.0).tolist() == [[3, 4, 5]]


def test_resampling_to_spacing(tmp_path):
    path = save(tmp_path / "sp.nii.gz", box_volume())
    out = get(path, PreprocessConfig(spacing=(3.0, 3.0, 1.5), crop_foreground=False))
    assert tuple(out.shape) == (1, 20, 18, 20)


# ----------------------------------------------------------------------------- 7. cache and config


def test_cache_is_used_and_keyed_by_config(tmp_path):
    path = save(tmp_path / "vol.nii.gz", box_volume())
    cfg = PreprocessConfig()
    ds = CachedVolumes([path], cfg, (8, 8, 8), tmp_path / "cache")
    first = ds[0]
    cache_dir = ds.cache_dir
    assert cache_dir.parent == tmp_path / "cache" and cache_dir.name.startswith(f"{cfg.cache_key()}-")
    files = list(cache_dir.iterdir())
    assert [f.suffix for f in files] == [".pt"]  # one entry, no temp files left behind

    path.unlink()  # second access must come from disk
    torch.testing.assert_close(ds[0], first)

    other = PreprocessConfig(a_max=500.0)
    assert other.cache_key() != cfg.cache_key()
    save(path, box_volume())
    second = CachedVolumes([path], other, (8, 8, 8), tmp_path / "cache")
    second[0]
    assert sorted((tmp_path / "cache").iterdir()) == sorted([cache_dir, second.cache_dir])
    assert second.cache_dir.name.startswith(f"{other.cache_key()}-")


def test_corrupt_cache_entry_is_recomputed(tmp_path):
    path = save(tmp_path / "vol.nii.gz", box_volume())
    ds = CachedVolumes([path], PreprocessConfig(), (8, 8, 8), tmp_path / "cache")
    first = ds[0]
    (entry,) = ds.cache_dir.glob("*.pt")
    raw = entry.read_bytes()
    entry.write_bytes(raw[: len(raw) // 2])
    with pytest.warns(UserWarning, match="unreadable cache file"):
        torch.testing.assert_close(ds[0], first)
    torch.testing.assert_close(ds[0], first)  # rewritten entry loads cleanly


@pytest.mark.parametrize("how", ["disk full", "folder removed"])
def test_a_cache_that_cannot_be_written_warns_and_still_returns_the_volume(tmp_path, monkeypatch, how):
    """Caching is best effort: torch.save fails with RuntimeError (not OSError) on a full disk or a removed cache
    folder; the volume still comes back, with a warning naming the cache file, and no half-written file is left."""
    path = save(tmp_path / "vol.nii.gz", box_volume())
    expected = get(path)
    ds = CachedVolumes([path], PreprocessConfig(), (8, 8, 8), tmp_path / "cache")
    if how == "disk full":
        def full_disk(obj, f, **kwargs):
            Path(f).write_bytes(b"PK\x03\x04 half")
            raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file")
        monkeypatch.setattr(torch, "save", full_disk)
    else:
        shutil.rmtree(ds.cache_dir)
    with pytest.warns(UserWarning, match=r"could not write cache file '.*\.pt'"):
        torch.testing.assert_close(ds[0], expected)
    assert not ds.cache_dir.exists() or list(ds.cache_dir.iterdir()) == []


def test_cache_key_stable_and_normalised():
    key = PreprocessConfig().cache_key()
    assert len(key) == 12 and all(c in "0123456789abcdef" for c in key)
    assert PreprocessConfig(a_min=-1000, a_max=1000).cache_key() == key
    assert PreprocessConfig(orientation="ras").cache_key() == key
    assert PreprocessConfig(spacing=[1, 1, 2]).spacing == (1.0, 1.0, 2.0)
    assert PreprocessConfig(crop_foreground=False).cache_key() != key


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"intensity": "x"}, "preprocess.intensity"),
        ({"a_min": 100.0, "a_max": 0.0}, "preprocess.a_min"),
        ({"a_max": float("nan")}, "preprocess.a_max"),
        ({"spacing": (1.0, -1.0, 1.0)}, "preprocess.spacing"),
        ({"spacing": (1.0, 1.0)}, "preprocess.spacing"),
        ({"orientation": "RAX"}, "preprocess.orientation"),
        ({"orientation": "RLS"}, "preprocess.orientation"),
        ({"crop_foreground": "yes"}, "preprocess.crop_foreground"),
    ],
)
def test_config_validation_names_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        PreprocessConfig(**kwargs)


def test_min_size_validation():
    with pytest.raises(ValueError, match="min_size"):
        preprocess_transforms(PreprocessConfig(), (8, 8))
    with pytest.raises(ValueError, match="min_size"):
        preprocess_transforms(PreprocessConfig(), (8, 0, 8))


def test_the_half_written_cache_entry_of_a_killed_process_is_removed_at_the_next_start(tmp_path):
    """SIGKILL runs no clean-up: a cache entry being written stays as a hidden temporary file, which the next run
    that opens the cache removes (not a running process's, e.g. another rank writing the same entry)."""
    import socket
    import subprocess
    import sys

    path = save(tmp_path / "vol.nii.gz", box_volume())
    cfg = PreprocessConfig()
    cache_dir = CachedVolumes([path], cfg, (8, 8, 8), tmp_path / "cache").cache_dir  # made, nothing cached yet
    host = socket.gethostname()
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        killed = cache_dir / f".0123abcd.pt.{host}.{dead}.tmp"
        writing = cache_dir / f".4567cdef.pt.{host}.{alive.pid}.tmp"
        for half in (killed, writing):
            half.write_bytes(b"half an entry")
        CachedVolumes([path], cfg, (8, 8, 8), tmp_path / "cache")[0]
        assert not killed.exists() and writing.exists()
        assert len(list(cache_dir.glob("*.pt"))) == 1
    finally:
        alive.kill()
        alive.wait()
