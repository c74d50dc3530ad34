import math

import pytest
import torch
from torch import nn

from hsixai.models import CNN2D, PatchViT, build_model


@pytest.mark.parametrize("name", ["cnn2d", "vit"])
@pytest.mark.parametrize("p", [3, 5, 7, 9, 21])
def test_models_map_patches_to_logits(name, p):
    model = build_model(name, n_bands=20, n_classes=6, patch_size=p, n_comps=15).eval()
    with torch.no_grad():
        out = model(torch.randn(4, 20, p, p))
    assert out.shape == (4, 6) and torch.isfinite(out).all()


@pytest.mark.parametrize("p, tokens", [(3, 1), (5, 4), (7, 9), (9, 9), (11, 16), (21, 49)])
def test_vit_tokens_are_3x3_with_bottom_right_zero_padding(p, tokens):
    vit = PatchViT(n_bands=4, n_classes=3, patch_size=p, n_comps=2)
    x = torch.arange(2 * 2 * p * p, dtype=torch.float32).reshape(2, 2, p, p) + 1
    t = vit.tokens(x)
    assert t.shape == (2, tokens, 2 * 9)
    assert vit.pos.shape == (1, tokens + 1, 128)
    # token 0 holds channel 0 then channel 1 of the top-left 3x3 block
    assert torch.equal(t[0, 0, :9], x[0, 0, :3, :3].reshape(-1))
    assert torch.equal(t[0, 0, 9:], x[0, 1, :3, :3].reshape(-1))
    # the padded tail of the last token is zero exactly when p is not a multiple of 3
    grid = math.ceil(p / 3)
    assert (t[0, -1] == 0).any().item() == (grid * 3 != p)


def test_cnn_architecture():
    m = CNN2D(n_bands=174, n_classes=6, patch_size=9, n_comps=15)
    convs = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (174, 15, (1, 1)),
        (15, 32, (3, 3)),
        (32, 64, (3, 3)),
        (64, 128, (3, 3)),
        (128, 256, (3, 3)),
    ]
    linears = [mod for mod in m.modules() if isinstance(mod, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(256, 256), (256, 128), (128, 6)]
    assert sum(isinstance(mod, nn.Dropout) and mod.p == 0.5 for mod in m.modules()) == 2


def test_vit_architecture():
    m = PatchViT(n_bands=174, n_classes=6, patch_size=9, n_comps=15)
    layers = m.blocks.layers
    assert len(layers) == 6
    assert all(b.norm_first and b.self_attn.num_heads == 4 and b.linear1.out_features == 256 for b in layers)
    assert m.embed[0].in_features == 15 * 9 and m.embed[0].out_features == 128


def test_initialisation():
    torch.manual_seed(0)
    m = CNN2D(n_bands=174, n_classes=6, patch_size=9)
    bns = [mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)]
    assert all(torch.all(b.weight == 1) and torch.all(b.bias == 0) for b in bns)
    conv = m.features[9]  # 128 -> 256, fan_out = 256 * 9
    assert abs(conv.weight.std().item() - math.sqrt(2 / (256 * 9))) < 0.003
    lin = m.head[0]  # Xavier normal: std = sqrt(2 / (fan_in + fan_out))
    assert abs(lin.weight.std().item() - math.sqrt(2 / 512)) < 0.005


def test_unknown_model_name():
    with pytest.raises(KeyError):
        build_model("resnet", 10, 3, 5, 4)
