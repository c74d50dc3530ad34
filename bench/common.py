"""Helpers shared by the benchmarks: measuring a child process, machine facts, JSON out."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import yaml

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SCRATCH = BENCH / "scratch"  # git-ignored; large generated scenes live here


def measure(cmd: list[str], cwd: Path) -> dict:
    """Run `cmd` to completion; its wall time (s) and peak resident memory (MB), from the kernel's rusage."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stderr = proc.stderr.read().decode()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {stderr[-2000:]}")
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def machine() -> dict:
    import torch

    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def write_params(root: Path, overrides: dict) -> None:
    """The repository's params.yaml with `overrides` merged per group, written to `root`."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for key, value in overrides.items():
        if isinstance(value, dict):
            params[key].update(value)
        else:
            params[key] = value
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def default_scene(name: str) -> Path:
    """A fresh root under bench/scratch with the default scene synthesized, prepared and split."""
    import shutil

    root = SCRATCH / name
    shutil.rmtree(root, ignore_errors=True)
    write_params(root, {})
    for stage in ("synthesize", "prepare", "split"):
        subprocess.run([sys.executable, "-m", "hsixai.cli", "--no-progress", stage], cwd=root, check=True)
    return root


def save(name: str, result: dict) -> Path:
    path = BENCH / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **result}, indent=2) + "\n")
    return path
