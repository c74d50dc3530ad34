"""The adapt stages under `dvc repro adapt_evaluate` on a tiny source/target pair, with real MLflow."""

import json

import pytest

from .conftest import run

pytestmark = pytest.mark.pipeline

ARMS = ("source_only", "adabn", "finetune", "binary", "kplus1", "kplus1_attention")
ADAPT_STAGES = {"synthesize", "adapt_synthesize", "adapt_prepare", "adapt_pretrain", "adapt", "adapt_evaluate"}


def _stages_run(output):
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def test_adapt_stages_write_the_ablation(dvc_repo):
    out = run(["dvc", "repro", "adapt_evaluate"], dvc_repo).stdout
    assert _stages_run(out) == ADAPT_STAGES, "the adapt target runs no stage of the main pipeline"

    metrics = json.loads((dvc_repo / "metrics/adapt.json").read_text())
    assert metrics["seeds"] == [0, 1] and metrics["n_test"] > 0
    for arm in ARMS:
        entry = metrics["arms"][arm]
        assert len(entry["per_seed"]) == 2
        for key in ("oa", "aa", "kappa", "f1_macro", "miou"):
            assert entry[f"{key}_std"] >= 0
            assert -1 <= entry[key] <= 1 and (key == "kappa" or entry[key] >= 0)
        assert 0 < entry["oa"] <= 1, f"{arm}: a trained segmenter gets some target test pixels right"
    assert (dvc_repo / "figures/adapt/maps.png").stat().st_size > 10_000
    train = json.loads((dvc_repo / "metrics/adapt_train.json").read_text())
    assert {r["arm"] for r in train["runs"]} == set(ARMS) - {"source_only"}
    assert all(1 <= r["iterations"] <= 2 for r in train["runs"] if r["arm"] != "adabn")

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{dvc_repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("hsixai")
    parents = client.search_runs([experiment.experiment_id], "tags.`hsixai.experiment` = 'adapt' "
                                                             "and tags.`hsixai.role` = 'experiment'")
    assert len(parents) == 1
    children = client.search_runs([experiment.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    assert {c.data.tags["hsixai.stage"] for c in children} == {"adapt_pretrain", "adapt", "adapt_evaluate"}
    assert "target_f1_macro.kplus1" in parents[0].data.metrics

    assert "Running stage" not in run(["dvc", "repro", "adapt_evaluate"], dvc_repo).stdout
