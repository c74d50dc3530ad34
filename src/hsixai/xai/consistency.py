"""`consistency` stage: how consistent the explanations are, from data/attributions/profiles.npz only.

Two scores, both "1 - a Jensen-Shannon distance" (base 2, so in [0, 1]):

consistency_jsdiv (the published metric)
    Each correctly classified sample's profile, normalised to sum 1, is compared
    with the uniform distribution over the bands; the distances are averaged
    within each class, then over classes; 1 - that; averaged over instances.
consistency_instances (agreement between independently trained instances)
    Per class, each instance's mean normalised profile over the samples that
    every instance classifies correctly; 1 - the mean pairwise distance over
    instance pairs; averaged over classes.
consistency_instances_floor
    The same statistic between the two halves of a random split of one
    instance's samples (equal halves; averaged over instances and splits):
    the agreement that sampling alone allows, for reading the one above.

95% intervals come from a bootstrap that resamples samples within each class
(seeded), computed for all replicates at once with matrix products; they are
percentile intervals. Resampling adds noise to the instances' mean profiles
and a distance between noisier means can only grow, so on small samples the
interval of consistency_instances lies at or below its estimate: read it as
the spread of the estimate, with the floor as the scale of sampling noise.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.special import rel_entr

from .. import plots, tracking
from ..config import Params
from ..errors import HsixaiError
from ..io import staged_outputs, write_json
from ..paths import Paths

log = logging.getLogger(__name__)
HALF_SPLITS = 20  # random halvings averaged for the floor


# --------------------------------------------------------------------------- distances
def js_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon distance, base 2, between distributions along the last axis (broadcasting)."""
    m = 0.5 * (p + q)
    divergence = 0.5 * (rel_entr(p, m).sum(axis=-1) + rel_entr(q, m).sum(axis=-1)) / np.log(2.0)
    return np.sqrt(np.clip(divergence, 0.0, None))


def distance_to_uniform(p: np.ndarray) -> np.ndarray:
    """JS distance (base 2) of each normalised profile [..., bands] to the uniform distribution."""
    return js_distance(p, np.full(p.shape[-1], 1.0 / p.shape[-1]))


def normalise(profiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Profiles scaled to sum 1, and a mask of those that could be (sum > 0)."""
    total = profiles.sum(axis=-1, keepdims=True)
    ok = total[..., 0] > 0
    return np.divide(profiles, total, out=np.zeros_like(profiles, dtype=np.float64), where=total > 0), ok


def _resample_counts(rng: np.random.Generator, replicates: int, n: int) -> np.ndarray:
    """[replicates, n]: how often each of n samples is drawn in each bootstrap replicate."""
    idx = rng.integers(0, n, size=(replicates, n))
    counts = np.zeros((replicates, n))
    np.add.at(counts, (np.arange(replicates)[:, None], idx), 1.0)
    return counts


def _mean_pairwise(means: np.ndarray) -> np.ndarray:
    """Mean JS distance over instance pairs; means [..., instances, bands] -> [...]."""
    pairs = list(itertools.combinations(range(means.shape[-2]), 2))
    a = means[..., [i for i, _ in pairs], :]
    b = means[..., [j for _, j in pairs], :]
    return js_distance(a, b).mean(axis=-1)


# --------------------------------------------------------------------------- the scores
@dataclass
class Profiles:
    profiles: np.ndarray  # [instances, samples, bands]
    labels: np.ndarray  # [samples]
    correct: np.ndarray  # [instances, samples]
    wavelengths: np.ndarray
    class_names: list[str]

    @classmethod
    def load(cls, path) -> "Profiles":
        if not path.is_file():
            raise HsixaiError(f"{path}: attributions not found (run the attribute stage first)")
        with np.load(path) as z:
            data = cls(z["profiles"].astype(np.float64), z["labels"], z["correct"], z["wavelengths"],
                       [str(n) for n in z["class_names"]])
        i, s, b = data.profiles.shape
        if data.labels.shape != (s,) or data.correct.shape != (i, s) or data.wavelengths.shape != (b,):
            raise HsixaiError(f"{path}: inconsistent shapes: profiles {data.profiles.shape}, labels "
                              f"{data.labels.shape}, correct {data.correct.shape}, wavelengths {data.wavelengths.shape}")
        return data


def scores(data: Profiles, replicates: int = 250, seed: int = 0) -> dict:
    """Both consistency scores with bootstrap intervals, the floor, and per-class details."""
    floor_rng = np.random.default_rng([seed, 1])
    n_inst = data.profiles.shape[0]
    names = data.class_names
    normalised, nonzero = normalise(data.profiles)
    usable = data.correct & nonzero
    dropped = int((data.correct & ~nonzero).sum())
    if dropped:
        log.warning("%d correctly classified samples have all-zero profiles and were dropped", dropped)
    to_uniform = distance_to_uniform(normalised)  # [instances, samples]

    per_class, jsdiv_boot, inst_boot = {}, [], []
    jsdiv_point = np.full((n_inst, len(names)), np.nan)
    inst_point, floor_point = [], []
    mean_profiles = np.full((n_inst, len(names), data.profiles.shape[2]), np.nan)
    pair_distance = np.zeros((n_inst, n_inst))
    for k, name in enumerate(names):
        members = np.flatnonzero(data.labels == k)
        use = usable[:, members].astype(float)  # [instances, n_k]
        n_use = use.sum(axis=1)
        entry = {"samples": len(members), "usable_per_instance": n_use.astype(int).tolist()}
        # One resampling of the class's samples per class and seed, shared by both scores: every
        # experiment on the same xAI sample draws the same replicates, so differences between
        # experiments can be bootstrapped pairwise (hsixai select).
        counts = _resample_counts(np.random.default_rng([seed, 0, k]), replicates, len(members))
        with np.errstate(invalid="ignore", divide="ignore"):
            jsdiv_point[:, k] = (use * to_uniform[:, members]).sum(axis=1) / n_use
            boot = (counts @ (use * to_uniform[:, members]).T) / (counts @ use.T)  # [replicates, instances]
        jsdiv_boot.append(boot)
        for i in np.flatnonzero(n_use):
            mean_profiles[i, k] = normalised[i, members[use[i] > 0]].mean(axis=0)
        if (n_use == 0).any():
            log.warning("class %s: no usable samples for instance(s) %s; left out of their means",
                        name, np.flatnonzero(n_use == 0).tolist())
        entry["consistency_jsdiv"] = _mean_or_none(1.0 - jsdiv_point[:, k])

        common = members[usable[:, members].all(axis=0)]
        entry["common"] = len(common)
        if len(common) >= 2:
            floor_point.append(_floor(normalised[:, common], floor_rng))
            entry["consistency_instances_floor"] = floor_point[-1]
        if n_inst >= 2 and len(common) >= 2:  # the same classes as the floor
            class_means = normalised[:, common].mean(axis=1)  # [instances, bands]
            inst_point.append(1.0 - float(_mean_pairwise(class_means)))
            entry["consistency_instances"] = inst_point[-1]
            in_common = usable[:, members].all(axis=0).astype(float)  # [n_k]
            drawn = counts * in_common  # a replicate's common samples, with multiplicity
            with np.errstate(invalid="ignore", divide="ignore"):
                boot_means = np.einsum("rn,inb->rib", drawn, normalised[:, members]) / drawn.sum(axis=1)[:, None, None]
            inst_boot.append(1.0 - _mean_pairwise(boot_means))
            for i, j in itertools.combinations(range(n_inst), 2):
                pair_distance[i, j] += js_distance(class_means[i], class_means[j])
        elif n_inst >= 2:
            log.warning("class %s: fewer than 2 samples are classified correctly by every instance; "
                        "left out of consistency_instances", name)
        per_class[name] = entry

    jsdiv_by_instance = 1.0 - np.nanmean(jsdiv_point, axis=1)  # classes without samples left out
    with warnings.catch_warnings():  # a class with no usable sample in a replicate is left out of it
        warnings.simplefilter("ignore", RuntimeWarning)
        jsdiv_replicates = 1.0 - np.nanmean(np.stack(jsdiv_boot, axis=2), axis=2)  # [replicates, instances]
        jsdiv_replicates = np.nanmean(jsdiv_replicates, axis=1)  # [replicates]
    result = {
        "consistency_jsdiv": float(np.nanmean(jsdiv_by_instance)),
        "consistency_jsdiv_ci": _interval(jsdiv_replicates),
        "_replicates_jsdiv": jsdiv_replicates,
        "consistency_jsdiv_per_instance": jsdiv_by_instance.tolist(),
        "consistency_instances": None,
        "consistency_instances_ci": None,
        "consistency_instances_floor": float(np.mean(floor_point)) if floor_point else None,
        "instances": n_inst,
        "bootstrap_replicates": replicates,
        "dropped_zero_profiles": dropped,
    }
    if n_inst < 2:
        result["consistency_instances_note"] = "needs at least 2 model instances (train.instances)"
        log.warning("consistency_instances needs at least 2 model instances; train.instances gave %d", n_inst)
    elif inst_point:
        result["consistency_instances"] = float(np.mean(inst_point))
        with warnings.catch_warnings():  # a replicate may draw no common sample of a class
            warnings.simplefilter("ignore", RuntimeWarning)
            inst_replicates = np.nanmean(np.stack(inst_boot, axis=1), axis=1)
        result["consistency_instances_ci"] = _interval(inst_replicates)
        result["_replicates_instances"] = inst_replicates
        n_pairs_classes = max(len(inst_point), 1)
        result["pairwise_distance"] = (np.triu(pair_distance, 1) + np.triu(pair_distance, 1).T) / n_pairs_classes
        result["pairwise_distance"] = result["pairwise_distance"].tolist()
    result["per_class"] = per_class
    result["_mean_profiles"] = mean_profiles
    return result


def _floor(normalised: np.ndarray, rng: np.random.Generator) -> float:
    """1 - JS distance between the mean profiles of two equal random halves, per instance; averaged."""
    n_inst, n, _ = normalised.shape
    half = n // 2
    order = np.argsort(rng.random((HALF_SPLITS, n)), axis=1)
    a = normalised[:, order[:, :half]].mean(axis=2)  # [instances, splits, bands]
    b = normalised[:, order[:, half:2 * half]].mean(axis=2)
    return float(1.0 - js_distance(a, b).mean())


def _interval(replicates: np.ndarray) -> list[float] | None:
    replicates = replicates[np.isfinite(replicates)]
    if replicates.size == 0:
        return None
    low, high = np.percentile(replicates, [2.5, 97.5])
    return [float(low), float(high)]


def _mean_or_none(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


# --------------------------------------------------------------------------- the stage
def run(params: Params, paths: Paths, progress: bool = True) -> dict:
    """Run the stage. Returns metrics/consistency.json's content."""
    data = Profiles.load(paths.profiles)
    if data.class_names != params.data.class_names:
        raise HsixaiError(f"{paths.profiles}: class names {data.class_names} differ from data.class_names")
    result = scores(data, params.xai.bootstrap, params.seed)
    mean_profiles = result.pop("_mean_profiles")
    replicates = {key: result.pop(f"_replicates_{key}", np.array([])).tolist() for key in ("jsdiv", "instances")}
    replicates = {f"consistency_{key}": values for key, values in replicates.items()}
    with staged_outputs(paths.figures_dir("consistency"),
                        files=(paths.metrics("consistency"), paths.bootstrap_replicates)) as (figs, out, boot):
        write_json(out, result)
        write_json(boot, {"seed": params.seed, "replicates": params.xai.bootstrap, **replicates})
        plots.class_profiles(data.wavelengths, mean_profiles, data.class_names, figs / "profiles.png",
                             f"{params.model} p={params.patch_size}: mean normalised IG profile per class")
        plots.distance_heatmap(np.array(result["pairwise_distance"]) if result.get("pairwise_distance") else None,
                               figs / "instance_distances.png",
                               "JS distance between instances' class profiles (mean over classes)")

    with tracking.stage_run("consistency", params, paths) as mlrun:
        headline = {k: result[k] for k in ("consistency_jsdiv", "consistency_instances", "consistency_instances_floor")
                    if result[k] is not None and np.isfinite(result[k])}
        mlrun.log_metrics(headline)
        for key in ("consistency_jsdiv", "consistency_instances"):
            if result[f"{key}_ci"]:
                mlrun.log_metrics({f"{key}_ci_low": result[f"{key}_ci"][0], f"{key}_ci_high": result[f"{key}_ci"][1]})
        mlrun.log_experiment_summary()  # the last stage: every headline number onto the parent run
        for figure in sorted(paths.figures_dir("consistency").glob("*.png")):
            mlrun.log_figure(figure)
        mlrun.log_output(paths.metrics("consistency"))
    return result
