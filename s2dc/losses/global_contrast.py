"""Global contrastive loss L_g (InfoNCE between crop embeddings, MoCo-style queue).

For each ROI one sub-crop c is drawn: the query is the student's global embedding of c, the
positive the teacher's global-branch embedding of c, the negatives the teacher's global-branch
embeddings of the other sub-crops of the same ROI plus the queue of past keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .fp32 import in_fp32


def split_chosen_crop(crops: torch.Tensor, chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split per-ROI crop embeddings (B, P², D) at ``chosen`` (B,) -> (B, D) chosen, (B, P² − 1, D) others."""
    b, p2, d = crops.shape
    is_chosen = torch.arange(p2, device=crops.device).unsqueeze(0) == chosen.unsqueeze(1)
    return crops[is_chosen], crops[~is_chosen].view(b, p2 - 1, d)


@in_fp32
def global_infonce(
    query: torch.Tensor,
    positive: torch.Tensor,
    crop_negatives: torch.Tensor,
    queue: torch.Tensor | None = None,
    temperature: float = 0.9,
    normalize: bool = True,
) -> torch.Tensor:
    """InfoNCE: scalar.

    Parameters
    ----------
    query, positive : (B, D).
    crop_negatives : (B, P² − 1, D) the other crops of each ROI.
    queue : (K, D) past keys shared by the batch, or None / empty.
    normalize : L2-normalise all embeddings first (the release does not).
    """
    if normalize:
        query, positive, crop_negatives = (F.normalize(t, dim=-1) for t in (query, positive, crop_negatives))
        queue = None if queue is None else F.normalize(queue, dim=-1)
    logits = [(query * positive).sum(-1, keepdim=True), torch.einsum("bd,bkd->bk", query, crop_negatives)]
    if queue is not None and queue.shape[0]:
        logits.append(query @ queue.T)
    logits = torch.cat(logits, dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(query.shape[0], dtype=torch.long, device=query.device))
