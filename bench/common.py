"""Helpers shared by the benchmarks: options, timing both sides alternately, child processes, JSON out.

Every `bench/bench_<name>.py` writes `<out>/<name>.json` (`<name>_cuda.json` under `--device cuda`)
through `save(name, result, device)`, where `result["figures"]` is a list of
`{"name": str, "value": float, "unit": str, "detail": str (optional)}`; anything else in `result`
is free-form detail. `bench/run.py` discovers the scripts, runs them and aggregates the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SCRATCH = BENCH / "scratch"  # git-ignored; large generated scenes live here
# run.py points every script at one output folder (a smoke run must not overwrite the committed results).
OUT = Path(os.environ.get("HSIXAI_BENCH_OUT", BENCH))
DEVICES = ("cpu", "cuda")


def options(doc: str | None, extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """The options every benchmark takes: --quick (a smoke run) and --device cpu|cuda."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer sizes, samples and repetitions (a smoke run)")
    parser.add_argument("--device", choices=DEVICES, default="cpu", help="where models run (default: cpu)")
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
    check_device(args.device)
    return args


def check_device(device: str) -> None:
    """Stop with one line if CUDA is asked for and absent: CUDA figures are never faked or replaced by CPU ones."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            f"bench: --device cuda: torch {torch.__version__} sees no CUDA device; "
            "the CUDA figures stay unmeasured (nothing written)"
        )


def sync(device: str) -> None:
    """Wait for queued GPU work, so a timer measures the work and not its launch."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def alternate(
    sides: dict[str, Callable[[], object]], repeats: int, device: str = "cpu", warm_up: bool = True
) -> dict[str, float]:
    """Median seconds per side over `repeats` rounds, the sides taking turns within each round.

    Taking turns means a load change on a shared machine hits every side alike, so the
    ratios between sides hold even when the absolute times drift.
    """
    if warm_up:
        for fn in sides.values():
            fn()
        sync(device)
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, fn in sides.items():
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def figure(name: str, value: float, unit: str, detail: str | None = None) -> dict:
    out = {"name": name, "value": float(value), "unit": unit}
    if detail:
        out["detail"] = detail
    return out


def check_figures(figures: object, source: str) -> list[dict]:
    """The figures list, validated against the schema above; ValueError naming `source` otherwise."""
    if not isinstance(figures, list) or not figures:
        raise ValueError(f"{source}: 'figures' must be a non-empty list")
    for i, f in enumerate(figures):
        ok = (
            isinstance(f, dict)
            and isinstance(f.get("name"), str)
            and isinstance(f.get("unit"), str)
            and isinstance(f.get("value"), (int, float))
            and not isinstance(f.get("value"), bool)
            and math.isfinite(f["value"])
            and isinstance(f.get("detail", ""), str)
            and set(f) <= {"name", "value", "unit", "detail"}
        )
        if not ok:
            raise ValueError(
                f"{source}: figures[{i}] is not {{name: str, value: finite number, unit: str, "
                f"detail: str (optional)}}: {f!r}"
            )
    return figures


def result_path(name: str, device: str = "cpu", out: Path | None = None) -> Path:
    return (out or OUT) / (f"{name}.json" if device == "cpu" else f"{name}_{device}.json")


def save(name: str, result: dict, device: str = "cpu") -> Path:
    """Write `result` (with machine facts and the device) to `<out>/<name>[_cuda].json`."""
    check_figures(result.get("figures"), name)
    path = result_path(name, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine(device), "device": device, **result}, indent=2) + "\n")
    return path


def machine(device: str = "cpu") -> dict:
    import torch

    facts = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": _memory_gb(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (libgomp spins, then sleeps)"),
    }
    if device == "cuda":
        facts["gpu"] = torch.cuda.get_device_name()
    return facts


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        return None


# A child's peak RSS (ru_maxrss) includes the memory it had between fork and exec, i.e. a copy of its
# parent's: forked straight from a benchmark holding torch and arrays, `python -c pass` "peaks" at 500 MB.
# So a bare interpreter (~10 MB) forks the measured command and reports the rusage wait4 gives it.
_LAUNCHER = """
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    json.dump({"exit": os.waitstatus_to_exitcode(status), "maxrss_kb": usage.ru_maxrss}, out)
"""


def measure(cmd: list[str], cwd: Path) -> dict:
    """Run `cmd` to completion; its wall time (s) and peak resident memory (MB), from the kernel's rusage."""
    import tempfile

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    # Output goes to a file, not a pipe: nobody reads a pipe while the child runs, and a full one would hang.
    with tempfile.TemporaryFile() as log, tempfile.TemporaryDirectory() as tmp:
        usage_file = Path(tmp) / "usage.json"
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-S", "-c", _LAUNCHER, str(usage_file), *cmd],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
        wall = time.perf_counter() - start
        usage = json.loads(usage_file.read_text()) if usage_file.exists() else {"exit": "not started"}
        if usage["exit"] != 0:
            log.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed ({usage['exit']}): {log.read().decode()[-2000:]}")
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(usage["maxrss_kb"] / 1024, 1)}


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
