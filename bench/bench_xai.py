"""Attribution throughput and the consistency stage, ours against the straightforward versions, in one run.

1. Integrated Gradients (50 steps) inside NoiseTunnel (smoothgrad_sq, 10 samples)
   on the same samples, p = 5 and 9, both models: `attribute_instance` (every
   class in one batch with per-sample targets, internal batching) against one
   class at a time in batches of 4 with no internal batching.
2. The consistency scores with 250 bootstrap replicates at the published size
   (512 samples per class, 6 classes, 2 instances, 174 bands): `scores`
   against a per-sample Python loop of scipy's `jensenshannon`.

Medians of alternating repetitions. Writes bench/xai.json.

    .venv/bin/python bench/bench_xai.py [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time

import numpy as np
import torch
from captum.attr import IntegratedGradients, NoiseTunnel
from scipy.spatial.distance import jensenshannon

from common import default_scene, save

from hsixai.config import XaiConfig
from hsixai.data.patches import labelled_pixels, load_sampler
from hsixai.models import build_model
from hsixai.paths import Paths
from hsixai.xai.attributions import attribute_instance, spectral_profiles
from hsixai.xai.consistency import Profiles, scores


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def straightforward_attribution(model, sampler, centres, targets, cfg: XaiConfig) -> np.ndarray:
    """One class at a time, batches of 4, captum with no internal batching."""
    tunnel = NoiseTunnel(IntegratedGradients(model))
    out = np.zeros((len(centres), sampler.n_bands), dtype=np.float32)
    for k in torch.unique(targets):
        members = torch.nonzero(targets == k)[:, 0]
        for start in range(0, len(members), 4):
            idx = members[start:start + 4]
            a = tunnel.attribute(sampler.gather(centres[idx]), nt_type=cfg.nt_type, nt_samples=cfg.nt_samples,
                                 stdevs=cfg.stdevs, baselines=0.0, target=int(k), n_steps=cfg.n_steps)
            out[idx.numpy()] = spectral_profiles(a.detach()).numpy()
    return out


def bench_attribution(paths: Paths, name: str, p: int, per_class: int, repeats: int,
                      internal_sizes: list[int]) -> dict:
    sampler = load_sampler(paths.prepared_dir, paths.split_dir, p, "cpu")
    rows, cols, labels = labelled_pixels(np.load(paths.split_dir / "xai_labels.npy"))
    pick = np.concatenate([np.flatnonzero(labels == k)[:per_class] for k in np.unique(labels)])
    centres, targets = sampler.centres(rows[pick], cols[pick]), torch.from_numpy(labels[pick])
    torch.manual_seed(0)
    model = build_model(name, sampler.n_bands, 6, p, 15).eval()
    n = len(pick)
    result = {"model": name, "patch_size": p, "samples": n}
    attribute_instance(model, sampler, centres[:2], targets[:2], XaiConfig(), seed=0)  # warm-up
    naive_times = []
    ours_times: dict[int, list[float]] = {size: [] for size in internal_sizes}
    for _ in range(repeats):  # alternate the sides so machine drift hits both
        naive_times.append(timed(lambda: straightforward_attribution(model, sampler, centres, targets, XaiConfig())))
        for size in internal_sizes:
            cfg = XaiConfig(internal_batch_size=size)
            ours_times[size].append(timed(lambda: attribute_instance(model, sampler, centres, targets, cfg, seed=0)))
    naive = statistics.median(naive_times)
    per_size = {size: statistics.median(t) for size, t in ours_times.items()}
    best = min(per_size, key=per_size.get)
    result.update({
        "naive_samples_per_s": round(n / naive, 3),
        "ours_samples_per_s_by_internal_batch": {str(s): round(n / t, 3) for s, t in per_size.items()},
        "best_internal_batch_size": best,
        "speedup": round(naive / per_size[best], 2),
    })
    return result


def naive_consistency(data: Profiles, replicates: int, seed: int) -> tuple[float, float]:
    """Both scores and their bootstrap, sample by sample with scipy (the straightforward version)."""
    rng = np.random.default_rng(seed)
    n_inst, _, bands = data.profiles.shape
    uniform = np.full(bands, 1.0 / bands)
    classes = np.unique(data.labels)

    def jsdiv(index_by_class):
        values = []
        for i in range(n_inst):
            class_means = []
            for k, idx in index_by_class.items():
                d = [jensenshannon(data.profiles[i, s], uniform, base=2) for s in idx if data.correct[i, s]]
                class_means.append(np.mean(d))
            values.append(1 - np.mean(class_means))
        return np.mean(values)

    def agreement(index_by_class):
        per_class = []
        for k, idx in index_by_class.items():
            common = [s for s in idx if data.correct[:, s].all()]
            means = [np.mean([data.profiles[i, s] / data.profiles[i, s].sum() for s in common], axis=0)
                     for i in range(n_inst)]
            d = [jensenshannon(means[i], means[j], base=2) for i in range(n_inst) for j in range(i + 1, n_inst)]
            per_class.append(1 - np.mean(d))
        return np.mean(per_class)

    members = {k: np.flatnonzero(data.labels == k) for k in classes}
    point = (jsdiv(members), agreement(members))
    for _ in range(replicates):
        resampled = {k: rng.choice(idx, size=len(idx)) for k, idx in members.items()}
        jsdiv(resampled), agreement(resampled)
    return point


def bench_consistency(replicates: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    n_inst, per_class, classes, bands = 2, 512, 6, 174
    labels = np.repeat(np.arange(classes), per_class)
    data = Profiles(rng.random((n_inst, len(labels), bands)) ** 3, labels, rng.random((n_inst, len(labels))) > 0.1,
                    np.linspace(400, 2500, bands), [f"c{k}" for k in range(classes)])
    ours_t, naive_t = [], []
    for _ in range(repeats):
        ours_t.append(timed(lambda: scores(data, replicates, seed=0)))
    naive_t.append(timed(lambda: naive_consistency(data, replicates, seed=0)))  # once: it is slow
    ours = scores(data, replicates, seed=0)
    naive_point = naive_consistency(data, 0, seed=0)
    return {"samples": len(labels), "instances": n_inst, "bands": bands, "replicates": replicates,
            "ours_s": round(statistics.median(ours_t), 3), "naive_s": round(naive_t[0], 2),
            "speedup": round(naive_t[0] / statistics.median(ours_t), 1),
            "same_point_estimates": bool(np.isclose(ours["consistency_jsdiv"], naive_point[0])
                                         and np.isclose(ours["consistency_instances"], naive_point[1]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples and repetitions (a smoke run)")
    args = parser.parse_args()
    per_class, repeats = (1, 1) if args.quick else (2, 3)
    root = default_scene("xai")
    paths = Paths.at(root)
    attribution = []
    for name in ("cnn2d", "vit"):
        for p in (5, 9):
            row = bench_attribution(paths, name, p, per_class, repeats, [256, 1024])
            attribution.append(row)
            print(f"attribution {name} p={p}: {row['speedup']}x (internal batch {row['best_internal_batch_size']}; "
                  f"{row['naive_samples_per_s']} -> {max(row['ours_samples_per_s_by_internal_batch'].values())} "
                  f"samples/s)", flush=True)
    consistency = bench_consistency(25 if args.quick else 250, repeats)
    print(f"consistency: {consistency['speedup']}x ({consistency['naive_s']} s -> {consistency['ours_s']} s)")
    out = save("xai", {"attribution": attribution, "consistency": consistency,
                       "ig": {"n_steps": 50, "nt_type": "smoothgrad_sq", "nt_samples": 10, "stdevs": 0.2}})
    print(f"wrote {out}")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
