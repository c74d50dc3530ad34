import hashlib

import numpy as np
import pytest

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
