"""A trained patch classifier at work: loaded from its checkpoint, predicting batch by batch.

Shared by the train, evaluate and attribute stages (none imports another).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..data.patches import PatchSampler
from ..runtime import load_checkpoint
from . import build_model


def load_classifier(path: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """A trained instance in eval mode, and its metadata. Tensors only: loaded with weights_only=True."""

    def build(meta: dict) -> nn.Module:
        return build_model(meta["model"], meta["n_bands"], meta["n_classes"], meta["patch_size"], meta["n_comps"])

    return load_checkpoint(path, build, device, written_by="the train stage", missing_hint="run the train stage first")


@torch.inference_mode()
def predict(
    model: nn.Module,
    sampler: PatchSampler,
    centres: torch.Tensor,
    batch_size: int,
    progress: bool = False,
    desc: str = "predict",
) -> np.ndarray:
    """Logits [n, classes] for the patches at `centres`, in eval mode, batch by batch."""
    was_training = model.training
    model.eval()
    out = []
    starts = range(0, len(centres), batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", leave=False, disable=not progress):
        out.append(model(sampler.gather(centres[start : start + batch_size])).float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)
