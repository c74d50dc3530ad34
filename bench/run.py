"""Run every benchmark under bench/ (`make bench`) and gather their figures in one results file.

Discovers `bench_*.py` beside this file (a new benchmark needs no registration),
runs each in its own process with the same `--device` and `--quick`, and reads
the `<name>.json` each writes (schema in common.py). Writes results.json
(machine, torch threads, date, load average before and after each benchmark,
every figure with its unit) and results.md, plus the scaling plots in docs/.
`--device cuda` writes results_cuda.* and *_cuda.* instead and stops at once if
torch sees no GPU. `--quick` is a smoke run into bench/scratch/quick/, which
leaves the committed results alone.

    .venv/bin/python bench/run.py [--device cpu|cuda] [--quick] [--only train xai]

`--only` re-runs some benchmarks and keeps the others' entries in the results file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH, DEVICES, REPO, SCRATCH, check_device, check_figures, machine, result_path  # noqa: E402

TIMEOUT_S = 900  # one benchmark; the whole suite must stay under 15 minutes on 2 cores
# OpenMP threads that wait by spinning fight the other processes of a shared machine for its cores: on
# 2 cores at load 7, a training pass ran 7x and patch gathering 80x slower than with sleeping waits, and
# not evenly across the sides of a comparison. So the benchmarks (and the stages they start) sleep,
# unless OMP_WAIT_POLICY is set already; results.json records the policy.
PASSIVE = "PASSIVE"


def discover(bench_dir: Path, only: list[str] | None = None) -> list[Path]:
    scripts = sorted(bench_dir.glob("bench_*.py"))
    if only:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in only]
    return scripts


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_one(script: Path, device: str, quick: bool, out: Path) -> dict:
    """Run one benchmark script; its figures, wall time, load average around it, and any failure."""
    name = script.stem.removeprefix("bench_")
    cmd = [sys.executable, str(script), "--device", device] + (["--quick"] if quick else [])
    env = {
        **os.environ,
        "HSIXAI_BENCH_OUT": str(out),
        "PYTHONPATH": os.pathsep.join([str(BENCH), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    entry = {"name": name, "script": _shown(script), "date": _now(), "load_average_start": load_average()}
    print(f"== {script.name}", flush=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, timeout=TIMEOUT_S, stderr=subprocess.PIPE, text=True)
        error = None if proc.returncode == 0 else f"exit {proc.returncode}: {_last_lines(proc.stderr)}"
    except subprocess.TimeoutExpired:
        error = f"timed out after {TIMEOUT_S} s"
    entry.update(wall_s=round(time.perf_counter() - start, 1), load_average_end=load_average())
    path = result_path(name, device, out)
    if error is None:
        try:
            data = json.loads(path.read_text())
            entry.update(results_file=_shown(path), figures=check_figures(data.get("figures"), str(path)))
        except (OSError, ValueError) as exc:
            error = str(exc)
    if error is not None:
        entry.update(status="failed", error=error, figures=[])
        print(f"   FAILED: {error}", file=sys.stderr, flush=True)
    else:
        entry["status"] = "ok"
    return entry


def aggregate(
    entries: list[dict],
    command: str,
    device: str,
    quick: bool,
    started: str,
    wall_s: float,
    load: tuple[list[float], list[float]],
) -> dict:
    figures = [{"benchmark": e["name"], **f} for e in entries for f in e["figures"]]
    return {
        "command": command,
        "date": started,
        "device": device,
        "quick": quick,
        "wall_s": round(wall_s, 1),
        "machine": machine(device),
        "load_average_start": load[0],
        "load_average_end": load[1],
        "all_ok": all(e["status"] == "ok" for e in entries),
        "benchmarks": entries,
        "figures": figures,
    }


def kept_entries(previous: Path, entries: list[dict]) -> list[dict]:
    """Under --only, the other benchmarks' entries of the previous results stay (each has its own date)."""
    if not previous.is_file():
        return entries
    new = {e["name"] for e in entries}
    old = [e for e in json.loads(previous.read_text())["benchmarks"] if e["name"] not in new]
    return sorted(old + entries, key=lambda e: e["name"])


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        f"# Benchmark results ({results['device']}{', quick' if results['quick'] else ''})",
        "",
        f"`{results['command']}` on {results['date']}: {results['wall_s']} s in all. "
        f"{m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gb']} GiB, torch {m['torch']} with "
        f"{m['torch_threads']} threads{', GPU ' + m['gpu'] if 'gpu' in m else ''}, "
        f"OMP_WAIT_POLICY {m['omp_wait_policy']}. Load average (1, 5, 15 min) "
        f"{results['load_average_start']} at the start, {results['load_average_end']} at the end: the machine "
        "is shared, so compare the ratios (both sides measured in turns in one process), not absolute times.",
        "",
    ]
    for e in results["benchmarks"]:
        lines += [
            f"## {e['name']} ({e['script']}, {e['date']}, {e['wall_s']} s, load {e['load_average_start'][0]} "
            f"-> {e['load_average_end'][0]})",
            "",
        ]
        if e["status"] != "ok":
            lines += [f"**failed**: {e['error']}", ""]
            continue
        lines += ["| figure | value | unit | detail |", "| --- | --- | --- | --- |"]
        lines += [
            f"| {f['name']} | {_number(f['value'])} | {f['unit']} | {f.get('detail', '')} |" for f in e["figures"]
        ]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=DEVICES, default="cpu")
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes, one repetition")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these benchmarks (bench_NAME.py)")
    parser.add_argument("--bench-dir", type=Path, default=BENCH, help="where to look for bench_*.py")
    parser.add_argument(
        "--out", type=Path, default=None, help="results folder (default: bench/, or bench/scratch/quick with --quick)"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", PASSIVE)  # before torch loads libgomp, here and in every child
    check_device(args.device)
    out = (args.out or (SCRATCH / "quick" if args.quick else BENCH)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    scripts = discover(args.bench_dir.resolve(), args.only)
    if not scripts:
        raise SystemExit(f"bench: no bench_*.py in {args.bench_dir}" + (f" named {args.only}" if args.only else ""))

    started, load_start, t0 = _now(), load_average(), time.perf_counter()
    entries = [run_one(script, args.device, args.quick, out) for script in scripts]
    stem = "results" if args.device == "cpu" else f"results_{args.device}"
    if args.only:
        entries = kept_entries(out / f"{stem}.json", entries)
    argv = sys.argv[1:] if argv is None else argv
    command = " ".join(["bench/run.py"] + argv) if argv else "make bench"
    results = aggregate(
        entries, command, args.device, args.quick, started, time.perf_counter() - t0, (load_start, load_average())
    )
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown(results))
    import plots

    for path in plots.draw(out, REPO / "docs" if out == BENCH else out, args.device):
        print(f"plot: {_shown(path)}")
    print(
        f"wrote {_shown(out / stem)}.json and .md in {results['wall_s']} s"
        + ("" if results["all_ok"] else f"; FAILED: {[e['name'] for e in entries if e['status'] != 'ok']}")
    )
    return 0 if results["all_ok"] else 1


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def _last_lines(text: str, n: int = 5) -> str:
    return " | ".join(line for line in text.strip().splitlines()[-n:]) or "no output"


def _number(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


if __name__ == "__main__":
    sys.exit(main())
