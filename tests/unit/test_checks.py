"""Each shared input check passes good input and refuses bad input in one line that names the input."""

from __future__ import annotations

import re

import numpy as np
import pytest

from hsixai.checks import (
    check_array,
    check_cube,
    check_finite,
    check_finite_per_band,
    check_labels,
    check_labels_have_data,
    check_length,
    check_mask_shape,
    check_positive_finite,
    non_finite,
)
from hsixai.errors import HsixaiError
from hsixai.io import inspect_npy

NAME = "some/dir/input.npy: the input"


def refused(check, *args, **kwargs) -> str:
    """The one-line message `check` raises; it must start with the input's name."""
    with pytest.raises(HsixaiError) as info:
        check(*args, **kwargs)
    message = str(info.value)
    assert message.startswith(NAME) and "\n" not in message, message
    return message


def test_check_array():
    good = np.zeros((3, 4), dtype=np.int16)
    check_array(good, NAME, ndim=2, kinds="i", shape=(3, 4))
    check_array(good, NAME)  # nothing asked, nothing refused
    assert "expected a 2-D array, found shape (3, 4, 1)" in refused(check_array, good[..., None], NAME, ndim=2)
    assert "expected dtype kind 'iu', found float32" in refused(check_array, good.astype(np.float32), NAME, kinds="iu")
    assert "expected shape (3, 5), found (3, 4)" in refused(check_array, good, NAME, shape=(3, 5))


def test_check_cube_reads_only_a_header(tmp_path):
    path = tmp_path / "cube.npy"
    np.save(path, np.zeros((2, 3, 4), dtype=np.uint16))
    check_cube(inspect_npy(path, "cube"), NAME, "[bands, H, W]")
    check_cube(np.zeros((1, 1, 1), dtype=np.float64), NAME)


@pytest.mark.parametrize(
    "array,fragment",
    [
        (np.zeros((3, 4), dtype=np.float32), "expected a 3-D cube [bands, H, W], found shape (3, 4)"),
        (np.zeros((2, 3, 4), dtype=np.complex64), "expected a numeric cube, found dtype complex64"),
        (np.zeros((2, 3, 4), dtype=bool), "expected a numeric cube, found dtype bool"),
        (np.zeros((2, 0, 4), dtype=np.float32), "expected a non-empty cube, found shape (2, 0, 4)"),
    ],
)
def test_check_cube_refuses(array, fragment):
    assert fragment in refused(check_cube, array, NAME, "[bands, H, W]")


def test_check_cube_kinds_and_layout_in_the_message():
    message = refused(check_cube, np.zeros((2, 3, 4), dtype=np.float32), NAME, "[rows, bands, columns]", kinds="iu")
    assert "expected an integer cube, found dtype float32" in message
    assert "[rows, bands, columns]" in refused(check_cube, np.zeros((2, 3)), NAME, "[rows, bands, columns]")


def test_check_mask_shape():
    check_mask_shape(np.zeros((3, 4)), (3, 4), NAME)
    assert "expected shape (3, 4) (the cube's H x W), found (4, 3)" in refused(
        check_mask_shape, np.zeros((4, 3)), (3, 4), NAME
    )


def test_check_labels():
    check_labels(np.array([[0, 1], [2, 3]]), 3, NAME, "--classes")
    message = refused(check_labels, np.array([[0, 4], [-1, 5]]), 3, NAME, "--classes")
    assert message.endswith("expected labels 0..3 (--classes), found [-1, 4, 5]")


def test_check_labels_have_data():
    nodata = np.zeros((3, 4), dtype=bool)
    nodata[2, 1:] = True
    mask = np.zeros((3, 4), dtype=np.uint8)
    mask[0, 0] = 1
    check_labels_have_data(mask, nodata, NAME)
    mask[2, 2] = mask[2, 3] = 2
    assert "found 2 labelled pixels on no-data pixels (first at row 2, column 2)" in refused(
        check_labels_have_data, mask, nodata, NAME
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_finite(bad):
    band = np.ones((4, 5), dtype=np.float32)
    check_finite(band, NAME)
    check_finite(np.arange(6), NAME)  # integers are finite
    band[1, 3] = bad
    band[2, 0] = bad
    message = refused(check_finite, band, NAME)
    assert message == f"{NAME} has 2 NaN or Inf values (first at row 1, column 3); expected finite values"
    assert "first at index 2" in refused(check_finite, np.array([1.0, 2.0, bad]), NAME)
    assert "has 1 NaN or Inf values; expected finite values" in refused(check_finite, np.array(bad), NAME)


def test_check_finite_ignores_what_it_is_told_to():
    band = np.ones((3, 3))
    band[0, :] = np.nan
    ignore = np.zeros((3, 3), dtype=bool)
    ignore[0, :] = True
    check_finite(band, NAME, ignore=ignore)
    band[2, 2] = np.inf
    assert "has 1 NaN or Inf values (first at row 2, column 2)" in refused(check_finite, band, NAME, ignore=ignore)
    # non_finite broadcasts a [rows, W] mask over a block [bands, rows, W]
    block = np.stack([band, band])
    assert non_finite(block, ignore=ignore).sum(axis=(1, 2)).tolist() == [1, 1]


def test_check_finite_per_band():
    check_finite_per_band(np.zeros(4, dtype=np.int64), NAME)
    message = refused(check_finite_per_band, np.array([0, 3, 0, 2]), NAME)
    assert message == (
        f"{NAME}: band 1 has 3 NaN or Inf values (2 bands affected, 5 values in all); expected finite values"
    )


def test_check_length():
    check_length(np.arange(4.0), 4, NAME, "wavelengths (one per band)")
    assert "expected 5 wavelengths (one per band), found 4" in refused(
        check_length, np.arange(4.0), 5, NAME, "wavelengths (one per band)"
    )
    assert "expected 4 wavelengths, found 4" in refused(check_length, np.ones((2, 2)), 4, NAME, "wavelengths")


@pytest.mark.parametrize("bad", [np.nan, np.inf, 0.0, -3.0])
def test_check_positive_finite(bad):
    check_positive_finite(np.array([400.0, 500.5, 2500.0]), NAME, "wavelengths in nm")
    message = refused(check_positive_finite, np.array([400.0, bad, 600.0]), NAME, "wavelengths in nm")
    assert re.search(
        r"expected positive finite wavelengths in nm, found 1 NaN, Inf or values <= 0 \(e\.g\. "
        r"\[(nan|inf|0\.0|-3\.0)\]\)$",
        message,
    ), message
