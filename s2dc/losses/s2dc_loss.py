"""The S²DC objective L = w_g·L_g + w_p2p·L_p2p + w_p2s·L_p2s (release weights 0.5 each), as one module.

Shaped like MONAI's ``DiceCELoss``: the module owns its options (a :class:`~s2dc.losses.options.LossConfig`,
checked when it is built: each weight finite and >= 0, not all zero) and returns every term beside the
weighted sum, so that a loss ablation (poster Table 2) is a weight of 0. A term whose weight is 0 is not
computed and is reported as 0; the token matching (assignment) is computed once and shared by L_p2p and
L_p2s. Every term is computed in fp32, whatever autocast the forward passes ran under.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .global_contrast import global_infonce, split_chosen_crop
from .matching import scoped
from .options import LossConfig
from .p2p import assignment_log, p2p_from_assignment
from .p2s import p2s_loss

TERMS = ("loss_global", "loss_p2p", "loss_p2s")


class S2DCLoss(nn.Module):
    """``S2DCLoss(options=None, **fields)``: a :class:`LossConfig` (default: the release's), with ``fields``
    (e.g. ``weight_p2p=0``) replacing its values; a wrong value raises ``ValueError`` naming ``loss.<field>``."""

    def __init__(self, options: LossConfig | None = None, **fields) -> None:
        super().__init__()
        options = options if options is not None else LossConfig()
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(LossConfig)})
        if unknown:
            raise ValueError(f"loss.{unknown[0]}: not a loss option (expected one of "
                             f"{[f.name for f in dataclasses.fields(LossConfig)]})")
        self.options = dataclasses.replace(options, **fields) if fields else options
        self.weights = {"loss_global": self.options.weight_global, "loss_p2p": self.options.weight_p2p,
                        "loss_p2s": self.options.weight_p2s}

    @property
    def needs_tokens(self) -> bool:
        """Whether the forward needs the dense tokens (L_p2p or L_p2s has a weight)."""
        return bool(self.options.weight_p2p or self.options.weight_p2s)

    @property
    def needs_global(self) -> bool:
        """Whether the forward needs the global embeddings (L_g has a weight)."""
        return bool(self.options.weight_global)

    def forward(
        self,
        student_tokens: torch.Tensor | None,
        teacher_tokens: torch.Tensor | None,
        correspondence: torch.Tensor | None,
        token_slices: int,
        query: torch.Tensor | None = None,
        keys: torch.Tensor | None = None,
        chosen: torch.Tensor | None = None,
        negatives: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Weighted terms, fp32 scalars: {"loss", "loss_global", "loss_p2p", "loss_p2s"}.

        Tokens (needed when L_p2p or L_p2s has a weight): ``student_tokens`` (B, N, D) L2-normalised student
        tokens of the augmented view, ``teacher_tokens`` (B, N, D) teacher tokens of the source view,
        ``correspondence`` (B, N, N) bool, True where token i of one view and j of the other overlap
        (``token_slices``: depth of the token grid, for ``matching="slice"``).
        Global (needed when L_g has a weight): ``query`` (B, D) student embedding of the chosen crop, ``keys``
        (B·P², D) teacher embeddings of every crop, ``chosen`` (B,) index of the chosen crop, ``negatives``
        (Q, D) or None: the queue of past keys.
        """
        o = self.options
        anchor = student_tokens if student_tokens is not None else query
        terms = dict.fromkeys(TERMS, anchor.new_zeros((), dtype=torch.float32))
        if self.needs_tokens:
            q, k, m = scoped(student_tokens.float(), teacher_tokens.float(), correspondence, o.matching, token_slices)
            log_assign = None
            if o.weight_p2p or o.p2s_form == "poster":
                log_assign = assignment_log(torch.einsum("bnd,bmd->bnm", q, k) / o.match_temperature,
                                            o.assignment, o.bin_score, o.sinkhorn_iters)
            if o.weight_p2p:
                terms["loss_p2p"] = p2p_from_assignment(log_assign, m, o.p2p_form)
            if o.weight_p2s:
                terms["loss_p2s"] = p2s_loss(q, k, m, o.p2s_form, o.p2s_spread, o.detach_weights,
                                             p2p_form=o.p2p_form, log_assign=log_assign)
        if self.needs_global:
            b = chosen.shape[0]
            positive, others = split_chosen_crop(keys.float().view(b, -1, keys.shape[-1]), chosen)
            queue = negatives.float() if negatives is not None else None
            terms["loss_global"] = global_infonce(query.float(), positive, others, queue,
                                                  o.global_temperature, o.global_normalize)
        terms["loss"] = sum(self.weights[name] * terms[name] for name in TERMS)
        return terms
