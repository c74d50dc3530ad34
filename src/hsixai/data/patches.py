"""Square patches around pixels, gathered a whole batch at a time.

The cube is standardised with the train statistics and zero-padded once (zero
is the band mean after standardisation), and kept as one flat, channels-last
tensor [(H + p - 1) * (W + p - 1), bands] on the training device. A batch of
patches is then a single indexing operation: centre offsets plus the p*p
neighbour offsets. No per-sample Python, no DataLoader workers, and no split
is ever materialised as patches.

Also what the patch-based stages (train, evaluate, attribute) read of the
prepare and split stages' outputs: the prepared data's metadata and the split's
label maps, and a split's samples as patch corners.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import Params
from ..errors import HsixaiError
from ..io import BandReader, inspect_npy, load_npy
from ..paths import Paths, PreparedFiles, SplitFiles


class PatchSampler:
    """Gathers patches [batch, bands, p, p] (float32) around pixels of a [bands, H, W] cube."""

    def __init__(
        self,
        cube: np.ndarray | Path,
        mean: np.ndarray,
        std: np.ndarray,
        patch_size: int,
        device: torch.device | str = "cpu",
    ):
        self.patch_size = patch_size
        self.device = torch.device(device)
        self.radius = r = patch_size // 2
        if isinstance(cube, Path):
            info = inspect_npy(cube, "prepared cube")
            shape = info.shape
        else:
            shape = cube.shape
        self.n_bands, self.height, self.width = shape
        if patch_size > min(self.height, self.width):
            raise HsixaiError(
                f"params: patch_size: expected at most the scene's smaller side "
                f"({min(self.height, self.width)} px), found {patch_size}"
            )
        if len(mean) != self.n_bands or len(std) != self.n_bands:
            raise HsixaiError(f"band statistics have {len(mean)} bands, the cube {self.n_bands}")
        self.padded_width = self.width + 2 * r
        padded = np.zeros((self.height + 2 * r, self.padded_width, self.n_bands), dtype=np.float32)
        mean = np.asarray(mean, dtype=np.float32)
        std = np.asarray(std, dtype=np.float32)
        if isinstance(cube, Path):
            with BandReader(info) as reader:  # band by band: never two full copies in memory
                for b in range(self.n_bands):
                    padded[r : r + self.height, r : r + self.width, b] = (reader.read(b) - mean[b]) / std[b]
        else:
            for b in range(self.n_bands):
                padded[r : r + self.height, r : r + self.width, b] = (cube[b] - mean[b]) / std[b]
        self.flat = torch.from_numpy(padded.reshape(-1, self.n_bands)).to(self.device)
        dy, dx = np.meshgrid(np.arange(patch_size), np.arange(patch_size), indexing="ij")
        self.offsets = torch.from_numpy((dy * self.padded_width + dx).ravel()).to(self.device)

    def centres(self, rows: np.ndarray, cols: np.ndarray) -> torch.Tensor:
        """Flat indices (into the padded cube) of the top-left corner of each pixel's patch."""
        return torch.from_numpy(rows.astype(np.int64) * self.padded_width + cols.astype(np.int64)).to(self.device)

    def gather(self, centres: torch.Tensor) -> torch.Tensor:
        """Patches [len(centres), bands, p, p] for `centres` from `centres()`; one indexing operation."""
        rows = (centres[:, None] + self.offsets[None, :]).reshape(-1)
        # index_select copies whole rows (one pixel's spectrum each): 2-5x faster than advanced indexing.
        patches = torch.index_select(self.flat, 0, rows).view(len(centres), -1, self.n_bands)  # [n, p*p, bands]
        return patches.permute(0, 2, 1).reshape(len(centres), self.n_bands, self.patch_size, self.patch_size)

    def batches(
        self, centres: torch.Tensor, labels: torch.Tensor, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(patches, labels) batches over the samples, shuffled when `generator` is given."""
        order = torch.randperm(len(centres), generator=generator).to(self.device) if generator is not None else None
        for start in range(0, len(centres), batch_size):
            idx = order[start : start + batch_size] if order is not None else slice(start, start + batch_size)
            yield self.gather(centres[idx]), labels[idx]


def labelled_pixels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, labels) of the pixels of a label map with a label >= 0, in row-major order."""
    rows, cols = np.nonzero(labels >= 0)
    return rows, cols, labels[rows, cols].astype(np.int64)


def load_sampler(prepared_dir: Path, split_dir: Path, patch_size: int, device: torch.device | str) -> PatchSampler:
    """The sampler over the prepared cube, standardised with the split's train statistics."""
    stats_path = SplitFiles(split_dir).band_stats
    if not stats_path.is_file():
        raise HsixaiError(f"{stats_path}: band statistics not found (run the split stage first)")
    with np.load(stats_path) as stats:
        mean, std = stats["mean"], stats["std"]
    return PatchSampler(PreparedFiles(prepared_dir).cube, mean, std, patch_size, device)


@dataclass
class Split:
    """Samples of one split: patch corners in the sampler and labels, both on the device."""

    centres: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def from_labels(cls, sampler: PatchSampler, label_map: np.ndarray) -> Split:
        rows, cols, labels = labelled_pixels(label_map)
        return cls(sampler.centres(rows, cols), torch.from_numpy(labels).to(sampler.device))

    def __len__(self) -> int:
        return len(self.centres)


def load_split_labels(paths: Paths, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    train = load_npy(paths.split_files().train_labels, "train labels", ndim=2, kinds="i", shape=shape)
    dev = load_npy(paths.split_files().dev_labels, "dev labels", ndim=2, kinds="i", shape=shape)
    return train, dev


def prepared_meta(paths: Paths, params: Params) -> dict:
    meta_path = paths.prepared_files().meta
    if not meta_path.is_file():
        raise HsixaiError(f"{meta_path}: prepared data not found (run the prepare stage first)")
    meta = json.loads(meta_path.read_text())
    if meta.get("class_names") != params.data.class_names:
        raise HsixaiError("params: data.class_names differ from those of the prepared data (re-run prepare)")
    return meta
