"""The train stage under torchrun: 2 CPU processes with DistributedDataParallel (gloo)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import TINY_TRAIN, tiny_params
from ..helpers import write_params

pytestmark = pytest.mark.pipeline
BIN = Path(sys.executable).parent


def _train(root: Path, launcher: list[str]) -> dict:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        launcher + ["hsixai", "--no-progress", "train"], cwd=root, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((root / "metrics/train.json").read_text())


def test_two_process_ddp_matches_single_process(prepared_root, tmp_path):
    params = tiny_params(patch_size=5, train={**TINY_TRAIN, "epochs": 6, "instances": 1})
    roots = []
    for name in ("single", "ddp"):
        root = tmp_path / name
        shutil.copytree(prepared_root, root)
        write_params(root, params)
        roots.append(root)
    single = _train(roots[0], [])
    ddp = _train(roots[1], [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "--no-python"])

    assert (single["world_size"], ddp["world_size"]) == (1, 2)
    # Same global batches and schedule; only per-rank BatchNorm statistics and dropout masks differ,
    # so the runs agree within training noise and both learn (chance is 1/6).
    assert abs(single["f1_macro_val"] - ddp["f1_macro_val"]) < 0.15
    assert min(single["f1_macro_val"], ddp["f1_macro_val"]) > 0.35
    for root in roots:
        curve = (root / "plots/train/instance_0.csv").read_text().splitlines()[1:]
        losses = [float(line.split(",")[1]) for line in curve]
        assert losses[-1] < 0.7 * losses[0]
    # Rank 0 alone writes: one checkpoint set, one MLflow train run.
    assert sorted(p.name for p in (roots[1] / "models").iterdir()) == ["instance_0.pt"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{roots[1] / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("hsixai").experiment_id], "tags.`hsixai.stage` = 'train'")
    assert len(runs) == 1 and runs[0].data.params["world_size"] == "2"
