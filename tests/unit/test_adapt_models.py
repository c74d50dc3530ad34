"""Domain adaptation networks: shapes, the linear feature map, the published gate, checkpoints, recalibration."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from hsixai.adapt.common import load_segmenter, recalibrate, save_segmenter, tiles_of
from hsixai.adapt.models import AttentionGate, Discriminator, Segmenter, batchnorm_layers
from hsixai.errors import HsixaiError

K, BANDS = 4, 6


@pytest.mark.parametrize("height, width", [(17, 23), (9, 9), (32, 31), (5, 7)])
def test_segmenter_and_discriminator_keep_odd_sizes(height, width):
    seg, disc = Segmenter(BANDS, K), Discriminator(16, K + 1)
    x = torch.randn(2, BANDS, height, width)
    features = seg.features(x)
    assert features.shape == (2, 16, height, width)
    assert seg(x).shape == (2, K, height, width)
    assert disc(features).shape == (2, K + 1, height, width), "D has K + 1 outputs per pixel"


def _decoder_input(seg: Segmenter, x: torch.Tensor) -> torch.Tensor:
    seen = {}
    handle = seg.body.dec1.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    seg.features(x)
    handle.remove()
    return seen["x"]


def test_feature_map_before_the_classifier_is_linear():
    """F is the last decoder conv's output, affine in its input: no BatchNorm or ReLU between it and the classifier."""
    torch.manual_seed(0)
    seg = Segmenter(BANDS, K).eval()
    assert type(seg.body.dec1) is nn.Conv2d and type(seg.body.dec2) is nn.Conv2d
    a, b = _decoder_input(seg, torch.randn(1, BANDS, 12, 12)), _decoder_input(seg, torch.randn(1, BANDS, 12, 12))
    dec1 = seg.body.dec1
    for w in (0.3, -1.5, 4.0):  # affine: F(w a + (1 - w) b) = w F(a) + (1 - w) F(b), for w outside [0, 1] too
        assert torch.allclose(dec1(w * a + (1 - w) * b), w * dec1(a) + (1 - w) * dec1(b), atol=1e-5)
    x = torch.randn(1, BANDS, 12, 12)
    assert torch.equal(seg.features(x), dec1(_decoder_input(seg, x)))
    assert (seg.features(x) < 0).any(), "no ReLU: features take negative values"
    old = Segmenter(BANDS, K, feature_map="batchnorm_relu").eval()
    assert (old.features(x) >= 0).all(), "the earlier hsixai's feature map, kept for ablation, ends in a ReLU"


def test_gate_matches_the_published_layer_stack():
    gate = AttentionGate(K + 1)
    kinds = [
        (
            type(m),
            getattr(m, "in_features", None),
            getattr(m, "out_features", None),
            getattr(m, "num_features", None),
            getattr(m, "negative_slope", None),
        )
        for m in gate.mlp
    ]
    assert kinds == [
        (nn.Linear, K + 1, 100, None, None),
        (nn.BatchNorm1d, None, None, 100, None),
        (nn.LeakyReLU, None, None, None, 0.01),
        (nn.Linear, 100, 50, None, None),
        (nn.BatchNorm1d, None, None, 50, None),
        (nn.LeakyReLU, None, None, None, 0.01),
        (nn.Linear, 50, 1, None, None),
        (nn.BatchNorm1d, None, None, 1, None),
    ]
    feature_gate = AttentionGate(16, (2,))
    assert [type(m) for m in feature_gate.mlp] == [nn.Linear, nn.BatchNorm1d, nn.LeakyReLU, nn.Linear, nn.BatchNorm1d]


def test_gate_lies_in_1_2_is_wide_from_the_start_and_its_input_gets_no_gradient_through_it():
    torch.manual_seed(0)
    gate = AttentionGate(K + 1)
    x = (10 * torch.randn(3, K + 1, 8, 9)).requires_grad_(True)
    a = gate.gate(x)
    assert a.shape == (3, 1, 8, 9)
    assert bool((a > 1).all() and (a < 2).all())
    # The final BatchNorm1d(1) standardises the pre-sigmoid score: the spread of sigmoid(N(0, 1)) is about 0.2.
    assert 0.15 < float(a.detach().std()) < 0.25
    a.sum().backward()
    assert x.grad is None, "the gate is computed from a detached copy of its input"
    assert gate.mlp[0].weight.grad is not None, "the gate itself learns"
    x.grad = None
    gate(x).sum().backward()  # through the product only: d(sum(x * a))/dx = a
    assert torch.allclose(x.grad, gate.gate(x).expand_as(x).detach())


def test_gate_normalises_over_every_pixel_of_the_batch():
    """The BatchNorm1d batch is all pixels of all images, as the published reshape(-1, C) makes it."""
    torch.manual_seed(1)
    gate = AttentionGate(K + 1)
    x = torch.randn(2, K + 1, 5, 6)
    gate(x)
    pixels = x.permute(0, 2, 3, 1).reshape(-1, K + 1)
    hidden = gate.mlp[0](pixels)
    expected = 0.9 * torch.zeros(100) + 0.1 * hidden.mean(0)
    assert torch.allclose(gate.mlp[1].running_mean, expected.detach(), atol=1e-6)


# --------------------------------------------------------------------------- checkpoints
def test_checkpoints_round_trip_and_refuse_pickled_code(tmp_path):
    torch.manual_seed(0)
    net = Segmenter(BANDS, K, feature_map="batchnorm_relu").eval()
    path = tmp_path / "pair" / "source_0.pt"
    save_segmenter(path, net, {"n_bands": BANDS, "n_classes": K, "feature_map": "batchnorm_relu", "seed": 0})
    loaded, meta = load_segmenter(path)
    x = torch.randn(1, BANDS, 9, 9)
    assert torch.equal(loaded(x), net(x)) and meta["seed"] == 0 and not loaded.training
    bad = tmp_path / "bad.pt"
    with bad.open("wb") as f:
        pickle.dump({"state_dict": {}, "meta": {}, "code": print}, f)
    with pytest.raises(HsixaiError) as err:
        load_segmenter(bad)
    message = str(err.value)
    assert "\n" not in message and "refused: not a tensors-only checkpoint" in message and str(bad) in message
    with pytest.raises(HsixaiError, match="checkpoint not found"):
        load_segmenter(tmp_path / "missing.pt")


def test_device_errors_name_adapt_device(monkeypatch):
    from hsixai.adapt.common import device_of
    from hsixai.config import params_from_dict

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(HsixaiError, match=r"^params: adapt.device: 'cuda' was asked for"):
        device_of(params_from_dict({"adapt": {"device": "cuda"}}))
    assert device_of(params_from_dict({"adapt": {"device": "auto"}})) == torch.device("cpu")


# --------------------------------------------------------------------------- recalibration
def _bn_inputs(net: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each BatchNorm's input [C, pixels] on one eval-mode pass over x."""
    seen, handles = {}, []
    for name, bn in batchnorm_layers(net):
        handles.append(
            bn.register_forward_pre_hook(
                lambda m, args, name=name: seen.__setitem__(name, args[0].transpose(0, 1).reshape(args[0].shape[1], -1))
            )
        )
    with torch.no_grad():
        net.eval()(x)
    for h in handles:
        h.remove()
    return seen


@pytest.mark.parametrize("feature_map", ["linear", "batchnorm_relu"])
def test_recalibration_sets_whole_scene_statistics_and_nothing_else(feature_map):
    torch.manual_seed(0)
    net = Segmenter(BANDS, K, feature_map=feature_map)
    net.train()(torch.randn(1, BANDS, 16, 16) * 3 + 1)  # running statistics of another scene
    scene = torch.randn(1, BANDS, 21, 19) * 0.5 - 2
    calibrated = recalibrate(net, scene)
    assert not calibrated.training
    for p, q in zip(net.parameters(), calibrated.parameters()):
        assert torch.equal(p, q), "weights unchanged"
    inputs = _bn_inputs(calibrated, scene)
    assert len(inputs) == len(batchnorm_layers(net)) >= 3
    for name, bn in batchnorm_layers(calibrated):
        assert torch.allclose(bn.running_mean, inputs[name].mean(1), atol=1e-5), name
        assert torch.allclose(bn.running_var, inputs[name].var(1, unbiased=True), rtol=1e-4, atol=1e-6), name
        assert not torch.allclose(bn.running_mean, dict(batchnorm_layers(net))[name].running_mean, atol=1e-3)


def test_tiled_recalibration_pools_every_tile_of_the_scene():
    """With tiles (for scenes too large for one pass) the statistics are of all tiles' pixels together."""
    torch.manual_seed(0)
    net = Segmenter(BANDS, K)
    scene = torch.randn(1, BANDS, 20, 18)
    calibrated = recalibrate(net, scene, tile=8)
    first_name, first = batchnorm_layers(calibrated)[0]
    windows = tiles_of((20, 18), 8)
    assert windows == [(ys, xs) for ys in (slice(0, 8), slice(8, 20)) for xs in (slice(0, 8), slice(8, 18))]
    pooled = torch.cat([_bn_inputs(calibrated, scene[..., ys, xs])[first_name] for ys, xs in windows], dim=1)
    assert pooled.shape[1] == 20 * 18
    assert torch.allclose(first.running_mean, pooled.mean(1), atol=1e-5)
    assert torch.allclose(first.running_var, pooled.var(1), rtol=1e-4)
