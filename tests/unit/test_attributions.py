import json

import numpy as np
import pytest
import torch

from hsixai import train
from hsixai.config import XaiConfig, load_params
from hsixai.data.patches import PatchSampler
from hsixai.models import build_model
from hsixai.paths import Paths
from hsixai.xai import attributions, consistency

from ..conftest import TINY_TRAIN, tiny_params, write_params


def test_spectral_profile_is_the_positive_part_averaged_over_pixels():
    a = torch.tensor([[[[1.0, -2.0], [3.0, 0.0]], [[-1.0, -1.0], [-1.0, -1.0]]]])  # [1, 2 bands, 2, 2]
    assert torch.allclose(attributions.spectral_profiles(a), torch.tensor([[1.0, 0.0]]))


def _tiny_model_and_sampler(name="cnn2d", p=5):
    rng = np.random.default_rng(0)
    cube = rng.random((7, 12, 12)).astype(np.float32)
    sampler = PatchSampler(cube, cube.mean(axis=(1, 2)), cube.std(axis=(1, 2)), p)
    torch.manual_seed(0)
    model = build_model(name, 7, 3, p, 4).eval()
    centres = sampler.centres(np.array([1, 5, 9, 10, 3]), np.array([2, 5, 8, 1, 11]))
    return model, sampler, centres


@pytest.mark.parametrize("name", ["cnn2d", "vit"])
def test_plain_ig_is_complete(name):
    """IG's attributions sum to f(x) - f(0) for the target class (captum, real model)."""
    model, sampler, centres = _tiny_model_and_sampler(name)
    targets = torch.tensor([0, 1, 2, 1, 0])
    cfg = XaiConfig(noise_tunnel=False, n_steps=200, batch_size=2)
    explain = attributions.explainer(model, cfg)
    x = sampler.gather(centres).contiguous()
    total = explain(x, targets).sum(dim=(1, 2, 3))
    with torch.no_grad():
        gap = model(x).gather(1, targets[:, None])[:, 0] - model(torch.zeros_like(x)).gather(1, targets[:, None])[:, 0]
    # Within 5%: ReLU kinks along the path limit the integral's accuracy; a wrong target would be far off.
    assert torch.allclose(total, gap, atol=5e-2 * gap.abs().max().item() + 1e-3)


def test_batching_does_not_change_attributions():
    """Per-sample targets: attributing 5 samples in batches of 1 or of 4 gives the same profiles."""
    model, sampler, centres = _tiny_model_and_sampler()
    targets = torch.tensor([2, 0, 1, 1, 2])
    one, _ = attributions.attribute_instance(model, sampler, centres, targets,
                                             XaiConfig(noise_tunnel=False, n_steps=16, batch_size=1), seed=0)
    four, _ = attributions.attribute_instance(model, sampler, centres, targets,
                                              XaiConfig(noise_tunnel=False, n_steps=16, batch_size=4,
                                                        internal_batch_size=7), seed=0)
    assert one.shape == (5, 7) and np.allclose(one, four, atol=1e-5)


def test_noise_tunnel_is_seeded():
    model, sampler, centres = _tiny_model_and_sampler()
    targets = torch.tensor([2, 0, 1, 1, 2])
    cfg = XaiConfig(n_steps=8, nt_samples=3, batch_size=2)
    a, _ = attributions.attribute_instance(model, sampler, centres, targets, cfg, seed=3)
    b, _ = attributions.attribute_instance(model, sampler, centres, targets, cfg, seed=3)
    c, _ = attributions.attribute_instance(model, sampler, centres, targets, cfg, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_attribute_and_consistency_stages(train_root, mlflow_uri):
    write_params(train_root, tiny_params(patch_size=5, train=TINY_TRAIN))
    params, paths = load_params(train_root / "params.yaml"), Paths.at(train_root)
    train.run(params, paths, progress=False)
    summary = attributions.run(params, paths, progress=False)

    with np.load(paths.profiles) as z:
        profiles, labels, correct = z["profiles"], z["labels"], z["correct"]
        assert profiles.shape == (2, len(labels), 174) and profiles.dtype == np.float32
        assert len(z["wavelengths"]) == 174 and len(z["rows"]) == len(labels)
    xai = np.load(paths.split_dir / "xai_labels.npy")
    assert np.array_equal(np.sort(labels), np.sort(xai[xai >= 0]))
    assert summary["correct_per_instance"] == correct.sum(axis=1).tolist()
    assert np.all(profiles[~correct] == 0) and np.all(profiles[correct].sum(axis=1) > 0)
    # `correct` is what each checkpoint predicts on those pixels
    from hsixai.data.patches import load_sampler

    sampler = load_sampler(paths.prepared_dir, paths.split_dir, 5, "cpu")
    with np.load(paths.profiles) as z:
        centres = sampler.centres(z["rows"], z["cols"])
    for i in range(2):
        model, _ = train.load_checkpoint(paths.checkpoint(i))
        pred = train.predict(model, sampler, centres, 64).argmax(axis=1)
        assert np.array_equal(pred == labels, correct[i])

    result = consistency.run(params, paths, progress=False)
    on_disk = json.loads(paths.metrics("consistency").read_text())
    assert on_disk == json.loads(json.dumps(result))
    for key in ("consistency_jsdiv", "consistency_instances"):
        assert 0 <= on_disk[key] <= 1 and len(on_disk[f"{key}_ci"]) == 2
    assert set(on_disk["per_class"]) == set(params.data.class_names)
    assert (paths.figures_dir("consistency") / "profiles.png").is_file()

    # consistency_jsdiv recomputed from profiles.npz with scipy, sample by sample
    from scipy.spatial.distance import jensenshannon

    uniform = np.full(profiles.shape[2], 1 / profiles.shape[2])
    per_instance = []
    for i in range(2):
        class_means = [np.mean([jensenshannon(profiles[i, s], uniform, base=2)
                                for s in np.flatnonzero((labels == k) & correct[i])])
                       for k in range(6) if ((labels == k) & correct[i]).any()]
        per_instance.append(1 - np.mean(class_means))
    assert on_disk["consistency_jsdiv"] == pytest.approx(np.mean(per_instance), abs=1e-9)
