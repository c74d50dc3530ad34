"""Explanations drawn from a known distribution, for checking the consistency scores against their truth.

A study: `classes` classes, `bands` bands; class k has a base profile; instance
i multiplies it by an instance effect (log-normal per band, sd `instance_sd`);
sample s multiplies it by a pixel effect shared by every instance (sd
`pixel_sd`) and by noise of its own per instance (sd `noise_sd`, the
NoiseTunnel's part). Each instance classifies each sample correctly with
probability `correct_rate`, independently of its profile, so the truth is the
population of profiles itself.

The truths are population quantities computed by Monte Carlo with many more
draws than a study has:
    jsdiv      E[1 - JS distance(profile, uniform)], per instance and class, averaged
    instances  1 - half the triangular divergence between two instances' population mean profiles, averaged
    concordance  1 - |p - q|^2 / (|p - u|^2 + |q - u|^2) of the population mean profiles p, q, averaged

`python -m tests.simulation` prints coverage and invariance figures with more
studies than the unit tests use (docs/selection.md quotes them).
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import dataclass

import numpy as np

from hsixai.xai.consistency import Profiles, distance_to_uniform, normalise, scores, triangular_discrimination


@dataclass(frozen=True)
class Design:
    classes: int = 2
    bands: int = 24
    samples_per_class: int = 16
    base_sd: float = 1.0  # how peaked the class profiles are
    instance_sd: float = 0.3
    pixel_sd: float = 0.8
    noise_sd: float = 1.0  # a plug-in agreement at 4 samples per class is ~0.88 where the truth is 1
    correct_rate: float = 0.85


def base_profiles(design: Design, seed: int = 12345) -> np.ndarray:
    """[classes, bands]: the fixed class profiles of every study."""
    rng = np.random.default_rng(seed)
    return np.exp(design.base_sd * rng.standard_normal((design.classes, design.bands)))


def instance_effects(design: Design, rng: np.random.Generator, n: int) -> np.ndarray:
    """[n, classes, bands] multiplicative effects of n independently trained instances."""
    return np.exp(design.instance_sd * rng.standard_normal((n, design.classes, design.bands)))


def draw_profiles(
    design: Design, base: np.ndarray, effects: np.ndarray, n_per_class: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Raw profiles [instances, samples, bands] and labels [samples] for n_per_class samples per class."""
    n_inst = effects.shape[0]
    labels = np.repeat(np.arange(design.classes), n_per_class)
    pixel = np.exp(design.pixel_sd * rng.standard_normal((len(labels), design.bands)))
    noise = np.exp(design.noise_sd * rng.standard_normal((n_inst, len(labels), design.bands)))
    return base[labels][None] * effects[:, labels] * pixel[None] * noise, labels


def study(
    design: Design,
    base: np.ndarray,
    effects: np.ndarray,
    rng: np.random.Generator,
    n_per_class: int | None = None,
    ring_mass: np.ndarray | None = None,
) -> Profiles:
    profiles, labels = draw_profiles(design, base, effects, n_per_class or design.samples_per_class, rng)
    correct = rng.random(profiles.shape[:2]) < design.correct_rate
    profiles = profiles * correct[..., None]  # the attribute stage stores zeros where not correct
    names = [f"c{k}" for k in range(design.classes)]
    return Profiles(profiles, labels, correct, np.arange(design.bands, dtype=float), names, ring_mass)


def population_means(
    design: Design, base: np.ndarray, effects: np.ndarray, draws: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Per instance and class: the population mean normalised profile [n, classes, bands] and E[jsdiv] [n, classes]."""
    n_inst = effects.shape[0]
    means = np.zeros((n_inst, design.classes, design.bands))
    jsdiv = np.zeros((n_inst, design.classes))
    done = 0
    while done < draws:
        chunk = min(max(1, 2_000_000 // (n_inst * design.bands * design.classes)), draws - done)
        raw, labels = draw_profiles(design, base, effects, chunk, rng)
        normalised, _ = normalise(raw)
        to_uniform = 1 - distance_to_uniform(normalised)
        for k in range(design.classes):
            means[:, k] += normalised[:, labels == k].sum(axis=1)
            jsdiv[:, k] += to_uniform[:, labels == k].sum(axis=1)
        done += chunk
    return means / draws, jsdiv / draws


def concordance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """1 - |p - q|^2 / (|p - u|^2 + |q - u|^2) along the last axis (u uniform)."""
    u = 1.0 / p.shape[-1]
    return 1 - ((p - q) ** 2).sum(-1) / (((p - u) ** 2).sum(-1) + ((q - u) ** 2).sum(-1))


def pair_truths(means: np.ndarray, pairs: list[tuple[int, int]]) -> dict[str, float]:
    """Over the given pairs of instances and the classes: 1 - half the triangular divergence, and the concordance."""
    divergence = np.mean([triangular_discrimination(means[i], means[j]).mean() / 2 for i, j in pairs])
    return {
        "consistency_instances": 1 - float(divergence),
        "consistency_concordance": float(np.mean([concordance(means[i], means[j]).mean() for i, j in pairs])),
    }


def truths_fixed(
    design: Design, base: np.ndarray, effects: np.ndarray, draws: int = 200_000, seed: int = 99
) -> dict[str, float]:
    """Truths for these very instances (studies that do not resample instances)."""
    means, jsdiv = population_means(design, base, effects, draws, np.random.default_rng(seed))
    pairs = list(itertools.combinations(range(len(effects)), 2))
    return {"consistency_jsdiv": float(jsdiv.mean()), **pair_truths(means, pairs)}


def truths_population(
    design: Design, base: np.ndarray, instances: int = 300, draws: int = 4_000, seed: int = 98
) -> dict[str, float]:
    """Truths over the population of instances (studies that resample instances).

    Each instance's population means come from `draws` samples per class: the
    Monte Carlo noise adds about (noise variance) / draws to each divergence,
    far below the intervals' width.
    """
    rng = np.random.default_rng(seed)
    effects = instance_effects(design, rng, instances)
    means, jsdiv = population_means(design, base, effects, draws, rng)
    pairs = [(i, i + 1) for i in range(0, instances - 1, 2)]  # independent pairs of distinct instances
    return {"consistency_jsdiv": float(jsdiv.mean()), **pair_truths(means, pairs)}


def coverage(
    design: Design,
    n_instances: int,
    studies: int,
    replicates: int = 250,
    seed: int = 0,
    keys: tuple[str, ...] = ("consistency_jsdiv", "consistency_instances", "consistency_concordance"),
) -> dict:
    """Share of `studies` whose 95% interval covers the truth, per score.

    With 2 instances the instances stay fixed (the interval is about another
    sample of pixels for these models); from 3 up every study trains new
    instances (the interval is about another training run too).
    """
    base = base_profiles(design)
    rng = np.random.default_rng(seed)
    fixed = n_instances < 3
    if fixed:
        effects = instance_effects(design, np.random.default_rng(seed + 1), n_instances)
        truth = truths_fixed(design, base, effects)
    else:
        truth = truths_population(design, base)
    hits = {k: 0 for k in keys}
    below = {k: 0 for k in keys}
    estimates = {k: [] for k in keys}
    for s in range(studies):
        if not fixed:
            effects = instance_effects(design, rng, n_instances)
        result = scores(study(design, base, effects, rng), replicates=replicates, seed=s).metrics
        for k in keys:
            low, high = result[f"{k}_ci"]
            hits[k] += low <= truth[k] <= high
            below[k] += high < truth[k]
            estimates[k].append(result[k])
    return {
        k: {
            "truth": truth[k],
            "coverage": hits[k] / studies,
            "interval_below_truth": below[k] / studies,
            "mean_estimate": float(np.mean(estimates[k])),
        }
        for k in keys
    }


def sample_size_shift(design: Design, small: int, large: int, studies: int, seed: int = 0) -> dict:
    """Mean scores over `studies` at `small` and at `large` samples per class, for two fixed instances.

    With design.instance_sd 0 (the default case of the tests) the instances differ by per-sample noise only.
    """
    design = Design(**{**design.__dict__, "correct_rate": 1.0})
    base = base_profiles(design)
    if design.instance_sd == 0:
        effects = np.ones((2, design.classes, design.bands))
    else:
        effects = instance_effects(design, np.random.default_rng(seed + 1), 2)
    rng = np.random.default_rng(seed)
    out = {}
    for n in (small, large):
        runs = [
            scores(study(design, base, effects, rng, n_per_class=n), replicates=10, seed=s).metrics
            for s in range(studies)
        ]
        out[n] = {
            k: float(np.nanmean([np.nan if r[k] is None else r[k] for r in runs]))
            for k in (
                "consistency_instances",
                "consistency_instances_plugin",
                "consistency_concordance",
                "consistency_jsdiv",
            )
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=400)
    args = parser.parse_args()
    designs = [
        ("2 instances, fixed (interval: another sample of pixels)", Design(), 2),
        ("3 instances, retraining variance instance_sd 0.6", Design(instance_sd=0.6), 3),
        ("3 instances, small retraining variance instance_sd 0.3", Design(), 3),
        ("5 instances, retraining variance instance_sd 0.6", Design(instance_sd=0.6), 5),
    ]
    for title, design, n_inst in designs:
        print(f"coverage of 95% intervals, {title}, {args.studies} studies:")
        for key, c in coverage(design, n_inst, args.studies).items():
            print(
                f"  {key:26s} truth {c['truth']:.4f}  coverage {c['coverage']:.3f}  "
                f"interval below truth {c['interval_below_truth']:.3f}  mean estimate {c['mean_estimate']:.4f}"
            )
    for title, design in (
        ("instances differing by noise only", Design(instance_sd=0.0)),
        ("instances that really differ (instance_sd 0.6), not the test's case", Design(instance_sd=0.6)),
    ):
        print(f"{title}: mean score over {args.studies} studies at 4 and 64 samples per class")
        shift = sample_size_shift(design, 4, 64, args.studies)
        for key in shift[4]:
            print(
                f"  {key:30s} {shift[4][key]:.4f} -> {shift[64][key]:.4f}  "
                f"(change {shift[64][key] - shift[4][key]:+.4f})"
            )


if __name__ == "__main__":
    main()
