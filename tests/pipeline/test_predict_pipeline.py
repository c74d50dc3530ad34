"""The bundle and map stages on the tiny experiment, and `hsixai predict` of the selection's recommended point.

The map must be evaluate's predictions on every test pixel: the best-dev instance's map against the
predictions evaluate wrote (plots/evaluate/confusion.csv), and the bundle's mean softmax against the same
evaluation path (load_sampler + models/inference.predict) recomputed here.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import rasterio
import torch

from hsixai import bundle as bundles
from hsixai.data.georef import synthetic_grid
from hsixai.data.patches import Split, labelled_pixels, load_sampler
from hsixai.models.inference import predict
from hsixai.paths import MapFiles, Paths
from hsixai.predict import predict_map

from .conftest import run


def _test_pixels(paths: Paths) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, cols, labels = labelled_pixels(np.load(paths.prepared_files().test_labels))
    return rows, cols, labels


def test_map_stage_is_evaluates_predictions_on_every_test_pixel(built_copy: Path, tmp_path: Path):
    run(["dvc", "repro", "map"], built_copy)
    paths = Paths.at(built_copy)
    names = json.loads(paths.prepared_files().meta.read_text())["class_names"]
    rows, cols, _ = _test_pixels(paths)
    scene_map = paths.scene_map()
    with rasterio.open(scene_map.classes) as src:
        codes = src.read(1)
        grid = synthetic_grid(src.height, src.width)
        assert src.crs.to_string() == grid.crs and tuple(src.transform)[:6] == grid.transform
    with rasterio.open(scene_map.probability) as src:
        chosen = src.read(1)
    assert scene_map.quicklook.stat().st_size > 0

    # The bundle's mean softmax against the evaluation path, recomputed on the test pixels.
    meta = bundles.read_meta(paths.bundle_dir)
    sampler = load_sampler(paths.prepared_dir, paths.split_dir, meta.patch_size, "cpu")
    test = Split.from_labels(sampler, np.load(paths.prepared_files().test_labels))
    bundle = bundles.load_bundle(paths.bundle_dir)
    probs = np.mean(
        [torch.softmax(torch.from_numpy(predict(m, sampler, test.centres, 512)), 1).numpy() for m in bundle.models],
        axis=0,
    )
    np.testing.assert_array_equal(codes[rows, cols], probs.argmax(axis=1) + 1)
    np.testing.assert_allclose(chosen[rows, cols], probs.max(axis=1), atol=1e-6)
    assert (codes > 0).all()  # the whole scene is mapped, border pixels included

    # One instance, the best on dev: the map is the predictions evaluate wrote for it.
    best = json.loads(paths.metrics("evaluate").read_text())["best_instance"]
    with open(paths.confusion_table()) as fh:
        evaluated = [names.index(r["predicted"]) for r in csv.DictReader(fh)]
    one = tmp_path / "best"
    bundles.write_bundle(one, paths, bundles.workspace_opener(paths), [best], {"point": "best instance"})
    out = MapFiles(tmp_path / "best.tif")
    predict_map(paths.resolve("data/synthetic"), bundles.load_bundle(one), out.files, progress=False)
    with rasterio.open(out.classes) as src:
        best_codes = src.read(1)
    assert len(evaluated) == len(rows)
    np.testing.assert_array_equal(best_codes[rows, cols] - 1, evaluated)

    # One repro serves this test too (pipeline tests are costly).
    _predict_defaults_to_the_selections_recommended_experiment(built_copy, tmp_path)


def _predict_defaults_to_the_selections_recommended_experiment(root: Path, tmp_path: Path):
    """From the experiment's commit and the DVC cache: the workspace's models and bundle are gone."""
    # The metrics files are untracked in the test repository: -I puts them in the experiment, as `dvc exp run` does.
    run(["dvc", "exp", "save", "-n", "tiny-p5", "-I", "metrics", "consistency"], root)
    selected = run(["hsixai", "--no-progress", "select"], root)
    assert "the recommended point is registered as models:/hsixai-cnn2d@champion (version 1)" in selected.stdout
    expected = Paths.at(root).scene_map()
    shutil.rmtree(root / "models")
    shutil.rmtree(root / "bundle")
    out = tmp_path / "recommended.tif"
    proc = run(["hsixai", "--no-progress", "predict", "data/synthetic", "--out", str(out)], root)
    assert "pixels classified by cnn2d p=5" in proc.stdout
    for ours, theirs in zip(MapFiles(out).files[:2], expected.files[:2]):
        with rasterio.open(ours) as a, rasterio.open(theirs) as b:
            np.testing.assert_array_equal(a.read(), b.read())
            assert a.tags()["EXPERIMENT"] == "tiny-p5" and b.tags()["POINT"] == "workspace"

    # The registry round trip: the version select registered maps the scene as the checkpoints do, from the
    # registry alone (no repository files: --root elsewhere, the models gone), and carries its provenance.
    registered = tmp_path / "registered.tif"
    scene = str(root / "data" / "synthetic")
    uri = "models:/hsixai-cnn2d@champion"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    run(
        [
            "hsixai",
            "--no-progress",
            "--root",
            str(elsewhere),
            "predict",
            scene,
            "--model",
            uri,
            "--out",
            str(registered),
        ],
        root,
        env=env,
    )
    for ours, theirs in zip(MapFiles(registered).files[:2], expected.files[:2]):
        with rasterio.open(ours) as a, rasterio.open(theirs) as b:
            np.testing.assert_array_equal(a.read(), b.read())
    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    version = client.get_model_version_by_alias("hsixai-cnn2d", "champion")
    assert version.tags["hsixai.experiment"] == "tiny-p5" and len(version.tags["hsixai.commit"]) == 40
    assert version.tags["hsixai.patch_size"] == "5"
    logged = client.get_run(version.run_id).data
    assert {"f1_macro_test_leakfree", "consistency_jsdiv"} <= set(logged.metrics) and logged.params["patch_size"] == "5"
    missing = run(
        ["hsixai", "predict", scene, "--model", "models:/hsixai-cnn2d@nobody", "--out", str(tmp_path / "no.tif")],
        root,
        check=False,
    )
    assert missing.returncode == 2 and "no such registered model version" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1 and not (tmp_path / "no.tif").exists()

    # What `hsixai sweep` does on a fresh clone, whose workspace never ran the data stages: the scene too is
    # read from the experiment's commit and the DVC cache.
    shutil.rmtree(root / "data" / "synthetic")
    out = tmp_path / "fresh.tif"
    run(["hsixai", "--no-progress", "predict", "data/synthetic", "--scene-from-experiment", "--out", str(out)], root)
    with rasterio.open(out) as a, rasterio.open(expected.classes) as b:
        np.testing.assert_array_equal(a.read(), b.read())
        assert a.tags()["SCENE"] == "data/synthetic of DVC experiment tiny-p5"
