"""Patch classifiers and their registry. Every model maps [batch, bands, p, p] -> logits [batch, classes]."""

from __future__ import annotations

from torch import nn

from .cnn2d import CNN2D
from .vit import PatchViT

MODELS: dict[str, type[nn.Module]] = {"cnn2d": CNN2D, "vit": PatchViT}


def build_model(name: str, n_bands: int, n_classes: int, patch_size: int, n_comps: int) -> nn.Module:
    """A freshly initialised model of the registered `name`."""
    return MODELS[name](n_bands=n_bands, n_classes=n_classes, patch_size=patch_size, n_comps=n_comps)


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal (fan_out) for convolutions, Xavier-normal for linear layers, BatchNorm 1/0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
