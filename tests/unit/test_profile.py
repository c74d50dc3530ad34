"""Settings profiles (profiles/*.yaml): the published one holds the published settings, validated like params.yaml."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import yaml

from hsixai.cli import main
from hsixai.config import PER_MODEL, load_params, load_profile, params_from_dict
from hsixai.errors import HsixaiError
from hsixai.paths import Paths
from hsixai.sweep import load_named_profile, points
from hsixai.tracking import flat_params

from ..conftest import REPO

PUBLISHED = REPO / "profiles" / "published.yaml"


def experiment_params(workspace, model: str, patch: int, extra: dict):
    """The params a queued experiment runs with: params.yaml with `dvc exp run -S key=value` applied."""
    raw = asdict(workspace)
    for key, value in {"model": model, "patch_size": patch, **extra}.items():
        *groups, leaf = key.split(".")
        node = raw
        for group in groups:
            node = node[group]
        node[leaf] = value
    return params_from_dict(raw)


def published_points(workspace):
    return points(workspace, load_profile(PUBLISHED, workspace))


@pytest.mark.parametrize(
    "workspace", [load_params(REPO / "params.yaml"), params_from_dict({})], ids=["params.yaml", "code defaults"]
)
def test_every_published_point_runs_the_published_settings(workspace):
    """What docs/pipeline.md quotes: both models, patch sizes 5-21, 30 epochs over every batch, batch 256 (cnn2d)
    / 8 (vit), 512 xAI samples per class, IG 50 steps x NoiseTunnel 10, the map of every pixel, buffer 10."""
    found = published_points(workspace)
    assert sorted((m, p) for m, p, _ in found) == [(m, p) for m in ("cnn2d", "vit") for p in range(5, 22, 2)]
    for model, patch, extra in found:
        run = experiment_params(workspace, model, patch, extra)
        assert (run.model, run.patch_size) == (model, patch)
        assert (run.train.epochs, run.train.max_batches_per_epoch) == (30, 0)
        assert run.train.batch_size == {"cnn2d": 256, "vit": 8}[model]
        assert (run.xai.samples_per_class, run.xai.n_steps, run.xai.nt_samples) == (512, 50, 10)
        assert run.evaluate.map_stride == 1
        # the experiment keeps params.yaml's sweep, yet splits with the buffer of the profile's largest patch
        assert run.sweep.patch_sizes == workspace.sweep.patch_sizes and run.split_buffer == 10 >= patch // 2
    # what the profile leaves alone comes from params.yaml
    run = experiment_params(workspace, *found[0])
    assert (run.data, run.xai.method, run.train.lr) == (workspace.data, workspace.xai.method, workspace.train.lr)


def test_the_default_sweep_sets_nothing_on_its_experiments():
    params = load_params(REPO / "params.yaml")
    assert [(m, p) for m, p, _ in points(params)] == [
        (m, p) for m in params.sweep.models for p in params.sweep.patch_sizes
    ]
    assert all(extra == {} for _, _, extra in points(params))


def test_the_profile_holds_known_keys_that_differ_from_params_yaml():
    """An overlay: every key a config key, every value one the demo params.yaml changes (nothing restated)."""
    raw = yaml.safe_load(PUBLISHED.read_text())
    known = flat_params(params_from_dict({}))
    workspace = flat_params(load_params(REPO / "params.yaml"))

    def leaves(node, prefix=""):
        for key, value in node.items():
            yield from leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else [(f"{prefix}{key}", value)]

    overlays = [{k: v for k, v in raw.items() if k != PER_MODEL}, *raw[PER_MODEL].values()]
    for key, value in (leaf for overlay in overlays for leaf in leaves(overlay)):
        assert key in known, f"{key} is not a params key"
        assert workspace[key] != value, f"{key}: {value!r} is params.yaml's value already"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("train:\n  epoch: 30\n", "unknown key 'train.epoch' (did you mean 'train.epochs'?)"),
        ("xai:\n  n_steps: many\n", "xai.n_steps: expected an integer, found 'many'"),
        ("train:\n  epochs: 0\n", "train.epochs: expected a positive integer, found 0"),
        ("per_model:\n  vit:\n    train: {batch: 8}\n", "per_model.vit: unknown key 'train.batch'"),
        ("per_model:\n  resnet:\n    train: {batch_size: 8}\n", "per_model: expected a mapping from model names"),
        ("sweep: [1, 2\n", "not valid YAML"),
    ],
)
def test_a_bad_profile_is_a_one_line_error_naming_the_file_and_key(tmp_path, text, fragment):
    path = tmp_path / "profiles" / "bad.yaml"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(HsixaiError) as err:
        load_named_profile(Paths.at(tmp_path), "bad", load_params(REPO / "params.yaml"))
    message = str(err.value)
    assert str(path) in message and fragment in message and "\n" not in message


def test_sweep_with_an_unknown_profile_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "published.yaml").write_text(PUBLISHED.read_text())
    assert main(["--root", str(tmp_path), "--no-progress", "sweep", "--profile", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"hsixai sweep: error: --profile: expected one of published (files in {tmp_path / 'profiles'}), found 'nope'"
    )


def test_published_is_an_alias_of_the_published_profile():
    from hsixai.cli import build_parser

    assert build_parser().parse_args(["sweep", "--published"]).profile == "published"
    assert build_parser().parse_args(["sweep"]).profile is None
