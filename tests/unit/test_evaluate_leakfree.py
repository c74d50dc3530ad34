"""`evaluate` on the leak-free test subset, the leakage shares, and what reaches MLflow."""

import json
import logging
import shutil

import numpy as np
import pytest

from hsixai import evaluate, train
from hsixai.config import load_params, params_from_dict
from hsixai.data import split
from hsixai.data.patches import Split, load_sampler
from hsixai.leakage import patch_leakage
from hsixai.metrics import classification_metrics
from hsixai.models.inference import load_classifier, predict
from hsixai.paths import Paths

from ..conftest import TINY_BUFFER, TINY_TRAIN, tiny_params
from ..helpers import merged, write_params

EXISTING_KEYS = {
    "oa",
    "oa_std",
    "aa",
    "aa_std",
    "kappa",
    "kappa_std",
    "f1_macro",
    "f1_macro_std",
    "f1_per_class",
    "best_instance",
    "n_test",
    "per_instance",
}


def _params(root, **overrides):
    write_params(root, tiny_params(**merged({"patch_size": 5, "train": TINY_TRAIN}, overrides)))
    return load_params(root / "params.yaml")


def _leakfree_predictions(paths, patch_size, instance):
    """(y_true, y_pred) on the split's leak-free test pixels, predicted here independently of evaluate."""
    sampler = load_sampler(paths.prepared_dir, paths.split_dir, patch_size, "cpu")
    subset = Split.from_labels(sampler, np.load(paths.split_dir / "test_leakfree_labels.npy"))
    model, _ = load_classifier(paths.checkpoint(instance))
    return subset.labels.numpy(), predict(model, sampler, subset.centres, 256).argmax(axis=1)


@pytest.fixture(scope="module")
def trained_template(prepared_root, tmp_path_factory):
    """The tiny scene with two p=5 models trained once for this module (copy it before changing it)."""
    root = tmp_path_factory.mktemp("trained") / "root"
    shutil.copytree(prepared_root, root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root.parent / 'mlflow.db'}")
        mp.chdir(root.parent)  # MLflow's default artifact root (./mlruns) for an experiment it creates on that URI
        train.run(_params(root), Paths.at(root), progress=False)
    return root


@pytest.fixture
def trained(trained_template, tmp_path, mlflow_uri):
    root = tmp_path / "root"
    shutil.copytree(trained_template, root)
    return load_params(root / "params.yaml"), Paths.at(root)


def test_evaluate_reports_leakfree_scores_and_leakage(trained, mlflow_uri):
    params, paths = trained
    ev = evaluate.run(params, paths, progress=False)
    on_disk = json.loads(paths.metrics("evaluate").read_text())
    assert EXISTING_KEYS <= set(on_disk)
    names = params.data.class_names
    lf_map = np.load(paths.split_dir / "test_leakfree_labels.npy")
    counts = np.bincount(lf_map[lf_map >= 0], minlength=6).tolist()
    assert ev["n_test_leakfree"] == sum(counts) < ev["n_test"]
    assert ev["n_test_leakfree_per_class"] == dict(zip(names, counts))
    assert ev["leakfree_buffer"] == TINY_BUFFER and ev["leakfree_covers_patch"] is True
    assert ev["leakfree_classes_excluded"] == []
    for i, record in enumerate(ev["per_instance"]):
        y_true, y_pred = _leakfree_predictions(paths, 5, i)
        expected = classification_metrics(y_true, y_pred, 6)
        for key in ("oa", "aa", "kappa", "f1_macro"):
            assert record[f"{key}_leakfree"] == pytest.approx(expected[key])
    for key in ("oa", "aa", "kappa", "f1_macro"):
        values = [r[f"{key}_leakfree"] for r in ev["per_instance"]]
        assert ev[f"{key}_leakfree"] == pytest.approx(np.mean(values))
        assert ev[f"{key}_leakfree_std"] == pytest.approx(np.std(values))
    assert set(ev["f1_per_class_leakfree"]) == set(names)

    train_map, dev_map = (np.load(paths.split_dir / f"{s}_labels.npy") for s in ("train", "dev"))
    test_map = np.load(paths.prepared_dir / "test_labels.npy")
    leak_dev, leak_test = patch_leakage(train_map, dev_map, 5, 6), patch_leakage(train_map, test_map, 5, 6)
    assert ev["leakage"] == {
        "dev_same_class": leak_dev["same_class"],
        "dev_any_class": leak_dev["any_class"],
        "test_same_class": leak_test["same_class"],
        "test_any_class": leak_test["any_class"],
    }
    # the buffered dev is leak-free for every patch the buffer covers; the whole test mask is not
    assert ev["leakage"]["dev_any_class"] == 0 and ev["leakage"]["test_any_class"] > 0

    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name(params.tracking.experiment)
    runs = client.search_runs([experiment.experiment_id], "tags.`hsixai.stage` = 'evaluate'")
    child = runs[0]
    parent = client.get_run(child.data.tags["mlflow.parentRunId"])
    for key in ("f1_macro_test_leakfree", "oa_test_leakfree", "kappa_test_leakfree"):
        short = key.replace("_test", "")
        assert parent.data.metrics[key] == pytest.approx(ev[short])
        assert child.data.metrics[key] == pytest.approx(ev[short])
    assert parent.data.metrics["f1_macro_test"] == pytest.approx(ev["f1_macro"])
    assert child.data.metrics["leakage.test_same_class"] == pytest.approx(ev["leakage"]["test_same_class"])
    assert child.data.metrics["stage_seconds"] > 0 and "stage_seconds" not in parent.data.metrics


def test_class_with_too_few_leakfree_pixels_is_left_out_of_the_macro_scores(trained, caplog):
    params, paths = trained
    lf = json.loads((paths.split_dir / "leakfree.json").read_text())["n_test_leakfree_per_class"]
    smallest = min(lf, key=lf.get)
    # Same split, a higher bar: only the threshold changes, so the models stay valid.
    split.run(
        params_from_dict(tiny_params(patch_size=5, train=TINY_TRAIN, split={"min_leakfree_pixels": lf[smallest] + 1})),
        paths,
        progress=False,
    )
    ev = evaluate.run(params, paths, progress=False)
    assert smallest in ev["leakfree_classes_excluded"]
    names = params.data.class_names
    kept = [k for k, n in enumerate(names) if n not in ev["leakfree_classes_excluded"]]
    assert 0 < len(kept) < len(names)
    for i, record in enumerate(ev["per_instance"]):
        per_class = record["f1_per_class_leakfree"]
        assert record["f1_macro_leakfree"] == pytest.approx(np.mean([per_class[k] for k in kept]))
        y_true, y_pred = _leakfree_predictions(paths, 5, i)
        # its pixels still count in OA: the same pixels as before, only the macro scores change
        assert record["oa_leakfree"] == pytest.approx(np.mean(y_true == y_pred))
    assert ev["f1_per_class_leakfree"][smallest] is not None  # reported, not averaged in


def test_a_patch_wider_than_the_buffer_is_flagged(trained, caplog):
    params, paths = trained
    # A 1 px buffer is narrower than the radius 2 of these p=5 models: the subset is not leak-free for them.
    split.run(params_from_dict(tiny_params(patch_size=5, train=TINY_TRAIN, split={"buffer": 1})), paths, progress=False)
    with caplog.at_level(logging.WARNING):
        ev = evaluate.run(params, paths, progress=False)
    assert ev["leakfree_buffer"] == 1 and ev["leakfree_covers_patch"] is False
    assert "patch_size=5 reaches 2 px from its centre, beyond the split's buffer of 1 px" in caplog.text
    assert json.loads(paths.metrics("evaluate").read_text())["leakfree_covers_patch"] is False


def test_evaluate_refuses_a_leakfree_subset_that_does_not_match_the_test_mask(trained, capsys):
    from hsixai.cli import main

    params, paths = trained
    lf_path = paths.split_dir / "test_leakfree_labels.npy"
    lf = np.load(lf_path)
    outside = np.argwhere(lf < 0)[0]  # a pixel outside the subset now claims to be in it
    lf[tuple(outside)] = 0
    np.save(lf_path, lf)
    assert main(["--root", str(paths.root), "--no-progress", "evaluate"]) == 2
    err = capsys.readouterr().err
    assert "test_leakfree_labels.npy" in err and "re-run the split stage" in err and len(err.strip().splitlines()) == 1
    assert not paths.metrics("evaluate").exists()
