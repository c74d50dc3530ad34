"""The segmenter, the discriminator and the attention gate.

Every network here is fully convolutional and maps [batch, channels, H, W] to
[batch, out, H, W] for any H and W, odd ones included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2), nn.BatchNorm2d(c_out), nn.ReLU())


def _match(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Pad (bottom/right) an upsampled map to the skip connection's size: pooling floors odd sides."""
    dh, dw = like.shape[-2] - x.shape[-2], like.shape[-1] - x.shape[-1]
    return F.pad(x, (0, dw, 0, dh)) if dh or dw else x


class UNetBody(nn.Module):
    """Two-level U-Net: [B, c_in, H, W] -> features F [B, base, H, W].

    Encoder: two 3x3 convs to `base`, max-pool, a 3x3 conv to 2*base, max-pool
    (the bottleneck). Decoder: transposed convs (kernel 2, stride 2), skip
    concatenation and 1x1 convs back to 2*base and then base channels.
    """

    def __init__(self, c_in: int, base: int):
        super().__init__()
        self.enc1 = nn.Sequential(_conv_bn(c_in, base, 3), _conv_bn(base, base, 3))
        self.enc2 = _conv_bn(base, 2 * base, 3)
        self.up2 = nn.ConvTranspose2d(2 * base, 2 * base, 2, stride=2)
        self.dec2 = _conv_bn(4 * base, 2 * base, 1)
        self.up1 = nn.ConvTranspose2d(2 * base, base, 2, stride=2)
        self.dec1 = _conv_bn(2 * base, base, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        bottleneck = F.max_pool2d(e2, 2)
        d2 = self.dec2(torch.cat([_match(self.up2(bottleneck), e2), e2], dim=1))
        return self.dec1(torch.cat([_match(self.up1(d2), e1), e1], dim=1))


class Segmenter(nn.Module):
    """S or T: bands -> 16-channel features F -> K class logits (1x1 conv `classifier`)."""

    def __init__(self, n_bands: int, n_classes: int, base: int = 16):
        super().__init__()
        self.body = UNetBody(n_bands, base)
        self.classifier = nn.Conv2d(base, n_classes, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x))


class Discriminator(nn.Module):
    """D on the segmenter's features: [B, 16, H, W] -> [B, n_out, H, W].

    n_out = K + 1 (classes 0..K-1: a source pixel of class k; K: a target pixel)
    or 2 for the binary ablation (0: source, 1: target).
    """

    def __init__(self, c_in: int, n_out: int, base: int = 32):
        super().__init__()
        self.body = UNetBody(c_in, base)
        self.head = nn.Conv2d(base, n_out, 1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(f))


class AttentionGate(nn.Module):
    """x * a with a = 1 + sigmoid(MLP(x.detach())) in (1, 2), per pixel.

    A learned per-pixel inverse temperature: gradients reach x through the
    product only, never through the gate's input, so the gate re-weights pixels
    without becoming a path for the segmenter to game. Training only.
    """

    def __init__(self, channels: int, widths: tuple[int, int] = (100, 50)):
        super().__init__()
        w1, w2 = widths
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, w1, 1), nn.BatchNorm2d(w1), nn.LeakyReLU(0.2),
            nn.Conv2d(w1, w2, 1), nn.BatchNorm2d(w2), nn.LeakyReLU(0.2),
            nn.Conv2d(w2, 1, 1))

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return 1.0 + torch.sigmoid(self.mlp(x.detach()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


def freeze(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def save_segmenter(path, net: Segmenter, meta: dict) -> None:
    """Tensors and plain metadata only, so loading works with weights_only=True."""
    torch.save({"state_dict": net.state_dict(), "meta": meta}, path)


def load_segmenter(path, device: torch.device | str = "cpu") -> tuple[Segmenter, dict]:
    from ..errors import HsixaiError

    if not path.is_file():
        raise HsixaiError(f"{path}: checkpoint not found (run the adapt stages in order: dvc repro adapt_evaluate)")
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    meta = checkpoint["meta"]
    net = Segmenter(meta["n_bands"], meta["n_classes"])
    net.load_state_dict(checkpoint["state_dict"])
    return net.to(device).eval(), meta
