"""The lightweight 2D-CNN of the published experiments."""

from __future__ import annotations

import torch
from torch import nn


class CNN2D(nn.Module):
    """Spectral reduction, four 3x3 convolution blocks, global pooling, MLP head.

    Input [batch, bands, p, p] -> logits [batch, classes]. The 1x1 reduction to
    `n_comps` channels with tanh acts as a learned, per-pixel band compression.
    """

    def __init__(self, n_bands: int, n_classes: int, patch_size: int, n_comps: int = 15):
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(n_bands, n_comps, kernel_size=1), nn.Tanh())
        blocks, channels = [], n_comps
        for width in (32, 64, 128, 256):
            blocks += [
                nn.Conv2d(channels, width, kernel_size=3, padding=1),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            channels = width
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Linear(256, 256),
            nn.LayerNorm(256),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(256, 128),
            nn.LayerNorm(128),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(128, n_classes),
        )
        from . import init_weights

        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.reduce(x))
        return self.head(x.mean(dim=(2, 3)))
