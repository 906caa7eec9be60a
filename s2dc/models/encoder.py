"""Encoder factory: the SwinUNETR (v2) encoder from MONAI, with every size a parameter.

The encoder is built with exactly the arguments ``monai.networks.nets.SwinUNETR`` passes to its
``swinViT`` member, so that its ``state_dict`` loads into ``SwinUNETR(use_v2=True).swinViT`` strictly.
"""

from __future__ import annotations

import torch
from monai.networks.nets.swin_unetr import MERGING_MODE, SwinTransformer
from torch import nn

from .encoder_config import EncoderConfig


def build_encoder(cfg: EncoderConfig) -> SwinTransformer:
    """MONAI ``SwinTransformer`` configured as ``SwinUNETR(use_v2=True).swinViT``.

    ``forward(x)`` with ``x`` of shape (B, C, X, Y, Z) returns five hidden states; state ``s`` has
    shape (B, feature_size * 2**s, X / (patch * 2**s), ...).
    """
    window = (cfg.window_size,) * 3
    patch = (cfg.patch_size,) * 3
    return SwinTransformer(
        in_chans=cfg.in_channels,
        embed_dim=cfg.feature_size,
        window_size=window,
        patch_size=patch,
        depths=cfg.depths,
        num_heads=cfg.num_heads,
        mlp_ratio=4.0,
        qkv_bias=True,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=cfg.drop_path_rate,
        norm_layer=nn.LayerNorm,
        patch_norm=False,
        use_checkpoint=cfg.use_checkpoint,
        spatial_dims=3,
        downsample=MERGING_MODE["merging"],
        use_v2=True,
    )


def encode(encoder: SwinTransformer, x: torch.Tensor, token_stage: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the encoder once and return (tokens, last stage).

    Parameters
    ----------
    x : (B, C, X, Y, Z) crops.

    Returns
    -------
    tokens : (B, C_t, x_t, y_t, z_t) hidden state ``token_stage``.
    last : (B, C_4, x_4, y_4, z_4) last hidden state (for the global embedding).
    """
    states = encoder(x, normalize=True)
    return states[token_stage], states[-1]
