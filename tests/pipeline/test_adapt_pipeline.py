"""The adapt stages under `dvc repro` on tiny pairs (two scenes, one shadowed scene), with real MLflow."""

import json

import pytest

from ..helpers import edit_params
from .conftest import run

pytestmark = pytest.mark.pipeline

ARMS = ("source_only", "adabn", "finetune", "kplus1", "kplus1_attention")
PAIRS = ("two_scenes", "shadow")
ADAPT_STAGES = {
    "adapt_source_synthesize",
    "adapt_synthesize",
    "adapt_shadow_synthesize",
    "adapt_prepare",
    "adapt_pretrain",
    "adapt",
    "adapt_evaluate",
}


def _stages_run(output):
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def test_adapt_stages_write_the_ablation_for_both_pairs(dvc_repo):
    out = run(["dvc", "repro", "adapt_evaluate"], dvc_repo).stdout
    assert _stages_run(out) == ADAPT_STAGES, "the adapt target runs no stage of the main pipeline"

    metrics = json.loads((dvc_repo / "metrics/adapt.json").read_text())
    assert metrics["seeds"] == [0, 1] and "Student t" in metrics["interval"]
    assert set(metrics["pairs"]) == set(PAIRS)
    for pair in PAIRS:
        entry = metrics["pairs"][pair]
        assert entry["n_test"] > 0 and entry["one_scene"] == (pair == "shadow")
        assert set(entry["arms"]) == set(ARMS)
        for arm in ARMS:
            result = entry["arms"][arm]
            assert len(result["per_seed"]) == 2
            for variant in ("as_trained", "recalibrated"):
                for key in ("oa", "aa", "kappa", "f1_macro", "miou"):
                    assert result[variant][f"{key}_std"] >= 0
                    assert -1 <= result[variant][key] <= 1
            for reference in ("source_only", "adabn"):
                if arm != reference:
                    for variant in ("as_trained", "recalibrated"):
                        diff = result[f"vs_{reference}"][variant]
                        assert diff["low"] <= diff["mean"] <= diff["high"] and diff["n"] == 2
            if arm not in ("source_only", "adabn"):
                assert result["iterations"] == [2, 2] and result["hit_cap"] == 2, "tiny: every run hits the cap"
                assert result["stopped_by_rule"] == [False, False]
        # source_only recalibrated on the whole target scene is exactly the adabn arm
        assert entry["arms"]["source_only"]["recalibrated"]["f1_macro"] == pytest.approx(
            entry["arms"]["adabn"]["as_trained"]["f1_macro"]
        )
        assert 1 <= entry["gate"]["inside"] <= 2
        for figure in ("maps", "losses", "gate"):
            assert (dvc_repo / f"figures/adapt/{figure}_{pair}.png").stat().st_size > 5_000
    assert metrics["pairs"]["shadow"]["gate"]["outside"] is not None
    assert metrics["pairs"]["two_scenes"]["gate"]["outside"] is None, "two scenes: the whole target is the region"
    train = json.loads((dvc_repo / "metrics/adapt_train.json").read_text())
    assert {r["arm"] for r in train["two_scenes"]["runs"]} == set(ARMS) - {"source_only"}

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{dvc_repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("hsixai")
    parents = client.search_runs(
        [experiment.experiment_id], "tags.`hsixai.experiment` = 'adapt' and tags.`hsixai.role` = 'experiment'"
    )
    assert len(parents) == 1
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    assert {c.data.tags["hsixai.stage"] for c in children} == {"adapt_pretrain", "adapt", "adapt_evaluate"}
    assert "shadow.target_f1_macro.kplus1_attention" in parents[0].data.metrics

    assert "Running stage" not in run(["dvc", "repro", "adapt_evaluate"], dvc_repo).stdout

    # adapt.workers (2 here, from params.yaml) only spreads (pair, seed) jobs over processes: one worker
    # writes the same bytes, so DVC finds every output unchanged and nothing downstream to re-run.
    edit_params(dvc_repo, adapt={"workers": 1})
    for stage in ("adapt_pretrain", "adapt"):
        run(["dvc", "repro", "--force", "--single-item", stage], dvc_repo)
    assert "Running stage" not in run(["dvc", "repro", "adapt_evaluate"], dvc_repo).stdout

    # The labels sweep reuses S and the ablation's own level; another labels level does not retrain S.
    out = run(["dvc", "repro", "adapt_labels"], dvc_repo).stdout
    assert _stages_run(out) == {"adapt_labels"}
    labels = json.loads((dvc_repo / "metrics/adapt_labels.json").read_text())
    for pair in PAIRS:
        assert list(labels["pairs"][pair]) == ["3", "5", "all"]
        assert set(labels["pairs"][pair]["3"]["arms"]) == {"finetune", "kplus1_attention"}
        assert labels["pairs"][pair]["all"]["labelled_pixels"] > labels["pairs"][pair]["5"]["labelled_pixels"]
    edit_params(dvc_repo, adapt={"target_labels_per_class": 4})
    out = run(["dvc", "repro", "adapt_evaluate"], dvc_repo).stdout
    assert "adapt_prepare" in _stages_run(out) and "adapt_pretrain" not in _stages_run(out)
