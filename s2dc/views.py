"""Views of a large ROI and their exact token correspondences (method.md §2–3, poster Eq. 1).

Conventions
-----------
* Volumes are (B, C, X, Y, Z); voxel coordinates ``p = (x, y, z)`` index dims 2, 3, 4 and voxel
  ``i`` is centred at ``i``.
* Every resampling goes through :func:`sample`: ``theta`` (B, 3, 4) maps *output* points to *input*
  points in PyTorch's normalised grid coordinates (order ``(z, y, x)``, ``align_corners=True``),
  exactly the matrix ``affine_grid`` would take. :func:`warp` samples on the output lattice.
* The patch-branch augmentation ``H`` maps source voxels to augmented voxels; the resampler is
  handed ``theta = N · H⁻¹ · N⁻¹`` and the correspondences are read off that same ``theta``
  (and its inverse), so the two cannot disagree.
* ROI tokens are flattened in ``(z, x, y)`` order, so depth slice ``z`` is the contiguous block
  ``[z·X_t·Y_t, (z+1)·X_t·Y_t)`` (needed for per-slice matching).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .view_config import Shape3, ViewConfig


@dataclass
class Views:
    """One batch of views. P² = crops per ROI, N = tokens per ROI.

    Attributes
    ----------
    student : (B·P², C, cx, cy, cz) un-augmented sub-crops.
    patch : (B·P², C, cx, cy, cz) sub-crops of the warped ROI (teacher, patch branch).
    crops : (B·P², C, cx, cy, cz) mildly warped, intensity-shifted sub-crops (teacher, global branch).
    correspondence : (B, N, N) bool, M_gt[b, i, j]: source token i ↔ augmented token j (Eq. 1).
    theta : (B, 3, 4) the matrix handed to the resampler for the patch branch.
    """

    student: torch.Tensor
    patch: torch.Tensor
    crops: torch.Tensor
    correspondence: torch.Tensor
    theta: torch.Tensor


# ----------------------------------------------------------------------------- coordinates
def _normaliser(shape: Shape3, dtype=torch.float64) -> torch.Tensor:
    """(4, 4) map from voxel (x, y, z, 1) to grid coordinates (z, y, x, 1), align_corners=True."""
    m = torch.zeros(4, 4, dtype=dtype)
    for k, size in enumerate(shape):
        row = 2 - k  # grid order is (z, y, x)
        m[row, k] = 2.0 / (size - 1)
        m[row, 3] = -1.0
    m[3, 3] = 1.0
    return m


def voxel_map_to_theta(out_to_in: torch.Tensor, in_shape: Shape3, out_shape: Shape3) -> torch.Tensor:
    """Turn voxel-space maps ``out_to_in`` (B, 4, 4) into resampler matrices ``theta`` (B, 3, 4)."""
    n_in = _normaliser(in_shape).to(out_to_in)
    n_out_inv = torch.linalg.inv(_normaliser(out_shape)).to(out_to_in)
    return (n_in @ out_to_in @ n_out_inv)[:, :3]


def apply_theta(theta: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Map grid points (B, N, 3) through theta (B, 3, 4): ``theta[:, :, :3] · p + theta[:, :, 3]``."""
    return torch.baddbmm(theta[:, :, 3].unsqueeze(1), points, theta[:, :, :3].transpose(1, 2))


def invert_theta(theta: torch.Tensor) -> torch.Tensor:
    """Inverse affine of theta (B, 3, 4) -> (B, 3, 4)."""
    linear_inv = torch.linalg.inv(theta[:, :, :3])
    return torch.cat([linear_inv, -(linear_inv @ theta[:, :, 3:])], dim=2)


def lattice(shape: Shape3, device=None, dtype=torch.float32) -> torch.Tensor:
    """Grid coordinates (X·Y·Z, 3), order (z, y, x), of every voxel of ``shape`` (x-major)."""
    axes = [torch.linspace(-1.0, 1.0, s, device=device, dtype=dtype) for s in shape]
    gx, gy, gz = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([gz, gy, gx], dim=-1).reshape(-1, 3)


def token_centres(shape: Shape3, stride: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Grid coordinates (N, 3) of the token centres of a volume of ``shape``, in (z, x, y) token order."""
    axes = []
    for size in shape:
        centre_vox = torch.arange(size // stride, device=device, dtype=dtype) * stride + (stride - 1) / 2
        axes.append(2.0 * centre_vox / (size - 1) - 1.0)
    cz, cx, cy = torch.meshgrid(axes[2], axes[0], axes[1], indexing="ij")
    return torch.stack([cz, cy, cx], dim=-1).reshape(-1, 3)


def token_index(points: torch.Tensor, shape: Shape3, stride: int) -> torch.Tensor:
    """Token id (in (z, x, y) order) of the voxel nearest to each grid point (B, N, 3); -1 outside.

    Nearest-neighbour resampling reads voxel ``round(u)`` (ties to even, like ``nearbyint``) at a
    point whose voxel coordinate is ``u``; that voxel lies in token ``round(u) // stride``.
    """
    sx, sy, sz = shape
    idx, inside = [], torch.ones(points.shape[:-1], dtype=torch.bool, device=points.device)
    for k, size in zip((2, 1, 0), shape):  # x, y, z are grid components 2, 1, 0
        voxel = torch.round((points[..., k] + 1) / 2 * (size - 1))
        inside &= (voxel >= 0) & (voxel <= size - 1)
        idx.append(torch.div(voxel, stride, rounding_mode="floor").long())
    tx, ty, tz = idx
    nx, ny = sx // stride, sy // stride
    flat = (tz * nx + tx) * ny + ty
    return torch.where(inside, flat, torch.full_like(flat, -1))


def correspondences(theta: torch.Tensor, shape: Shape3, stride: int) -> torch.Tensor:
    """Exact mutual-nearest-neighbour token correspondences (poster Eq. 1).

    Parameters
    ----------
    theta : (B, 3, 4) resampler matrix: augmented grid point -> source grid point (``H⁻¹``).
    shape : (X, Y, Z) of source and augmented volume.

    Returns
    -------
    (B, N, N) bool, ``M[b, i, j]`` iff ``H`` maps centre i into token j and ``H⁻¹`` maps centre j into token i.
    """
    centres = token_centres(shape, stride, device=theta.device, dtype=theta.dtype)
    centres = centres.unsqueeze(0).expand(theta.shape[0], -1, -1)
    aug_to_src = token_index(apply_theta(theta, centres), shape, stride)  # (B, N): j -> i
    src_to_aug = token_index(apply_theta(invert_theta(theta), centres), shape, stride)  # (B, N): i -> j
    n = centres.shape[1]
    ids = torch.arange(n, device=theta.device)
    forward = src_to_aug.unsqueeze(2) == ids  # [b, i, j]: H(c_i) in j
    backward = aug_to_src.unsqueeze(1) == ids.unsqueeze(1)  # [b, i, j]: H⁻¹(c_j) in i
    return forward & backward


# ----------------------------------------------------------------------------- resampling
def sample_grid(volume: torch.Tensor, grid: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Read ``volume`` (B, C, X, Y, Z) at grid points (B, N, 3) -> (B, C, N); zeros outside.

    ``mode="bilinear"`` is trilinear for volumes; ``"nearest"`` reads voxel ``round(u)``.
    """
    out = F.grid_sample(volume, grid.view(grid.shape[0], -1, 1, 1, 3), mode=mode, padding_mode="zeros", align_corners=True)
    return out.flatten(2)


def sample(volume: torch.Tensor, theta: torch.Tensor, points: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Read ``volume`` (B, C, X, Y, Z) at the ``theta``-mapped grid points (B, N, 3) -> (B, C, N)."""
    return sample_grid(volume, apply_theta(theta.to(volume.dtype), points.to(volume.dtype)), mode)


def warp(volume: torch.Tensor, theta: torch.Tensor, out_shape: Shape3, mode: str = "bilinear") -> torch.Tensor:
    """Resample ``volume`` (B, C, ...) onto an output lattice -> (B, C, *out_shape) (trilinear by default)."""
    points = lattice(out_shape, device=volume.device, dtype=volume.dtype)
    points = points.unsqueeze(0).expand(volume.shape[0], -1, -1)
    return sample(volume, theta, points, mode).view(*volume.shape[:2], *out_shape)


def crop_points(theta: torch.Tensor, roi_size: Shape3, grid: int) -> torch.Tensor:
    """Map every voxel of every sub-crop through a per-crop ``theta`` (B, P, P, 3, 4) -> (B, P²·V, 3).

    Equal to ``apply_theta`` on the crop-ordered ROI lattice, but built from three 1-D axes by
    broadcasting (the lattice is a product grid), which is several times cheaper than a matmul.
    Crop k = kx·P + ky; voxels of a crop in x-major order, as :func:`roi_to_crops` lays them out.
    """
    b, device, dtype = theta.shape[0], theta.device, theta.dtype
    x, y, z = roi_size
    cx, cy = x // grid, y // grid

    def axis(size: int, count: int, length: int) -> torch.Tensor:  # (count, length) normalised coords
        vox = torch.arange(count * length, device=device, dtype=dtype).view(count, length)
        return 2.0 * vox / (size - 1) - 1.0

    ax, ay, az = axis(x, grid, cx), axis(y, grid, cy), axis(z, 1, z)[0]
    # grid column 2 multiplies x, column 1 y, column 0 z.
    tx = ax.view(1, grid, 1, cx, 1) * theta[..., 2].unsqueeze(3)  # (B, P, P, cx, 3)
    ty = ay.view(1, 1, grid, cy, 1) * theta[..., 1].unsqueeze(3)  # (B, P, P, cy, 3)
    tz = az.view(1, 1, 1, z, 1) * theta[..., 0].unsqueeze(3) + theta[..., 3].unsqueeze(3)  # (B, P, P, cz, 3)
    plane = tx.unsqueeze(4) + ty.unsqueeze(3)  # (B, P, P, cx, cy, 3)
    return (plane.unsqueeze(5) + tz.view(b, grid, grid, 1, 1, z, 3)).view(b, -1, 3)


def roi_to_crops(roi: torch.Tensor, grid: int) -> torch.Tensor:
    """Cut (B, C, X, Y, Z) into the P×P in-plane grid -> (B·P², C, X/P, Y/P, Z), crop k = kx·P + ky."""
    b, c, x, y, z = roi.shape
    crops = roi.view(b, c, grid, x // grid, grid, y // grid, z).permute(0, 2, 4, 1, 3, 5, 6)
    return crops.reshape(b * grid * grid, c, x // grid, y // grid, z)


def crop_tokens_to_roi(tokens: torch.Tensor, grid: int) -> torch.Tensor:
    """Inverse of :func:`roi_to_crops` for token maps (B·P², C, x, y, z) -> ROI tokens (B, N, C), (z, x, y) order."""
    bp, c, x, y, z = tokens.shape
    b = bp // (grid * grid)
    roi = tokens.view(b, grid, grid, c, x, y, z).permute(0, 6, 1, 4, 2, 5, 3)  # (B, z, Px, x, Py, y, C)
    return roi.reshape(b, z * grid * x * grid * y, c)


# ----------------------------------------------------------------------------- random affines
def _rotation(angles: torch.Tensor, axis: int) -> torch.Tensor:
    """(B,) angles in radians -> (B, 4, 4) rotations about voxel axis ``axis`` (0 = x, 1 = y, 2 = z)."""
    a, b = [k for k in range(3) if k != axis]
    m = torch.eye(4, dtype=angles.dtype).repeat(angles.shape[0], 1, 1)
    cos, sin = torch.cos(angles), torch.sin(angles)
    m[:, a, a], m[:, a, b], m[:, b, a], m[:, b, b] = cos, -sin, sin, cos
    return m


def _translation(shift: torch.Tensor) -> torch.Tensor:
    """(B, 3) -> (B, 4, 4)."""
    m = torch.eye(4, dtype=shift.dtype).repeat(shift.shape[0], 1, 1)
    m[:, :3, 3] = shift
    return m


def _scaling(scale: torch.Tensor) -> torch.Tensor:
    """(B, 3) -> (B, 4, 4)."""
    return torch.diag_embed(torch.cat([scale, torch.ones_like(scale[:, :1])], dim=1))


def _uniform(n: int, low, high, generator: torch.Generator, cols: int = 1) -> torch.Tensor:
    """(n, cols) draws of U(low, high); ``low`` and ``high`` are numbers or (cols,) tensors (one range per column)."""
    return low + (high - low) * torch.rand(n, cols, generator=generator, dtype=torch.float64)


def random_roi_affine(batch: int, cfg: ViewConfig, generator: torch.Generator) -> torch.Tensor:
    """Patch-branch augmentations H (B, 4, 4), voxel space, source -> augmented, about the ROI centre."""
    centre = torch.tensor([(s - 1) / 2 for s in cfg.roi_size], dtype=torch.float64).expand(batch, 3)
    angle = torch.deg2rad(_uniform(batch, -cfg.rotation_deg, cfg.rotation_deg, generator)[:, 0])
    scale = _uniform(batch, *cfg.scale_range, generator).expand(batch, 3)
    max_shift = cfg.translation_frac * torch.tensor(cfg.crop_size[:2], dtype=torch.float64)  # per in-plane axis
    shift = torch.cat([_uniform(batch, -max_shift, max_shift, generator, 2), torch.zeros(batch, 1, dtype=torch.float64)], 1)
    return _translation(centre + shift) @ _rotation(angle, 2) @ _scaling(scale) @ _translation(-centre)


def random_crop_affines(count: int, cfg: ViewConfig, generator: torch.Generator) -> torch.Tensor:
    """Global-branch augmentations (count, 4, 4), voxel space of one crop, about the crop centre."""
    centre = torch.tensor([(s - 1) / 2 for s in cfg.crop_size], dtype=torch.float64).expand(count, 3)
    r = cfg.crop_rotation_deg
    angles = torch.deg2rad(_uniform(count, -r, r, generator, 3))
    rot = _rotation(angles[:, 2], 2) @ _rotation(angles[:, 1], 1) @ _rotation(angles[:, 0], 0)
    scale = 1 + _uniform(count, -cfg.crop_scale_jitter, cfg.crop_scale_jitter, generator, 3)
    max_shift = cfg.crop_translation_frac * torch.tensor(cfg.crop_size[:2], dtype=torch.float64)  # per in-plane axis
    shift = torch.cat([_uniform(count, -max_shift, max_shift, generator, 2), torch.zeros(count, 1, dtype=torch.float64)], 1)
    return _translation(centre + shift) @ rot @ _scaling(scale) @ _translation(-centre)


def make_views(roi: torch.Tensor, cfg: ViewConfig, generator: torch.Generator) -> Views:
    """Build the student, patch-branch and global-branch views of a batch of ROIs.

    Parameters
    ----------
    roi : (B, C, X, Y, Z) with (X, Y, Z) == cfg.roi_size, on the training device.
    generator : CPU generator drawing the augmentation parameters (tiny); resampling runs on ``roi.device``.
    """
    if tuple(roi.shape[2:]) != cfg.roi_size:
        raise ValueError(f"ROI batch has spatial shape {tuple(roi.shape[2:])}, expected views.roi_size {cfg.roi_size}")
    b, p2 = roi.shape[0], cfg.grid**2
    device, dtype = roi.device, roi.dtype

    c, p = roi.shape[1], cfg.grid

    def to_crops(flat: torch.Tensor) -> torch.Tensor:  # (B, C, P²·V) -> (B·P², C, cx, cy, cz)
        return flat.view(b, c, p2, *cfg.crop_size).transpose(1, 2).reshape(b * p2, c, *cfg.crop_size)

    # Patch branch: the whole ROI under one affine H, read crop by crop.
    h = random_roi_affine(b, cfg, generator)
    theta = voxel_map_to_theta(torch.linalg.inv(h), cfg.roi_size, cfg.roi_size).to(device=device, dtype=torch.float32)
    shared = theta.to(dtype).view(b, 1, 1, 3, 4).expand(b, p, p, 3, 4)
    patch = to_crops(sample_grid(roi, crop_points(shared, cfg.roi_size, p)))

    # Global branch: crop k's own affine about its centre (ROI voxel space), all crops in one call.
    offsets = torch.tensor(
        [[kx * cfg.crop_size[0], ky * cfg.crop_size[1], 0] for kx in range(p) for ky in range(p)], dtype=torch.float64
    ).repeat(b, 1)
    crop_maps = _translation(offsets) @ torch.linalg.inv(random_crop_affines(b * p2, cfg, generator)) @ _translation(-offsets)
    crop_theta = voxel_map_to_theta(crop_maps, cfg.roi_size, cfg.roi_size).to(device=device, dtype=dtype)
    shift = _uniform(b * p2, -cfg.intensity_shift, cfg.intensity_shift, generator).to(device=device, dtype=dtype)
    crops = to_crops(sample_grid(roi, crop_points(crop_theta.view(b, p, p, 3, 4), cfg.roi_size, p)))
    crops = crops + shift.view(-1, 1, 1, 1, 1)

    return Views(
        student=roi_to_crops(roi, cfg.grid),
        patch=patch,
        crops=crops,
        correspondence=correspondences(theta, cfg.roi_size, cfg.token_stride),
        theta=theta,
    )
