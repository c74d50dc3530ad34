import json

import numpy as np
import pytest
import torch

from hsixai import evaluate, train
from hsixai.cli import main
from hsixai.config import load_params
from hsixai.data.patches import Split
from hsixai.models.inference import load_classifier, predict
from hsixai.paths import Paths

from ..conftest import TINY_TRAIN, tiny_params
from ..helpers import merged, write_params


def _params(root, **overrides):
    write_params(root, tiny_params(**merged({"patch_size": 5, "train": TINY_TRAIN}, overrides)))
    return load_params(root / "params.yaml")


def test_train_and_evaluate_write_their_outputs(train_root, mlflow_uri):
    params, paths = _params(train_root), Paths.at(train_root)
    summary = train.run(params, paths, progress=False)
    assert len(summary["instances"]) == 2 and [i["seed"] for i in summary["instances"]] == [0, 1]
    assert 0 <= summary["f1_macro_val"] <= 1
    on_disk = json.loads(paths.metrics("train").read_text())
    assert on_disk["f1_macro_val"] == pytest.approx(np.mean([i["f1_macro_val"] for i in on_disk["instances"]]))
    for i in range(2):
        model, meta = load_classifier(paths.checkpoint(i))
        assert meta["seed"] == i and meta["patch_size"] == 5 and meta["model"] == "cnn2d"
        assert meta["n_bands"] == 174 and len(meta["bands"]) == 174 and not model.training
        assert (paths.plots_dir("train") / f"instance_{i}.csv").read_text().startswith("epoch,loss,f1_macro_val,lr")

    ev = evaluate.run(params, paths, progress=False)
    for key in ("oa", "aa", "kappa", "f1_macro"):
        assert ev[key] == pytest.approx(np.mean([r[key] for r in ev["per_instance"]]))
    assert set(ev["f1_per_class"]) == set(params.data.class_names)
    n_test = int((np.load(paths.prepared_dir / "test_labels.npy") >= 0).sum())
    assert ev["n_test"] == n_test and sum(map(sum, ev["per_instance"][0]["confusion"])) == n_test
    assert len((paths.plots_dir("evaluate") / "confusion.csv").read_text().splitlines()) == n_test + 1
    assert (paths.figures_dir("evaluate") / "classification_map.png").stat().st_size > 5000


def test_best_dev_checkpoint_reproduces_its_dev_score(train_root, mlflow_uri):
    params, paths = _params(train_root), Paths.at(train_root)
    summary = train.run(params, paths, progress=False)
    from hsixai.data.patches import load_sampler
    from hsixai.metrics import f1_macro

    sampler = load_sampler(paths.prepared_dir, paths.split_dir, 5, "cpu")
    dev = Split.from_labels(sampler, np.load(paths.split_dir / "dev_labels.npy"))
    model, meta = load_classifier(paths.checkpoint(1))
    pred = predict(model, sampler, dev.centres, 256).argmax(axis=1)
    assert f1_macro(dev.labels.numpy(), pred, 6) == pytest.approx(summary["instances"][1]["f1_macro_val"])


def test_same_params_give_identical_metrics(train_root, tmp_path, mlflow_uri):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(train_root, other)
    results = []
    for root in (train_root, other):
        params, paths = _params(root, train={**TINY_TRAIN, "instances": 1}), Paths.at(root)
        train.run(params, paths, progress=False)
        results.append(json.loads(paths.metrics("train").read_text())["instances"][0]["f1_macro_val"])
        # weights_only: the checkpoint holds tensors and plain data only (tests/unit/test_security.py: anything else
        # is refused)
        state = torch.load(paths.checkpoint(0), weights_only=True)["state_dict"]
        assert state and all(isinstance(v, torch.Tensor) for v in state.values())
        results.append(state["head.8.weight"].sum().item())
    assert results[0] == results[2] and results[1] == results[3]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"patch_size": 4}, "patch_size: expected an odd integer >= 3, found 4"),
        ({"patch_size": -3}, "patch_size: expected an odd integer >= 3"),
        ({"patch_size": 51}, "patch_size: expected at most the scene's smaller side (48 px), found 51"),
        ({"model": "resnet"}, "model: expected one of cnn2d, vit, found 'resnet'"),
        ({"model": "vitt"}, "did you mean 'vit'"),
        ({"train": {"batch_size": 0}}, "train.batch_size: expected a positive integer, found 0"),
        ({"train": {"epochs": -1}}, "train.epochs: expected a positive integer, found -1"),
        ({"train": {"device": "tpu"}}, "train.device: expected one of auto, cpu, cuda"),
    ],
)
def test_bad_training_params_fail_before_any_work(train_root, capsys, overrides, message):
    write_params(train_root, tiny_params(**merged({"patch_size": 5, "train": TINY_TRAIN}, overrides)))
    assert main(["--root", str(train_root), "--no-progress", "train"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (train_root / "models").exists() and not (train_root / "mlflow.db").exists()


def test_cuda_asked_for_without_cuda(train_root, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    write_params(train_root, tiny_params(patch_size=5, train={**TINY_TRAIN, "device": "cuda"}))
    assert main(["--root", str(train_root), "--no-progress", "train"]) == 2
    assert "train.device: 'cuda' was asked for" in capsys.readouterr().err


def test_train_without_prepared_data(tmp_path, capsys):
    write_params(tmp_path, tiny_params(patch_size=5, train=TINY_TRAIN))
    assert main(["--root", str(tmp_path), "--no-progress", "train"]) == 2
    assert "prepared data not found" in capsys.readouterr().err


def test_evaluate_without_checkpoints(train_root, capsys):
    write_params(train_root, tiny_params(patch_size=5, train=TINY_TRAIN))
    assert main(["--root", str(train_root), "--no-progress", "evaluate"]) == 2
    assert "checkpoint not found (run the train stage first)" in capsys.readouterr().err


def test_bounded_epochs_and_strided_scene_map(train_root, mlflow_uri, monkeypatch):
    params = _params(train_root, train={"max_batches_per_epoch": 2, "instances": 1}, evaluate={"map_stride": 4})
    paths, epoch_sizes, real_epoch = Paths.at(train_root), [], train.train_epoch

    def counting_epoch(net, batches, *args, **kwargs):
        batches = list(batches)
        epoch_sizes.append(len(batches))
        return real_epoch(net, batches, *args, **kwargs)

    monkeypatch.setattr(train, "train_epoch", counting_epoch)
    train.run(params, paths, progress=False)
    assert epoch_sizes == [2] * params.train.epochs  # the scene has many more batches than 2

    from hsixai.data.patches import load_sampler

    sampler = load_sampler(paths.prepared_dir, paths.split_dir, 5, "cpu")
    model, _ = load_classifier(paths.checkpoint(0))
    strided = evaluate._scene_map(model, sampler, params, progress=False)
    full = evaluate._scene_map(model, sampler, _params(train_root, evaluate={"map_stride": 1}), progress=False)
    assert full.shape == (48, 48) and strided.shape == (12, 12)
    np.testing.assert_array_equal(strided, full[::4, ::4])
    evaluate.run(_params(train_root, train={"instances": 1}, evaluate={"map_stride": 4}), paths, progress=False)
    assert (paths.figures_dir("evaluate") / "classification_map.png").is_file()
