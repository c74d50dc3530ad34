"""`attribute` stage: Integrated Gradients for every trained instance on the xAI sample.

For each instance, only the samples it classifies correctly are explained,
each towards its true class. IG (zero baseline) runs inside captum's
NoiseTunnel by default (smoothgrad_sq, 10 samples, stdev 0.2), on batches that
mix every class with per-sample targets, and with `internal_batch_size`
model inputs per forward/backward. Each attribution [bands, p, p] is reduced,
batch by batch (no full map is kept beyond its batch), to a spectral profile
[bands]: its positive part averaged over the p x p pixels; and to its positive
mass per Chebyshev ring around the centre pixel [p // 2 + 1] (ring 0 = the
centre pixel), summed over bands: where in the patch the evidence lies.

Outputs in data/attributions/:
    profiles.npz  profiles float32 [instances, samples, bands] (zeros where not correct),
                  labels int64 [samples] (0..K-1), correct bool [instances, samples],
                  ring_mass float32 [instances, samples, p // 2 + 1] (zeros where not correct),
                  wavelengths float32 [bands], bands int32 [bands] (raw band indices),
                  rows, cols int64 [samples] (pixel coordinates), class_names
    maps.npz      maps float32 [K, bands, p, p]: one full attribution per class (instance 0),
                  map_samples int64 [K] (index into the samples, -1 if none)
Figure: figures/attribute/maps.png
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from captum.attr import IntegratedGradients, NoiseTunnel
from torch import nn
from tqdm import tqdm

from .. import plots, tracking
from ..config import Params, XaiConfig
from ..data.patches import PatchSampler, labelled_pixels, load_sampler, prepared_meta
from ..errors import HsixaiError
from ..io import load_npy, staged_outputs
from ..models.inference import load_classifier, predict
from ..paths import Paths
from ..runtime import resolve_device

log = logging.getLogger(__name__)


def spectral_profiles(attributions: torch.Tensor) -> torch.Tensor:
    """[n, bands, p, p] -> [n, bands]: the positive part, averaged over the p x p pixels."""
    return attributions.clamp(min=0).mean(dim=(2, 3))


def chebyshev_rings(patch_size: int) -> torch.Tensor:
    """[p, p] int64: each pixel's Chebyshev distance to the centre pixel (0 at the centre, p // 2 at the border)."""
    offsets = (torch.arange(patch_size) - patch_size // 2).abs()
    return torch.maximum(offsets[:, None], offsets[None, :])


def ring_masses(attributions: torch.Tensor) -> torch.Tensor:
    """[n, bands, p, p] -> [n, p // 2 + 1]: positive attribution summed over bands and over each Chebyshev ring."""
    n, _, p, _ = attributions.shape
    spatial = attributions.clamp(min=0).sum(dim=1).reshape(n, p * p)  # [n, p * p]
    rings = chebyshev_rings(p).reshape(-1).to(attributions.device)
    out = torch.zeros(n, p // 2 + 1, dtype=spatial.dtype, device=spatial.device)
    return out.index_add_(1, rings, spatial)


def explainer(model: nn.Module, cfg: XaiConfig):
    """A function (inputs [n, bands, p, p], targets [n]) -> attributions [n, bands, p, p]."""
    for p in model.parameters():  # gradients are needed for the inputs only
        p.requires_grad_(False)
    ig = IntegratedGradients(model)
    if not cfg.noise_tunnel:
        return lambda x, t: ig.attribute(
            x,
            baselines=0.0,
            target=t,
            n_steps=cfg.n_steps,
            method=cfg.method,
            internal_batch_size=cfg.internal_batch_size,
        )
    tunnel = NoiseTunnel(ig)
    # NoiseTunnel repeats each input nt_samples times; IG then splits the n_steps * inputs evaluations
    # into chunks of internal_batch_size, so memory stays bounded whatever the batch.
    return lambda x, t: tunnel.attribute(
        x,
        nt_type=cfg.nt_type,
        nt_samples=cfg.nt_samples,
        stdevs=cfg.stdevs,
        baselines=0.0,
        target=t,
        n_steps=cfg.n_steps,
        method=cfg.method,
        internal_batch_size=cfg.internal_batch_size,
    )


def attribute_instance(
    model: nn.Module,
    sampler: PatchSampler,
    centres: torch.Tensor,
    targets: torch.Tensor,
    cfg: XaiConfig,
    seed: int,
    keep_maps: np.ndarray | None = None,
    progress: bool = False,
    desc: str = "attribute",
) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """Spectral profiles [n, bands] and ring masses [n, p // 2 + 1] of the samples at `centres` towards `targets`.

    Returns the profiles, the ring masses and, for the sample indices in
    `keep_maps`, their full attributions [bands, p, p].
    """
    model.eval()
    explain = explainer(model, cfg)
    torch.manual_seed(seed)  # NoiseTunnel's noise
    keep = set(keep_maps.tolist()) if keep_maps is not None else set()
    profiles, rings, maps = [], [], {}
    for start in tqdm(
        range(0, len(centres), cfg.batch_size), desc=desc, unit="batch", leave=False, disable=not progress
    ):
        x = sampler.gather(centres[start : start + cfg.batch_size]).contiguous()
        attributions = explain(x, targets[start : start + cfg.batch_size]).detach()
        profiles.append(spectral_profiles(attributions).float().cpu())
        rings.append(ring_masses(attributions).float().cpu())
        for j in keep & set(range(start, start + len(x))):
            maps[j] = attributions[j - start].float().cpu().numpy()
    if not profiles:
        return np.zeros((0, sampler.n_bands), np.float32), np.zeros((0, sampler.patch_size // 2 + 1), np.float32), maps
    return torch.cat(profiles).numpy(), torch.cat(rings).numpy(), maps


def run(params: Params, paths: Paths, progress: bool = True) -> dict:
    """Run the stage. Returns a summary (samples, correct counts, time)."""
    prepared_meta(paths, params)
    names = params.data.class_names
    cfg = params.xai
    device = resolve_device(params.train.device, "train.device")
    models = [load_classifier(paths.checkpoint(i), device) for i in range(params.train.instances)]
    sampler = load_sampler(paths.prepared_dir, paths.split_dir, params.patch_size, device)
    xai_map = load_npy(
        paths.split_files().xai_labels, "xAI sample", ndim=2, kinds="i", shape=(sampler.height, sampler.width)
    )
    rows, cols, labels = labelled_pixels(xai_map)
    if len(labels) == 0:
        raise HsixaiError(f"{paths.split_files().xai_labels}: the xAI sample is empty (re-run split)")
    centres = sampler.centres(rows, cols)
    targets_all = torch.from_numpy(labels).to(device)

    n_inst, n, bands = len(models), len(labels), sampler.n_bands
    profiles = np.zeros((n_inst, n, bands), dtype=np.float32)
    correct = np.zeros((n_inst, n), dtype=bool)
    ring_mass = np.zeros((n_inst, n, params.patch_size // 2 + 1), dtype=np.float32)
    maps = np.zeros((len(names), bands, params.patch_size, params.patch_size), dtype=np.float32)
    map_samples = np.full(len(names), -1, dtype=np.int64)
    start = time.perf_counter()
    for i, (model, _meta) in enumerate(models):
        pred = predict(model, sampler, centres, params.train.eval_batch_size).argmax(axis=1)
        correct[i] = pred == labels
        chosen = np.flatnonzero(correct[i])
        if i == 0:  # one full map per class: its first correctly classified sample
            for k in range(len(names)):
                hits = chosen[labels[chosen] == k]
                map_samples[k] = hits[0] if len(hits) else -1
        keep = np.flatnonzero(np.isin(chosen, map_samples)) if i == 0 else None
        profile, rings, kept_maps = attribute_instance(
            model,
            sampler,
            centres[torch.from_numpy(chosen).to(device)],
            targets_all[chosen],
            cfg,
            seed=params.seed + i,
            keep_maps=keep,
            progress=progress,
            desc=f"attribute #{i}",
        )
        profiles[i, chosen] = profile
        ring_mass[i, chosen] = rings
        for j, attribution in kept_maps.items():
            maps[labels[chosen[j]]] = attribution
        log.info("instance %d: %d of %d xAI samples classified correctly", i, len(chosen), n)
    seconds = time.perf_counter() - start

    wavelengths = np.load(paths.prepared_files().wavelengths)
    summary = {
        "samples": n,
        "correct_per_instance": correct.sum(axis=1).tolist(),
        "seconds": round(seconds, 2),
        "samples_per_s": round(float(correct.sum()) / max(seconds, 1e-9), 3),
    }
    with staged_outputs(paths.attributions_dir, paths.figures_dir("attribute")) as (out, figs):
        files = paths.attribution_files(out)
        np.savez(
            files.profiles,
            profiles=profiles,
            labels=labels,
            correct=correct,
            ring_mass=ring_mass,
            wavelengths=wavelengths,
            bands=np.load(paths.prepared_files().bands),
            rows=rows,
            cols=cols,
            class_names=np.array(names),
        )
        np.savez(files.maps, maps=maps, map_samples=map_samples)
        plots.attribution_maps(
            maps,
            map_samples >= 0,
            names,
            paths.figures("attribute", figs).attribution_maps,
            f"{params.model} p={params.patch_size}, instance 0",
        )

    with tracking.stage_run("attribute", params, paths) as mlrun:
        mlrun.log_inputs([paths.prepared_dir, paths.split_dir], "explanation")
        mlrun.log_params({k: v for k, v in tracking.flat_params(params).items() if k.startswith("xai.")})
        mlrun.log_metrics(
            {
                "attribution_seconds": seconds,
                "attribution_samples_per_s": summary["samples_per_s"],
                **{f"correct.instance{i}": c for i, c in enumerate(summary["correct_per_instance"])},
            }
        )
        mlrun.log_figure(paths.figures("attribute").attribution_maps)
        mlrun.log_output(paths.attributions_dir)
    return summary
