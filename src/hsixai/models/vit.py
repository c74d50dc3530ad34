"""A small Vision Transformer over 3x3 tokens of a hyperspectral patch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TOKEN = 3  # token side in pixels


class PatchViT(nn.Module):
    """Spectral reduction, 3x3 tokens, CLS token, 6 pre-norm transformer blocks.

    Input [batch, bands, p, p] -> logits [batch, classes]. The patch is
    zero-padded on the bottom/right to a multiple of 3, split into
    (ceil(p/3))^2 tokens of n_comps*9 values, each embedded linearly to d_model.
    """

    def __init__(
        self,
        n_bands: int,
        n_classes: int,
        patch_size: int,
        n_comps: int = 15,
        d_model: int = 128,
        depth: int = 6,
        heads: int = 4,
        ff: int = 256,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.grid = math.ceil(patch_size / TOKEN)
        self.pad = self.grid * TOKEN - patch_size
        self.reduce = nn.Sequential(nn.Conv2d(n_bands, n_comps, kernel_size=1), nn.Tanh())
        self.embed = nn.Sequential(nn.Linear(n_comps * TOKEN * TOKEN, d_model), nn.GELU())
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model))
        self.pos = nn.Parameter(torch.zeros(1, self.grid * self.grid + 1, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, heads, dim_feedforward=ff, dropout=dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)
        from . import init_weights

        init_weights(self)
        nn.init.trunc_normal_(self.cls, std=0.02)
        nn.init.trunc_normal_(self.pos, std=0.02)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, c, p, p] -> [batch, grid*grid, c*9], row-major over the token grid."""
        x = F.pad(x, (0, self.pad, 0, self.pad))
        b, c = x.shape[:2]
        x = x.reshape(b, c, self.grid, TOKEN, self.grid, TOKEN)
        return x.permute(0, 2, 4, 1, 3, 5).reshape(b, self.grid * self.grid, c * TOKEN * TOKEN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(self.tokens(self.reduce(x)))
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1) + self.pos
        return self.head(self.norm(self.blocks(t)[:, 0]))
