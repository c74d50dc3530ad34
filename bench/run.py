"""Run every benchmark under bench/ (`make bench`); each writes bench/<name>.json."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = ["bench_prepare.py", "bench_train.py", "bench_xai.py"]

if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    for script in BENCHMARKS:
        print(f"== {script}", flush=True)
        subprocess.run([sys.executable, str(here / script)], check=True)
