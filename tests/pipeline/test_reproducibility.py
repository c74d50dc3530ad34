"""The same params give the same results: two pipelines built from scratch in different places agree byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from .conftest import EXPERIMENT, make_dvc_repo, run

pytestmark = pytest.mark.pipeline


def _output_hashes(repo: Path) -> dict[str, str]:
    """Output path -> the md5 that dvc.lock records for it (a directory's covers every file in it)."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def test_two_runs_from_scratch_give_identical_metrics_and_outputs(built_repo, tmp_path):
    second = make_dvc_repo(tmp_path / "elsewhere" / "repo")
    run(["dvc", "repro", EXPERIMENT], second)

    names = sorted(p.name for p in (built_repo / "metrics").glob("*.json"))
    assert {"train.json", "evaluate.json", "consistency.json"} <= set(names)
    assert names == sorted(p.name for p in (second / "metrics").glob("*.json"))
    for name in names:
        assert (second / "metrics" / name).read_bytes() == (built_repo / "metrics" / name).read_bytes(), name

    # Every model, array and figure too: nothing (time, path, host) leaks into what a stage writes.
    first_outs, second_outs = _output_hashes(built_repo), _output_hashes(second)
    assert len(first_outs) > 15
    assert {k for k in first_outs if first_outs[k] != second_outs.get(k)} == set()
