"""Structure awareness drawn (poster Figures 1 and 6): what an encoder's frozen tokens say about the structures.

* :func:`similarity_figure` — cosine similarity of every token of one slice to an anchor token placed in a
  structure (poster Figure 1: a liver anchor on CT), one panel per encoder beside the image and its labels;
* :func:`tsne_figure` — a t-SNE of validation tokens coloured by structure (Figure 6), one panel per encoder.

Both take the tokens of one Swin stage of the validation cases, read as ``s2dc probe`` reads them
(:func:`draw` does it all), and write a PNG with matplotlib (the pipeline extra); the t-SNE is scikit-learn's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.errors import DataError
from ..files import check_folder_path
from ..pyplot import check_png_out, pyplot, save_png
from .probe import VOXELS, check_seed, features, frozen_encoder, load_labelled, named_encoders


def anchor_token(target: torch.Tensor, structure: int) -> tuple[int, int, int]:
    """The token of ``structure`` nearest to the centroid of that structure's tokens: target (x, y, z) token
    classes -> its index (i, j, k); ``ValueError`` if no token carries the structure."""
    where = torch.nonzero(target == structure).double()
    if not len(where):
        raise ValueError(f"no token carries structure {structure}")
    centre = where.mean(0)
    return tuple(int(v) for v in where[(where - centre).square().sum(1).argmin()])


def anchor_similarity(tokens: torch.Tensor, anchor: tuple[int, int, int]) -> torch.Tensor:
    """Cosine similarity of every token to the anchor: tokens (x, y, z, C) -> (x, y, z)."""
    unit = F.normalize(tokens.double(), dim=-1)
    return unit @ unit[anchor]


def _image_slice(image: torch.Tensor, k: int, stride: int) -> np.ndarray:
    """The axial slice through token layer ``k`` of channel 0: image (C, X, Y, Z) -> (X, Y)."""
    return image[0, :, :, min(k * stride + stride // 2, image.shape[-1] - 1)].numpy()


def similarity_figure(image: torch.Tensor, label_tokens: torch.Tensor, maps: dict[str, torch.Tensor],
                      structure: int, structure_name: str, stride: int, out: Path, title: str) -> Path:
    """Poster Figure 1: ``image`` (C, X, Y, Z), ``label_tokens`` (x, y, z) token classes, ``maps`` {encoder:
    tokens (x, y, z, C)}; the anchor is the ``structure`` token nearest its centroid; one panel per encoder with
    the cosine similarity over the anchor's axial slice (upsampled to voxels), the structure outlined."""
    plt = pyplot()

    anchor = anchor_token(label_tokens, structure)
    i, j, k = anchor
    background = _image_slice(image, k, stride)
    outline = (label_tokens[:, :, k] == structure).double()[None, None]
    outline = F.interpolate(outline, scale_factor=stride, mode="nearest")[0, 0].numpy()
    fig, axes = plt.subplots(1, len(maps) + 1, figsize=(3.2 * (len(maps) + 1), 3.4), squeeze=False)
    axes = axes[0]
    axes[0].imshow(background.T, cmap="gray", origin="lower")
    axes[0].contour(outline.T, levels=[0.5], colors="tab:orange", linewidths=1, origin="lower")
    axes[0].set_title(f"image, {structure_name}")
    for ax, (name, tokens) in zip(axes[1:], maps.items()):
        sim = anchor_similarity(tokens, anchor)[:, :, k][None, None]
        sim = F.interpolate(sim, scale_factor=stride, mode="bilinear", align_corners=False)[0, 0].numpy()
        ax.imshow(background.T, cmap="gray", origin="lower")
        shown = ax.imshow(sim.T, cmap="jet", vmin=-1, vmax=1, alpha=0.55, origin="lower")
        ax.contour(outline.T, levels=[0.5], colors="white", linewidths=0.8, origin="lower")
        ax.set_title(name)
    for ax in axes:
        ax.plot([(i + 0.5) * stride - 0.5], [(j + 0.5) * stride - 0.5], marker="x", color="white", markersize=8)
        ax.set_xticks([]), ax.set_yticks([])
    fig.colorbar(shown, ax=list(axes), shrink=0.8, label="cosine to the anchor")
    fig.suptitle(title)
    return save_png(fig, out)


def tsne_figure(features: dict[str, torch.Tensor], labels: torch.Tensor, names: list[str], out: Path, title: str,
                max_tokens: int = 2000, seed: int = 0) -> Path:
    """Poster Figure 6: a 2-D t-SNE (scikit-learn) of each encoder's tokens ``features`` {encoder: (N, D)}
    coloured by ``labels`` (N,) -> ``names``; at most ``max_tokens`` tokens, the same ones for every encoder,
    drawn with equal shares per structure where there are enough."""
    plt = pyplot()
    from sklearn.manifold import TSNE

    keep = balanced_subset(labels, max_tokens, seed)
    fig, axes = plt.subplots(1, len(features), figsize=(3.6 * len(features), 3.6), squeeze=False)
    for ax, (name, x) in zip(axes[0], features.items()):
        points = TSNE(n_components=2, init="pca", perplexity=min(30.0, (len(keep) - 1) / 3), random_state=seed
                      ).fit_transform(F.normalize(x[keep].double(), dim=1).numpy())
        for c in torch.unique(labels[keep]).tolist():  # a colour per class value (20 before any repeats)
            mine = (labels[keep] == c).numpy()
            ax.scatter(points[mine, 0], points[mine, 1], s=3, label=names[c], color=plt.get_cmap("tab20")(c % 20))
        ax.set_title(name), ax.set_xticks([]), ax.set_yticks([])
    axes[0][-1].legend(markerscale=4, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.subplots_adjust(top=0.8)  # the square panels fill the height: room for their titles below the figure's
    fig.suptitle(title)
    return save_png(fig, out)


def balanced_subset(labels: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """Indices (sorted) of at most ``count`` of ``labels``, sharing the count equally among the classes (a class
    with fewer tokens gives all of them, the rest go to the others), drawn with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    classes, sizes = torch.unique(labels, return_counts=True)
    share, chosen, left = {}, [], count
    for n, c in sorted(zip(sizes.tolist(), classes.tolist())):  # smallest classes first
        share[c] = min(n, left // max(1, len(classes) - len(share)))
        left -= share[c]
    for c in classes.tolist():
        where = torch.nonzero(labels == c).flatten()
        chosen.append(where[torch.randperm(len(where), generator=generator)[: share[c]]])
    return torch.cat(chosen).sort().values


def draw(source: str | Path, encoders: list[str], structure: str, out_dir: str | Path, stage: int = 2, seed: int = 0,
         cache_dir: str | Path | None = None, device: str = "auto", preset: str | None = None,
         labels: str = "label", tsne_tokens: int = 2000) -> list[Path]:
    """Both figures for the validation cases of the segmentation dataset ``source``: ``similarity.png`` (anchor in
    ``structure``, a class name of the json, on the validation case where that structure has most tokens) and
    ``tsne.png`` (tokens of every validation case) in ``out_dir``; ``encoders`` as for ``s2dc probe``. ``labels``:
    the per-voxel map the structures come from, the dataset's ``label`` or e.g. a twin's ``anatomy`` (tissues the
    labels leave out, such as white matter). ``tsne_tokens``: at most this many tokens in the t-SNE."""
    if tsne_tokens < 2:
        raise ValueError(f"--tsne-tokens must be at least 2 (a t-SNE of {tsne_tokens} tokens is not drawn)")
    check_seed(seed)
    out_dir = Path(out_dir)
    check_folder_path(out_dir, "--out-dir")
    for name in ("similarity.png", "tsne.png"):
        check_png_out(out_dir / name)  # before any token is read
    pyplot()  # the pipeline extras, before any token is read
    try:
        import sklearn.manifold  # noqa: F401
    except ImportError:
        raise ValueError("the t-SNE needs scikit-learn: pip install -e '.[pipeline]'") from None
    labelled = named_encoders(encoders)
    data = load_labelled(source, labelled, stage, cache_dir, device, preset, roles=("validation",), labels=labels)
    if data.task.readout != "labels":
        raise ValueError(f"'{source}' is a {data.task.name} dataset; the structure figures need token labels "
                         "(a dataset of per-voxel labels: segmentation)")
    if structure not in data.names:
        raise ValueError(f"structure {structure!r} is not a class of the {labels!r} map of '{source}': "
                         f"{[n for n in data.names if n]}")
    target = data.names.index(structure)
    volumes, labels, inside = data.volumes["validation"], data.targets["validation"], data.inside["validation"]
    best = max(range(len(volumes)), key=lambda i: int((labels[i] == target).sum()))
    if not (labels[best] == target).any():
        raise DataError(f"no validation token of '{source}' carries {structure!r} at stage {stage} ({data.stride}-voxel "
                        "blocks): draw an earlier --stage (smaller blocks) or another structure")
    grid = [s // data.stride for s in volumes[best].shape[2:]]
    maps, tokens = {}, {}
    for name, what in labelled.items():
        encoder = None if what == VOXELS else frozen_encoder(what, data, seed)
        per_volume = [features(data, encoder, v, stage, pooled=False, what=what) for v in volumes]
        maps[name] = per_volume[best].reshape(*grid, -1)
        tokens[name] = torch.cat([f[m] for f, m in zip(per_volume, inside)])  # no token of the zero padding
    title = f"{data.dataset}, stage {stage} ({data.stride}-voxel tokens)"
    for name in ("similarity.png", "tsne.png"):  # the earlier pair goes first: a run killed between the two writes
        (out_dir / name).unlink(missing_ok=True)  # never leaves one of them beside the other of other encoders
    return [
        similarity_figure(volumes[best][0], labels[best].reshape(grid), maps, target, structure, data.stride,
                          out_dir / "similarity.png", f"{title}: cosine to a {structure} token"),
        tsne_figure(tokens, torch.cat([t[m] for t, m in zip(labels, inside)]), data.names, out_dir / "tsne.png", f"{title}: t-SNE of the tokens",
                    max_tokens=tsne_tokens, seed=seed),
    ]
