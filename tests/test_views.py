"""Tests for s2dc.views: view geometry and exact token correspondences (method.md §2–3, Eq. 1).

Conventions under test (module docstring of s2dc/views.py): volumes are (B, C, X, Y, Z); ``theta``
(B, 3, 4) maps output grid points to input grid points in PyTorch grid coordinates ordered
(z, y, x), align_corners=True; ``H`` maps source voxels to augmented voxels and the resampler gets
``theta = N · H⁻¹ · N⁻¹``; ROI tokens are flattened in (z, x, y) order.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from s2dc import views
from s2dc.losses.matching import per_slice
from s2dc.views import ViewConfig

RELEASE = ViewConfig()
SMALL = ViewConfig(roi_size=(64, 64, 32), grid=2, token_stride=16)


# ----------------------------------------------------------------------------- helpers
def id_volume(shape, stride) -> torch.Tensor:
    """(1, 1, X, Y, Z) float32 volume holding 1 + token id of each voxel, id = (z//s)·X_t·Y_t + (x//s)·Y_t + (y//s)."""
    x, y, z = shape
    nx, ny = x // stride, y // stride
    tx = (torch.arange(x) // stride).view(x, 1, 1)
    ty = (torch.arange(y) // stride).view(1, y, 1)
    tz = (torch.arange(z) // stride).view(1, 1, z)
    ids = (tz * nx + tx) * ny + ty
    assert int(ids.max()) < 2**24  # exactly representable in float32
    return (ids + 1).to(torch.float32).view(1, 1, x, y, z)


def read_ids(volume: torch.Tensor, theta: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Token id (-1 outside) that nearest-neighbour resampling reads at theta-mapped points -> (B, N)."""
    b = theta.shape[0]
    vals = views.sample(volume.expand(b, -1, -1, -1, -1), theta, points.expand(b, -1, -1), mode="nearest")
    return vals[:, 0].round().long() - 1


def inverse_theta(theta: torch.Tensor) -> torch.Tensor:
    """theta (B, 3, 4)'s inverse, by inverting its homogeneous 4x4 matrix in float64: independent of the package's
    ``views.invert_theta`` (its translation's sign was not checked by the ground truth that used it)."""
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64).expand(theta.shape[0], 1, 4)
    return torch.linalg.inv(torch.cat([theta.double(), bottom], dim=1))[:, :3].to(theta.dtype)


def ground_truth(theta: torch.Tensor, shape, stride) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """M_gt from id-volumes read through the resampler: (M (B, N, N) bool, fwd (B, N), bwd (B, N))."""
    vol = id_volume(shape, stride)  # source and augmented views share the ROI shape
    centres = views.token_centres(shape, stride).unsqueeze(0)
    bwd = read_ids(vol, theta, centres)  # augmented token j -> source token it reads from
    fwd = read_ids(vol, inverse_theta(theta), centres)  # source token i -> augmented token
    n = centres.shape[1]
    ids = torch.arange(n)
    m = (fwd.unsqueeze(2) == ids.view(1, 1, n)) & (bwd.unsqueeze(1) == ids.view(1, n, 1))
    return m, fwd, bwd


def theta_of(h: torch.Tensor, in_shape, out_shape=None) -> torch.Tensor:
    """Resampler matrix for a voxel-space map H (source -> output), float32 exactly as make_views casts it."""
    out_shape = in_shape if out_shape is None else out_shape
    return views.voxel_map_to_theta(torch.linalg.inv(h), in_shape, out_shape).to(torch.float32)


def np_rot_z(deg: float) -> np.ndarray:
    a = math.radians(deg)
    m = np.eye(4)
    m[0, 0], m[0, 1], m[1, 0], m[1, 1] = math.cos(a), -math.sin(a), math.sin(a), math.cos(a)
    return m


def np_translate(t) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = t
    return m


def np_scale(s: float) -> np.ndarray:
    return np.diag([s, s, s, 1.0])


# ----------------------------------------------------------------------------- 1. exact correspondences
def test_release_geometry_defaults():
    assert RELEASE.roi_size == (384, 384, 96)
    assert RELEASE.crop_size == (96, 96, 96)
    assert RELEASE.token_grid == (12, 12, 3)
    assert RELEASE.num_tokens == 432


def test_token_centres_are_in_token_order():
    """token_centres is laid out in (z, x, y) order and each centre lies in its own token."""
    for cfg in (RELEASE, SMALL):
        n = cfg.num_tokens
        c = views.token_centres(cfg.roi_size, cfg.token_stride)
        assert c.shape == (n, 3)
        got = views.token_index(c.unsqueeze(0), cfg.roi_size, cfg.token_stride)[0]
        assert torch.equal(got, torch.arange(n))
        vol = id_volume(cfg.roi_size, cfg.token_stride)
        eye = torch.eye(3, 4).unsqueeze(0)
        assert torch.equal(read_ids(vol, eye, c.unsqueeze(0))[0], torch.arange(n))


def test_correspondences_exact_over_200_random_warps_release_geometry():
    """Acceptance: views.correspondences == id-volume ground truth, exactly, for 200 random H."""
    cfg, count = RELEASE, 200
    gen = torch.Generator().manual_seed(20250)
    h = views.random_roi_affine(count, cfg, gen)
    theta = theta_of(h, cfg.roi_size)
    m_gt, fwd, bwd = ground_truth(theta, cfg.roi_size, cfg.token_stride)
    m = views.correspondences(theta, cfg.roi_size, cfg.token_stride)

    assert m.shape == (count, 432, 432) and m.dtype == torch.bool
    wrong = (m != m_gt).flatten(1).sum(1)
    assert int(wrong.sum()) == 0, (
        f"{int((wrong > 0).sum())} of {count} warps disagree; "
        f"{int((m & ~m_gt).sum())} false positives, {int((~m & m_gt).sum())} missed mutual pairs"
    )
    # Mutual nearest neighbours: at most one partner per token on either side.
    assert int(m.sum(2).max()) <= 1 and int(m.sum(1).max()) <= 1

    positives = m.flatten(1).sum(1).double()
    print(
        f"\n[release geometry] positives per warp over {count} warps: mean {positives.mean():.1f}, "
        f"min {int(positives.min())}, max {int(positives.max())} of 432 tokens"
    )
    assert positives.min() > 0

    # The ground truth itself is a faithful reading of H (independent of the theta conventions):
    # map source centres by H in float64 voxel space, and compare away from token boundaries.
    stride, shape = cfg.token_stride, torch.tensor(cfg.roi_size, dtype=torch.float64)
    xt, yt, zt = cfg.token_grid
    tz, tx, ty = torch.meshgrid(torch.arange(zt), torch.arange(xt), torch.arange(yt), indexing="ij")
    centres = torch.stack([tx, ty, tz], -1).reshape(-1, 3).double() * stride + (stride - 1) / 2
    mapped = (h[:, :3, :3] @ centres.T).transpose(1, 2) + h[:, None, :3, 3]  # (B, N, 3) voxel (x, y, z)
    tok = torch.floor((mapped + 0.5) / stride).long()
    inside = ((mapped >= -0.5) & (mapped < shape - 0.5)).all(-1)
    expected = torch.where(inside, (tok[..., 2] * xt + tok[..., 0]) * yt + tok[..., 1], -1)
    frac = (mapped + 0.5) / stride
    edge = torch.minimum((mapped + 0.5).abs(), (shape - 0.5 - mapped).abs())
    clear = ((frac - frac.round()).abs() * stride > 1e-3).all(-1) & (edge > 1e-3).all(-1)
    assert clear.float().mean() > 0.99
    assert torch.equal(fwd[clear], expected[clear])


def test_identity_warp_gives_identity_correspondence():
    cfg = RELEASE
    theta = theta_of(torch.eye(4, dtype=torch.float64).unsqueeze(0), cfg.roi_size)
    m_gt, _, _ = ground_truth(theta, cfg.roi_size, cfg.token_stride)
    eye = torch.eye(cfg.num_tokens, dtype=torch.bool).unsqueeze(0)
    assert torch.equal(m_gt, eye)
    assert torch.equal(views.correspondences(theta, cfg.roi_size, cfg.token_stride), eye)


def test_small_warps_keep_almost_every_token_matched():
    cfg = ViewConfig(rotation_deg=2.0, scale_range=(0.99, 1.01), translation_frac=0.02)
    gen = torch.Generator().manual_seed(7)
    theta = theta_of(views.random_roi_affine(32, cfg, gen), cfg.roi_size)
    m_gt, _, _ = ground_truth(theta, cfg.roi_size, cfg.token_stride)
    matched = m_gt.any(2).float().mean(1)  # fraction of source tokens with a mutual partner
    assert float(matched.min()) >= 0.99
    assert torch.equal(views.correspondences(theta, cfg.roi_size, cfg.token_stride), m_gt)


def test_correspondences_exact_small_config_and_heavy_warps():
    """Same ground-truth check where tokens are small and warps are strong (many boundary cases)."""
    cfg = ViewConfig(roi_size=(64, 64, 32), grid=2, token_stride=8, rotation_deg=90.0, scale_range=(0.6, 1.6))
    gen = torch.Generator().manual_seed(3)
    theta = theta_of(views.random_roi_affine(300, cfg, gen), cfg.roi_size)
    m_gt, _, _ = ground_truth(theta, cfg.roi_size, cfg.token_stride)
    assert torch.equal(views.correspondences(theta, cfg.roi_size, cfg.token_stride), m_gt)


# ----------------------------------------------------------------------------- 2. resampler geometry
GEOM_SHAPE = (33, 29, 17)  # odd and unequal: any swapped axis or wrong normaliser shows up
CENTRE = np.array([(s - 1) / 2 for s in GEOM_SHAPE])  # (16, 14, 8): integer
P = np.array([20, 9, 5])


def bright_volume(shape, p, dtype=torch.float64) -> torch.Tensor:
    vol = torch.zeros(1, 1, *shape, dtype=dtype)
    vol[0, 0, p[0], p[1], p[2]] = 1.0
    return vol


def warp_by_hand_h(h: np.ndarray, out_shape, mode="nearest", p=P) -> tuple[torch.Tensor, np.ndarray]:
    vol = bright_volume(GEOM_SHAPE, p)
    theta = views.voxel_map_to_theta(torch.linalg.inv(torch.from_numpy(h)).unsqueeze(0), GEOM_SHAPE, out_shape)
    out = views.warp(vol, theta, out_shape, mode=mode)
    assert out.shape == (1, 1, *out_shape)
    q = h @ np.append(p, 1.0)
    assert np.allclose(q[:3], np.round(q[:3])), "test set-up: H·p must be a voxel"
    return out[0, 0], np.round(q[:3]).astype(int)


def test_warp_rotation_90_about_depth_axis():
    h = np_translate(CENTRE + np.array([1, -2, 0])) @ np_rot_z(90) @ np_translate(-CENTRE)
    out, q = warp_by_hand_h(h, GEOM_SHAPE)
    # By hand: x' = cx - (y - cy) + 1, y' = cy + (x - cx) - 2, z' = z.
    assert tuple(q) == (16 - (9 - 14) + 1, 14 + (20 - 16) - 2, 5) == (22, 16, 5)
    assert out[tuple(q)] == 1.0
    assert int((out > 0.5).sum()) == 1  # a permutation of voxels: exactly one bright output voxel


def test_warp_rotation_into_a_differently_shaped_output():
    out_shape = (29, 33, 17)  # in-plane axes swapped by the 90° rotation
    out_centre = np.array([(s - 1) / 2 for s in out_shape])
    h = np_translate(out_centre) @ np_rot_z(-90) @ np_translate(-CENTRE)
    out, q = warp_by_hand_h(h, out_shape)
    # x' = ocx + (y - cy), y' = ocy - (x - cx)
    assert tuple(q) == (14 + (9 - 14), 16 - (20 - 16), 5) == (9, 12, 5)
    assert out[tuple(q)] == 1.0
    assert int((out > 0.5).sum()) == 1


def test_warp_pure_translation():
    t = np.array([3, -2, 4])
    out, q = warp_by_hand_h(np_translate(t), GEOM_SHAPE)
    assert tuple(q) == (23, 7, 9)
    assert out[tuple(q)] == 1.0
    assert int((out > 0.5).sum()) == 1
    # Trilinear: exact too, the map is integer.
    out_lin, _ = warp_by_hand_h(np_translate(t), GEOM_SHAPE, mode="bilinear")
    assert torch.allclose(out_lin, out.to(out_lin.dtype), atol=1e-9)


def test_warp_isotropic_scale_2_about_centre():
    p = np.array([18, 12, 7])
    h = np_translate(CENTRE) @ np_scale(2.0) @ np_translate(-CENTRE)
    out, q = warp_by_hand_h(h, GEOM_SHAPE, p=p)
    assert tuple(q) == (16 + 2 * 2, 14 - 2 * 2, 8 - 2) == (20, 10, 6)
    assert out[tuple(q)] == 1.0
    bright = torch.nonzero(out > 0.5).numpy()
    assert np.abs(bright - q).max() <= 1  # nearest: the bright blob sits around H·p, twice the size
    out_lin, _ = warp_by_hand_h(h, GEOM_SHAPE, mode="bilinear", p=p)
    assert np.unravel_index(int(out_lin.argmax()), GEOM_SHAPE) == tuple(q)
    assert abs(float(out_lin[tuple(q)]) - 1.0) < 1e-9
    for axis in range(3):  # half-way points on either side read half the bright voxel
        for step in (-1, 1):
            r = q.copy()
            r[axis] += step
            assert abs(float(out_lin[tuple(r)]) - 0.5) < 1e-9


# ----------------------------------------------------------------------------- 3. make_views
def test_make_views_shapes_and_consistency():
    cfg = SMALL
    b, p, n = 2, cfg.grid, cfg.num_tokens
    roi = torch.randn(b, 1, *cfg.roi_size, generator=torch.Generator().manual_seed(0))
    v = views.make_views(roi, cfg, torch.Generator().manual_seed(1))

    crop = (b * p * p, 1, 32, 32, 32)
    assert v.student.shape == crop and v.patch.shape == crop and v.crops.shape == crop
    assert v.correspondence.shape == (b, n, n) and v.correspondence.dtype == torch.bool
    assert v.theta.shape == (b, 3, 4)

    cx, cy, _ = cfg.crop_size
    for bi in range(b):
        for kx in range(p):
            for ky in range(p):
                sub = roi[bi, :, kx * cx : (kx + 1) * cx, ky * cy : (ky + 1) * cy, :]
                assert torch.equal(v.student[bi * p * p + kx * p + ky], sub)

    warped = views.warp(roi, v.theta, cfg.roi_size)
    assert torch.allclose(v.patch, views.roi_to_crops(warped, p), atol=1e-4)
    assert not torch.allclose(v.patch, v.student, atol=1e-2)  # the patch branch is actually warped
    assert torch.equal(v.correspondence, views.correspondences(v.theta, cfg.roi_size, cfg.token_stride))
    assert v.correspondence.any()


def test_make_views_rejects_wrong_roi_shape():
    with pytest.raises(ValueError, match="roi_size"):
        views.make_views(torch.zeros(1, 1, 64, 64, 16), SMALL, torch.Generator().manual_seed(0))


# ----------------------------------------------------------------------------- 4. crop/token layout
def test_roi_to_crops_and_crop_tokens_round_trip_in_zxy_order():
    b, c, grid, (xt, yt, zt) = 2, 3, 2, (6, 4, 3)
    roi_tokens = torch.randn(b, c, xt, yt, zt)
    crops = views.roi_to_crops(roi_tokens, grid)
    assert crops.shape == (b * grid * grid, c, xt // grid, yt // grid, zt)
    got = views.crop_tokens_to_roi(crops, grid)
    assert got.shape == (b, xt * yt * zt, c)
    expected = torch.empty(b, xt * yt * zt, c)
    for bi in range(b):
        for z in range(zt):
            for x in range(xt):
                for y in range(yt):
                    expected[bi, (z * xt + x) * yt + y] = roi_tokens[bi, :, x, y, z]
    assert torch.equal(got, expected)
    # Depth slice z is the contiguous block [z·X_t·Y_t, (z+1)·X_t·Y_t).
    for z in range(zt):
        block = got[:, z * xt * yt : (z + 1) * xt * yt]
        assert torch.equal(block, roi_tokens[..., z].permute(0, 2, 3, 1).reshape(b, xt * yt, c))


# ----------------------------------------------------------------------------- 5. global branch
def test_global_crops_without_augmentation_equal_student_crops():
    cfg = ViewConfig(
        roi_size=(64, 64, 32), grid=2, token_stride=16,
        crop_rotation_deg=0.0, crop_scale_jitter=0.0, crop_translation_frac=0.0, intensity_shift=0.0,
    )
    roi = torch.randn(2, 1, *cfg.roi_size, generator=torch.Generator().manual_seed(4))
    v = views.make_views(roi, cfg, torch.Generator().manual_seed(5))
    assert torch.allclose(v.crops, v.student, atol=1e-5)


def test_global_crops_intensity_shift_is_one_constant_per_crop():
    shift = 0.3
    cfg = ViewConfig(
        roi_size=(64, 64, 32), grid=2, token_stride=16,
        crop_rotation_deg=0.0, crop_scale_jitter=0.0, crop_translation_frac=0.0, intensity_shift=shift,
    )
    roi = torch.randn(3, 1, *cfg.roi_size, generator=torch.Generator().manual_seed(6))
    v = views.make_views(roi, cfg, torch.Generator().manual_seed(7))
    diff = (v.crops - v.student).flatten(1)
    const = diff[:, :1]
    assert torch.allclose(diff, const.expand_as(diff), atol=1e-5)
    assert float(const.abs().max()) <= shift + 1e-6
    assert const.unique().numel() == const.numel()  # drawn per crop
    assert float(const.abs().max()) > 0


def test_global_crops_are_mildly_warped_by_default():
    roi = torch.randn(1, 1, *SMALL.roi_size, generator=torch.Generator().manual_seed(8))
    v = views.make_views(roi, SMALL, torch.Generator().manual_seed(9))
    assert torch.isfinite(v.crops).all()
    assert not torch.allclose(v.crops, v.student, atol=1e-2)


# ----------------------------------------------------------------------------- 6. determinism and validation
def test_same_seed_same_views_different_seed_different_views():
    roi = torch.randn(2, 1, *SMALL.roi_size, generator=torch.Generator().manual_seed(10))
    a = views.make_views(roi, SMALL, torch.Generator().manual_seed(11))
    b = views.make_views(roi, SMALL, torch.Generator().manual_seed(11))
    for name in ("student", "patch", "crops", "correspondence", "theta"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    c = views.make_views(roi, SMALL, torch.Generator().manual_seed(12))
    assert not torch.equal(a.theta, c.theta)
    assert not torch.equal(a.crops, c.crops)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(roi_size=(98, 96, 96), grid=4), "roi_size"),
        (dict(roi_size=(96, 98, 96), grid=4), "roi_size"),
        (dict(grid=0), "grid"),
        (dict(roi_size=(384, 384, 80)), r"token.stride"),  # crop Z = 80 is not a multiple of 32
        (dict(roi_size=(320, 320, 96)), r"token.stride"),  # crop X = 80
        (dict(scale_range=(1.2, 0.9)), "scale_range"),
        (dict(scale_range=(0.0, 1.0)), "scale_range"),
        (dict(crop_scale_jitter=1.0), "crop_scale_jitter"),
    ],
)
def test_view_config_rejects_bad_values(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ViewConfig(**kwargs)


@pytest.mark.parametrize("roi_size", [(-384, 384, 96), (384, -384, 96), (384, 384, -96), (0, 0, 0), (64, 64, 0)])
def test_view_config_rejects_non_positive_roi_size(roi_size):
    # a negative or zero size divides by views.grid and views.token_stride as well as a positive one: it was accepted
    # and failed later, naming a `min_size` the user never set
    with pytest.raises(ValueError, match=r"views\.roi_size must be .*>= 1"):
        ViewConfig(roi_size=roi_size, grid=2, token_stride=16)

@pytest.mark.parametrize("stride", [0, -32])
def test_view_config_rejects_non_positive_token_stride(stride):
    # token_stride=0 -> ZeroDivisionError from `size % 0`; token_stride=-32 is accepted and gives
    # token_grid (-12, -12, -3), num_tokens -432.
    with pytest.raises(ValueError, match="token_stride"):
        ViewConfig(token_stride=stride)


# ----------------------------------------------------------------------------- 7. per-slice scope
def test_per_slice_positives_are_a_subset_of_3d_positives():
    cfg = RELEASE
    gen = torch.Generator().manual_seed(13)
    theta = theta_of(views.random_roi_affine(16, cfg, gen), cfg.roi_size)
    gt = views.correspondences(theta, cfg.roi_size, cfg.token_stride)
    b, n = gt.shape[:2]
    zt = cfg.token_grid[2]
    per = n // zt
    q = torch.randn(b, n, 4)
    _, _, gt_slice = per_slice(q, q.clone(), gt, zt)
    assert gt_slice.shape == (b * zt, per, per)
    bi, z, a, c = torch.nonzero(gt_slice.view(b, zt, per, per), as_tuple=True)
    assert bool(gt[bi, z * per + a, z * per + c].all())
    # ...and exactly the 3-D positives whose two tokens share a depth slice.
    i_, j_ = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    same_slice = (i_ // per) == (j_ // per)
    assert int(gt_slice.sum()) == int((gt & same_slice).sum())
    assert int(gt_slice.sum()) > 0


# ----------------------------------------------------------------------------- known bug: odd token strides
# grid_sample(mode="nearest") reads voxel nearbyint(u) (round half to EVEN), whereas views.token_index
# assigns floor((u + 0.5) / stride) (round half UP). At a token boundary u = k·stride − 0.5 the two agree
# only when k·stride is even, i.e. always for even strides (release: 32) but not for odd ones, which
# ViewConfig accepts. Then correspondences() disagrees with what the resampler actually reads.
def test_correspondences_exact_for_odd_stride_at_half_voxel_ties():
    shape, stride = (9, 9, 9), 3
    h = torch.eye(4, dtype=torch.float64)
    h[0, 3] = 1.5  # token centre x = 1 -> 2.5: resampler voxel 2 (token 0), token_index says token 1
    theta = theta_of(h.unsqueeze(0), shape)
    m_gt, _, _ = ground_truth(theta, shape, stride)
    assert torch.equal(views.correspondences(theta, shape, stride), m_gt)


def test_correspondences_exact_for_odd_stride_random_warps():
    cfg = ViewConfig(roi_size=(48, 48, 24), grid=2, token_stride=3)  # accepted by ViewConfig
    h = views.random_roi_affine(300, cfg, torch.Generator().manual_seed(0))[270:280]  # warp 276 hits a tie
    theta = theta_of(h, cfg.roi_size)  # (a float32 x-coordinate of exactly 20.5 at 4 token centres)
    m_gt, _, _ = ground_truth(theta, cfg.roi_size, cfg.token_stride)
    assert torch.equal(views.correspondences(theta, cfg.roi_size, cfg.token_stride), m_gt)


def test_in_plane_shifts_scale_with_each_axis_of_the_crop():
    """translation_frac · crop size, per axis: on a crop of 64 × 32 voxels in-plane the patch branch's and the global
    branch's shifts reach ±frac·64 along X but only ±frac·32 along Y (both used the X size, ±frac·64 along Y too). The
    shift is the warp's translation with rotation and scale removed (identity rotation and scale here)."""
    cfg = ViewConfig(roi_size=(128, 64, 32), grid=2, token_stride=16, rotation_deg=0.0, scale_range=(1.0, 1.0),
                     translation_frac=0.25, crop_rotation_deg=0.0, crop_scale_jitter=0.0, crop_translation_frac=0.25)
    assert cfg.crop_size == (64, 32, 32)
    gen = torch.Generator().manual_seed(0)
    patch = views.random_roi_affine(4000, cfg, gen)[:, :2, 3].abs().amax(0)
    crop = views.random_crop_affines(4000, cfg, gen)[:, :2, 3].abs().amax(0)
    for shift in (patch, crop):
        assert 0.95 * 16 < shift[0] <= 16 and 0.95 * 8 < shift[1] <= 8, shift
