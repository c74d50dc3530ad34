"""One split, one leak-free test subset for every point: through DVC, `patch_size` never re-runs `split`."""

import hashlib
import json

import pytest

from ..helpers import edit_params
from .conftest import run

pytestmark = pytest.mark.pipeline

SPLIT_OUTPUTS = (
    "data/split/test_leakfree_labels.npy",
    "data/split/dev_labels.npy",
    "data/split/train_labels.npy",
    "data/split/leakfree.json",
)


def _hashes(repo):
    return {name: hashlib.sha256((repo / name).read_bytes()).hexdigest() for name in SPLIT_OUTPUTS}


def _stages_run(output):
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def _changed_stages(repo, target="evaluate"):
    """Names of the stages up to `target` that `dvc status` reports as changed."""
    status = json.loads(run(["dvc", "status", "--json", "--with-deps", target], repo).stdout or "{}")
    return {name.split(":")[-1] for name in status}


def test_patch_size_never_reruns_split_and_keeps_the_leakfree_subset(built_copy):
    dvc_repo = built_copy  # built at patch_size 5
    assert "Running stage" not in run(["dvc", "repro", "evaluate"], dvc_repo).stdout
    before, first = _hashes(dvc_repo), json.loads((dvc_repo / "metrics/evaluate.json").read_text())

    # A changed patch_size makes train and evaluate stale, never split.
    edit_params(dvc_repo, patch_size=3)
    changed = _changed_stages(dvc_repo)
    assert {"train", "evaluate"} <= changed and "split" not in changed
    edit_params(dvc_repo, patch_size=5)
    assert _changed_stages(dvc_repo) == set()

    # A DVC experiment at another patch size: split is skipped, the subset is the very same file.
    out = run(["dvc", "exp", "run", "-S", "patch_size=3", "evaluate"], dvc_repo).stdout
    assert _stages_run(out) == {"train", "evaluate"}
    assert _hashes(dvc_repo) == before
    second = json.loads((dvc_repo / "metrics/evaluate.json").read_text())
    for key in ("n_test_leakfree", "n_test_leakfree_per_class", "leakfree_buffer", "n_test"):
        assert second[key] == first[key], key
    # ... while what depends on the patch does change: smaller patches reach fewer train pixels
    assert second["leakage"]["test_any_class"] < first["leakage"]["test_any_class"]


def test_split_follows_sweep_patch_sizes_under_auto(built_copy):
    dvc_repo = built_copy
    # auto over 3..5 resolves to the tests' explicit 2 px: split re-runs (its params changed), same outputs.
    assert "Running stage" not in run(["dvc", "repro", "split"], dvc_repo).stdout
    before = _hashes(dvc_repo)
    edit_params(dvc_repo, split={"buffer": "auto"}, sweep={"patch_sizes": [3, 5]})
    assert "split" in _changed_stages(dvc_repo, "split")
    assert _stages_run(run(["dvc", "repro", "split"], dvc_repo).stdout) == {"split"}
    assert _hashes(dvc_repo) == before
    # A sweep of 3 only: a 1 px buffer, a larger leak-free subset.
    edit_params(dvc_repo, sweep={"patch_sizes": [3]})
    assert _stages_run(run(["dvc", "repro", "split"], dvc_repo).stdout) == {"split"}
    after = json.loads((dvc_repo / "data/split/split.json").read_text())
    assert after["buffer"] == 1 and _hashes(dvc_repo) != before
