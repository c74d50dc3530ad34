"""How `prepare` grows with the scene: wall time and peak RSS against scene size, ours and a naive version.

Scenes of 1/16 and 1/4 of the full PRISMA area (234 bands, the aspect of
1215 x 1091) are synthesized in this process (not measured); then `hsixai
prepare` and a straightforward in-memory prepare each run in their own
process on the same input, so each peak RSS is that process's own. The full
size itself is measured by bench_pipeline.py in the same `make bench` run.
A bare `hsixai --help` gives the fixed cost of starting the command (Python,
numpy, torch imports). Writes bench/prepare.json.

    .venv/bin/python bench/bench_prepare.py [--quick]
"""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

import numpy as np
from bench_pipeline import PRISMA, naive_prepare
from common import SCRATCH, figure, measure, options, save, write_params

AREA_FRACTIONS = (1 / 16, 1 / 4)


def scene(fraction: float) -> tuple[int, int]:
    side = math.sqrt(fraction)
    return round(PRISMA["height"] * side), round(PRISMA["width"] * side)


def synthesized_root(height: int, width: int) -> Path:
    from hsixai.config import load_params
    from hsixai.data import synthetic
    from hsixai.paths import Paths

    root = SCRATCH / f"prepare-{height}x{width}"
    shutil.rmtree(root, ignore_errors=True)
    write_params(root, {"synthesize": {**PRISMA, "height": height, "width": width}})
    synthetic.run(load_params(root / "params.yaml"), Paths.at(root), progress=False)
    return root


def bench_size(height: int, width: int) -> dict:
    root = synthesized_root(height, width)
    ours = measure([sys.executable, "-m", "hsixai.cli", "--no-progress", "prepare"], root)
    naive = measure([sys.executable, __file__, "--naive-run", str(root)], root)
    a, b = np.load(root / "data/prepared/cube.npy", mmap_mode="r"), np.load(root / "naive/cube.npy", mmap_mode="r")
    same = bool(np.allclose(a[::17], b[::17], atol=1e-6))
    shutil.rmtree(root, ignore_errors=True)
    row = {
        "height": height,
        "width": width,
        "megapixels": round(height * width / 1e6, 3),
        "cube_gb": round(PRISMA["bands"] * height * width * 4 / 1e9, 3),
        "ours": ours,
        "naive": naive,
        "same_output": same,
    }
    print(
        f"prepare {height}x{width}: ours {ours['wall_s']} s {ours['peak_rss_mb']} MB, "
        f"naive {naive['wall_s']} s {naive['peak_rss_mb']} MB",
        flush=True,
    )
    return row


def main() -> None:
    args = options(__doc__)
    fractions = AREA_FRACTIONS[:1] if args.quick else AREA_FRACTIONS
    startup = measure([sys.executable, "-m", "hsixai.cli", "--help"], SCRATCH)
    sizes = [bench_size(*scene(f)) for f in fractions]
    figures = [
        figure("command_startup_s", startup["wall_s"], "s", "hsixai --help: interpreter and imports"),
        figure("command_startup_peak_rss_mb", startup["peak_rss_mb"], "MB"),
    ]
    for row in sizes:
        tag = f"{row['height']}x{row['width']}"
        figures += [
            figure(f"prepare_wall_s_{tag}", row["ours"]["wall_s"], "s"),
            figure(f"prepare_peak_rss_mb_{tag}", row["ours"]["peak_rss_mb"], "MB"),
            figure(f"prepare_naive_wall_s_{tag}", row["naive"]["wall_s"], "s"),
            figure(f"prepare_naive_peak_rss_mb_{tag}", row["naive"]["peak_rss_mb"], "MB"),
        ]
    print(f"wrote {save('prepare', {'figures': figures, 'startup': startup, 'sizes': sizes}, args.device)}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--naive-run":
        naive_prepare(Path(sys.argv[2]))
    else:
        SCRATCH.mkdir(parents=True, exist_ok=True)
        main()
