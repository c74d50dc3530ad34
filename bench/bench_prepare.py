"""Peak memory and wall time of `prepare` and `split` on the full PRISMA size (234 x 1215 x 1091).

Compares `prepare` with a straightforward in-memory implementation run on the
same input in the same run. Writes bench/prepare.json.

    .venv/bin/python bench/bench_prepare.py [--height 1215 --width 1091]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

from common import SCRATCH, measure, save, write_params

PRISMA = {"height": 1215, "width": 1091, "bands": 234}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--height", type=int, default=PRISMA["height"])
    parser.add_argument("--width", type=int, default=PRISMA["width"])
    parser.add_argument("--keep", action="store_true", help="keep the generated scene in bench/scratch")
    args = parser.parse_args()
    root = SCRATCH / f"prepare-{args.height}x{args.width}"
    shutil.rmtree(root, ignore_errors=True)
    write_params(root, {"synthesize": {"height": args.height, "width": args.width, "bands": PRISMA["bands"]},
                        "xai": {"samples_per_class": 512}})
    hsixai = ["hsixai", "--no-progress"]
    figures = {"synthesize": measure(hsixai + ["synthesize"], root)}
    figures["prepare"] = measure(hsixai + ["prepare"], root)
    figures["split"] = measure(hsixai + ["split"], root)
    figures["prepare_naive"] = measure([sys.executable, __file__, "--naive-run", str(root)], root)
    ours, naive = np.load(root / "data/prepared/cube.npy", mmap_mode="r"), np.load(root / "naive/cube.npy", mmap_mode="r")
    same = bool(np.allclose(ours[::17], naive[::17], atol=1e-6))
    result = {
        "scene": [PRISMA["bands"], args.height, args.width],
        "cube_gb": round(PRISMA["bands"] * args.height * args.width * 4 / 1e9, 3),
        "stages": figures,
        "prepare_vs_naive": {"peak_rss_ratio": round(figures["prepare_naive"]["peak_rss_mb"] / figures["prepare"]["peak_rss_mb"], 2),
                             "wall_ratio": round(figures["prepare_naive"]["wall_s"] / figures["prepare"]["wall_s"], 2),
                             "same_output": same},
    }
    print(save("prepare", result).read_text())
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--naive-run":
        naive_prepare(Path(sys.argv[2]))
    else:
        main()
