"""Every stage of one experiment on the full PRISMA size (234 x 1215 x 1091): wall time and peak RSS.

Each stage runs as `hsixai <stage>` in its own process, so its peak resident
memory is its own (the kernel's rusage of that child). The work is bounded
through ordinary params so the run takes minutes: 1 epoch of
`train.max_batches_per_epoch` batches per instance, `xai.samples_per_class`
samples, a classification map of one pixel per `evaluate.map_stride`
squared block, and ground truth on 5% of the parcels (`evaluate` still scores
every test pixel, and training every dev pixel after each epoch). Also runs a
straightforward in-memory `prepare` on the same scene, in the same run.
Writes bench/pipeline.json.

    .venv/bin/python bench/bench_pipeline.py [--quick] [--device cpu|cuda] [--keep]
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
from common import SCRATCH, figure, measure, options, save, write_params

PRISMA = {"height": 1215, "width": 1091, "bands": 234}
STAGES = ("synthesize", "prepare", "split", "train", "evaluate", "attribute", "consistency")
MEMORY_LIMIT_MB = 24 * 1024  # every stage must fit in 24 GiB


def naive_prepare(root: Path) -> None:
    """What one writes first: load everything, delete bands, scale with whole-cube temporaries."""
    from hsixai.config import load_params

    params = load_params(root / "params.yaml")
    cube = np.load(root / params.data.raw_dir / "hsi.npy")
    cube = np.delete(cube, params.data.removed_band_indices(), axis=0)
    lo = cube.min(axis=(1, 2), keepdims=True)
    hi = cube.max(axis=(1, 2), keepdims=True)
    scaled = np.clip((cube - lo) / (hi - lo), 0, 1).astype(np.float32)
    out = root / "naive"
    out.mkdir(exist_ok=True)
    np.save(out / "cube.npy", scaled)


def bounded_params(quick: bool, device: str, height: int, width: int) -> dict:
    """The experiment's params: the full-size scene, one point bounded to minutes.

    Ground truth covers 5% of the crop parcels (`synthesize.labelled_fraction`), as field
    surveys of a real 1215 x 1091 scene do: 16x fewer labelled pixels than the default 80%
    (14 k train, 9 k dev), and every dev and test pixel costs a forward pass (on 2 loaded
    CPU cores, a few thousand patches/s). The cube itself is the full 234 x 1215 x 1091.
    """
    return {
        "synthesize": {**PRISMA, "height": height, "width": width, "labelled_fraction": 0.05},
        "model": "cnn2d",
        "patch_size": 5,
        "train": {"epochs": 1, "max_batches_per_epoch": 4 if quick else 20, "instances": 2, "device": device},
        "xai": {"samples_per_class": 1 if quick else 4},
        "evaluate": {"map_stride": 32 if quick else 16},
    }


def run_stages(root: Path) -> dict[str, dict]:
    hsixai = [sys.executable, "-m", "hsixai.cli", "--no-progress"]
    stages = {}
    for stage in STAGES:
        stages[stage] = measure(hsixai + [stage], root)
        print(f"{stage:12s} {stages[stage]['wall_s']:7.1f} s  {stages[stage]['peak_rss_mb']:7.0f} MB", flush=True)
        if stage == "prepare":  # the baseline right after ours: same input, same page cache state
            stages["prepare_naive"] = measure([sys.executable, __file__, "--naive-run", str(root)], root)
    return stages


def figures_of(stages: dict[str, dict], params: dict, same: bool) -> list[dict]:
    t = params["train"]
    bound = (
        f"cnn2d p=5, {t['instances']} instances x {t['max_batches_per_epoch']} batches of 64, "
        f"{params['xai']['samples_per_class']} xAI samples/class, map 1 px per "
        f"{params['evaluate']['map_stride']}^2, {params['synthesize']['labelled_fraction']:.0%} of parcels "
        "labelled"
    )
    out = []
    for stage, m in stages.items():
        out.append(figure(f"{stage}_wall_s", m["wall_s"], "s", bound if stage in STAGES[3:] else None))
        out.append(figure(f"{stage}_peak_rss_mb", m["peak_rss_mb"], "MB"))
    ours, naive = stages["prepare"], stages["prepare_naive"]
    out.append(
        figure(
            "prepare_peak_rss_naive_over_ours",
            naive["peak_rss_mb"] / ours["peak_rss_mb"],
            "x",
            f"straightforward in-memory prepare / ours; same output: {same}",
        )
    )
    out.append(figure("prepare_wall_naive_over_ours", naive["wall_s"] / ours["wall_s"], "x"))
    peak = max(m["peak_rss_mb"] for s, m in stages.items() if s in STAGES)
    out.append(figure("max_stage_peak_rss_gib", peak / 1024, "GiB", f"limit {MEMORY_LIMIT_MB // 1024} GiB"))
    return out


def main() -> None:
    args = options(
        __doc__,
        lambda p: p.add_argument("--keep", action="store_true", help="keep the generated scene in bench/scratch"),
    )
    height, width = (304, 273) if args.quick else (PRISMA["height"], PRISMA["width"])
    root = SCRATCH / f"pipeline-{args.device}"
    shutil.rmtree(root, ignore_errors=True)
    params = bounded_params(args.quick, args.device, height, width)
    write_params(root, params)
    stages = run_stages(root)
    ours = np.load(root / "data/prepared/cube.npy", mmap_mode="r")
    naive = np.load(root / "naive/cube.npy", mmap_mode="r")
    same = bool(np.allclose(ours[::17], naive[::17], atol=1e-6))
    peak = max(m["peak_rss_mb"] for s, m in stages.items() if s in STAGES)
    result = {
        "figures": figures_of(stages, params, same),
        "scene": [PRISMA["bands"], height, width],
        "cube_gb": round(PRISMA["bands"] * height * width * 4 / 1e9, 3),
        "params": params,
        "stages": stages,
        "prepare_same_output": same,
        "every_stage_within_24_gib": peak <= MEMORY_LIMIT_MB,
        "train_metrics": json.loads((root / "metrics/train.json").read_text()),
        "n_test": json.loads((root / "metrics/evaluate.json").read_text())["n_test"],
    }
    print(f"wrote {save('pipeline', result, args.device)}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    if peak > MEMORY_LIMIT_MB:
        raise SystemExit(f"bench_pipeline: a stage peaked at {peak:.0f} MB, over the {MEMORY_LIMIT_MB} MB limit")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--naive-run":
        naive_prepare(Path(sys.argv[2]))
    else:
        main()
