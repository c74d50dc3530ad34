"""Patch batches per second and training throughput, ours against the baselines, in one run.

1. Patch batches/s per patch size: `PatchSampler` (one indexing operation per
   batch) against a per-sample `Dataset` + `DataLoader(num_workers=2)` slicing
   the same standardised, padded cube.
2. Training throughput (samples/s) and overhead: a training epoch with batches
   gathered on the fly (`train.train_epoch` over `PatchSampler.batches`) against
   the same forward/backward/step on pre-built batches, per model and patch size
   (3 to 21); the seconds per sample give the cost's growth with the patch.

Both sides of each comparison run in this process, taking turns, several
times; medians are reported. Writes bench/train.json.

    .venv/bin/python bench/bench_train.py [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import shutil

import numpy as np
import torch
from common import alternate, default_scene, figure, options, save
from torch.utils.data import DataLoader, Dataset

from hsixai.config import load_params
from hsixai.data.patches import Split, labelled_pixels, load_sampler
from hsixai.models import build_model
from hsixai.paths import Paths
from hsixai.train import train_epoch

PATCH_SIZES = (3, 5, 9, 15, 21)
MODELS = ("cnn2d", "vit")


def training_batches(p: int, most: int) -> int:
    """Batches per timed epoch: `most` up to p = 9, then fewer as a sample's cost grows with p^2 (3 at least)."""
    return max(3, min(most, round(most * (9 / p) ** 2)))


class NaivePatches(Dataset):
    """What one writes first: one patch per __getitem__, sliced from a padded numpy cube."""

    def __init__(self, padded: np.ndarray, rows: np.ndarray, cols: np.ndarray, labels: np.ndarray, p: int):
        self.padded, self.rows, self.cols, self.labels, self.p = padded, rows, cols, labels, p

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        r, c = self.rows[i], self.cols[i]
        return torch.from_numpy(self.padded[:, r : r + self.p, c : c + self.p].copy()), int(self.labels[i])


def bench_gather(paths: Paths, p: int, batch: int, repeats: int, device: str) -> dict:
    sampler = load_sampler(paths.prepared_dir, paths.split_dir, p, device)
    train_map = np.load(paths.split_files().train_labels)
    rows, cols, labels = labelled_pixels(train_map)
    n_batches = int(np.ceil(len(rows) / batch))
    split = Split.from_labels(sampler, train_map)
    # The same standardised, padded cube for the baseline, in [bands, H, W] layout, on the host.
    padded = sampler.flat.cpu().numpy().reshape(sampler.height + p - 1, sampler.width + p - 1, -1)
    padded = padded.transpose(2, 0, 1).copy()
    loader = DataLoader(
        NaivePatches(padded, rows, cols, labels, p),
        batch_size=batch,
        shuffle=True,
        num_workers=2,
        persistent_workers=True,
        pin_memory=device == "cuda",
    )
    generator = torch.Generator().manual_seed(0)

    def ours():
        for x, _ in sampler.batches(split.centres, split.labels, batch, generator):
            x.sum()  # touch the data, as a model would

    def naive():
        for x, _ in loader:
            x.to(device, non_blocking=True).sum()

    t = alternate({"ours": ours, "naive": naive}, repeats, device)
    loader = None  # its persistent workers exit now, not at the end of the benchmark
    return {
        "patch_size": p,
        "batch_size": batch,
        "batches": n_batches,
        "ours_batches_per_s": round(n_batches / t["ours"], 1),
        "naive_batches_per_s": round(n_batches / t["naive"], 1),
        "speedup": round(t["naive"] / t["ours"], 2),
    }


def bench_training(
    paths: Paths, model_name: str, p: int, batch: int, n_batches: int, repeats: int, device: str
) -> dict:
    sampler = load_sampler(paths.prepared_dir, paths.split_dir, p, device)
    split = Split.from_labels(sampler, np.load(paths.split_files().train_labels))
    n = min(len(split), batch * n_batches)
    centres, labels = split.centres[:n], split.labels[:n]
    torch.manual_seed(0)
    model = build_model(model_name, sampler.n_bands, 6, p, 15).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 1.0)  # a scheduler step costs alike
    weights = torch.ones(6, device=device)
    generator = torch.Generator().manual_seed(0)
    prebuilt = [
        (x.contiguous(), y) for x, y in sampler.batches(centres, labels, batch, torch.Generator().manual_seed(0))
    ]

    def ours():
        train_epoch(model, sampler.batches(centres, labels, batch, generator), optimiser, schedule, weights)

    def pure():
        train_epoch(model, prebuilt, optimiser, schedule, weights)

    t = alternate({"ours": ours, "pure": pure}, repeats, device)
    return {
        "model": model_name,
        "patch_size": p,
        "batch_size": batch,
        "samples": n,
        "samples_per_s": round(n / t["ours"], 1),
        "ms_per_sample": round(1000 * t["ours"] / n, 4),
        "pure_samples_per_s": round(n / t["pure"], 1),
        "overhead_ratio": round(t["ours"] / t["pure"], 3),
    }


def figures_of(gather: list[dict], training: list[dict], batch: int) -> list[dict]:
    out = []
    for row in gather:
        p = row["patch_size"]
        out += [
            figure(
                f"gather_speedup_p{p}",
                row["speedup"],
                "x",
                f"PatchSampler vs per-sample Dataset + DataLoader(num_workers=2), batch {batch}",
            ),
            figure(f"gather_batches_per_s_p{p}", row["ours_batches_per_s"], "batches/s"),
            figure(f"gather_naive_batches_per_s_p{p}", row["naive_batches_per_s"], "batches/s"),
        ]
    for row in training:
        tag = f"{row['model']}_p{row['patch_size']}"
        out += [
            figure(f"train_samples_per_s_{tag}", row["samples_per_s"], "samples/s", f"batch {batch}"),
            figure(
                f"train_overhead_ratio_{tag}",
                row["overhead_ratio"],
                "ratio",
                "training epoch with on-the-fly batches / forward-backward-step on pre-built batches",
            ),
        ]
    return out


def main() -> None:
    args = options(__doc__)
    repeats, n_batches = (1, 2) if args.quick else (5, 12)
    patch_sizes = (3, 9) if args.quick else PATCH_SIZES
    root = default_scene(f"train-{args.device}")
    paths = Paths.at(root)
    batch = load_params(root / "params.yaml").train.batch_size

    gather = []
    for p in patch_sizes:
        gather.append(bench_gather(paths, p, batch, repeats, args.device))
        row = gather[-1]
        print(
            f"gather p={p:2d}: {row['speedup']}x  ({row['ours_batches_per_s']} vs "
            f"{row['naive_batches_per_s']} batches/s)",
            flush=True,
        )
    training = []
    for model_name in MODELS:
        for p in patch_sizes:
            training.append(
                bench_training(paths, model_name, p, batch, training_batches(p, n_batches), repeats, args.device)
            )
            row = training[-1]
            print(
                f"train {model_name} p={p:2d}: {row['samples_per_s']} samples/s, overhead {row['overhead_ratio']}",
                flush=True,
            )
    result = {
        "figures": figures_of(gather, training, batch),
        "scene": "default synthetic (params.yaml)",
        "repeats": repeats,
        "gather": gather,
        "training": training,
    }
    print(f"wrote {save('train', result, args.device)}")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
