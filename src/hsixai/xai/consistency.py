"""`consistency` stage: how consistent the explanations are, and where in the patch they look.

Reads data/attributions/profiles.npz only. Per class, only the samples an
instance classifies correctly (with a non-zero profile) count; each profile is
normalised to sum 1 over the bands. Scores (docs/selection.md explains each):

consistency_jsdiv (the published metric)
    1 - the Jensen-Shannon distance (base 2) of a sample's profile to the
    uniform distribution over the bands, averaged within each class, then over
    classes, then over instances. High = attributions spread evenly.
consistency_instances (agreement between independently trained instances)
    Per class and pair of instances, over the samples both classify
    correctly: 1 - half the triangular (Vincze-Le Cam) divergence
    sum_b (p_b - q_b)^2 / (p_b + q_b) between the two instances' mean
    profiles p and q, with the squared differences estimated without bias;
    averaged over pairs and classes. In [0, 1] up to noise; 1 = the same mean
    profile. The triangular divergence is the second-order form of
    Jensen-Shannon (JS in bits lies between 0.72 and 1 times half of it). A
    distance between two *sample* means is inflated by sampling noise by about
    (noise variance) / n, so a plug-in score rises with the number of
    correctly classified samples, i.e. with accuracy; the U-statistic
    (products of distinct samples only) removes that term exactly, which JS
    does not allow (its jackknife still left 0.02-0.07 at 4 samples per class
    in docs/selection.md's simulation). The score is 1 in expectation when
    instances differ only by sampling and NoiseTunnel noise (so it can exceed
    1 by noise), and it still rewards flat profiles: two flat profiles are
    close whatever their shape.
consistency_instances_plugin
    The same with the plug-in squared differences: biased towards
    disagreement with few samples; kept so a reader sees how much sampling
    noise was removed, and it is the bootstrap's centre. Not a selection criterion.
consistency_concordance (agreement that does not reward flatness)
    Per class and pair: 1 - |p - q|^2 / (|p - u|^2 + |q - u|^2), p and q the
    two instances' mean profiles, u the uniform profile, each squared norm
    estimated without bias; averaged over pairs and classes. The disagreement
    is measured against how far the profiles are from flat, so flattening
    both towards uniform by the same amount leaves it unchanged. 1 = the same
    shape, 0 = unrelated shapes, -1 = opposite shapes; undefined (null) where
    the profiles cannot be told from flat.
centre_share, radial_profile
    From the full attribution maps: per sample, the share of its positive
    attribution mass (summed over bands) on the centre pixel, and on each
    Chebyshev ring around it (ring 0 = the centre pixel); averaged like
    consistency_jsdiv. A uniform map puts 1 / p^2 on the centre.

Intervals (95%) come from one bootstrap plan shared by every statistic: the
samples of each class are resampled (seeded by seed and class, so every
experiment on the same xAI sample draws the same replicates and differences
between experiments can be bootstrapped pairwise), and with >= 3 instances the
instances are resampled too (seeded by seed alone, so instance i of every
experiment is drawn alike); pair statistics use only pairs of distinct
original instances. The interval is the basic (reverse-percentile) bootstrap
interval [t - (q97.5 - t_boot), t - (q2.5 - t_boot)], where t_boot is the
statistic's value on the bootstrap's own population (the plug-in value on the
observed sample): it corrects the bias that the percentile interval inherits
from a biased plug-in statistic. Replicates and t_boot go to
metrics/consistency_bootstrap.json for `hsixai select`.
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
LEVEL = 0.95


# --------------------------------------------------------------------------- distances
def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence in bits (in [0, 1]) between distributions along the last axis (broadcasting)."""
    m = 0.5 * (p + q)
    divergence = 0.5 * (rel_entr(p, m).sum(axis=-1) + rel_entr(q, m).sum(axis=-1)) / np.log(2.0)
    return np.clip(divergence, 0.0, None)


def js_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon distance, base 2: the square root of the divergence in bits."""
    return np.sqrt(js_divergence(p, q))


def distance_to_uniform(p: np.ndarray) -> np.ndarray:
    """JS distance (base 2) of each normalised profile [..., bands] to the uniform distribution."""
    return js_distance(p, np.full(p.shape[-1], 1.0 / p.shape[-1]))


def normalise(profiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Profiles scaled to sum 1 along the last axis, and a mask of those that could be (sum > 0)."""
    total = profiles.sum(axis=-1, keepdims=True)
    ok = total[..., 0] > 0
    return np.divide(profiles, total, out=np.zeros_like(profiles, dtype=np.float64), where=total > 0), ok


# --------------------------------------------------------------------------- the bootstrap plan
def resample_counts(rng: np.random.Generator, replicates: int, n: int) -> np.ndarray:
    """[replicates, n]: how often each of n units is drawn in each bootstrap replicate."""
    idx = rng.integers(0, n, size=(replicates, n))
    counts = np.zeros((replicates, n))
    np.add.at(counts, (np.arange(replicates)[:, None], idx), 1.0)
    return counts


@dataclass
class Plan:
    """Which samples and instances each bootstrap replicate draws.

    sample_counts[k] [replicates, samples of class k]; instance_counts
    [replicates, instances], all ones when instances are not resampled.
    """

    sample_counts: list[np.ndarray]
    instance_counts: np.ndarray
    resample_instances: bool


def bootstrap_plan(labels: np.ndarray, n_classes: int, n_instances: int, replicates: int, seed: int) -> Plan:
    """The same plan for every experiment on the same xAI sample, seed and number of instances.

    Instances are resampled only from 3 up: with 2, a resample of instances is
    one of the two pairs or no pair at all. Draws that hold a single distinct
    instance (no pair to compare) are redrawn, for every statistic alike.
    """
    counts = [
        resample_counts(np.random.default_rng([seed, 0, k]), replicates, int((labels == k).sum()))
        for k in range(n_classes)
    ]
    resample = n_instances >= 3
    inst = np.ones((replicates, n_instances))
    if resample:
        rng = np.random.default_rng([seed, 2])
        inst = resample_counts(rng, replicates, n_instances)
        while (bad := (inst > 0).sum(axis=1) < 2).any():
            inst[bad] = resample_counts(rng, int(bad.sum()), n_instances)
    return Plan(counts, inst, resample)


def basic_interval(estimate: float, replicates: np.ndarray, centre: float, level: float = LEVEL) -> list[float] | None:
    """Basic (reverse-percentile) interval: estimate minus the quantiles of (replicate - centre).

    `centre` is the statistic on the bootstrap's population (the plug-in value
    on the observed sample); for a plug-in statistic it is the estimate itself.
    """
    replicates = np.asarray(replicates, dtype=float)
    replicates = replicates[np.isfinite(replicates)]
    if replicates.size == 0 or not np.isfinite(estimate) or not np.isfinite(centre):
        return None
    low, high = np.quantile(replicates - centre, [(1 - level) / 2, (1 + level) / 2])
    return [float(estimate - high), float(estimate - low)]


# --------------------------------------------------------------------------- per-class statistics
def _class_means(values: np.ndarray, use: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Means over a class's usable samples, observed and per replicate.

    values [instances, n, ...], use [instances, n] (0/1), counts [replicates, n]
    -> ([instances, ...], [replicates, instances, ...]); NaN where nothing is usable.
    """
    flat = values.reshape(values.shape[0], values.shape[1], -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        point = np.einsum("in,inv->iv", use, flat) / use.sum(axis=1)[:, None]
        weights = counts[:, None, :] * use[None]  # [replicates, instances, n]
        boot = np.einsum("rin,inv->riv", weights, flat) / weights.sum(axis=2)[..., None]
    return point.reshape(values.shape[0], *values.shape[2:]), boot.reshape(
        len(counts), *values.shape[:1], *values.shape[2:]
    )


def triangular_discrimination(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Vincze-Le Cam (triangular) divergence sum (p - q)^2 / (p + q) along the last axis, in [0, 2]."""
    total = p + q
    return np.divide((p - q) ** 2, total, out=np.zeros(np.broadcast(p, q).shape), where=total > 0).sum(axis=-1)


def _pair_moments(a: np.ndarray, b: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Debiased and plug-in pair statistics of the weighted means of paired samples a and b.

    a, b [n, bands]: normalised profiles of the same samples by two instances;
    weights [replicates, n]: how often each sample is drawn (0 = not used).
    A squared difference of two sample means is inflated by the variance of
    the mean difference; the U-statistic over pairs of distinct draws s != t,
    sum x_s x_t / (n (n - 1)), is unbiased for the squared population
    quantity whatever the number n of draws. Returns, each [replicates]
    (NaN with fewer than 2 draws):
        divergence, divergence_plugin    half the triangular divergence; its
            denominator (the pooled mean) is the plug-in, whose noise multiplies
            a term of mean zero when the instances agree
        concordance, concordance_plugin  1 - |mean_a - mean_b|^2 / (|mean_a - u|^2 + |mean_b - u|^2),
            u = uniform; NaN where the profiles are indistinguishable from flat
    """
    n_draws = weights.sum(axis=1)  # [replicates]
    bands = a.shape[1]
    x = a - b
    sum_a, sum_b, sum_x = weights @ a, weights @ b, weights @ x  # [replicates, bands]
    with np.errstate(invalid="ignore", divide="ignore"):
        pairs = (n_draws * (n_draws - 1))[:, None]
        square_u = (sum_x * sum_x - weights @ (x * x)) / pairs  # per band: unbiased (mean_a - mean_b)^2
        square_plugin = (sum_x / n_draws[:, None]) ** 2
        scale = (sum_a + sum_b) / n_draws[:, None]  # mean_a + mean_b per band
        safe = np.where(scale > 0, scale, 1.0)
        out = {
            "divergence": np.where(scale > 0, square_u / safe, 0.0).sum(axis=1) / 2,
            "divergence_plugin": np.where(scale > 0, square_plugin / safe, 0.0).sum(axis=1) / 2,
        }
        # |mean - u|^2 = |mean|^2 - 1 / bands for profiles that sum to 1
        spread_u = (
            (sum_a * sum_a).sum(1) - weights @ (a * a).sum(1) + (sum_b * sum_b).sum(1) - weights @ (b * b).sum(1)
        ) / pairs[:, 0] - 2.0 / bands
        mean_a, mean_b = sum_a / n_draws[:, None], sum_b / n_draws[:, None]
        spread_plugin = (mean_a * mean_a).sum(1) + (mean_b * mean_b).sum(1) - 2.0 / bands
        out["concordance"] = np.where(spread_u > 0, 1 - square_u.sum(1) / np.where(spread_u > 0, spread_u, 1), np.nan)
        out["concordance_plugin"] = np.where(
            spread_plugin > 0, 1 - square_plugin.sum(1) / np.where(spread_plugin > 0, spread_plugin, 1), np.nan
        )
    for key in out:
        out[key][n_draws < 2] = np.nan
    return out


PAIR_KEYS = ("divergence", "divergence_plugin", "concordance", "concordance_plugin")
PAIR_SCORES = ("consistency_instances", "consistency_instances_plugin", "consistency_concordance")


def _pair_statistics(normalised: np.ndarray, use: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Per pair of instances, the statistics of _pair_moments, observed [pairs] and per replicate [replicates, pairs].

    normalised [instances, n, bands], use [instances, n] for one class; the
    replicates are under key + '_boot'; 'common' counts the samples of each pair.
    """
    n_inst = normalised.shape[0]
    pairs = list(itertools.combinations(range(n_inst), 2))
    out = {key: np.full(len(pairs), np.nan) for key in (*PAIR_KEYS, "common")}
    out.update({f"{key}_boot": np.full((len(counts), len(pairs)), np.nan) for key in PAIR_KEYS})
    for p, (i, j) in enumerate(pairs):
        both = use[i] * use[j]  # samples both instances classify correctly
        out["common"][p] = both.sum()
        if both.sum() < 2:
            continue
        weights = np.vstack([both, counts * both])  # row 0: the observed sample
        for key, values in _pair_moments(normalised[i], normalised[j], weights).items():
            out[key][p] = values[0]
            out[f"{key}_boot"][:, p] = values[1:]
    return out


# --------------------------------------------------------------------------- the scores
@dataclass
class Profiles:
    profiles: np.ndarray  # [instances, samples, bands]
    labels: np.ndarray  # [samples]
    correct: np.ndarray  # [instances, samples]
    wavelengths: np.ndarray
    class_names: list[str]
    ring_mass: np.ndarray | None = None  # [instances, samples, rings]: positive attribution mass per Chebyshev ring

    @classmethod
    def load(cls, path) -> Profiles:
        if not path.is_file():
            raise HsixaiError(f"{path}: attributions not found (run the attribute stage first)")
        with np.load(path) as z:
            if "ring_mass" not in z:
                raise HsixaiError(f"{path}: no 'ring_mass' array (written by an older attribute stage; re-run it)")
            data = cls(
                z["profiles"].astype(np.float64),
                z["labels"],
                z["correct"],
                z["wavelengths"],
                [str(n) for n in z["class_names"]],
                z["ring_mass"].astype(np.float64),
            )
        i, s, b = data.profiles.shape
        if (
            data.labels.shape != (s,)
            or data.correct.shape != (i, s)
            or data.wavelengths.shape != (b,)
            or data.ring_mass.ndim != 3
            or data.ring_mass.shape[:2] != (i, s)
        ):
            raise HsixaiError(
                f"{path}: inconsistent shapes: profiles {data.profiles.shape}, labels "
                f"{data.labels.shape}, correct {data.correct.shape}, wavelengths "
                f"{data.wavelengths.shape}, ring_mass {data.ring_mass.shape}"
            )
        return data


def _over_instances(values: np.ndarray, boot: np.ndarray, plan: Plan) -> tuple[float, np.ndarray]:
    """Mean over instances: values [instances], boot [replicates, instances] weighted by the instance draws."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        point = float(np.nanmean(values))
        w = plan.instance_counts * np.isfinite(boot)
        replicates = np.nansum(w * np.nan_to_num(boot), axis=1) / w.sum(axis=1)
    return point, replicates


def _over_pairs(values: np.ndarray, boot: np.ndarray, plan: Plan) -> tuple[float, np.ndarray]:
    """Mean over pairs of distinct instances: values [pairs], boot [replicates, pairs].

    A replicate that draws instance i c_i times and j c_j times counts the pair
    (i, j) c_i c_j times; copies of one instance are never paired with each other.
    """
    n_inst = plan.instance_counts.shape[1]
    pairs = list(itertools.combinations(range(n_inst), 2))
    weight = np.stack([plan.instance_counts[:, i] * plan.instance_counts[:, j] for i, j in pairs], axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        point = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        w = weight * np.isfinite(boot)
        replicates = (w * np.nan_to_num(boot)).sum(axis=1) / w.sum(axis=1)
    return point, replicates


def _nanmean_classes(values: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def _summary(name: str, point: float, replicates: np.ndarray, centre: float, out: dict, boot: dict) -> None:
    """Estimate, interval and replicates of one statistic into the result and the bootstrap file."""
    out[name] = point if np.isfinite(point) else None
    out[f"{name}_ci"] = basic_interval(point, replicates, centre)
    boot[name] = {
        "estimate": out[name],
        "centre": centre if np.isfinite(centre) else None,
        "replicates": [float(v) if np.isfinite(v) else None for v in replicates],
    }


@dataclass(frozen=True)
class ConsistencyScores:
    """What `scores` computes: the metrics file's content and what the stage writes beside it.

    metrics: metrics/consistency.json's content, keys in the order written: every score with its 95% interval,
        per class ("per_class") and overall.
    bootstrap: per statistic {"estimate", "centre", "replicates" [replicates]}: the "statistics" of
        metrics/consistency_bootstrap.json, for `hsixai select`'s paired differences.
    mean_profiles: float64 [instances, classes, bands], each instance's mean normalised profile per class over the
        samples it classifies correctly with a non-zero profile (NaN where it has none), for the profiles figure.
    """

    metrics: dict
    bootstrap: dict
    mean_profiles: np.ndarray


def scores(data: Profiles, replicates: int = 250, seed: int = 0, patch_size: int | None = None) -> ConsistencyScores:
    """Every score with its 95% interval, per class and overall (ConsistencyScores.metrics), with the bootstrap
    replicates and the mean profiles."""
    n_inst, n_samples, n_bands = data.profiles.shape
    names = data.class_names
    plan = bootstrap_plan(data.labels, len(names), n_inst, replicates, seed)
    normalised, nonzero = normalise(data.profiles)
    usable = data.correct & nonzero
    dropped = int((data.correct & ~nonzero).sum())
    if dropped:
        log.warning("%d correctly classified samples have all-zero profiles and were dropped", dropped)
    to_uniform = 1.0 - distance_to_uniform(normalised)  # [instances, samples]: per-sample consistency_jsdiv
    rings = None
    if data.ring_mass is not None:
        rings, ring_ok = normalise(data.ring_mass)  # [instances, samples, rings]: shares of the positive mass
        usable_rings = usable & ring_ok
    n_pairs = n_inst * (n_inst - 1) // 2

    # per class: [instances] or [pairs] observed, [replicates, ...] resampled
    jsdiv = np.full((n_inst, len(names)), np.nan)
    jsdiv_boot = np.full((replicates, n_inst, len(names)), np.nan)
    pair_stats = {key: np.full((n_pairs, len(names)), np.nan) for key in PAIR_KEYS}
    pair_boot = {key: np.full((replicates, n_pairs, len(names)), np.nan) for key in PAIR_KEYS}
    n_rings = rings.shape[2] if rings is not None else 0
    ring_share = np.full((n_inst, len(names), n_rings), np.nan)
    ring_boot = np.full((replicates, n_inst, len(names), n_rings), np.nan)
    mean_profiles = np.full((n_inst, len(names), n_bands), np.nan)
    per_class = {}
    for k, name in enumerate(names):
        members = np.flatnonzero(data.labels == k)
        counts = plan.sample_counts[k]
        use = usable[:, members].astype(float)  # [instances, n_k]
        n_use = use.sum(axis=1)
        entry = {"samples": len(members), "usable_per_instance": n_use.astype(int).tolist()}
        if (n_use == 0).any():
            log.warning(
                "class %s: no usable samples for instance(s) %s; left out of their means",
                name,
                np.flatnonzero(n_use == 0).tolist(),
            )
        jsdiv[:, k], jsdiv_boot[:, :, k] = _class_means(to_uniform[:, members], use, counts)
        mean_profiles[:, k], _ = _class_means(normalised[:, members], use, counts[:0])
        if rings is not None:
            ring_use = usable_rings[:, members].astype(float)
            ring_share[:, k], ring_boot[:, :, k] = _class_means(rings[:, members], ring_use, counts)
        if n_inst >= 2:
            stats = _pair_statistics(normalised[:, members], use, counts)
            entry["common_per_pair"] = stats["common"].astype(int).tolist()
            for key in pair_stats:
                pair_stats[key][:, k], pair_boot[key][:, :, k] = stats[key], stats[f"{key}_boot"]
            if not np.isfinite(stats["divergence"]).any():
                log.warning(
                    "class %s: no pair of instances classifies 2 or more samples correctly; left out of "
                    "consistency_instances",
                    name,
                )
        per_class[name] = entry

    result: dict = {
        "instances": n_inst,
        "bootstrap_replicates": replicates,
        "bootstrap_resamples_instances": plan.resample_instances,
        "interval": "basic bootstrap, 95%",
        "dropped_zero_profiles": dropped,
    }
    boot: dict = {}
    # consistency_jsdiv: a mean of per-sample values, its own bootstrap centre
    by_instance = _nanmean_classes(jsdiv, axis=1)
    point, reps = _over_instances(by_instance, _nanmean_classes(jsdiv_boot, axis=2), plan)
    _summary("consistency_jsdiv", point, reps, point, result, boot)
    result["consistency_jsdiv_per_instance"] = [None if not np.isfinite(v) else float(v) for v in by_instance]

    def pair_score(key: str, k: int | None = None) -> tuple[float, np.ndarray, float]:
        """(estimate, replicates, bootstrap centre) of a pair statistic, for class k or over classes."""

        def pick(name):
            if k is None:
                return _nanmean_classes(pair_stats[name], 1), _nanmean_classes(pair_boot[name], 2)
            return pair_stats[name][:, k], pair_boot[name][:, :, k]

        point, reps = _over_pairs(*pick(key), plan)
        centre, _ = _over_pairs(*pick(key if key.endswith("_plugin") else f"{key}_plugin"), plan)
        return point, reps, centre

    if n_inst < 2:
        result["consistency_instances_note"] = "needs at least 2 model instances (train.instances)"
        log.warning("consistency_instances needs at least 2 model instances; train.instances gave %d", n_inst)
        for key in PAIR_SCORES:
            result[key], result[f"{key}_ci"] = None, None
    else:
        # Scores are 1 - divergence; the bootstrap's own population has the plug-in value.
        point, reps, centre = pair_score("divergence")
        _summary("consistency_instances", 1 - point, 1 - reps, 1 - centre, result, boot)
        plugin, plugin_reps, _ = pair_score("divergence_plugin")
        _summary("consistency_instances_plugin", 1 - plugin, 1 - plugin_reps, 1 - plugin, result, boot)
        point, reps, centre = pair_score("concordance")
        _summary("consistency_concordance", point, reps, centre, result, boot)
        divergence = np.zeros((n_inst, n_inst))
        for p, (i, j) in enumerate(itertools.combinations(range(n_inst), 2)):
            divergence[i, j] = divergence[j, i] = _nanmean_classes(pair_stats["divergence"][p], 0)
        result["pairwise_divergence"] = divergence.tolist()

    if rings is not None:
        overall, overall_boot = _nanmean_classes(ring_share, 1), _nanmean_classes(ring_boot, 2)  # [inst, rings]
        shares = [_over_instances(overall[:, r], overall_boot[:, :, r], plan) for r in range(n_rings)]
        _summary("centre_share", shares[0][0], shares[0][1], shares[0][0], result, boot)
        result["radial_profile"] = [s[0] for s in shares]
        result["radial_profile_ci"] = [basic_interval(p, reps, p) for p, reps in shares]
        for r, (p, reps) in enumerate(shares):
            boot[f"radial_profile.{r}"] = {"estimate": p, "centre": p, "replicates": reps.tolist()}
        if patch_size is not None:
            result["centre_share_uniform"] = 1.0 / patch_size**2

    # per class: the same estimates and intervals
    for k, name in enumerate(names):
        entry = per_class[name]
        point, reps = _over_instances(jsdiv[:, k], jsdiv_boot[:, :, k], plan)
        entry["consistency_jsdiv"] = point if np.isfinite(point) else None
        entry["consistency_jsdiv_ci"] = basic_interval(point, reps, point)
        if n_inst >= 2:
            point, reps, centre = pair_score("divergence", k)
            entry["consistency_instances"] = 1 - point if np.isfinite(point) else None
            entry["consistency_instances_ci"] = basic_interval(1 - point, 1 - reps, 1 - centre)
            point, reps, centre = pair_score("concordance", k)
            entry["consistency_concordance"] = point if np.isfinite(point) else None
            entry["consistency_concordance_ci"] = basic_interval(point, reps, centre)
        if rings is not None:
            shares = [_over_instances(ring_share[:, k, r], ring_boot[:, :, k, r], plan) for r in range(n_rings)]
            entry["centre_share"] = shares[0][0] if np.isfinite(shares[0][0]) else None
            entry["centre_share_ci"] = basic_interval(shares[0][0], shares[0][1], shares[0][0])
            entry["radial_profile"] = [p if np.isfinite(p) else None for p, _ in shares]
            entry["radial_profile_ci"] = [basic_interval(p, reps, p) for p, reps in shares]
    result["per_class"] = per_class
    return ConsistencyScores(result, boot, mean_profiles)


# --------------------------------------------------------------------------- the stage
def run(params: Params, paths: Paths, progress: bool = True) -> dict:
    """Run the stage. Returns metrics/consistency.json's content."""
    data = Profiles.load(paths.profiles)
    if data.class_names != params.data.class_names:
        raise HsixaiError(f"{paths.profiles}: class names {data.class_names} differ from data.class_names")
    expected_rings = params.patch_size // 2 + 1
    if data.ring_mass.shape[2] != expected_rings:
        raise HsixaiError(
            f"{paths.profiles}: ring_mass has {data.ring_mass.shape[2]} rings, patch_size "
            f"{params.patch_size} has {expected_rings} (re-run attribute)"
        )
    computed = scores(data, params.xai.bootstrap, params.seed, params.patch_size)
    result = computed.metrics
    with staged_outputs(
        paths.figures_dir("consistency"), files=(paths.metrics("consistency"), paths.bootstrap_replicates)
    ) as (figs, out, boot):
        write_json(out, result)
        figures = paths.figures("consistency", figs)
        write_json(
            boot,
            {
                "seed": params.seed,
                "replicates": params.xai.bootstrap,
                "instances": data.profiles.shape[0],
                "resamples_instances": result["bootstrap_resamples_instances"],
                "statistics": computed.bootstrap,
            },
        )
        plots.class_profiles(
            data.wavelengths,
            computed.mean_profiles,
            data.class_names,
            figures.class_profiles,
            f"{params.model} p={params.patch_size}: mean normalised IG profile per class",
        )
        plots.distance_heatmap(
            np.array(result["pairwise_divergence"]) if result.get("pairwise_divergence") else None,
            figures.instance_distances,
            "debiased half triangular divergence between instances' class profiles (mean over classes)",
        )
        plots.radial_profile(
            result,
            data.class_names,
            figures.radial_profile,
            f"{params.model} p={params.patch_size}: where the positive attribution lies",
        )

    with tracking.stage_run("consistency", params, paths) as mlrun:
        mlrun.log_inputs([paths.attributions_dir], "explanation")  # profiles.npz, inside attribute's output
        mlrun.log_metrics(tracking.consistency_metrics(result))
        mlrun.log_experiment_summary()  # the last stage: every headline number onto the parent run
        for figure in paths.figures("consistency").drawn():
            mlrun.log_figure(figure)
        mlrun.log_output(paths.metrics("consistency"))
    return result
