"""bench/run.py: discovers bench_*.py, runs them, aggregates their figures and reports failures (nothing timed)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

RUN = Path(__file__).resolve().parents[2] / "bench" / "run.py"


def _load_run_module():
    spec = importlib.util.spec_from_file_location("bench_run", RUN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GOOD = """
from common import figure, options, save
args = options(None)
save("good", {"figures": [figure("speedup", 2.5, "x", "ours vs naive"), figure("wall", 3, "s")],
              "rows": [1, 2]}, args.device)
"""
BAD = """
from common import options, save
args = options(None)
save("bad", {"figures": [{"name": "no unit", "value": 1.0}]}, args.device)
"""


def test_suite_aggregates_figures_and_reports_a_failing_benchmark(tmp_path, monkeypatch):
    (tmp_path / "bench_good.py").write_text(GOOD)
    (tmp_path / "bench_bad.py").write_text(BAD)
    (tmp_path / "helper.py").write_text("raise SystemExit('not a benchmark: never run')\n")
    proc = subprocess.run(
        [sys.executable, str(RUN), "--bench-dir", str(tmp_path), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr  # one benchmark failed, and the suite says so

    results = json.loads((tmp_path / "results.json").read_text())
    assert results["device"] == "cpu" and results["all_ok"] is False
    assert results["machine"]["torch_threads"] >= 1 and len(results["load_average_start"]) == 3
    by_name = {e["name"]: e for e in results["benchmarks"]}
    assert set(by_name) == {"good", "bad"}
    assert by_name["bad"]["status"] == "failed" and "figures[0]" in by_name["bad"]["error"]
    good = by_name["good"]
    assert good["status"] == "ok" and good["wall_s"] > 0
    assert good["figures"] == [
        {"name": "speedup", "value": 2.5, "unit": "x", "detail": "ours vs naive"},
        {"name": "wall", "value": 3.0, "unit": "s"},
    ]
    assert results["figures"] == [{"benchmark": "good", **f} for f in good["figures"]]
    good_file = json.loads((tmp_path / "good.json").read_text())
    assert good_file["rows"] == [1, 2]  # free-form detail kept
    assert good_file["machine"]["omp_wait_policy"] == os.environ.get("OMP_WAIT_POLICY", "PASSIVE")

    md = (tmp_path / "results.md").read_text()
    assert "| speedup | 2.5 | x | ours vs naive |" in md and "**failed**" in md

    # --device cuda without a GPU: one line, and nothing measured or written.
    if not torch.cuda.is_available():
        monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # main() sets it for its children; undone after the test
        with pytest.raises(
            SystemExit, match="^bench: --device cuda: torch .* sees no CUDA device; the CUDA figures stay unmeasured"
        ):
            _load_run_module().main(["--device", "cuda", "--out", str(tmp_path / "cuda")])
        assert not (tmp_path / "cuda").exists()
