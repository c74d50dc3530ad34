"""Seconds per adversarial iteration (20 D steps + 5 T steps) against scene and tile size.

An iteration as the `adapt` stage runs it (`Adaptation.iteration`, K+1 D with
the published gate, 174 bands, 6 classes) on random scenes: whole square
scenes of growing side (source and target alike), the default pairs' sizes
(two_scenes: source 96 x 96, target 80 x 80; shadow: one 96 x 96 scene) and
the earlier default pair (source 160 x 160, target 96 x 96) whole and on
random tiles. The baseline, measured in the same run and taking turns with
ours, recomputes the frozen source segmenter's features in every D step
instead of once per run (whole scenes) or once per iteration (tiles). Writes
bench/adapt.json.

    .venv/bin/python bench/bench_adapt.py [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import torch
from common import alternate, figure, options, save

from hsixai.adapt.models import Segmenter
from hsixai.adapt.training import Adaptation
from hsixai.config import AdaptConfig

BANDS, K = 174, 6


def job(source_side: int, target_side: int, tile: int, device: str) -> Adaptation:
    torch.manual_seed(0)
    x_s = torch.rand(1, BANDS, source_side, source_side, device=device)
    x_t = torch.rand(1, BANDS, target_side, target_side, device=device)
    y_s = torch.randint(-1, K, (source_side, source_side), device=device)
    few = torch.full((target_side, target_side), -1, device=device)
    idx = torch.randperm(target_side * target_side, device=device)[: 10 * K]
    few.view(-1)[idx] = torch.arange(10 * K, device=device) % K  # 10 labelled target pixels per class
    return Adaptation(
        Segmenter(BANDS, K).to(device), "kplus1_attention", AdaptConfig(tile=tile), K, 0, x_s, y_s, x_t, few
    )


def naive(j: Adaptation):
    """The same iteration, with S's frozen features recomputed for every D step."""
    d_loss = j.adversary.d_loss

    def recomputing(f_t, pixels, f_s, y_s):
        with torch.no_grad():
            f_s = j.source.features(j.x_s[..., : f_s.shape[-2], : f_s.shape[-1]])  # a window of the same size
        return d_loss(f_t, pixels, f_s, y_s)

    j.adversary.d_loss = recomputing
    return j.iteration


def main() -> None:
    args = options(__doc__)
    # (source side, target side, tile); 0 = whole scenes.
    cases = (
        [(32, 32, 0), (96, 80, 0)]
        if args.quick
        else [(32, 32, 0), (64, 64, 0), (96, 80, 0), (96, 96, 0), (160, 96, 0), (160, 96, 32), (160, 96, 64)]
    )
    figures = []
    for source_side, target_side, tile in cases:
        ours = job(source_side, target_side, tile, args.device)
        base = job(source_side, target_side, tile, args.device)
        times = alternate(
            {"ours": ours.iteration, "naive": naive(base)}, repeats=1 if args.quick else 2, device=args.device
        )
        where = f"source {source_side}^2, target {target_side}^2, " + (f"tiles {tile}^2" if tile else "whole scenes")
        name = f"iteration_s{source_side}_t{target_side}_" + (f"tile{tile}" if tile else "whole")
        figures.append(figure(name, times["ours"], "s", f"one adversarial iteration, {where}"))
        figures.append(
            figure(
                f"{name}_speedup",
                times["naive"] / times["ours"],
                "x",
                "against recomputing the frozen source features in every D step",
            )
        )
        print(
            f"{where}: {times['ours']:.2f} s per iteration ({times['naive'] / times['ours']:.2f}x the naive one)",
            flush=True,
        )
    save("adapt", {"figures": figures}, args.device)


if __name__ == "__main__":
    main()
