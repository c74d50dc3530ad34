"""The segmenter, the discriminator and the attention gate (docs/adaptation.md, "Method").

Every network here is fully convolutional and maps [batch, channels, H, W] to
[batch, out, H, W] for any H and W, odd ones included. The layer stacks follow
the authors' code (AGSSGTL): a two-level U-Net whose decoder is linear (1x1
convolutions, no BatchNorm or ReLU), so the feature map F that the frozen
classifier and the discriminator read is a linear map of the decoder's inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_MAPS = ("linear", "batchnorm_relu")


def _conv_bn_relu(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2), nn.BatchNorm2d(c_out), nn.ReLU())


def _decoder_conv(c_in: int, c_out: int, feature_map: str) -> nn.Module:
    """A 1x1 decoder convolution: linear as published, or followed by BatchNorm and ReLU (the earlier hsixai)."""
    if feature_map == "linear":
        return nn.Conv2d(c_in, c_out, 1)
    if feature_map == "batchnorm_relu":
        return _conv_bn_relu(c_in, c_out, 1)
    raise ValueError(f"feature_map: expected one of {FEATURE_MAPS}, found {feature_map!r}")


def _match(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Pad (bottom/right) an upsampled map to the skip connection's size: pooling floors odd sides."""
    dh, dw = like.shape[-2] - x.shape[-2], like.shape[-1] - x.shape[-1]
    return F.pad(x, (0, dw, 0, dh)) if dh or dw else x


class UNetBody(nn.Module):
    """Two-level U-Net: [B, c_in, H, W] -> features F [B, base, H, W].

    Encoder: two 3x3 conv-BatchNorm-ReLU to `base`, max-pool, one 3x3
    conv-BatchNorm-ReLU to 2*base, max-pool (the bottleneck). Decoder:
    transposed convs (kernel 2, stride 2), skip concatenation and 1x1 convs
    back to 2*base and then base channels; `feature_map` says whether those
    1x1 convs are linear (published) or followed by BatchNorm and ReLU.
    """

    def __init__(self, c_in: int, base: int, feature_map: str = "linear"):
        super().__init__()
        self.enc1 = nn.Sequential(_conv_bn_relu(c_in, base, 3), _conv_bn_relu(base, base, 3))
        self.enc2 = _conv_bn_relu(base, 2 * base, 3)
        self.up2 = nn.ConvTranspose2d(2 * base, 2 * base, 2, stride=2)
        self.dec2 = _decoder_conv(4 * base, 2 * base, feature_map)
        self.up1 = nn.ConvTranspose2d(2 * base, base, 2, stride=2)
        self.dec1 = _decoder_conv(2 * base, base, feature_map)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        bottleneck = F.max_pool2d(e2, 2)
        d2 = self.dec2(torch.cat([_match(self.up2(bottleneck), e2), e2], dim=1))
        return self.dec1(torch.cat([_match(self.up1(d2), e1), e1], dim=1))


class Segmenter(nn.Module):
    """S or T: bands -> 16-channel features F -> K class logits (1x1 conv `classifier`)."""

    def __init__(self, n_bands: int, n_classes: int, base: int = 16, feature_map: str = "linear"):
        super().__init__()
        self.body = UNetBody(n_bands, base, feature_map)
        self.classifier = nn.Conv2d(base, n_classes, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x))


class Discriminator(nn.Module):
    """D on the segmenter's features: [B, 16, H, W] -> [B, n_out, H, W], the published U-Net with 32 base channels.

    n_out = K + 1 (classes 0..K-1: a source pixel of class k; K: a target pixel)
    or 2 for the binary ablation (0: source, 1: target).
    """

    def __init__(self, c_in: int, n_out: int, base: int = 32):
        super().__init__()
        self.body = UNetBody(c_in, base, "linear")
        self.head = nn.Conv2d(base, n_out, 1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(f))


class AttentionGate(nn.Module):
    """x * a with a = 1 + sigmoid(MLP(x.detach())) in (1, 2), per pixel.

    The MLP acts on each pixel's channel vector [C] (pixels of every image are
    the BatchNorm1d batch): Linear(C, w) -> BatchNorm1d(w) -> LeakyReLU(0.01)
    for each hidden width w, then Linear(w_last, 1) -> BatchNorm1d(1). The
    final BatchNorm keeps the pre-sigmoid value near unit spread, so the gate
    spans most of (1, 2) from the start. On D's K + 1 logits the published
    widths are (100, 50); on T's feature map, (2,).

    A learned per-pixel inverse temperature: gradients reach x through the
    product only, never through the gate's input, so the gate re-weights pixels
    without becoming a path for the segmenter to game. Training only.
    """

    def __init__(self, channels: int, widths: tuple[int, ...] = (100, 50), slope: float = 0.01):
        super().__init__()
        layers: list[nn.Module] = []
        c = channels
        for w in widths:
            layers += [nn.Linear(c, w), nn.BatchNorm1d(w), nn.LeakyReLU(slope)]
            c = w
        layers += [nn.Linear(c, 1), nn.BatchNorm1d(1)]
        self.mlp = nn.Sequential(*layers)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] -> a [B, 1, H, W] in (1, 2), computed from a detached copy of x."""
        b, c, h, w = x.shape
        pixels = x.detach().permute(0, 2, 3, 1).reshape(-1, c)
        score = self.mlp(pixels).reshape(b, h, w, 1).permute(0, 3, 1, 2)
        return 1.0 + torch.sigmoid(score)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


def freeze(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def batchnorm_layers(net: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    """Every BatchNorm of `net` with its name, in definition order (= forward order for the networks here)."""
    return [(n, m) for n, m in net.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
