"""`hsixai sweep`: queued DVC experiments on 2 parallel workers, every run in MLflow, then `select`."""

import json

import pytest

from ..helpers import edit_params
from .conftest import run

pytestmark = pytest.mark.pipeline


def test_sweep_runs_every_point_and_selects(dvc_repo, tmp_path):
    edit_params(dvc_repo, sweep={"models": ["cnn2d"], "patch_sizes": [3, 5, 7], "jobs": 2})
    run(["git", "commit", "-qam", "a three-point sweep"], dvc_repo)
    # A user with no git identity and an empty home: the sweep must cope without touching git config.
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "HOME": str(home),
        "GIT_AUTHOR_NAME": None,
        "GIT_AUTHOR_EMAIL": None,
        "GIT_COMMITTER_NAME": None,
        "GIT_COMMITTER_EMAIL": None,
    }
    out = run(["hsixai", "--no-progress", "sweep"], dvc_repo, env=env)
    assert "3 to run with 2 worker(s)" in out.stdout
    assert not (home / ".gitconfig").exists()

    report = json.loads((dvc_repo / "reports/selection.json").read_text())
    assert (dvc_repo / "reports/selection.png").stat().st_size > 10_000
    assert "Recommended patch_size" in (dvc_repo / "reports/selection.md").read_text()
    group = report["groups"]["all"]
    assert [r["patch_size"] for r in group["rows"]] == [3, 5, 7]
    assert group["recommended"]["patch_size"] in (3, 5, 7) and report["missing"] == [] and report["failed"] == []
    for row in group["rows"]:
        assert 0 <= row["consistency_jsdiv"] <= 1 and len(row["consistency_jsdiv_ci"]) == 2
        assert 0 < row["centre_share"] < 1 and len(row["per_instance"]["f1_macro_val"]) == 2
    from hsixai.config import CRITERIA

    assert set(group["criteria"]) == set(CRITERIA)
    for check in group["criteria"].values():  # every criterion in both directions, checked on all test pixels
        assert check["pick"] in (3, 5, 7) and check["regret_test_f1_all_pixels"] is not None
        assert check["summary"].count(". ") == 1
    # paired replicates read from each experiment's commit: every comparison has an interval
    comparisons = group["criteria"]["max_consistency_jsdiv"]["comparisons"]
    assert len(comparisons) == 2 and all(len(c["difference_ci"]) == 2 for c in comparisons.values())

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{dvc_repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("hsixai")
    parents = client.search_runs([experiment.experiment_id], "tags.`hsixai.role` = 'experiment'")
    assert sorted(int(p.data.params["patch_size"]) for p in parents) == [3, 5, 7]
    for parent in parents:
        assert {
            "f1_macro_val",
            "f1_macro_test",
            "consistency_jsdiv",
            "centre_share",
            "centre_share_ci_low",
            "radial_profile.ring0",
        } <= set(parent.data.metrics)
    selection_runs = client.search_runs([experiment.experiment_id], "tags.`hsixai.role` = 'selection'")
    assert selection_runs and "recommended_patch_size.all" in selection_runs[0].data.metrics

    again = run(["hsixai", "--no-progress", "sweep"], dvc_repo, env=env)
    assert "3 already done, 0 to run" in again.stdout
