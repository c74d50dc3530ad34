"""Map throughput of `hsixai predict` on a full PRISMA-size scene, against the evaluation path, and peak RSS.

A random raw scene of the full PRISMA size (234 x 1215 x 1091 float32, 1.24 GB) and its prepared twin (the
174 kept bands scaled, what evaluate reads) are written to bench/scratch/map/ (not measured). For cnn2d and
vit at p = 5 and 9, a one-instance bundle of a randomly initialised network (throughput does not depend on
the weights; a bundle of n instances costs n times the forward passes) maps the same rows of the scene:

- map path: predict_map on `--window 0 0 ROWS 1091`, from the raw file: rows read in blocks, bands removed,
  scaled, a PatchSampler per block, models/inference.predict, GeoTIFFs written;
- evaluation path: models/inference.predict over a PatchSampler of the WHOLE prepared cube, for the same
  pixels (what evaluate does); its sampler build (the whole cube standardised and padded) is timed apart.

Each side runs in its own process (peak RSS from the kernel), one after the other, on a shared machine:
the load average is in results.json. The throughput ratio is map pixels/s over evaluation pixels/s
(predict only, and with its sampler build). A last run maps the WHOLE full-size scene through a sparse mask
(one pixel in 64 by default): every block of the scene is read, scaled and sampled as a full map would, so its peak RSS
is a full map's; only the forward passes are fewer. Writes bench/map.json.

    .venv/bin/python bench/bench_map.py [--quick] [--rows N] [--mask-step S]
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from bench_pipeline import PRISMA
from common import SCRATCH, figure, measure, options, save

ROOT = SCRATCH / "map"
POINTS = (("cnn2d", 5), ("cnn2d", 9), ("vit", 5), ("vit", 9))
MEMORY_LIMIT_MB = 2.5 * 1024  # issue 14: a full PRISMA-size map under 2.5 GB peak
# Defaults sized for `make bench` (the whole suite must stay under 15 minutes on 2 cores): about 5 minutes.
# bench/map.json was measured with `--rows 16 --mask-step 4` (12 minutes under load).
ROWS, MASK_STEP = 4, 8  # rows mapped per point; the full-scene run maps every MASK_STEP-th row and column


def write_scene(height: int, width: int) -> None:
    """raw/ (hsi.npy, wavelengths.npy, georef.json) and prepared/cube.npy, band by band (never whole)."""
    from hsixai.config import Params
    from hsixai.data.georef import synthetic_grid, write_georef
    from hsixai.data.readers import kept_bands
    from hsixai.io import NpyStreamWriter
    from hsixai.paths import RAW_CUBE, RAW_WAVELENGTHS

    bands = PRISMA["bands"]
    kept = kept_bands(bands, Params().data.removed_band_indices())
    shutil.rmtree(ROOT, ignore_errors=True)
    (ROOT / "raw").mkdir(parents=True)
    (ROOT / "prepared").mkdir()
    rng = np.random.default_rng(0)
    lo, hi = np.zeros(len(kept)), np.zeros(len(kept))
    with (
        NpyStreamWriter(ROOT / "raw" / RAW_CUBE, (bands, height, width), np.float32) as raw,
        NpyStreamWriter(ROOT / "prepared" / "cube.npy", (len(kept), height, width), np.float32) as prepared,
    ):
        for b in range(bands):
            band = (rng.random((height, width), dtype=np.float32) * 0.4 + 0.05 + 0.001 * b).astype(np.float32)
            raw.write(band)
            if b in kept:
                i = int(np.flatnonzero(kept == b)[0])
                lo[i], hi[i] = float(band.min()), float(band.max())
                prepared.write(np.clip((band - np.float32(lo[i])) / np.float32(hi[i] - lo[i]), 0, 1))
    np.save(ROOT / "raw" / RAW_WAVELENGTHS, np.linspace(402.0, 2497.0, bands))
    write_georef(ROOT / "raw", synthetic_grid(height, width))
    (ROOT / "scaling.json").write_text(json.dumps({"kept": kept.tolist(), "min": lo.tolist(), "max": hi.tolist()}))


def write_bundle(model: str, patch: int) -> Path:
    """A one-instance bundle of a randomly initialised network, scaled like the scene above."""
    import torch

    from hsixai import bundle as bundles
    from hsixai.models import build_model
    from hsixai.paths import BUNDLE_META, instance_checkpoint
    from hsixai.runtime import save_checkpoint

    scaling = json.loads((ROOT / "scaling.json").read_text())
    kept = scaling["kept"]
    directory = ROOT / f"bundle-{model}-p{patch}"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    torch.manual_seed(0)
    net = build_model(model, len(kept), 6, patch, 15)
    meta = {"model": model, "patch_size": patch, "n_bands": len(kept), "n_classes": 6, "n_comps": 15}
    save_checkpoint(instance_checkpoint(directory, 0), net.state_dict(), meta)
    wavelengths = np.linspace(402.0, 2497.0, PRISMA["bands"])[kept]
    meta = bundles.BundleMeta(
        format=bundles.FORMAT,
        model=model,
        patch_size=patch,
        n_instances=1,
        class_names=[f"class {k}" for k in range(6)],
        raw_bands=PRISMA["bands"],
        bands=kept,
        wavelengths=wavelengths.tolist(),
        wavelength_unit="nm",
        band_min=scaling["min"],
        band_max=scaling["max"],
        mean=[0.5] * len(kept),
        std=[0.29] * len(kept),
        fill=[0.5] * len(kept),
        fill_method="bench",
        probabilities=bundles.PROBABILITIES,
        source={"point": "bench: random weights"},
    )
    from dataclasses import asdict

    (directory / BUNDLE_META).write_text(json.dumps(asdict(meta)))
    return directory


def map_run(bundle_dir: Path, rows: int, out: Path, mask: Path | None) -> None:
    """Child process: predict_map on the first `rows` rows (or the whole scene through `mask`); prints timings."""
    from hsixai import bundle as bundles
    from hsixai.paths import MapFiles
    from hsixai.predict import MapOptions, Window, predict_map

    bundle = bundles.load_bundle(bundle_dir)
    width = PRISMA["width"]
    window = None if mask is not None else Window(0, 0, rows, width)
    start = time.perf_counter()
    summary = predict_map(ROOT / "raw", bundle, MapFiles(out).files, MapOptions(window=window, mask=mask), "cpu", False)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "pixels": summary["classified_pixels"]}))


def eval_run(bundle_dir: Path, rows: int) -> None:
    """Child process: evaluate's path for the same pixels: PatchSampler of the whole prepared cube + predict."""
    from hsixai import bundle as bundles
    from hsixai.data.patches import PatchSampler
    from hsixai.models.inference import predict

    bundle = bundles.load_bundle(bundle_dir)
    meta = bundle.meta
    start = time.perf_counter()
    sampler = PatchSampler(ROOT / "prepared" / "cube.npy", np.asarray(meta.mean), np.asarray(meta.std), meta.patch_size)
    built = time.perf_counter()
    r, c = np.mgrid[0:rows, 0 : PRISMA["width"]]
    logits = predict(bundle.models[0], sampler, sampler.centres(r.ravel(), c.ravel()), 512)
    done = time.perf_counter()
    np.save(ROOT / "eval_classes.npy", logits.argmax(axis=1).reshape(rows, -1).astype(np.uint8) + 1)
    print(json.dumps({"sampler_s": built - start, "predict_s": done - built, "pixels": int(r.size)}))


def _child(args: list[str]) -> tuple[dict, dict]:
    """Run this script as a child with `args`; (its printed JSON, its wall time and peak RSS)."""
    out = ROOT / "child.json"
    usage = measure([sys.executable, __file__, *args, "--json-to", str(out)], ROOT)
    return json.loads(out.read_text()), usage


def main() -> None:
    def extra(parser) -> None:
        parser.add_argument("--rows", type=int, default=None, help=f"rows mapped per point (default {ROWS})")
        parser.add_argument("--mask-step", type=int, default=MASK_STEP, help="the full-scene run's mask step")

    args = options(__doc__, extra)
    height, width = (PRISMA["height"] // 4, PRISMA["width"]) if args.quick else (PRISMA["height"], PRISMA["width"])
    rows = args.rows or (2 if args.quick else ROWS)
    step = args.mask_step
    write_scene(height, width)
    figures, points = [], []
    for model, patch in POINTS[:2] if args.quick else POINTS:
        bundle_dir = write_bundle(model, patch)
        mapped, map_usage = _child(["--map-run", str(bundle_dir), str(rows), str(ROOT / "map.tif")])
        evaluated, eval_usage = _child(["--eval-run", str(bundle_dir), str(rows)])
        import rasterio

        with rasterio.open(ROOT / "map.tif") as src:
            same = bool(np.array_equal(src.read(1), np.load(ROOT / "eval_classes.npy")))
        map_rate = mapped["pixels"] / mapped["seconds"]
        eval_rate = evaluated["pixels"] / evaluated["predict_s"]
        eval_rate_built = evaluated["pixels"] / (evaluated["predict_s"] + evaluated["sampler_s"])
        tag = f"{model}_p{patch}"
        figures += [
            figure(f"map_pixels_per_s_{tag}", round(map_rate, 1), "pixels/s", f"{rows} x {width} px, 1 instance"),
            figure(f"eval_path_pixels_per_s_{tag}", round(eval_rate, 1), "pixels/s", "predict only"),
            figure(f"map_over_eval_path_{tag}", round(map_rate / eval_rate, 3), "x", "predict only"),
            figure(
                f"map_over_eval_path_with_sampler_build_{tag}",
                round(map_rate / eval_rate_built, 3),
                "x",
                "the whole cube's sampler build counted",
            ),
            figure(f"map_peak_rss_mb_{tag}", map_usage["peak_rss_mb"], "MB", f"{rows} rows of the full-width scene"),
            figure(f"eval_path_peak_rss_mb_{tag}", eval_usage["peak_rss_mb"], "MB", "the whole prepared cube"),
        ]
        points.append(
            {
                "model": model,
                "patch_size": patch,
                "map": {**mapped, **map_usage},
                "eval_path": {**evaluated, **eval_usage},
                "same_classes": same,
            }
        )
        print(
            f"map {tag}: {map_rate:.0f} px/s ({map_usage['peak_rss_mb']} MB), evaluation path {eval_rate:.0f} px/s "
            f"({eval_usage['peak_rss_mb']} MB, sampler {evaluated['sampler_s']:.1f} s), same classes: {same}",
            flush=True,
        )
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[::step, ::step] = 1
    np.save(ROOT / "mask.npy", mask)
    bundle_dir = write_bundle("cnn2d", 5)
    whole, whole_usage = _child(["--map-run", str(bundle_dir), "0", str(ROOT / "whole.tif"), str(ROOT / "mask.npy")])
    figures += [
        figure(
            "map_full_scene_peak_rss_mb",
            whole_usage["peak_rss_mb"],
            "MB",
            f"cnn2d p=5, the whole {height} x {width} x {PRISMA['bands']} scene streamed, 1 pixel in "
            f"{step * step} classified; limit {MEMORY_LIMIT_MB:.0f} MB",
        ),
        figure("map_full_scene_wall_s", whole_usage["wall_s"], "s", "the same run, process start included"),
    ]
    print(f"whole scene through a 1/{step**2} mask: {whole_usage}", flush=True)
    save(
        "map",
        {
            "scene": {"bands": PRISMA["bands"], "height": height, "width": width, "kept_bands": 174},
            "rows_per_point": rows,
            "points": points,
            "full_scene": {**whole, **whole_usage, "mask_step": step},
            "figures": figures,
        },
        args.device,
    )
    if not all(p["same_classes"] for p in points):
        raise SystemExit("bench_map: the map and the evaluation path disagree on some pixel")
    shutil.rmtree(ROOT, ignore_errors=True)


if __name__ == "__main__":
    if "--map-run" in sys.argv or "--eval-run" in sys.argv:
        import contextlib
        import io

        target = Path(sys.argv[sys.argv.index("--json-to") + 1])
        rest = sys.argv[1 : sys.argv.index("--json-to")]
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            if rest[0] == "--map-run":
                map_run(Path(rest[1]), int(rest[2]), Path(rest[3]), Path(rest[4]) if len(rest) > 4 else None)
            else:
                eval_run(Path(rest[1]), int(rest[2]))
        target.write_text(buffer.getvalue().strip().splitlines()[-1])
    else:
        main()
