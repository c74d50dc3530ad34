"""Attribution throughput and the consistency stage, ours against the straightforward versions, in one run.

1. Integrated Gradients with params.yaml's settings (50 steps inside a
   NoiseTunnel, smoothgrad_sq, 10 samples) on the same samples, p = 5 and 9,
   both models: `attribute_instance` (every class in one batch with per-sample
   targets, internal batching) against one class at a time in batches of 4
   with no internal batching. At p = 3, 15 and 21 ours alone, for the growth of
   the cost with the patch size.
2. The consistency scores with 100 bootstrap replicates at the published size
   (512 samples per class, 6 classes, 2 instances, 174 bands): `scores`
   against a per-sample Python loop of scipy's `jensenshannon`.

Medians of alternating repetitions (the slow scipy loop runs once). Writes bench/xai.json.

    .venv/bin/python bench/bench_xai.py [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import itertools
import shutil
import statistics
import time

import numpy as np
import torch
from captum.attr import IntegratedGradients, NoiseTunnel
from common import alternate, default_scene, figure, options, save
from scipy.spatial.distance import jensenshannon

from hsixai.config import XaiConfig
from hsixai.data.patches import labelled_pixels, load_sampler
from hsixai.models import build_model
from hsixai.paths import Paths
from hsixai.xai.attributions import attribute_instance, spectral_profiles
from hsixai.xai.consistency import Profiles, scores

COMPARED_PATCH_SIZES = (5, 9)  # ours against the straightforward procedure
SCALING_PATCH_SIZES = (3, 15, 21)  # ours alone, for the growth with the patch (3 to 21 with the above)


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
            idx = members[start : start + 4]
            a = tunnel.attribute(
                sampler.gather(centres[idx]),
                nt_type=cfg.nt_type,
                nt_samples=cfg.nt_samples,
                stdevs=cfg.stdevs,
                baselines=0.0,
                target=int(k),
                n_steps=cfg.n_steps,
            )
            out[idx.cpu().numpy()] = spectral_profiles(a.detach()).cpu().numpy()
    return out


def xai_sample(paths: Paths, sampler, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `per_class` pixels of each class of the xAI sample: patch corners and targets."""
    rows, cols, labels = labelled_pixels(np.load(paths.split_dir / "xai_labels.npy"))
    pick = np.concatenate([np.flatnonzero(labels == k)[:per_class] for k in np.unique(labels)])
    return sampler.centres(rows[pick], cols[pick]), torch.from_numpy(labels[pick]).to(sampler.device)


def bench_attribution(
    paths: Paths, name: str, p: int, per_class: int, repeats: int, device: str, with_naive: bool
) -> dict:
    """Samples/s of `attribute_instance` (params.yaml's IG settings) and, if asked, of the straightforward way."""
    sampler = load_sampler(paths.prepared_dir, paths.split_dir, p, device)
    centres, targets = xai_sample(paths, sampler, per_class)
    torch.manual_seed(0)
    model = build_model(name, sampler.n_bands, 6, p, 15).to(device).eval()
    cfg = XaiConfig()
    n = len(centres)
    sides = {"ours": lambda: attribute_instance(model, sampler, centres, targets, cfg, seed=0)}
    if with_naive:
        sides["naive"] = lambda: straightforward_attribution(model, sampler, centres, targets, cfg)
    attribute_instance(model, sampler, centres[:2], targets[:2], cfg, seed=0)  # warm-up, on little
    t = alternate(sides, repeats, device, warm_up=False)
    row = {
        "model": name,
        "patch_size": p,
        "samples": n,
        "internal_batch_size": cfg.internal_batch_size,
        "ours_samples_per_s": round(n / t["ours"], 3),
        "ours_s_per_sample": round(t["ours"] / n, 4),
    }
    if with_naive:
        row.update(naive_samples_per_s=round(n / t["naive"], 3), speedup=round(t["naive"] / t["ours"], 2))
    return row


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
            for idx in index_by_class.values():
                d = [jensenshannon(data.profiles[i, s], uniform, base=2) for s in idx if data.correct[i, s]]
                class_means.append(np.mean(d))
            values.append(1 - np.mean(class_means))
        return np.mean(values)

    def agreement(index_by_class):
        # 1 - half the triangular divergence between two instances' mean profiles, the squared
        # difference per band summed over pairs of distinct draws (s != t), over each pair's common samples
        per_class = []
        for idx in index_by_class.values():
            per_pair = []
            for i, j in itertools.combinations(range(n_inst), 2):
                draws = [s for s in idx if data.correct[i, s] and data.correct[j, s]]
                a = np.array([data.profiles[i, s] / data.profiles[i, s].sum() for s in draws])
                b = np.array([data.profiles[j, s] / data.profiles[j, s].sum() for s in draws])
                x = a - b
                cross = sum(x[s] * (x.sum(axis=0) - x[s]) for s in range(len(draws)))
                square = cross / (len(draws) * (len(draws) - 1))
                scale = a.mean(axis=0) + b.mean(axis=0)
                per_pair.append(1 - 0.5 * np.sum(square[scale > 0] / scale[scale > 0]))
            per_class.append(np.mean(per_pair))
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
    data = Profiles(
        rng.random((n_inst, len(labels), bands)) ** 3,
        labels,
        rng.random((n_inst, len(labels))) > 0.1,
        np.linspace(400, 2500, bands),
        [f"c{k}" for k in range(classes)],
        rng.random((n_inst, len(labels), 3)),
    )
    ours_t, naive_t = [], []
    for _ in range(repeats):
        ours_t.append(timed(lambda: scores(data, replicates, seed=0)))
    naive_t.append(timed(lambda: naive_consistency(data, replicates, seed=0)))  # once: it is slow
    ours = scores(data, replicates, seed=0).metrics
    naive_point = naive_consistency(data, 0, seed=0)
    return {
        "samples": len(labels),
        "instances": n_inst,
        "bands": bands,
        "replicates": replicates,
        "ours_s": round(statistics.median(ours_t), 3),
        "naive_s": round(naive_t[0], 2),
        "speedup": round(naive_t[0] / statistics.median(ours_t), 1),
        "same_point_estimates": bool(
            np.isclose(ours["consistency_jsdiv"], naive_point[0])
            and np.isclose(ours["consistency_instances"], naive_point[1])
        ),
    }


def figures_of(attribution: list[dict], consistency: dict) -> list[dict]:
    out = []
    for row in attribution:
        tag = f"{row['model']}_p{row['patch_size']}"
        out.append(
            figure(
                f"attribution_samples_per_s_{tag}",
                row["ours_samples_per_s"],
                "samples/s",
                f"IG {XaiConfig().n_steps} steps x NoiseTunnel {XaiConfig().nt_samples}, all classes per "
                f"batch, internal_batch_size {row['internal_batch_size']}",
            )
        )
        if "speedup" in row:
            out += [
                figure(
                    f"attribution_naive_samples_per_s_{tag}",
                    row["naive_samples_per_s"],
                    "samples/s",
                    "one class at a time, batches of 4, no internal batching",
                ),
                figure(f"attribution_speedup_{tag}", row["speedup"], "x"),
            ]
    out += [
        figure(
            "consistency_s",
            consistency["ours_s"],
            "s",
            f"{consistency['replicates']} bootstrap replicates, {consistency['samples']} samples x "
            f"{consistency['instances']} instances x {consistency['bands']} bands",
        ),
        figure(
            "consistency_naive_s",
            consistency["naive_s"],
            "s",
            "per-sample loops (scipy jensenshannon, pairs of samples)",
        ),
        figure(
            "consistency_speedup",
            consistency["speedup"],
            "x",
            f"same point estimates: {consistency['same_point_estimates']}",
        ),
    ]
    return out


def main() -> None:
    args = options(__doc__)
    per_class, repeats = (1, 1) if args.quick else (2, 3)
    compared, scaling = ((5,), (3,)) if args.quick else (COMPARED_PATCH_SIZES, SCALING_PATCH_SIZES)
    root = default_scene(f"xai-{args.device}")
    paths = Paths.at(root)
    attribution = []
    for name in ("cnn2d", "vit"):
        for p in sorted(compared + scaling):
            with_naive = p in compared
            # Outside the comparison only our side runs, on one sample per class: the growth with p is the point.
            row = bench_attribution(
                paths, name, p, per_class if with_naive else 1, repeats if with_naive else 1, args.device, with_naive
            )
            attribution.append(row)
            vs = f", {row['speedup']}x the straightforward {row['naive_samples_per_s']}" if with_naive else ""
            print(f"attribution {name} p={p:2d}: {row['ours_samples_per_s']} samples/s{vs}", flush=True)
    consistency = bench_consistency(25 if args.quick else 100, repeats)
    print(f"consistency: {consistency['speedup']}x ({consistency['naive_s']} s -> {consistency['ours_s']} s)")
    ig = {
        k: getattr(XaiConfig(), k)
        for k in ("n_steps", "method", "nt_type", "nt_samples", "stdevs", "internal_batch_size")
    }
    result = {
        "figures": figures_of(attribution, consistency),
        "attribution": attribution,
        "consistency": consistency,
        "ig": ig,
    }
    print(f"wrote {save('xai', result, args.device)}")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
