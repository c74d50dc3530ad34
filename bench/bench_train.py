"""Patch batches per second and training overhead, ours against the baselines, in one run.

1. Patch batches/s at p = 5, 9, 15, 21: `PatchSampler` (one indexing operation
   per batch) against a per-sample `Dataset` + `DataLoader(num_workers=2)`
   slicing the same standardised, padded cube.
2. Training overhead: a training epoch with batches gathered on the fly
   (`train.train_epoch` over `PatchSampler.batches`) against the same
   forward/backward/step on pre-built batches, per model and patch size.

Both sides of each comparison run in this process, alternately, several times;
medians are reported. Writes bench/train.json.

    .venv/bin/python bench/bench_train.py [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from common import default_scene, save

from hsixai.config import load_params
from hsixai.data.patches import labelled_pixels, load_sampler
from hsixai.models import build_model
from hsixai.paths import Paths
from hsixai.train import Split, train_epoch


class NaivePatches(Dataset):
    """What one writes first: one patch per __getitem__, sliced from a padded numpy cube."""

    def __init__(self, padded: np.ndarray, rows: np.ndarray, cols: np.ndarray, labels: np.ndarray, p: int):
        self.padded, self.rows, self.cols, self.labels, self.p = padded, rows, cols, labels, p

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        r, c = self.rows[i], self.cols[i]
        return torch.from_numpy(self.padded[:, r:r + self.p, c:c + self.p].copy()), int(self.labels[i])


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_gather(paths: Paths, p: int, batch: int, repeats: int) -> dict:
    sampler = load_sampler(paths.prepared_dir, paths.split_dir, p, "cpu")
    rows, cols, labels = labelled_pixels(np.load(paths.split_dir / "train_labels.npy"))
    n_batches = int(np.ceil(len(rows) / batch))
    split = Split.from_labels(sampler, np.load(paths.split_dir / "train_labels.npy"))
    # The same standardised, padded cube for the baseline, in [bands, H, W] layout.
    padded = sampler.flat.numpy().reshape(sampler.height + p - 1, sampler.width + p - 1, -1).transpose(2, 0, 1).copy()
    loader = DataLoader(NaivePatches(padded, rows, cols, labels, p), batch_size=batch, shuffle=True,
                        num_workers=2, persistent_workers=True)
    generator = torch.Generator().manual_seed(0)

    def ours():
        for x, _ in sampler.batches(split.centres, split.labels, batch, generator):
            x.sum()  # touch the data, as a model would

    def naive():
        for x, _ in loader:
            x.sum()

    ours(), naive()  # warm-up: caches, worker start
    t_ours, t_naive = [], []
    for _ in range(repeats):  # alternate, so drift on a shared machine hits both sides alike
        t_ours.append(median_time(ours, 1))
        t_naive.append(median_time(naive, 1))
    del loader
    return {"patch_size": p, "batch_size": batch, "batches": n_batches,
            "ours_batches_per_s": round(n_batches / statistics.median(t_ours), 1),
            "naive_batches_per_s": round(n_batches / statistics.median(t_naive), 1),
            "speedup": round(statistics.median(t_naive) / statistics.median(t_ours), 1)}


def bench_overhead(paths: Paths, model_name: str, p: int, batch: int, n_batches: int, repeats: int) -> dict:
    sampler = load_sampler(paths.prepared_dir, paths.split_dir, p, "cpu")
    split = Split.from_labels(sampler, np.load(paths.split_dir / "train_labels.npy"))
    n = min(len(split), batch * n_batches)
    centres, labels = split.centres[:n], split.labels[:n]
    torch.manual_seed(0)
    model = build_model(model_name, sampler.n_bands, 6, p, 15)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 1.0)  # a scheduler step costs alike
    weights = torch.ones(6)
    generator = torch.Generator().manual_seed(0)
    prebuilt = [(x.contiguous(), y) for x, y in sampler.batches(centres, labels, batch, torch.Generator().manual_seed(0))]

    def ours():
        train_epoch(model, sampler.batches(centres, labels, batch, generator), optimiser, schedule, weights)

    def pure():
        train_epoch(model, prebuilt, optimiser, schedule, weights)

    ours(), pure()  # warm-up
    t_ours, t_pure = [], []
    for _ in range(repeats):
        t_ours.append(median_time(ours, 1))
        t_pure.append(median_time(pure, 1))
    return {"model": model_name, "patch_size": p, "batch_size": batch, "samples": n,
            "samples_per_s": round(n / statistics.median(t_ours), 1),
            "overhead_ratio": round(statistics.median(t_ours) / statistics.median(t_pure), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and batches (a smoke run)")
    args = parser.parse_args()
    repeats, n_batches = (2, 4) if args.quick else (5, 12)
    root = default_scene("train")
    paths = Paths.at(root)
    batch = load_params(root / "params.yaml").train.batch_size

    gather = [bench_gather(paths, p, batch, repeats) for p in (5, 9, 15, 21)]
    for row in gather:
        print(f"gather p={row['patch_size']:2d}: {row['speedup']}x  ({row['ours_batches_per_s']} vs "
              f"{row['naive_batches_per_s']} batches/s)", flush=True)
    overhead = []
    for model_name in ("cnn2d", "vit"):
        for p in (5, 9, 15, 21):
            row = bench_overhead(paths, model_name, p, batch, n_batches, repeats)
            overhead.append(row)
            print(f"overhead {model_name} p={p:2d}: {row['overhead_ratio']}  ({row['samples_per_s']} samples/s)",
                  flush=True)
    out = save("train", {"scene": "default synthetic (params.yaml)", "repeats": repeats,
                         "gather": gather, "training_overhead": overhead})
    print(f"wrote {out}")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
