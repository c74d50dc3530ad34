"""The adversarial game: modes of D and T in each step, frozen parts, losses, and the stopping rule on mean losses."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from hsixai.adapt.models import Segmenter, batchnorm_layers
from hsixai.adapt.training import Adaptation, Adversary, IterationLosses, StopRule, masked, pixel_ce
from hsixai.config import AdaptConfig

K, BANDS = 4, 6


def _tiny_job(arm: str, **cfg) -> Adaptation:
    torch.manual_seed(1)
    source = Segmenter(BANDS, K)
    x_s, x_t = torch.randn(1, BANDS, 12, 13), torch.randn(1, BANDS, 11, 9) + 0.5
    y_s = torch.randint(-1, K, (12, 13))
    few = torch.full((11, 9), -1)
    few[2, 3], few[5, 5], few[7, 1], few[9, 8] = 0, 1, 2, 3
    settings = {"iterations": 2, "d_steps": 2, "t_steps": 2, "t_lr": 0.01, "tile": 0, **cfg}
    return Adaptation(source, arm, AdaptConfig(**settings), K, 0, x_s, y_s, x_t, few)


def _record_modes(job: Adaptation, monkeypatch) -> list[tuple]:
    """(step kind, D training?, gate training?, T's BatchNorm training?) at every D and T loss."""
    calls = []
    adversary = job.adversary

    def bn_training() -> bool:
        modes = {m.training for _, m in batchnorm_layers(job.target)}
        assert len(modes) == 1
        return modes.pop()

    def spy(kind, original):
        def wrapped(*args, **kwargs):
            calls.append(
                (
                    kind,
                    adversary.disc.training,
                    adversary.attention.training if adversary.attention else None,
                    bn_training(),
                )
            )
            return original(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(adversary, "d_loss", spy("D", adversary.d_loss))
    monkeypatch.setattr(adversary, "t_loss", spy("T", adversary.t_loss))
    return calls


def test_d_is_in_eval_mode_during_t_steps_and_t_uses_target_statistics_only_there(monkeypatch):
    job = _tiny_job("kplus1_attention")
    calls = _record_modes(job, monkeypatch)
    job.iteration()
    assert [c[0] for c in calls] == ["D", "D", "T", "T"]
    assert all(c[1:] == (True, True, False) for c in calls if c[0] == "D"), "D steps: D trains, T on running stats"
    assert all(c[1:] == (False, False, True) for c in calls if c[0] == "T"), "T steps: D and gate in eval mode"


def test_t_steps_leave_d_and_its_gate_untouched(monkeypatch):
    """In eval mode D's running statistics stay; and T's optimiser holds no parameter of D."""
    job = _tiny_job("kplus1_attention", d_steps=1)
    before = {}

    def snapshot(*args, **kwargs):
        before.update({n: b.clone() for n, b in job.adversary.disc.named_buffers()})
        before.update({f"gate.{n}": b.clone() for n, b in job.adversary.attention.named_buffers()})
        before.update({f"p.{n}": p.clone() for n, p in job.adversary.disc.named_parameters()})
        return original(*args, **kwargs)

    original = job.adversary.t_loss
    monkeypatch.setattr(job.adversary, "t_loss", snapshot)
    job.iteration()
    after = {
        **{n: b for n, b in job.adversary.disc.named_buffers()},
        **{f"gate.{n}": b for n, b in job.adversary.attention.named_buffers()},
        **{f"p.{n}": p for n, p in job.adversary.disc.named_parameters()},
    }
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert not changed, changed


def test_the_earlier_train_mode_for_d_stays_reachable(monkeypatch):
    job = _tiny_job("kplus1_attention", d_mode_in_t_steps="train")
    calls = _record_modes(job, monkeypatch)
    job.iteration()
    assert all(c[1] and c[2] for c in calls if c[0] == "T")


def test_frozen_target_batchnorm_never_uses_target_statistics(monkeypatch):
    job = _tiny_job("kplus1", target_batchnorm="source")
    calls = _record_modes(job, monkeypatch)
    before = {n: b.clone() for n, b in job.target.named_buffers() if n.endswith("running_mean")}
    job.run()
    assert not any(c[3] for c in calls)
    assert all(torch.equal(b, before[n]) for n, b in job.target.named_buffers() if n in before)


@pytest.mark.parametrize(
    "arm, tile", [("finetune", 0), ("binary", 0), ("kplus1", 0), ("kplus1_attention", 0), ("kplus1_attention", 8)]
)
def test_source_stays_frozen_and_target_classifier_too(arm, tile):
    job = _tiny_job(arm, feature_attention=True, tile=tile, iterations=4)
    source_before = copy.deepcopy(job.source.state_dict())
    body_before = copy.deepcopy(job.target.body.state_dict())
    classifier_before = copy.deepcopy(job.target.classifier.state_dict())
    record = job.run()
    assert record.iterations == 4 and record.loss_t
    for name, value in job.source.state_dict().items():
        assert torch.equal(value, source_before[name]), f"S changed: {name}"
    for name, value in job.target.classifier.state_dict().items():
        assert torch.equal(value, classifier_before[name]), f"T's classifier changed: {name}"
    assert any(not torch.equal(v, body_before[n]) for n, v in job.target.body.state_dict().items()), "T learns"
    assert not any(p.requires_grad for p in job.source.parameters())
    assert not job.target.training


def test_discriminator_labels_target_pixels_as_class_k():
    job = _tiny_job("kplus1")
    adversary = job.adversary
    assert adversary.disc.head.out_channels == K + 1
    f_t, f_s = torch.randn(1, 16, 11, 9), torch.randn(1, 16, 12, 13)
    pixels = job.few >= 0
    loss = adversary.d_loss(f_t, pixels, f_s, job.y_s)
    expected = pixel_ce(adversary.disc(f_t), masked(torch.full_like(job.few, K), pixels)) + pixel_ce(
        adversary.disc(f_s), job.y_s
    )
    assert torch.allclose(loss, expected)
    assert Adversary.build("binary", K, False, torch.device("cpu")).disc.head.out_channels == 2


def test_ignored_pixels_do_not_change_the_loss():
    torch.manual_seed(0)
    logits = torch.randn(1, K, 6, 7)
    truth = torch.randint(0, K, (6, 7))
    keep = torch.rand(6, 7) < 0.3
    keep[0, 0] = True
    other = torch.where(keep, truth, (truth + 1) % K)  # differs exactly on the unlabelled pixels
    assert pixel_ce(logits, masked(truth, keep)) == pixel_ce(logits, masked(other, keep))
    expected = torch.nn.functional.cross_entropy(logits[0].permute(1, 2, 0)[keep], truth[keep])
    assert torch.allclose(pixel_ce(logits, masked(truth, keep)), expected)


def test_all_adaptation_pixels_are_the_target_region_only():
    """d_target_pixels: all = every pixel of the target region (for one scene, not the source's part)."""
    torch.manual_seed(0)
    region = torch.zeros(11, 9, dtype=torch.bool)
    region[:, 5:] = True
    few = torch.full((11, 9), -1)
    few[3, 6] = 1
    job = Adaptation(
        Segmenter(BANDS, K),
        "kplus1",
        AdaptConfig(d_target_pixels="all", tile=0),
        K,
        0,
        torch.randn(1, BANDS, 11, 9),
        torch.randint(-1, K, (11, 9)),
        torch.randn(1, BANDS, 11, 9),
        few,
        region,
    )
    assert torch.equal(job.adaptation_pixels, region)


def test_one_iteration_uses_one_tile_pair_for_every_step(monkeypatch):
    job = _tiny_job("kplus1", tile=8, d_steps=3, t_steps=2)
    shapes = []
    original = job.adversary.d_loss
    monkeypatch.setattr(
        job.adversary,
        "d_loss",
        lambda f_t, px, f_s, y: shapes.append((f_t.sum().item(), f_s.sum().item())) or original(f_t, px, f_s, y),
    )
    job.few[:] = 0  # every tile has labelled pixels
    job.iteration()
    assert len(shapes) == 3 and len(set(shapes)) == 1, "the D steps of one iteration see the same two tiles"


# --------------------------------------------------------------------------- the stopping rule
def _means(d=None, t=None, supervised=None) -> IterationLosses:
    return IterationLosses(d, t, supervised)


def _rule(rule="adversarial_losses", patience=3, reads_d=True) -> StopRule:
    return StopRule(rule, loss_d=1e-3, loss_t=0.05, loss_supervised=1.0, patience=patience, reads_d=reads_d)


def test_stop_rule_needs_patience_quiet_iterations_in_a_row_after_the_first():
    rule = _rule()
    quiet, loud = _means(1e-4, 0.01), _means(1e-2, 0.01)
    fired = [rule.update(m) for m in [quiet, quiet, quiet, loud, quiet, _means(1e-4, 0.04), _means(1e-4, 0.049)]]
    assert fired == [False, False, False, False, False, False, True]
    # As Lightning's EarlyStopping in the authors' code: the first value is an improvement, never part of a streak.
    first = _rule(patience=2)
    assert [first.update(quiet) for _ in range(3)] == [False, False, True]
    assert not _rule(patience=1).update(quiet), "the first iteration alone never stops a run"
    one = _rule(patience=1)
    one.update(quiet)
    assert not one.update(_means(1e-4, 0.06)), "both losses must be below their thresholds"
    one = _rule(patience=1)
    one.update(quiet)
    assert not one.update(_means(None, 0.01)), "an adversarial arm with no D step is not quiet"
    one = _rule(patience=1, reads_d=False)
    one.update(quiet)
    assert one.update(_means(None, 0.01)), "finetune has no D: its T loss decides"


def test_supervised_rule_reads_only_ts_own_ce_on_its_labels():
    """C2Seg: T's classifier's CE on the labelled target pixels below 1, whatever D's and T's adversarial losses."""
    rule = _rule("supervised_ce", patience=2)
    fired = [rule.update(m) for m in [_means(9.0, 9.0, 0.5), _means(9.0, 9.0, 0.9), _means(None, None, 0.99)]]
    assert fired == [False, False, True]
    rule = _rule("supervised_ce", patience=1)
    rule.update(_means(supervised=0.5))
    assert not rule.update(_means(1e-9, 1e-9, 1.0)), "1.0 is not below the threshold"
    assert not rule.update(_means(1e-9, 1e-9, None)), "an iteration without a T step is not quiet"


def _scripted_losses(job: Adaptation, monkeypatch, supervised_steps: list[float]) -> None:
    """T's supervised loss after each T step reads from `supervised_steps`, in order."""
    values = iter(supervised_steps)
    monkeypatch.setattr(job, "supervised_loss", lambda x_t, few: next(values))


def test_a_single_noisy_low_value_does_not_stop_a_run_a_sustained_low_mean_does(monkeypatch):
    """The rule reads each iteration's MEAN over its T steps: one low step among high ones is not quiet."""
    job = _tiny_job("kplus1_attention", iterations=8, d_steps=1, t_steps=4, stop_rule="supervised_ce", stop_patience=3)
    noisy = [3.0, 3.0, 3.0, 0.01]  # the last step far below the threshold of 1, the mean (2.25) above it
    _scripted_losses(job, monkeypatch, noisy * 8)
    record = job.run()
    assert record.iterations == 8 and not record.stopped_by_rule
    assert record.loss_supervised == pytest.approx([np.mean(noisy)] * 8)

    job = _tiny_job("kplus1_attention", iterations=8, d_steps=1, t_steps=4, stop_rule="supervised_ce", stop_patience=3)
    low = [0.7, 0.8, 0.9, 1.2]  # the last step above the threshold, the mean (0.9) below it
    _scripted_losses(job, monkeypatch, noisy * 2 + low * 6)
    record = job.run()
    assert record.stopped_by_rule and record.iterations == 5, "iterations 3, 4 and 5 quiet in a row"
    assert record.loss_supervised == pytest.approx([np.mean(noisy)] * 2 + [np.mean(low)] * 3)


def test_supervised_loss_is_ts_classifier_ce_on_the_labels_in_eval_mode():
    job = _tiny_job("kplus1")
    x_t, few = job.x_t, job.few
    job.target.train()
    before = {n: b.clone() for n, b in job.target.named_buffers()}
    value = job.supervised_loss(x_t, few)
    with torch.no_grad():
        expected = float(pixel_ce(copy.deepcopy(job.target).eval()(x_t), few))
    assert value == pytest.approx(expected)
    assert all(torch.equal(b, before[n]) for n, b in job.target.named_buffers()), "no running statistic moved"
    losses = job.iteration()
    assert losses.supervised is not None and losses.d is not None and losses.t is not None


def test_the_rule_reads_each_iterations_mean_loss_not_its_last_step(monkeypatch):
    """A run whose last step of every iteration is tiny, but whose mean is not, never stops."""
    job = _tiny_job(
        "kplus1",
        iterations=6,
        d_steps=4,
        t_steps=4,
        stop_rule="adversarial_losses",
        stop_patience=2,
        stop_loss_d=10.0,
        stop_loss_t=0.5,
    )
    t_values = iter([5.0, 5.0, 5.0, 0.01] * 6)
    steps = {"D": [], "T": []}
    d_original, t_original = job.adversary.d_loss, job.adversary.t_loss

    def d_loss(*args):
        loss = d_original(*args)
        steps["D"].append(float(loss.detach()))
        return loss

    def t_loss(*args):
        loss = t_original(*args)
        value = next(t_values)
        steps["T"].append(value)
        return loss * 0 + value  # the loss the step reports (gradient zero: T does not move)

    monkeypatch.setattr(job.adversary, "d_loss", d_loss)
    monkeypatch.setattr(job.adversary, "t_loss", t_loss)
    record = job.run()
    assert record.iterations == 6 and not record.stopped_by_rule
    assert record.loss_t == pytest.approx([np.mean([5.0, 5.0, 5.0, 0.01])] * 6)
    assert record.loss_d == pytest.approx([np.mean(steps["D"][i : i + 4]) for i in range(0, 24, 4)])


@pytest.mark.parametrize("stop_rule", ["supervised_ce", "adversarial_losses"])
def test_a_quiet_run_stops_by_the_rule(stop_rule):
    job = _tiny_job(
        "finetune",
        iterations=50,
        t_steps=3,
        t_lr=0.05,
        stop_rule=stop_rule,
        stop_patience=3,
        stop_loss_t=0.5,
        stop_loss_supervised=0.5,
    )
    record = job.run()
    curve = record.loss_supervised if stop_rule == "supervised_ce" else record.loss_t
    assert record.stopped_by_rule and record.iterations < 50
    assert len(curve) == record.iterations
    assert all(v < 0.5 for v in curve[-3:]), "the last patience iterations were quiet"
    assert record.iterations == 4 or curve[-4] >= 0.5, "and it stopped on the first such streak"
    assert record.loss_d == []


@pytest.mark.parametrize(
    "key, value, needle",
    [
        ("stop_rule", "d_only", "expected one of supervised_ce, adversarial_losses"),
        ("stop_loss_supervised", 0, "a positive number"),
        ("d_mode_in_t_steps", "frozen", "expected one of eval, train"),
        ("feature_map", "relu", "expected one of linear, batchnorm_relu"),
        ("tile", 4, "0 (whole scenes) or at least 8 pixels"),
    ],
)
def test_ablation_switches_are_validated_in_one_line(key, value, needle):
    from hsixai.config import params_from_dict
    from hsixai.errors import HsixaiError

    with pytest.raises(HsixaiError) as err:
        params_from_dict({"adapt": {key: value}})
    message = str(err.value)
    assert message.startswith(f"params: adapt.{key}: ") and needle in message and "\n" not in message, message
