"""Spatial leakage between label maps: pure functions, shared by the `split` and `evaluate` stages.

A patch-based classifier sees a p x p window around each pixel. A dev or test
pixel whose window holds training pixels is partly classified from spectra the
model was trained on, and the larger the patch, the more such pixels there are.
Two tools follow from that:

- a *buffer* of b pixels: a pixel is "near" the training set when a training
  pixel lies within Chebyshev distance b of it (inside the (2b+1) x (2b+1)
  square centred on it). Dev pixels near the training set are dropped by
  `split`; test pixels that are not near it form the leak-free test subset.
  A leak-free pixel's patch holds no training pixel for every patch size up to
  2b + 1.
- the *leakage share* for patch size p: the share of dev or test pixels whose
  p x p patch holds a training pixel of their own class, or of any class.

Label maps are int [H, W] with -1 (any negative value) for "not in this set".
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def near(mask: np.ndarray, distance: int) -> np.ndarray:
    """bool [H, W]: pixels within Chebyshev distance `distance` of a True pixel of `mask` (bool [H, W]).

    Pixels beyond the image border count as False (a patch's padding holds no training pixel).
    """
    if distance < 0:
        raise ValueError(f"distance must be >= 0, found {distance}")
    mask = np.asarray(mask, dtype=bool)
    if distance == 0 or not mask.any():
        return mask.copy()
    # A square maximum filter is separable, so this costs O(H * W) per axis whatever the distance.
    return ndimage.maximum_filter(mask, size=2 * distance + 1, mode="constant", cval=False)


def drop_near(labels: np.ndarray, train: np.ndarray, buffer: int) -> tuple[np.ndarray, np.ndarray]:
    """Split `labels` into the pixels farther than `buffer` from every labelled pixel of `train`
    (any class) and those within it. Returns (kept, dropped) label maps int8 [H, W], -1 elsewhere."""
    close = near(train >= 0, buffer)
    kept = np.where((labels >= 0) & ~close, labels, -1).astype(np.int8)
    dropped = np.where((labels >= 0) & close, labels, -1).astype(np.int8)
    return kept, dropped


def min_distance_to(train: np.ndarray, labels: np.ndarray) -> int | None:
    """The smallest Chebyshev distance between a labelled pixel of `labels` and one of `train`;
    None when either map is empty. For checks and tests, O(n_labels * n_train)."""
    a, b = np.argwhere(labels >= 0), np.argwhere(train >= 0)
    if not len(a) or not len(b):
        return None
    best = None
    for start in range(0, len(a), 1024):  # bounded memory: 1024 x n_train distances at a time
        d = np.abs(a[start : start + 1024, None, :] - b[None, :, :]).max(axis=2).min()
        best = int(d) if best is None else min(best, int(d))
    return best


def patch_leakage(train: np.ndarray, targets: np.ndarray, patch_size: int, n_classes: int) -> dict[str, float | None]:
    """Share of the labelled pixels of `targets` whose patch_size x patch_size patch (centred on the pixel)
    holds a labelled pixel of `train` of the same class ("same_class") and of any class ("any_class").

    train, targets: int label maps [H, W], -1 outside the set. Shares are None when `targets` is empty.
    """
    if patch_size < 1 or patch_size % 2 == 0:
        raise ValueError(f"patch_size must be a positive odd integer, found {patch_size}")
    radius = patch_size // 2
    labelled = targets >= 0
    n = int(labelled.sum())
    if n == 0:
        return {"same_class": None, "any_class": None}
    any_class = near(train >= 0, radius)[labelled].sum()
    same_class = 0
    for k in range(n_classes):
        of_k = targets == k
        if of_k.any():
            same_class += near(train == k, radius)[of_k].sum()
    return {"same_class": float(same_class) / n, "any_class": float(any_class) / n}
