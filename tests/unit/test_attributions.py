import json

import numpy as np
import pytest
import torch

from hsixai import train
from hsixai.config import XaiConfig, load_params
from hsixai.data.patches import PatchSampler
from hsixai.models import build_model
from hsixai.models.inference import load_classifier, predict
from hsixai.paths import Paths
from hsixai.xai import attributions, consistency

from ..conftest import TINY_TRAIN, tiny_params
from ..helpers import write_params


def test_spectral_profile_is_the_positive_part_averaged_over_pixels():
    a = torch.tensor([[[[1.0, -2.0], [3.0, 0.0]], [[-1.0, -1.0], [-1.0, -1.0]]]])  # [1, 2 bands, 2, 2]
    assert torch.allclose(attributions.spectral_profiles(a), torch.tensor([[1.0, 0.0]]))


def test_ring_masses_sum_the_positive_part_over_bands_per_chebyshev_ring():
    assert attributions.chebyshev_rings(5).tolist() == [
        [2, 2, 2, 2, 2],
        [2, 1, 1, 1, 2],
        [2, 1, 0, 1, 2],
        [2, 1, 1, 1, 2],
        [2, 2, 2, 2, 2],
    ]
    a = torch.zeros(2, 3, 5, 5)  # [n, bands, p, p]
    a[0, 0, 2, 2] = 4.0  # the centre pixel
    a[0, 1, 2, 2] = -9.0  # negative evidence is left out
    a[0, 2, 1, 3] = 2.0  # ring 1
    a[0, 0, 0, 4] = 1.0  # ring 2, a corner
    a[0, 1, 4, 0] = 0.5  # ring 2, another band
    a[1] = 1.0  # uniform: 1, 8 and 16 pixels x 3 bands
    masses = attributions.ring_masses(a)
    assert torch.allclose(masses, torch.tensor([[4.0, 2.0, 1.5], [3.0, 24.0, 48.0]]))


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
    one, one_rings, _ = attributions.attribute_instance(
        model, sampler, centres, targets, XaiConfig(noise_tunnel=False, n_steps=16, batch_size=1), seed=0
    )
    four, four_rings, _ = attributions.attribute_instance(
        model,
        sampler,
        centres,
        targets,
        XaiConfig(noise_tunnel=False, n_steps=16, batch_size=4, internal_batch_size=7),
        seed=0,
    )
    assert one.shape == (5, 7) and np.allclose(one, four, atol=1e-5)
    assert one_rings.shape == (5, 3) and np.allclose(one_rings, four_rings, atol=1e-5)


def test_noise_tunnel_is_seeded():
    model, sampler, centres = _tiny_model_and_sampler()
    targets = torch.tensor([2, 0, 1, 1, 2])
    cfg = XaiConfig(n_steps=8, nt_samples=3, batch_size=2)
    a, _, _ = attributions.attribute_instance(model, sampler, centres, targets, cfg, seed=3)
    b, _, _ = attributions.attribute_instance(model, sampler, centres, targets, cfg, seed=3)
    c, _, _ = attributions.attribute_instance(model, sampler, centres, targets, cfg, seed=4)
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
        ring_mass = z["ring_mass"]
        assert ring_mass.shape == (2, len(labels), 3) and ring_mass.dtype == np.float32
        assert np.all(ring_mass[~correct] == 0) and np.all(ring_mass[correct].sum(axis=1) > 0)
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
        model, _ = load_classifier(paths.checkpoint(i))
        pred = predict(model, sampler, centres, 64).argmax(axis=1)
        assert np.array_equal(pred == labels, correct[i])

    result = consistency.run(params, paths, progress=False)
    on_disk = json.loads(paths.metrics("consistency").read_text())
    assert on_disk == json.loads(json.dumps(result))
    for key in ("consistency_jsdiv", "consistency_instances", "consistency_concordance", "centre_share"):
        assert len(on_disk[f"{key}_ci"]) == 2
    assert 0 <= on_disk["consistency_jsdiv"] <= 1 and 0 < on_disk["centre_share"] < 1
    assert len(on_disk["radial_profile"]) == 3 and sum(on_disk["radial_profile"]) == pytest.approx(1.0)
    assert on_disk["centre_share_uniform"] == pytest.approx(1 / 25)
    boot = json.loads(paths.bootstrap_replicates.read_text())
    assert len(boot["statistics"]["consistency_instances"]["replicates"]) == params.xai.bootstrap
    assert set(on_disk["per_class"]) == set(params.data.class_names)
    for figure in ("profiles.png", "instance_distances.png", "radial.png"):
        assert (paths.figures_dir("consistency") / figure).is_file()

    # consistency_jsdiv recomputed from profiles.npz with scipy, sample by sample
    from scipy.spatial.distance import jensenshannon

    uniform = np.full(profiles.shape[2], 1 / profiles.shape[2])
    per_instance = []
    for i in range(2):
        class_means = [
            np.mean(
                [
                    jensenshannon(profiles[i, s].astype(np.float64), uniform, base=2)
                    for s in np.flatnonzero((labels == k) & correct[i])
                ]
            )
            for k in range(6)
            if ((labels == k) & correct[i]).any()
        ]
        per_instance.append(1 - np.mean(class_means))
    assert on_disk["consistency_jsdiv"] == pytest.approx(np.mean(per_instance), abs=1e-9)
