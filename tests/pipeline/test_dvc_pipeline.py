import hashlib
import json

import numpy as np
import pytest
import yaml

from hsixai import tracking
from hsixai.config import load_params
from hsixai.paths import Paths

from ..helpers import edit_params
from .conftest import EXPERIMENT, first_repro_output, run

pytestmark = pytest.mark.pipeline


def _hashes(repo, *dirs):
    return {
        str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
        for d in dirs
        for p in sorted((repo / d).rglob("*"))
        if p.is_file()
    }


def _stages_run(output):
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


# The experiment's target, as `hsixai sweep` runs it: the domain-adaptation stages are not part of it
# (tests/pipeline/test_adapt_pipeline.py builds those, and checks that a second repro does nothing there too).
def test_repro_builds_the_pipeline_then_does_nothing(built_repo):
    first = first_repro_output(built_repo)
    assert _stages_run(first) == {"synthesize", "prepare", "split", "train", "evaluate", "attribute", "consistency"}
    cube = np.load(built_repo / "data/prepared/cube.npy", mmap_mode="r")
    assert cube.shape == (174, 48, 48)
    assert (built_repo / "figures/split/masks.png").is_file()

    second = run(["dvc", "repro", EXPERIMENT], built_repo).stdout
    assert "Running stage" not in second
    assert "up to date" in second
    assert "up to date" in run(["dvc", "status", EXPERIMENT], built_repo).stdout


def test_mlflow_runs_name_their_dvc_data_and_the_parent_spans_its_stages(built_repo, monkeypatch):
    """What the MLflow UI shows of the built point, read through MLflow's API from the repo's own mlflow.db."""
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT"):
        monkeypatch.delenv(name, raising=False)
    paths = Paths.at(built_repo)
    client = tracking.client(paths)
    experiment = client.get_experiment_by_name(load_params(paths.params).tracking.experiment)
    assert experiment.tags[tracking.EXPERIMENT_KIND_TAG] == tracking.EXPERIMENT_KIND
    lock = {
        out["path"]: out["md5"]
        for stage in yaml.safe_load(paths.dvc_lock.read_text())["stages"].values()
        for out in stage.get("outs", [])
    }
    # Computed by hand the way DVC does: the same md5 DVC recorded for a real directory output.
    assert tracking.dvc_md5(paths.prepared_dir)[0] == lock["data/prepared"]

    stages = {
        r.info.run_name: r for r in client.search_runs([experiment.experiment_id], "tags.`hsixai.role` = 'stage'")
    }
    read = {"data/prepared", "data/split"}
    expected = {"train": read, "evaluate": read, "attribute": read, "consistency": {"data/attributions"}}
    for stage, names in expected.items():
        inputs = stages[stage].inputs.dataset_inputs
        assert {i.dataset.name: i.dataset.digest for i in inputs} == {name: lock[name] for name in names}, stage
        assert {json.loads(i.dataset.profile)["md5_from"] for i in inputs} == {"dvc.lock"}  # read, not hashed

    (parent_id,) = {r.data.tags[tracking.PARENT_RUN_ID] for r in stages.values()}
    parent = client.get_run(parent_id)
    assert {i.dataset.name for i in parent.inputs.dataset_inputs} == read | {"data/attributions"}
    assert parent.info.start_time <= min(r.info.start_time for r in stages.values())
    assert parent.info.end_time >= max(r.info.end_time for r in stages.values())
    # one stage after another: the parent lasts at least as long as its stages together
    assert parent.info.end_time - parent.info.start_time >= sum(
        r.info.end_time - r.info.start_time for r in stages.values()
    )


def test_xai_params_rerun_only_the_xai_stages(built_copy):
    edit_params(built_copy, xai={"n_steps": 6})
    assert _stages_run(run(["dvc", "repro", EXPERIMENT], built_copy).stdout) == {"attribute", "consistency"}
    edit_params(built_copy, xai={"bootstrap": 40})
    assert _stages_run(run(["dvc", "repro", EXPERIMENT], built_copy).stdout) == {"consistency"}
    # A new xAI sample is made by split, but leaves the models alone.
    edit_params(built_copy, xai={"samples_per_class": 5})
    assert _stages_run(run(["dvc", "repro", EXPERIMENT], built_copy).stdout) == {"split", "attribute", "consistency"}


def test_changing_split_params_reruns_only_split(built_copy):
    assert "Running stage" not in run(["dvc", "repro", "split"], built_copy).stdout
    # Not "right": on the tiny scene, a cut to the right leaves olives no dev pixel beyond the 2 px buffer.
    edit_params(built_copy, split={"train_side": "top"})
    out = run(["dvc", "repro", "split"], built_copy).stdout
    assert _stages_run(out) == {"split"}


def test_failed_stage_leaves_outputs_restorable(built_copy):
    dvc_repo = built_copy
    assert "Running stage" not in run(["dvc", "repro", "split"], dvc_repo).stdout
    before = _hashes(dvc_repo, "data/split", "figures/split")
    edit_params(dvc_repo, split={"train_size": 1.5})

    failed = run(["dvc", "repro", "split"], dvc_repo, check=False)
    assert failed.returncode != 0
    assert "split.train_size: expected a fraction in (0, 1), found 1.5" in failed.stderr + failed.stdout

    run(["dvc", "checkout", "split"], dvc_repo)
    assert _hashes(dvc_repo, "data/split", "figures/split") == before
