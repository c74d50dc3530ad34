"""Domain adaptation networks and losses: shapes, frozen parts, ignored pixels, the attention gate."""

from __future__ import annotations

import copy

import pytest
import torch

from hsixai.adapt.adversarial import Adaptation, Adversary, adabn, batchnorm_on_target, converged, masked, pixel_ce
from hsixai.adapt.models import AttentionGate, Discriminator, Segmenter
from hsixai.config import AdaptConfig

K, BANDS = 4, 6


@pytest.mark.parametrize("height, width", [(17, 23), (9, 9), (32, 31), (5, 7)])
def test_segmenter_and_discriminator_keep_odd_sizes(height, width):
    seg, disc = Segmenter(BANDS, K), Discriminator(16, K + 1)
    x = torch.randn(2, BANDS, height, width)
    features = seg.features(x)
    assert features.shape == (2, 16, height, width)
    assert seg(x).shape == (2, K, height, width)
    assert disc(features).shape == (2, K + 1, height, width), "D has K + 1 outputs per pixel"


def test_gate_lies_in_1_2_and_its_input_gets_no_gradient_through_the_gate():
    torch.manual_seed(0)
    gate = AttentionGate(K + 1)
    x = (10 * torch.randn(3, K + 1, 8, 9)).requires_grad_(True)
    a = gate.gate(x)
    assert a.shape == (3, 1, 8, 9)
    assert bool((a > 1).all() and (a < 2).all())
    a.sum().backward()
    assert x.grad is None, "the gate is computed from a detached copy of its input"
    assert gate.mlp[0].weight.grad is not None, "the gate itself learns"
    # Through the product, x's gradient is exactly the gate: d(sum(x * a))/dx = a when a ignores x.
    x.grad = None
    gate(x).sum().backward()
    assert torch.allclose(x.grad, gate.gate(x).expand_as(x).detach())


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


def _tiny_job(arm: str, **cfg) -> Adaptation:
    torch.manual_seed(1)
    source = Segmenter(BANDS, K)
    x_s, x_t = torch.randn(1, BANDS, 12, 13), torch.randn(1, BANDS, 11, 9)
    y_s = torch.randint(-1, K, (12, 13))
    few = torch.full((11, 9), -1)
    few[2, 3], few[5, 5], few[7, 1], few[9, 8] = 0, 1, 2, 3
    settings = {"iterations": 2, "d_steps": 2, "t_steps": 2, "t_lr": 0.01, "tile": 0, **cfg}
    return Adaptation(source, arm, AdaptConfig(**settings), K, 0, x_s, y_s, x_t, few)


@pytest.mark.parametrize("arm, tile", [("finetune", 0), ("binary", 0), ("kplus1", 0), ("kplus1_attention", 0),
                                       ("kplus1_attention", 8)])
def test_source_stays_frozen_and_target_classifier_too(arm, tile):
    job = _tiny_job(arm, feature_attention=True, tile=tile, iterations=4)
    source_before = copy.deepcopy(job.source.state_dict())
    body_before = copy.deepcopy(job.target.body.state_dict())
    classifier_before = copy.deepcopy(job.target.classifier.state_dict())
    record = job.run()
    assert record["iterations"] >= 1 and record["loss_t"]
    for name, value in job.source.state_dict().items():
        assert torch.equal(value, source_before[name]), f"S changed: {name}"
    for name, value in job.target.classifier.state_dict().items():
        assert torch.equal(value, classifier_before[name]), f"T's classifier changed: {name}"
    assert any(not torch.equal(v, body_before[n]) for n, v in job.target.body.state_dict().items()), "T learns"
    assert not any(p.requires_grad for p in job.source.parameters())


def test_discriminator_labels_target_pixels_as_class_k():
    job = _tiny_job("kplus1")
    adversary = job.adversary
    assert adversary.disc.head.out_channels == K + 1
    f_t, f_s = torch.randn(1, 16, 11, 9), torch.randn(1, 16, 12, 13)
    pixels = job.few >= 0
    loss = adversary.d_loss(f_t, pixels, f_s, job.y_s)
    expected = (pixel_ce(adversary.disc(f_t), masked(torch.full_like(job.few, K), pixels))
                + pixel_ce(adversary.disc(f_s), job.y_s))
    assert torch.allclose(loss, expected)
    assert Adversary.build("binary", K, False, torch.device("cpu")).disc.head.out_channels == 2


def test_converged_needs_a_full_quiet_window():
    assert not converged([1.0, 1.0], patience=3, tolerance=0.05)
    assert converged([5.0, 1.0, 1.01, 0.99], patience=3, tolerance=0.05)
    assert not converged([1.0, 1.2, 1.0], patience=3, tolerance=0.05)


def test_adabn_sets_batchnorm_statistics_to_the_targets_and_nothing_else():
    job = _tiny_job("finetune")
    net = adabn(job.source, job.x_t)
    assert not net.training
    for p, q in zip(job.source.parameters(), net.parameters()):
        assert torch.equal(p, q)
    # What each BatchNorm sees on one training-mode pass over the target, by module name.
    probe, seen = batchnorm_on_target(copy.deepcopy(job.source)), {}

    def record(name):
        def hook(module, args):  # returns None: the input goes on unchanged
            seen[name] = args[0].mean((0, 2, 3))
        return hook

    for name, module in probe.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.register_forward_pre_hook(record(name))
    with torch.no_grad():
        probe(job.x_t)
    adapted = {n: m for n, m in net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert seen.keys() == adapted.keys() and seen
    for name, mean in seen.items():
        assert torch.allclose(adapted[name].running_mean, mean, atol=1e-5), name
        assert not torch.allclose(adapted[name].running_mean, dict(job.source.named_modules())[name].running_mean)


@pytest.mark.parametrize("mode", ["target", "source"])
def test_target_batchnorm_moves_running_statistics_only_when_asked(mode):
    job = _tiny_job("kplus1", target_batchnorm=mode)
    before = {n: b.clone() for n, b in job.target.named_buffers() if n.endswith("running_mean")}
    job.run()
    changed = any(not torch.equal(b, before[n]) for n, b in job.target.named_buffers() if n in before)
    assert changed == (mode == "target")
