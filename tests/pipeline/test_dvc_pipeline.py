import hashlib

import numpy as np
import pytest
import yaml

from .conftest import run

pytestmark = pytest.mark.pipeline


def _hashes(repo, *dirs):
    return {str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in dirs for p in sorted((repo / d).rglob("*")) if p.is_file()}


def test_repro_builds_the_pipeline_then_does_nothing(dvc_repo):
    first = run(["dvc", "repro"], dvc_repo).stdout
    for stage in ("synthesize", "prepare", "split", "train", "evaluate", "attribute", "consistency",
                  "adapt_synthesize", "adapt_prepare", "adapt_pretrain", "adapt", "adapt_evaluate"):
        assert f"Running stage '{stage}'" in first
    cube = np.load(dvc_repo / "data/prepared/cube.npy", mmap_mode="r")
    assert cube.shape == (174, 48, 48)
    assert (dvc_repo / "figures/split/masks.png").is_file()

    second = run(["dvc", "repro"], dvc_repo).stdout
    assert "Running stage" not in second
    assert "up to date" in second
    assert "up to date" in run(["dvc", "status"], dvc_repo).stdout


def _set(repo, group, key, value):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params[group][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _stages_run(output):
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def test_xai_params_rerun_only_the_xai_stages(dvc_repo):
    run(["dvc", "repro"], dvc_repo)
    _set(dvc_repo, "xai", "n_steps", 6)
    assert _stages_run(run(["dvc", "repro"], dvc_repo).stdout) == {"attribute", "consistency"}
    _set(dvc_repo, "xai", "bootstrap", 40)
    assert _stages_run(run(["dvc", "repro"], dvc_repo).stdout) == {"consistency"}
    # A new xAI sample is made by split, but leaves the models alone.
    _set(dvc_repo, "xai", "samples_per_class", 5)
    assert _stages_run(run(["dvc", "repro"], dvc_repo).stdout) == {"split", "attribute", "consistency"}


def test_changing_split_params_reruns_only_split(dvc_repo):
    run(["dvc", "repro", "split"], dvc_repo)
    params = yaml.safe_load((dvc_repo / "params.yaml").read_text())
    # Not "right": on the tiny scene, a cut to the right leaves olives no dev pixel beyond the 2 px buffer.
    params["split"]["train_side"] = "top"
    (dvc_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(["dvc", "repro", "split"], dvc_repo).stdout
    assert "Running stage 'split'" in out
    assert "Running stage 'prepare'" not in out and "Running stage 'synthesize'" not in out


def test_failed_stage_leaves_outputs_restorable(dvc_repo):
    run(["dvc", "repro", "split"], dvc_repo)
    before = _hashes(dvc_repo, "data/split", "figures/split")
    params_path = dvc_repo / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["split"]["train_size"] = 1.5
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))

    failed = run(["dvc", "repro", "split"], dvc_repo, check=False)
    assert failed.returncode != 0
    assert "split.train_size: expected a fraction in (0, 1), found 1.5" in failed.stderr + failed.stdout

    run(["dvc", "checkout", "split"], dvc_repo)
    assert _hashes(dvc_repo, "data/split", "figures/split") == before
