import logging

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from hsixai.xai.consistency import (
    Profiles,
    basic_interval,
    bootstrap_plan,
    distance_to_uniform,
    js_distance,
    normalise,
    scores,
    triangular_discrimination,
)

from .. import simulation

NAMES = ["a", "b"]


def _data(profiles, labels, correct=None, names=NAMES, ring_mass=None):
    profiles = np.asarray(profiles, dtype=float)
    correct = np.ones(profiles.shape[:2], bool) if correct is None else np.asarray(correct)
    return Profiles(
        profiles,
        np.asarray(labels),
        correct,
        np.arange(profiles.shape[2], dtype=float),
        names,
        None if ring_mass is None else np.asarray(ring_mass, dtype=float),
    )


def test_published_check_value():
    p, _ = normalise(np.array([0.1, 0.2, 0.3]))
    assert distance_to_uniform(p) == pytest.approx(0.180361, abs=1e-6)


def test_js_distance_matches_scipy():
    rng = np.random.default_rng(0)
    p, q = rng.random((2, 50, 17))
    p /= p.sum(axis=1, keepdims=True)
    q /= q.sum(axis=1, keepdims=True)
    ours = js_distance(p, q)
    theirs = [jensenshannon(a, b, base=2) for a, b in zip(p, q)]
    assert np.allclose(ours, theirs, atol=1e-12)


def test_triangular_discrimination_by_hand_and_bounds_on_js():
    assert triangular_discrimination(np.array([0.5, 0.5, 0.0]), np.array([0.25, 0.25, 0.5])) == pytest.approx(
        2 * 0.25**2 / 0.75 + 0.25 / 0.5
    )
    assert triangular_discrimination(np.eye(3)[0], np.eye(3)[1]) == pytest.approx(2.0)
    rng = np.random.default_rng(1)
    p, q = rng.dirichlet(np.full(9, 0.5), size=(2, 500))
    ratio = js_distance(p, q) ** 2 / (triangular_discrimination(p, q) / 2)
    assert ratio.min() >= 1 / (2 * np.log(2)) - 1e-9 and ratio.max() <= 1 + 1e-9  # Topsoe's bounds


def test_uniform_profiles_score_one_and_one_hot_profiles_score_low():
    bands = 8
    uniform = np.ones((2, 4, bands))
    s = scores(_data(uniform, [0, 0, 1, 1]), replicates=20).metrics
    assert s["consistency_jsdiv"] == pytest.approx(1.0)
    assert s["consistency_instances"] == pytest.approx(1.0)
    assert s["consistency_concordance"] is None  # flat profiles have no shape to agree on
    one_hot = np.zeros((2, 4, bands))
    one_hot[:, :, 3] = 1.0
    expected = 1 - jensenshannon(np.eye(bands)[3], np.full(bands, 1 / bands), base=2)
    assert scores(_data(one_hot, [0, 0, 1, 1]), replicates=20).metrics["consistency_jsdiv"] == pytest.approx(expected)


def test_identical_and_disjoint_instances():
    rng = np.random.default_rng(1)
    base = rng.random((1, 6, 5))
    identical = np.repeat(base, 3, axis=0)
    s = scores(_data(identical, [0, 0, 0, 1, 1, 1]), replicates=30).metrics
    assert s["consistency_instances"] == pytest.approx(1.0)
    assert s["consistency_instances_ci"] == pytest.approx([1.0, 1.0])
    assert s["consistency_concordance"] == pytest.approx(1.0)
    disjoint = np.zeros((2, 6, 5))
    disjoint[0, :, 0] = 1.0  # instance 0 explains with band 0 only
    disjoint[1, :, 1] = 1.0  # instance 1 with band 1 only
    s = scores(_data(disjoint, [0, 0, 0, 1, 1, 1]), replicates=30).metrics
    assert s["consistency_instances"] == pytest.approx(0.0, abs=1e-12)
    assert s["pairwise_divergence"][0][1] == pytest.approx(1.0)
    # two one-hot shapes on different bands: 1 - |e0 - e1|^2 / (2 |e0 - u|^2) = 1 - 2 / (2 (1 - 1/5)) = -0.25
    assert s["consistency_concordance"] == pytest.approx(-0.25)


def test_jsdiv_recomputed_with_scipy_loop():
    rng = np.random.default_rng(2)
    profiles = rng.random((2, 30, 9)) ** 3
    labels = np.repeat([0, 1], 15)
    correct = rng.random((2, 30)) > 0.3
    s = scores(_data(profiles, labels, correct), replicates=20).metrics
    per_instance = []
    for i in range(2):
        class_means = []
        for k in (0, 1):
            d = [
                jensenshannon(profiles[i, j], np.ones(9) / 9, base=2)
                for j in range(30)
                if labels[j] == k and correct[i, j]
            ]
            class_means.append(np.mean(d))
        per_instance.append(1 - np.mean(class_means))
    assert s["consistency_jsdiv"] == pytest.approx(np.mean(per_instance), abs=1e-12)


def test_instances_score_recomputed_pair_by_pair():
    """The U-statistic: squared mean differences from products of distinct samples only, per pair's common samples."""
    rng = np.random.default_rng(3)
    profiles = rng.random((3, 20, 6)) ** 2
    labels = np.repeat([0, 1], 10)
    correct = rng.random((3, 20)) > 0.2
    s = scores(_data(profiles, labels, correct), replicates=20).metrics
    normalised = profiles / profiles.sum(axis=2, keepdims=True)
    per_class = []
    for k in (0, 1):
        per_pair = []
        for i, j in ((0, 1), (0, 2), (1, 2)):
            draws = [t for t in range(20) if labels[t] == k and correct[i, t] and correct[j, t]]
            x = normalised[i, draws] - normalised[j, draws]
            cross = sum(
                np.outer(x[s_], x[t]).diagonal() for s_ in range(len(draws)) for t in range(len(draws)) if s_ != t
            ) / (len(draws) * (len(draws) - 1))
            scale = normalised[i, draws].mean(axis=0) + normalised[j, draws].mean(axis=0)
            per_pair.append((cross / scale).sum() / 2)
        per_class.append(np.mean(per_pair))
    assert s["consistency_instances"] == pytest.approx(1 - np.mean(per_class), abs=1e-12)
    assert s["per_class"]["a"]["common_per_pair"] == [
        int((correct[i, :10] & correct[j, :10]).sum()) for i, j in ((0, 1), (0, 2), (1, 2))
    ]


def test_pairs_use_only_samples_both_instances_get_right():
    profiles = np.ones((2, 6, 3))
    profiles[0, 1] = [1, 0, 0]  # differs, but instance 1 got sample 1 wrong: must not count
    correct = np.array([[1, 1, 1, 1, 1, 1], [1, 0, 1, 1, 1, 1]], bool)
    s = scores(_data(profiles, [0, 0, 0, 1, 1, 1], correct), replicates=20).metrics
    assert s["per_class"]["a"]["common_per_pair"] == [2]
    assert s["consistency_instances"] == pytest.approx(1.0)


def test_bootstrap_is_seeded_and_paired_across_experiments():
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1], 30)
    data = _data(rng.random((3, 60, 12)), labels)
    a, b = scores(data, replicates=100, seed=7).metrics, scores(data, replicates=100, seed=7).metrics
    c = scores(data, replicates=100, seed=8).metrics
    assert a["consistency_jsdiv_ci"] == b["consistency_jsdiv_ci"]
    assert a["consistency_instances_ci"] == b["consistency_instances_ci"]
    assert a["consistency_jsdiv_ci"] != c["consistency_jsdiv_ci"]
    # Another experiment on the same xAI sample (other profiles, same labels, seed and instance count)
    # draws the very same samples and instances in every replicate: differences can be bootstrapped pairwise.
    one, other = bootstrap_plan(labels, 2, 3, 100, 7), bootstrap_plan(labels, 2, 3, 100, 7)
    assert all(np.array_equal(x, y) for x, y in zip(one.sample_counts, other.sample_counts))
    assert np.array_equal(one.instance_counts, other.instance_counts)


def test_instances_are_resampled_from_three_up_and_never_alone():
    labels = np.repeat([0, 1], 5)
    two = bootstrap_plan(labels, 2, 2, 200, 0)
    assert not two.resample_instances and np.all(two.instance_counts == 1)
    three = bootstrap_plan(labels, 2, 3, 200, 0)
    assert three.resample_instances and np.all(three.instance_counts.sum(axis=1) == 3)
    assert np.all((three.instance_counts > 0).sum(axis=1) >= 2)  # every replicate has a pair to compare
    assert len({tuple(row) for row in three.instance_counts}) > 3


def test_basic_interval_reflects_a_biased_bootstrap():
    """Replicates that sit below the centre (a statistic biased upwards by resampling) move the interval up."""
    replicates = np.linspace(0.40, 0.45, 1001)
    low, high = basic_interval(0.5, replicates, centre=0.5)
    assert 0.5 < low < high and low == pytest.approx(0.55125) and high == pytest.approx(0.59875)
    assert basic_interval(0.5, replicates, centre=0.425) == pytest.approx([0.5 - 0.02375, 0.5 + 0.02375])


def test_interval_coverage_with_two_instances():
    """95% intervals cover the truth (these two models, another sample of pixels) in 90-99% of 200 studies."""
    result = simulation.coverage(simulation.Design(), n_instances=2, studies=200)
    for key in ("consistency_jsdiv", "consistency_instances", "consistency_concordance"):
        assert 0.90 <= result[key]["coverage"] <= 0.99, (key, result[key])


def test_interval_coverage_with_retraining_variance():
    """Three instances, new ones each study: intervals cover the population truth in 90-99% of 200 studies."""
    result = simulation.coverage(simulation.Design(instance_sd=0.6), n_instances=3, studies=200)
    for key in ("consistency_jsdiv", "consistency_instances", "consistency_concordance"):
        assert 0.90 <= result[key]["coverage"] <= 0.99, (key, result[key])


def test_cross_instance_score_does_not_move_with_sample_count():
    """Instances that differ only by noise: 4 or 64 samples per class give the same score on average.

    The plug-in statistic of earlier versions moves by far more (the test can fail).
    """
    shift = simulation.sample_size_shift(simulation.Design(instance_sd=0.0), small=4, large=64, studies=200)
    assert abs(shift[64]["consistency_instances"] - shift[4]["consistency_instances"]) < 0.02
    assert shift[64]["consistency_instances_plugin"] - shift[4]["consistency_instances_plugin"] > 0.05
    assert shift[64]["consistency_instances"] == pytest.approx(1.0, abs=0.01)  # the no-disagreement value


def test_flattening_leaves_concordance_unchanged_and_raises_consistency_instances():
    design = simulation.Design(instance_sd=0.6, samples_per_class=32)
    base = simulation.base_profiles(design)
    effects = simulation.instance_effects(design, np.random.default_rng(4), 2)
    data = simulation.study(design, base, effects, np.random.default_rng(5))
    normalised, _ = normalise(data.profiles)
    before = scores(data, replicates=50).metrics
    for amount in (0.3, 0.7):
        flat = (1 - amount) * normalised + amount / normalised.shape[2]
        flat[~data.correct] = 0.0
        after = scores(
            Profiles(flat, data.labels, data.correct, data.wavelengths, data.class_names), replicates=50
        ).metrics
        assert after["consistency_concordance"] == pytest.approx(before["consistency_concordance"], abs=0.02)
        assert after["consistency_instances"] > before["consistency_instances"] + 0.01
        assert after["consistency_jsdiv"] > before["consistency_jsdiv"]


def test_centre_share_and_radial_profile_per_class_and_overall():
    labels = [0, 0, 1, 1]
    rings = np.zeros((2, 4, 3))
    rings[:, :2] = [1.0, 8.0, 16.0]  # class a: a uniform 5 x 5 map (1, 8 and 16 pixels per ring)
    rings[:, 2:] = [3.0, 1.0, 0.0]  # class b: three quarters of the mass on the centre pixel
    computed = scores(_data(np.ones((2, 4, 6)), labels, ring_mass=rings), replicates=30, patch_size=5)
    s = computed.metrics
    assert s["per_class"]["a"]["centre_share"] == pytest.approx(1 / 25)
    assert s["per_class"]["b"]["radial_profile"] == pytest.approx([0.75, 0.25, 0.0])
    assert s["centre_share"] == pytest.approx((1 / 25 + 0.75) / 2)
    assert sum(s["radial_profile"]) == pytest.approx(1.0)
    assert s["centre_share_uniform"] == pytest.approx(1 / 25)
    assert s["centre_share_ci"] == pytest.approx([s["centre_share"]] * 2)  # every sample alike: no spread
    assert "centre_share" in computed.bootstrap and len(computed.bootstrap["centre_share"]["replicates"]) == 30


def test_class_without_usable_samples_is_reported_and_left_out(caplog):
    profiles = np.ones((2, 4, 3))
    correct = np.array([[1, 1, 0, 0], [1, 1, 0, 0]], bool)  # class b never right
    with caplog.at_level(logging.WARNING):
        s = scores(_data(profiles, [0, 0, 1, 1], correct), replicates=20).metrics
    assert s["per_class"]["b"]["usable_per_instance"] == [0, 0] and s["per_class"]["b"]["samples"] == 2
    assert s["per_class"]["b"]["consistency_jsdiv"] is None
    assert s["consistency_jsdiv"] == pytest.approx(1.0)  # class a alone
    assert "class b: no usable samples" in caplog.text


def test_all_zero_profiles_are_dropped_and_counted(caplog):
    profiles = np.ones((2, 6, 3))
    profiles[1, 0] = 0.0
    with caplog.at_level(logging.WARNING):
        s = scores(_data(profiles, [0, 0, 0, 1, 1, 1]), replicates=20).metrics
    assert s["dropped_zero_profiles"] == 1
    assert s["per_class"]["a"]["usable_per_instance"] == [3, 2] and s["per_class"]["a"]["common_per_pair"] == [2]
    assert "all-zero profiles" in caplog.text
    assert np.isfinite(s["consistency_jsdiv"])


def test_single_instance_has_no_instance_consistency(caplog):
    with caplog.at_level(logging.WARNING):
        s = scores(_data(np.ones((1, 4, 3)), [0, 0, 1, 1]), replicates=20).metrics
    for key in ("consistency_instances", "consistency_concordance"):
        assert s[key] is None and s[f"{key}_ci"] is None
    assert "at least 2 model instances" in s["consistency_instances_note"]


def test_scores_parts_metrics_bootstrap_and_mean_profiles():
    profiles = np.array(
        [[[1.0, 3.0], [1.0, 1.0], [2.0, 2.0], [0.0, 5.0]], [[3.0, 1.0], [1.0, 1.0], [1.0, 1.0], [5.0, 0.0]]]
    )
    correct = np.array([[True, True, True, False], [True, True, True, True]])
    computed = scores(_data(profiles, [0, 0, 1, 1], correct), replicates=10)
    assert not any(key.startswith("_") for key in computed.metrics)
    assert computed.bootstrap["consistency_jsdiv"]["estimate"] == computed.metrics["consistency_jsdiv"]
    assert len(computed.bootstrap["consistency_jsdiv"]["replicates"]) == 10
    # [instances, classes, bands]: the mean normalised profile over the samples each instance got right
    np.testing.assert_allclose(computed.mean_profiles, [[[0.375, 0.625], [0.5, 0.5]], [[0.625, 0.375], [0.75, 0.25]]])
