import numpy as np
import pytest
import torch

from hsixai.data.patches import PatchSampler, labelled_pixels
from hsixai.errors import HsixaiError


def _naive_patch(cube, mean, std, r, c, p):
    """One patch by explicit padding and slicing: the reference."""
    z = (cube - mean[:, None, None]) / std[:, None, None]
    h = p // 2
    padded = np.pad(z, ((0, 0), (h, h), (h, h)))
    return padded[:, r : r + p, c : c + p]


@pytest.mark.parametrize("p", [3, 5, 9])
def test_gather_matches_explicit_slicing(p):
    rng = np.random.default_rng(0)
    cube = rng.random((6, 13, 11)).astype(np.float32)
    mean, std = cube.mean(axis=(1, 2)), cube.std(axis=(1, 2))
    sampler = PatchSampler(cube, mean, std, p)
    rows = np.array([0, 12, 5, 0, 12])
    cols = np.array([0, 10, 4, 10, 0])
    patches = sampler.gather(sampler.centres(rows, cols)).numpy()
    assert patches.shape == (5, 6, p, p)
    for i, (r, c) in enumerate(zip(rows, cols)):
        assert np.allclose(patches[i], _naive_patch(cube, mean, std, r, c, p), atol=1e-6)
    # the centre pixel of each patch is the standardised pixel itself
    assert np.allclose(patches[:, :, p // 2, p // 2], ((cube[:, rows, cols].T - mean) / std), atol=1e-6)


def test_batches_visit_every_sample_once_and_shuffle_reproducibly():
    cube = np.random.default_rng(1).random((3, 10, 10)).astype(np.float32)
    sampler = PatchSampler(cube, np.zeros(3), np.ones(3), 3)
    labels_map = np.full((10, 10), -1)
    labels_map[2:8, 1:9] = np.arange(48).reshape(6, 8) % 4
    rows, cols, labels = labelled_pixels(labels_map)
    centres = sampler.centres(rows, cols)
    seen = []
    for x, y in sampler.batches(centres, torch.from_numpy(labels), 10, torch.Generator().manual_seed(0)):
        assert x.shape[1:] == (3, 3, 3) and len(x) == len(y) <= 10
        seen.append(x[:, 0, 1, 1])
    assert sorted(torch.cat(seen).tolist()) == sorted(cube[0, rows, cols].tolist())
    first = [y for _, y in sampler.batches(centres, torch.from_numpy(labels), 10, torch.Generator().manual_seed(0))]
    again = [y for _, y in sampler.batches(centres, torch.from_numpy(labels), 10, torch.Generator().manual_seed(0))]
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_patch_larger_than_scene_is_an_error():
    with pytest.raises(HsixaiError, match="patch_size"):
        PatchSampler(np.zeros((2, 8, 20), dtype=np.float32), np.zeros(2), np.ones(2), 9)
