"""Shared fixtures: a tiny synthetic scene and params that every test can afford."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from .helpers import merged, write_params

REPO = Path(__file__).resolve().parents[1]

# Small enough for milliseconds per stage, large enough for every class on both sides of a split.
TINY_SYNTHESIZE = {
    "height": 48,
    "width": 48,
    "bands": 234,
    "subpixels": 3,
    "min_parcel": 3,
    "max_parcel": 10,
    "labelled_fraction": 0.9,
    "test_fraction": 0.5,
}

# Domain adaptation in seconds: tiny scenes, whole-scene steps, two seeds, two iterations.
TINY_TARGET = {"height": 40, "width": 40}
TINY_ADAPT = {
    "target_labels_per_class": 3,
    "labels_sweep": [5, "all"],
    "tile": 0,
    "seeds": 2,
    "pretrain_steps": 10,
    "pretrain_patience": 10,
    "iterations": 2,
    "d_steps": 2,
    "t_steps": 2,
    "device": "cpu",
    "source_synthetic": {"height": 40, "width": 40},
    "shadow_synthetic": {"height": 48, "width": 48},
}


# The tiny scene's parcels are 3..10 px: "auto" from the default sweep (3..9 -> 4 px) leaves some class with
# under 10 leak-free test pixels on it, and other seeds with none. A 2 px buffer leaves every class at least
# 10 dev and 10 leak-free test pixels (checked in tests/unit/test_leakage.py) and covers patches up to 5,
# the tests' usual patch; a p=7 point then exercises the "leak-free does not cover the patch" path.
TINY_BUFFER = 2


def tiny_params(**overrides) -> dict:
    """The repository's params.yaml with a tiny scene, and `overrides` merged in (tests/helpers.py `merged`)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["synthesize"].update(TINY_SYNTHESIZE)
    params["split"].update(buffer=TINY_BUFFER)
    params["xai"].update(samples_per_class=8, n_steps=8, nt_samples=2, bootstrap=50)
    params["adapt"] = {**params["adapt"], **TINY_ADAPT, "synthetic": {**params["adapt"]["synthetic"], **TINY_TARGET}}
    return merged(params, overrides)


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    """A project root with tiny params (no data yet)."""
    write_params(tmp_path, tiny_params())
    return tmp_path


# Training params that take seconds on the tiny scene.
TINY_TRAIN = {"epochs": 2, "batch_size": 32, "instances": 2, "device": "cpu"}


@pytest.fixture
def mlflow_uri(tmp_path: Path, monkeypatch) -> str:
    """Real MLflow on a SQLite database at an absolute path inside the test's directory."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # MLflow puts the artifacts of an experiment created on a URI of the user's own under ./mlruns: here, not in
    # the checkout the tests run from.
    monkeypatch.chdir(tmp_path)
    return uri


@pytest.fixture(scope="session")
def prepared_root(tmp_path_factory) -> Path:
    """A root with the tiny scene synthesized, prepared and split (shared: copy before changing it)."""
    from hsixai.config import params_from_dict
    from hsixai.data import prepare, split, synthetic
    from hsixai.paths import Paths

    root = tmp_path_factory.mktemp("prepared")
    params = tiny_params(patch_size=5, train=TINY_TRAIN)
    write_params(root, params)
    parsed, paths = params_from_dict(params), Paths.at(root)
    synthetic.run(parsed, paths, progress=False)
    prepare.run(parsed, paths, progress=False)
    split.run(parsed, paths, progress=False)
    return root


@pytest.fixture
def train_root(prepared_root: Path, tmp_path: Path) -> Path:
    """A private copy of `prepared_root` to train in."""
    import shutil

    root = tmp_path / "root"
    shutil.copytree(prepared_root, root)
    return root
