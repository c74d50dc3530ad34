"""Paired intervals over seeds (coverage by simulation), and scoring as trained and after recalibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from hsixai.adapt.common import Prepared, recalibrate
from hsixai.adapt.models import Segmenter
from hsixai.adapt.scoring import paired_interval, predict, score_segmenter
from hsixai.adapt.training import train_arm
from hsixai.config import AdaptConfig

K, BANDS = 3, 5


def test_paired_interval_by_hand():
    a, b = [0.50, 0.62, 0.55, 0.58, 0.47], [0.40, 0.45, 0.50, 0.41, 0.44]
    d = np.subtract(a, b)
    half = stats.t.ppf(0.975, 4) * d.std(ddof=1) / np.sqrt(5)
    out = paired_interval(a, b)
    assert out["mean"] == pytest.approx(d.mean()) and out["n"] == 5
    assert (out["low"], out["high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert paired_interval([0.5], [0.4])["low"] is None, "no interval from one seed"


@pytest.mark.parametrize("n", [5, 8])
def test_t_interval_covers_the_true_mean_difference_95_percent_of_the_time(n):
    """Per-seed differences drawn around a known mean: the 95% interval covers it in about 95% of 4000 trials
    (binomial standard error 0.0034, so [0.935, 0.965] is a +-4.4 se band)."""
    rng = np.random.default_rng(0)
    truth, trials, hits = 0.04, 4000, 0
    for _ in range(trials):
        base = rng.uniform(0.3, 0.6, n)  # seed-to-seed variation shared by both arms: pairing removes it
        arm = base + truth + rng.normal(0, 0.05, n)
        out = paired_interval(arm, base)
        hits += out["low"] <= truth <= out["high"]
    assert 0.935 <= hits / trials <= 0.965


def test_pairing_is_what_makes_the_interval_narrow():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.2, 0.8, 5)
    arm = base + 0.05 + rng.normal(0, 0.01, 5)
    paired = paired_interval(arm, base)
    assert paired["low"] > 0, "a consistent per-seed gain is detected despite a large seed-to-seed spread"
    unpaired_half = stats.t.ppf(0.975, 8) * np.sqrt(arm.var(ddof=1) / 5 + base.var(ddof=1) / 5)
    assert paired["high"] - paired["low"] < unpaired_half


def _prep() -> Prepared:
    torch.manual_seed(0)
    h, w = 12, 14
    source, target = torch.randn(1, BANDS, h, w), torch.randn(1, BANDS, h, w) * 2 + 1
    labels = torch.randint(-1, K, (h, w))
    region = torch.ones(h, w, dtype=torch.bool)
    return Prepared("two_scenes", source, target, labels, labels, labels, labels, labels, region, BANDS, False)


def test_recalibrated_scores_use_the_whole_target_scene():
    torch.manual_seed(0)
    prep, net = _prep(), Segmenter(BANDS, K)
    scored = score_segmenter(net, prep, K)
    assert np.array_equal(scored.maps["as_trained"], predict(net, prep.target))
    assert np.array_equal(scored.maps["recalibrated"], predict(recalibrate(net, prep.target), prep.target))
    assert not np.array_equal(scored.maps["as_trained"], scored.maps["recalibrated"])


def test_adabn_arm_is_source_only_recalibrated():
    torch.manual_seed(0)
    prep, net = _prep(), Segmenter(BANDS, K)
    adabn, record, gate = train_arm(net, "adabn", AdaptConfig(), K, 0, prep, prep.target_pool)
    assert record.iterations == 0 and gate is None
    assert np.array_equal(predict(adabn, prep.target), score_segmenter(net, prep, K).maps["recalibrated"])
