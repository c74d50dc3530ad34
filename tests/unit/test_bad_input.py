"""Bad input to the `prepare` and `split` stages and to `hsixai convert`, through the real CLI.

Every case must: exit with status 2, print ONE line on stderr that names the
offending file or parameter and says what was expected or found, print no
traceback, and leave the previous good outputs (data/prepared, data/split,
figures/) byte-identical with no staging directories left behind.

A tiny good scene is synthesized, prepared and split once per module and copied
per test. Broken raw inputs go to a separate raw dir (`raw_bad/`, a copy of
data/synthetic named by data.raw_dir) so the good outputs are not touched by
the setup itself.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from hsixai.cli import main

from ..helpers import merged, write_params
from ..writers import write_envi, write_geotiff, write_mat5, write_mat73, write_prisma

N_BANDS, HEIGHT, WIDTH = 40, 32, 32
CLASS_NAMES = ["durum wheat", "oranges", "permanent grassland", "rice", "sunflower", "olives"]
REMOVED = ["0-3", "30-35"]  # raw bands 0..3 and 30..35 are never read by prepare
KEPT_BAND = 5
REMOVED_BAND = 2

GOOD_PARAMS = {
    "seed": 0,
    "synthesize": {
        "height": HEIGHT,
        "width": WIDTH,
        "bands": N_BANDS,
        "subpixels": 3,
        "min_parcel": 3,
        "max_parcel": 10,
        "labelled_fraction": 0.8,
        "test_fraction": 0.5,
    },
    "data": {"raw_dir": "data/synthetic", "class_names": CLASS_NAMES, "remove_bands": REMOVED},
    # No buffer: the 32 x 32 scene's parcels are too small for one (a 1 px buffer already leaves a class
    # without dev pixels). The buffer's own bad-input cases use hand-made label maps.
    "split": {"strategy": "spatial", "train_size": 0.6, "train_side": "left", "buffer": 0},
    "xai": {"samples_per_class": 4},
}
OUTPUT_DIRS = ("data/prepared", "data/split", "figures")


def cli(root: Path, stage: str) -> int:
    return main(["--root", str(root), "--no-progress", stage])


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under the output directories, by path relative to root."""
    out = {}
    for d in OUTPUT_DIRS:
        for path in sorted((root / d).rglob("*")):
            if path.is_file():
                out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def staging_leftovers(root: Path) -> list[str]:
    found = []
    for d in ("data", "figures"):
        if (root / d).exists():
            found += [str(p.relative_to(root)) for p in (root / d).rglob("*") if ".tmp-" in p.name or ".old-" in p.name]
    return found


@dataclass
class Scene:
    root: Path
    params: dict
    hashes: dict[str, str] = field(default_factory=dict)

    @property
    def raw(self) -> Path:
        return self.root / "raw_bad"

    @property
    def params_path(self) -> Path:
        return self.root / "params.yaml"

    def set_params(self, **overrides) -> None:
        self.params = merged(self.params, overrides)
        write_params(self.root, self.params)

    def rehash(self) -> None:
        """Record the outputs again (after a test broke a stage *input* that lives among them)."""
        self.hashes = snapshot(self.root)

    # raw files -----------------------------------------------------------------
    def load_raw(self, name: str) -> np.ndarray:
        return np.load(self.raw / name)

    def save_raw(self, name: str, array: np.ndarray, **kw) -> Path:
        path = self.raw / name
        np.save(path, array, **kw)
        return path

    # running -------------------------------------------------------------------
    def run(self, stage: str, capsys) -> tuple[int, str, str]:
        capsys.readouterr()  # drop anything printed before
        rc = cli(self.root, stage)
        out, err = capsys.readouterr()
        return rc, out, err

    def expect_error(self, stage: str, capsys, *fragments: str) -> str:
        rc, out, err = self.run(stage, capsys)
        assert rc == 2, f"expected exit status 2, got {rc}; stderr: {err!r}"
        assert "Traceback" not in err and "Traceback" not in out, err
        lines = err.strip("\n").splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {err!r}"
        assert err.endswith("\n")
        line = lines[0]
        assert line.startswith(f"hsixai {stage}: error: "), line
        for fragment in fragments:
            assert fragment in line, f"{fragment!r} not in {line!r}"
        self.assert_outputs_intact()
        return line

    def assert_outputs_intact(self) -> None:
        assert self.hashes, "no outputs were recorded"
        assert snapshot(self.root) == self.hashes
        assert staging_leftovers(self.root) == []


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def good_template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("good")
    write_params(root, GOOD_PARAMS)
    for stage in ("synthesize", "prepare", "split"):
        assert cli(root, stage) == 0, stage
    meta = json.loads((root / "data/prepared/meta.json").read_text())
    assert meta["shape"] == [N_BANDS - 10, HEIGHT, WIDTH]
    assert all(n >= 2 for n in meta["train_pixels"].values()), meta["train_pixels"]
    return root


@pytest.fixture
def scene(good_template, tmp_path) -> Scene:
    root = tmp_path / "root"
    shutil.copytree(good_template, root)
    shutil.copytree(root / "data/synthetic", root / "raw_bad")
    s = Scene(root, copy.deepcopy(GOOD_PARAMS))
    s.set_params(data={"raw_dir": "raw_bad"})
    s.rehash()
    # every output a good run makes is there to be protected
    assert {
        "data/prepared/cube.npy",
        "data/prepared/meta.json",
        "data/split/train_labels.npy",
        "data/split/band_stats.npz",
        "figures/prepare/false_colour.png",
        "figures/split/masks.png",
    } <= set(s.hashes)
    assert staging_leftovers(root) == []
    return s


# --------------------------------------------------------------------------- sanity of the setup
def test_good_setup_reruns_cleanly(scene, capsys):
    # raw_bad is an unmodified copy: prepare and split succeed and give the same arrays.
    for stage in ("prepare", "split"):
        rc, _, err = scene.run(stage, capsys)
        assert rc == 0, err
        assert "error" not in err
    after = snapshot(scene.root)
    for name in ("cube.npy", "training_mask.npy", "test_labels.npy", "bands.npy", "band_range.npy"):
        key = f"data/prepared/{name}"
        assert after[key] == scene.hashes[key], key
    for name in ("train_labels.npy", "dev_labels.npy", "xai_labels.npy"):
        key = f"data/split/{name}"
        assert after[key] == scene.hashes[key], key
    assert staging_leftovers(scene.root) == []


# --------------------------------------------------------------------------- prepare: missing inputs
def test_prepare_missing_raw_directory(scene, capsys):
    scene.set_params(data={"raw_dir": "no_such_dir"})
    scene.expect_error(
        "prepare", capsys, str(scene.root / "no_such_dir"), "raw data directory not found", "data.raw_dir"
    )


def test_prepare_raw_dir_is_a_file(scene, capsys):
    (scene.root / "a_file").write_text("x")
    scene.set_params(data={"raw_dir": "a_file"})
    scene.expect_error("prepare", capsys, "a_file", "raw data directory not found")


def test_prepare_missing_cube(scene, capsys):
    (scene.raw / "hsi.npy").unlink()
    scene.expect_error("prepare", capsys, str(scene.raw / "hsi.npy"), "hyperspectral cube not found")


def test_prepare_missing_training_mask(scene, capsys):
    (scene.raw / "train_crops.npy").unlink()
    scene.expect_error("prepare", capsys, str(scene.raw / "train_crops.npy"), "training mask not found")


def test_prepare_missing_test_mask(scene, capsys):
    (scene.raw / "test_crops.npy").unlink()
    scene.expect_error("prepare", capsys, str(scene.raw / "test_crops.npy"), "test mask not found")


# --------------------------------------------------------------------------- prepare: the cube
def test_prepare_cube_2d(scene, capsys):
    scene.save_raw("hsi.npy", np.zeros((HEIGHT, WIDTH), dtype=np.float32))
    scene.expect_error(
        "prepare", capsys, "hsi.npy", "expected a 3-D cube [bands, H, W]", f"found shape ({HEIGHT}, {WIDTH})"
    )


def test_prepare_cube_4d(scene, capsys):
    scene.save_raw("hsi.npy", np.zeros((2, N_BANDS, HEIGHT, WIDTH), dtype=np.float32))
    scene.expect_error("prepare", capsys, "hsi.npy", "expected a 3-D cube", "found shape (2, 40, 32, 32)")


def test_prepare_cube_dtype_object(scene, capsys):
    cube = np.empty((N_BANDS, HEIGHT, WIDTH), dtype=object)
    cube[...] = 0.5
    scene.save_raw("hsi.npy", cube, allow_pickle=True)
    scene.expect_error("prepare", capsys, "hsi.npy", "expected a plain numeric array", "found dtype object")


@pytest.mark.parametrize("dtype", [np.complex64, np.bool_])
def test_prepare_cube_non_numeric_dtype(scene, capsys, dtype):
    scene.save_raw("hsi.npy", np.zeros((N_BANDS, HEIGHT, WIDTH), dtype=dtype))
    scene.expect_error("prepare", capsys, "hsi.npy", "expected a numeric cube", f"found dtype {np.dtype(dtype)}")


def test_prepare_cube_truncated(scene, capsys):
    path = scene.raw / "hsi.npy"
    size = path.stat().st_size
    with open(path, "r+b") as fh:  # a valid header, then the data cut short
        fh.truncate(size // 2)
    scene.expect_error(
        "prepare", capsys, str(path), "is truncated", "header says shape (40, 32, 32)", f"file has {size // 2}"
    )


def test_prepare_cube_not_npy(scene, capsys):
    (scene.raw / "hsi.npy").write_bytes(b"this is not a NumPy file at all\n")
    scene.expect_error("prepare", capsys, "hsi.npy", "is not a readable .npy file")


def test_prepare_cube_empty_file(scene, capsys):
    (scene.raw / "hsi.npy").write_bytes(b"")
    scene.expect_error("prepare", capsys, "hsi.npy", "is not a readable .npy file")


def test_prepare_cube_cut_inside_header(scene, capsys):
    path = scene.raw / "hsi.npy"
    path.write_bytes(path.read_bytes()[:40])
    scene.expect_error("prepare", capsys, "hsi.npy", "is not a readable .npy file")


def test_prepare_cube_fortran_order(scene, capsys):
    cube = scene.load_raw("hsi.npy")
    scene.save_raw("hsi.npy", np.asfortranarray(cube))
    scene.expect_error("prepare", capsys, "hsi.npy", "expected a C-ordered array", "Fortran order")


@pytest.mark.parametrize(("value", "label"), [(np.nan, "NaN"), (np.inf, "Inf"), (-np.inf, "-Inf")])
def test_prepare_non_finite_in_kept_band(scene, capsys, value, label):
    cube = scene.load_raw("hsi.npy")
    cube[KEPT_BAND, 7, 9] = value
    scene.save_raw("hsi.npy", cube)
    scene.expect_error(
        "prepare",
        capsys,
        str(scene.raw / "hsi.npy"),
        f"band {KEPT_BAND} has 1 NaN or Inf values",
        "first at row 7, column 9",
        "expected finite values",
    )


def test_prepare_non_finite_in_last_kept_band(scene, capsys):
    # the failure comes after most of the cube was streamed into the staging directory
    cube = scene.load_raw("hsi.npy")
    cube[N_BANDS - 1, 0, 0] = np.nan
    cube[N_BANDS - 1, 3, 4] = np.inf
    scene.save_raw("hsi.npy", cube)
    scene.expect_error(
        "prepare", capsys, "hsi.npy", f"band {N_BANDS - 1} has 2 NaN or Inf values", "first at row 0, column 0"
    )


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_prepare_non_finite_in_removed_band_is_fine(scene, capsys, value):
    cube = scene.load_raw("hsi.npy")
    cube[REMOVED_BAND, :, :] = value  # the whole band: removed bands are never read
    cube[31, 0, 0] = value
    scene.save_raw("hsi.npy", cube)
    rc, _, err = scene.run("prepare", capsys)
    assert rc == 0, err
    assert "error" not in err and "Traceback" not in err
    after = snapshot(scene.root)
    # the same raw values in the kept bands give the very same prepared cube
    assert after["data/prepared/cube.npy"] == scene.hashes["data/prepared/cube.npy"]
    meta = json.loads((scene.root / "data/prepared/meta.json").read_text())
    assert meta["raw_dir"] == "raw_bad"
    assert np.isfinite(np.load(scene.root / "data/prepared/cube.npy")).all()
    assert staging_leftovers(scene.root) == []


# --------------------------------------------------------------------------- prepare: the masks
@pytest.mark.parametrize("name,what", [("train_crops.npy", "training mask"), ("test_crops.npy", "test mask")])
def test_prepare_mask_shape_differs_from_cube(scene, capsys, name, what):
    mask = scene.load_raw(name)
    scene.save_raw(name, mask[:, :-1])
    scene.expect_error(
        "prepare",
        capsys,
        str(scene.raw / name),
        what,
        f"expected shape ({HEIGHT}, {WIDTH}) (the cube's H x W)",
        f"found ({HEIGHT}, {WIDTH - 1})",
    )


def test_prepare_mask_transposed_shape(scene, capsys):
    scene.save_raw("train_crops.npy", np.zeros((WIDTH + 1, HEIGHT), dtype=np.uint8))
    scene.expect_error("prepare", capsys, "train_crops.npy", "expected shape (32, 32)", "found (33, 32)")


def test_prepare_mask_3d(scene, capsys):
    mask = scene.load_raw("train_crops.npy")
    scene.save_raw("train_crops.npy", mask[None])
    scene.expect_error(
        "prepare", capsys, "train_crops.npy", "training mask", "expected a 2-D array", "found shape (1, 32, 32)"
    )


def test_prepare_mask_float_dtype(scene, capsys):
    scene.save_raw("train_crops.npy", scene.load_raw("train_crops.npy").astype(np.float32))
    scene.expect_error(
        "prepare", capsys, "train_crops.npy", "training mask", "expected dtype kind 'iu'", "found float32"
    )


def test_prepare_mask_truncated(scene, capsys):
    path = scene.raw / "test_crops.npy"
    path.write_bytes(path.read_bytes()[:-10])
    scene.expect_error("prepare", capsys, str(path), "test mask is truncated")


@pytest.mark.parametrize("bad", [7, 200, -1])
@pytest.mark.parametrize("name,what", [("train_crops.npy", "training mask"), ("test_crops.npy", "test mask")])
def test_prepare_labels_outside_range(scene, capsys, name, what, bad):
    mask = scene.load_raw(name).astype(np.int16)
    mask[3, 4] = bad
    scene.save_raw(name, mask)
    scene.expect_error(
        "prepare",
        capsys,
        str(scene.raw / name),
        what,
        "expected labels 0..6",
        "6 classes in data.class_names",
        f"found [{bad}]",
    )


def test_prepare_labels_outside_range_lists_values(scene, capsys):
    mask = scene.load_raw("train_crops.npy").astype(np.int16)
    mask[0, 0], mask[0, 1], mask[0, 2] = 9, -1, 9
    scene.save_raw("train_crops.npy", mask)
    scene.expect_error("prepare", capsys, "train_crops.npy", "found [-1, 9]")


def test_prepare_labels_valid_for_more_classes_than_configured(scene, capsys):
    # the same data with one class name fewer: label 6 is now out of range
    scene.set_params(data={"class_names": CLASS_NAMES[:5]})
    scene.expect_error(
        "prepare", capsys, "train_crops.npy", "expected labels 0..5", "5 classes in data.class_names", "found [6]"
    )


def test_prepare_class_without_training_pixels(scene, capsys):
    mask = scene.load_raw("train_crops.npy")
    assert (mask == 3).any()
    mask[mask == 3] = 0
    scene.save_raw("train_crops.npy", mask)
    scene.expect_error(
        "prepare", capsys, str(scene.raw / "train_crops.npy"), "class 3 (permanent grassland) has no training pixels"
    )


# --------------------------------------------------------------------------- prepare: wavelengths
def test_prepare_wavelengths_wrong_length(scene, capsys):
    wl = scene.load_raw("wavelengths.npy")
    scene.save_raw("wavelengths.npy", wl[:-1])
    scene.expect_error(
        "prepare",
        capsys,
        str(scene.raw / "wavelengths.npy"),
        f"expected {N_BANDS} wavelengths (one per band of hsi.npy)",
        f"found {N_BANDS - 1}",
    )


@pytest.mark.parametrize("value", [np.nan, 0.0, -400.0])
def test_prepare_wavelengths_not_positive_finite(scene, capsys, value):
    wl = scene.load_raw("wavelengths.npy")
    wl[3] = value
    scene.save_raw("wavelengths.npy", wl)
    scene.expect_error("prepare", capsys, "wavelengths.npy", "expected positive finite wavelengths in nm")


def test_prepare_wavelengths_2d(scene, capsys):
    scene.save_raw("wavelengths.npy", scene.load_raw("wavelengths.npy")[None])
    scene.expect_error("prepare", capsys, "wavelengths.npy", "expected a 1-D array", "found shape (1, 40)")


# --------------------------------------------------------------------------- prepare: band selection
def test_prepare_band_index_out_of_range(scene, capsys):
    scene.set_params(data={"remove_bands": [500]})
    scene.expect_error(
        "prepare",
        capsys,
        "data.remove_bands",
        "band indices [500] are out of range",
        f"a cube with {N_BANDS} bands",
        f"valid: 0..{N_BANDS - 1}",
    )


def test_prepare_band_range_reaching_past_cube(scene, capsys):
    scene.set_params(data={"remove_bands": ["0-3", "38-41"]})
    scene.expect_error("prepare", capsys, "data.remove_bands", "[40, 41] are out of range")


def test_prepare_remove_all_bands(scene, capsys):
    scene.set_params(data={"remove_bands": [f"0-{N_BANDS - 1}"]})
    scene.expect_error("prepare", capsys, "data.remove_bands", f"removes all {N_BANDS} bands")


def test_prepare_remove_bands_bad_form(scene, capsys):
    scene.set_params(data={"remove_bands": ["10-0"]})
    scene.expect_error("prepare", capsys, str(scene.params_path), "data.remove_bands", "'10-0'")


# --------------------------------------------------------------------------- both stages: params errors
@pytest.mark.parametrize("stage", ["prepare", "split"])
def test_train_size_out_of_range_fails_before_any_work(scene, capsys, stage):
    # a broken raw input as well: the config error must come first
    (scene.raw / "hsi.npy").unlink()
    scene.set_params(split={"train_size": 1.5})
    scene.expect_error(
        stage, capsys, str(scene.params_path), "split.train_size", "expected a fraction in (0, 1)", "found 1.5"
    )


@pytest.mark.parametrize("stage", ["prepare", "split"])
def test_misspelt_top_level_key(scene, capsys, stage):
    params = dict(scene.params)
    params["splt"] = params.pop("split")
    write_params(scene.root, params)
    scene.expect_error(stage, capsys, str(scene.params_path), "unknown key 'splt'", "did you mean 'split'")


@pytest.mark.parametrize("stage", ["prepare", "split"])
def test_misspelt_nested_key(scene, capsys, stage):
    params = copy.deepcopy(scene.params)
    params["split"]["trian_size"] = params["split"].pop("train_size")
    write_params(scene.root, params)
    scene.expect_error(stage, capsys, "unknown key 'split.trian_size'", "did you mean 'split.train_size'")


@pytest.mark.parametrize("stage", ["prepare", "split"])
def test_strategy_misspelt(scene, capsys, stage):
    scene.set_params(split={"strategy": "spatil"})
    scene.expect_error(stage, capsys, "split.strategy", "found 'spatil'", "did you mean 'spatial'")


@pytest.mark.parametrize("stage", ["prepare", "split"])
def test_params_not_yaml(scene, capsys, stage):
    scene.params_path.write_text("split: {train_size: 0.6\n")
    scene.expect_error(stage, capsys, str(scene.params_path), "not valid YAML")


@pytest.mark.parametrize("stage", ["prepare", "split"])
def test_params_file_missing(scene, capsys, stage):
    scene.params_path.unlink()
    scene.expect_error(stage, capsys, str(scene.params_path), "params file not found")


# --------------------------------------------------------------------------- split
def test_split_without_prepared_data_fresh_root(tmp_path, capsys):
    root = tmp_path / "fresh"
    root.mkdir()
    write_params(root, GOOD_PARAMS)
    capsys.readouterr()
    rc = cli(root, "split")
    _, err = capsys.readouterr()
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("hsixai split: error: ")
    assert str(root / "data/prepared/meta.json") in lines[0]
    assert "prepared data not found" in lines[0] and "run the prepare stage first" in lines[0]
    assert not (root / "data/split").exists()
    assert not (root / "figures").exists()
    assert staging_leftovers(root) == []


def test_split_without_prepared_data_keeps_old_split(scene, capsys):
    shutil.rmtree(scene.root / "data/prepared")
    scene.rehash()
    scene.expect_error(
        "split",
        capsys,
        str(scene.root / "data/prepared/meta.json"),
        "prepared data not found",
        "run the prepare stage first",
    )


def test_split_class_with_single_training_pixel(scene, capsys):
    path = scene.root / "data/prepared/training_mask.npy"
    labels = np.load(path)
    assert labels.dtype == np.int8
    rows, cols = np.nonzero(labels == 0)
    assert len(rows) >= 2
    labels[rows[1:], cols[1:]] = -1  # only one pixel of class 0 remains
    np.save(path, labels)
    scene.rehash()
    scene.expect_error(
        "split", capsys, "class 0 (durum wheat)", "has 1 training pixels", "train and dev need at least one each"
    )


def test_split_random_stratified_class_with_single_training_pixel(scene, capsys):
    path = scene.root / "data/prepared/training_mask.npy"
    labels = np.load(path)
    rows, cols = np.nonzero(labels == 4)
    labels[rows[1:], cols[1:]] = -1
    np.save(path, labels)
    scene.rehash()
    scene.set_params(split={"strategy": "random_stratified"})
    scene.expect_error("split", capsys, "class 4 (sunflower)", "has 1 training pixels")


def test_split_class_without_training_pixels(scene, capsys):
    path = scene.root / "data/prepared/training_mask.npy"
    labels = np.load(path)
    labels[labels == 2] = -1
    np.save(path, labels)
    scene.rehash()
    scene.expect_error("split", capsys, "class 2 (permanent grassland)", "has 0 training pixels")


def test_split_spatial_class_in_one_column(scene, capsys):
    path = scene.root / "data/prepared/training_mask.npy"
    labels = np.load(path)
    labels[labels == 1] = -1
    labels[5:9, 10] = 1  # class 1: four pixels, all in column 10
    np.save(path, labels)
    scene.rehash()
    scene.expect_error(
        "split",
        capsys,
        "class 1 (oranges)",
        "all 4 training pixels lie in one column",
        "split.strategy: random_stratified",
    )


def test_split_class_names_differ_from_prepared(scene, capsys):
    names = list(CLASS_NAMES)
    names[0] = "soft wheat"
    scene.set_params(data={"class_names": names})
    scene.expect_error(
        "split", capsys, "data.class_names", "differ from those the prepared data was made with", "re-run prepare"
    )


def test_split_prepared_cube_truncated(scene, capsys):
    path = scene.root / "data/prepared/cube.npy"
    path.write_bytes(path.read_bytes()[:-100])
    scene.rehash()
    scene.expect_error("split", capsys, str(path), "prepared cube is truncated")


def test_split_prepared_labels_wrong_shape(scene, capsys):
    path = scene.root / "data/prepared/training_mask.npy"
    np.save(path, np.load(path)[:-2])
    scene.rehash()
    scene.expect_error(
        "split",
        capsys,
        str(path),
        "training labels",
        f"expected shape ({HEIGHT}, {WIDTH})",
        f"found ({HEIGHT - 2}, {WIDTH})",
    )


def test_split_prepared_labels_missing(scene, capsys):
    path = scene.root / "data/prepared/test_labels.npy"
    path.unlink()
    scene.rehash()
    scene.expect_error("split", capsys, str(path), "test labels not found")


def test_split_prepared_meta_corrupt(scene, capsys):
    path = scene.root / "data/prepared/meta.json"
    path.write_text("{not json")
    scene.rehash()
    scene.expect_error("split", capsys, str(path))


def test_split_negative_seed(scene, capsys):
    scene.set_params(seed=-1)
    scene.expect_error("split", capsys, "seed")


# --------------------------------------------------------------------------- split: the buffer
@pytest.mark.parametrize(
    "value, found",
    [(-1, "found -1"), (2.5, "found 2.5"), ("big", "found 'big'"), ("4", "found '4'"), (True, "found True")],
)
def test_split_buffer_not_a_non_negative_integer_or_auto(scene, capsys, value, found):
    scene.set_params(split={"buffer": value})
    scene.expect_error("split", capsys, str(scene.params_path), "split.buffer", "or 'auto'", found)


def _strips(scene: Scene) -> None:
    """Hand-made prepared labels with known distances (rows 5k..5k+3 belong to class k).

    Training mask: columns 2..11 per class (class 3: 2..9). The spatial split to the left gives train
    columns 2..7 and dev 8..11 (class 3: train 2..6, dev 7..9, its outer dev rows 2 px from classes 2 and
    4's train). So a 3 px buffer drops all 12 dev pixels of class 3 and keeps column 11 of the others.
    Test mask: columns 20..29 per class, except class 2's 8 pixels in columns 0..1 (1-2 px from its
    train) and class 5's 2 pixels in the corner. Train pixels: 5 x 24 + 20 = 140.
    """
    train = np.full((HEIGHT, WIDTH), -1, dtype=np.int8)
    test = np.full((HEIGHT, WIDTH), -1, dtype=np.int8)
    for k in range(6):
        rows = slice(5 * k, 5 * k + 4)
        train[rows, 2 : 10 if k == 3 else 12] = k
        if k not in (2, 5):
            test[rows, 20:30] = k
    test[10:14, 0:2] = 2
    test[31, 30:32] = 5
    np.save(scene.root / "data/prepared/training_mask.npy", train)
    np.save(scene.root / "data/prepared/test_labels.npy", test)
    scene.rehash()


def test_split_buffer_that_leaves_a_class_without_dev_pixels(scene, capsys):
    _strips(scene)
    scene.set_params(split={"buffer": 3})
    scene.expect_error(
        "split",
        capsys,
        "class 3 (rice)",
        "split.buffer=3",
        "drops all 12 dev pixels",
        "within 3 px of one of the 140 train pixels",
        "lower split.buffer",
    )


def test_split_auto_buffer_names_what_it_resolved_to(scene, capsys):
    _strips(scene)
    scene.set_params(split={"buffer": "auto"})  # the default sweep, 3..9: 4 px, more than any dev column's distance
    scene.expect_error(
        "split",
        capsys,
        "class 0 (durum wheat)",
        "split.buffer=auto -> 4 (largest of sweep.patch_sizes // 2)",
        "drops all 16 dev pixels",
    )


def test_split_random_stratified_with_a_buffer(scene, capsys):
    # a 3 px buffer would need 7 dev columns side by side in a 4-row strip that has 6 dev pixels per row at most
    _strips(scene)
    scene.set_params(split={"strategy": "random_stratified", "buffer": 3})
    scene.expect_error(
        "split",
        capsys,
        "class 0 (durum wheat)",
        "split.buffer=3",
        "drops all 16 dev pixels",
        "use split.strategy: spatial, or split.buffer: 0",
    )


def test_split_buffer_that_leaves_a_class_without_leakfree_test_pixels(scene, capsys):
    _strips(scene)
    scene.set_params(split={"buffer": 2})
    scene.expect_error(
        "split",
        capsys,
        "class 2 (permanent grassland)",
        "split.buffer=2",
        "no leak-free test pixel",
        "all 8 test pixels lie within 2 px of a train pixel",
    )


def test_split_classes_with_few_leakfree_test_pixels_are_reported(scene, capsys, caplog):
    _strips(scene)
    scene.set_params(split={"buffer": 1})
    rc, _, err = scene.run("split", capsys)
    assert rc == 0, err
    assert "class 2 (permanent grassland) has 4 leak-free test pixels (of 8)" in caplog.text  # a warning
    assert "class 5 (olives) has 2 leak-free test pixels (of 2)" in caplog.text
    summary = json.loads((scene.root / "data/split/split.json").read_text())
    assert summary["buffer"] == 1 and summary["leakfree_classes_too_few"] == ["permanent grassland", "olives"]
    assert list(summary["pixels"]["dev_dropped_by_buffer"].values()) == [4] * 6
    assert list(summary["pixels"]["test_leakfree"].values()) == [40, 40, 4, 40, 40, 2]
    assert staging_leftovers(scene.root) == []


# --------------------------------------------------------------------------- prepare: more kinds
def test_prepare_nan_row(scene, capsys):
    cube = scene.load_raw("hsi.npy")
    cube[KEPT_BAND, 4, :] = np.nan
    scene.save_raw("hsi.npy", cube)
    scene.expect_error(
        "prepare",
        capsys,
        str(scene.raw / "hsi.npy"),
        f"band {KEPT_BAND} has {WIDTH} NaN or Inf values",
        "first at row 4, column 0",
    )


@pytest.mark.parametrize(
    "overrides,key",
    [
        ({"synthesize": {"height": 0}}, "synthesize.height/width"),
        ({"synthesize": {"width": -32}}, "synthesize.height/width"),
        ({"train": {"batch_size": 0}}, "train.batch_size"),
        ({"train": {"epochs": -1}}, "train.epochs"),
        ({"xai": {"samples_per_class": 0}}, "xai.samples_per_class"),
        ({"patch_size": 0}, "patch_size"),
        ({"patch_size": -5}, "patch_size"),
    ],
)
def test_negative_or_zero_sizes(scene, capsys, overrides, key):
    scene.set_params(**overrides)
    scene.expect_error("prepare", capsys, str(scene.params_path), key)


# --------------------------------------------------------------------------- convert
# `hsixai convert` takes its inputs on the command line. Every case converts broken
# inputs into a directory that holds an earlier good conversion, which must stay
# byte-identical with no staging leftovers beside it.
@dataclass
class Conversion:
    scene: Scene
    inputs: Path
    out: Path
    hashes: dict[str, str] = field(default_factory=dict)

    def cube(self) -> np.ndarray:  # float32 [40, 32, 32]
        return self.scene.load_raw("hsi.npy")

    def mask(self, name: str = "train_crops.npy") -> np.ndarray:  # uint8 [32, 32]
        return self.scene.load_raw(name)

    def save(self, name: str, array: np.ndarray) -> Path:
        np.save(self.inputs / name, array)
        return self.inputs / name

    def argv(self, cube: Path, *extra: str, train: Path | None = None, test: Path | None = None) -> list[str]:
        train = train or self.scene.raw / "train_crops.npy"
        test = test or self.scene.raw / "test_crops.npy"
        return ["convert", str(cube), "--train", str(train), "--test", str(test), "--out", str(self.out), *extra]

    def snapshot(self) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(self.out.iterdir())}

    def expect_error(self, capsys, argv: list[str], *fragments: str) -> str:
        capsys.readouterr()
        rc = main(["--no-progress", *argv])
        out, err = capsys.readouterr()
        assert rc == 2, f"expected exit status 2, got {rc}; stderr: {err!r}"
        assert "Traceback" not in err and "Traceback" not in out, err
        lines = err.strip("\n").splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {err!r}"
        assert lines[0].startswith("hsixai convert: error: "), lines[0]
        for fragment in fragments:
            assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
        assert self.snapshot() == self.hashes
        leftovers = [p.name for p in self.out.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
        assert leftovers == []
        self.scene.assert_outputs_intact()
        return lines[0]


@pytest.fixture
def conv(scene, capsys) -> Conversion:
    inputs = scene.root / "inputs"
    inputs.mkdir()
    c = Conversion(scene, inputs, scene.root / "data" / "converted")
    rc = main(["--no-progress", *c.argv(scene.raw / "hsi.npy", "--wavelengths", str(scene.raw / "wavelengths.npy"))])
    assert rc == 0, capsys.readouterr().err
    c.hashes = c.snapshot()
    assert {"hsi.npy", "train_crops.npy", "test_crops.npy", "wavelengths.npy"} <= set(c.hashes)
    return c


def test_convert_good_setup(conv):
    np.testing.assert_array_equal(np.load(conv.out / "hsi.npy"), conv.cube())
    np.testing.assert_array_equal(np.load(conv.out / "train_crops.npy"), conv.mask())


@pytest.mark.parametrize("damage", ["garbage", "truncated v5", "truncated v7.3"])
def test_convert_corrupt_mat(conv, capsys, damage):
    path = conv.inputs / "cube.mat"
    if damage == "garbage":
        path.write_bytes(b"MATLAB 5.0 MAT-file, but then nothing sensible" + bytes(range(256)) * 4)
    else:
        writer = write_mat5 if damage == "truncated v5" else write_mat73
        writer(path, cube=conv.cube().transpose(1, 2, 0))
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    line = conv.expect_error(capsys, conv.argv(path), str(path))
    assert "MATLAB" in line or "cannot read" in line, line


def test_convert_truncated_envi_data(conv, capsys):
    header = write_envi(conv.inputs / "cube.img", conv.cube(), "bil")
    data = conv.inputs / "cube.img"
    data.write_bytes(data.read_bytes()[:-100])
    conv.expect_error(
        capsys,
        conv.argv(header),
        str(data),
        "ENVI data file is truncated",
        f"{N_BANDS} bands x {HEIGHT} lines x {WIDTH} samples",
    )


def test_convert_envi_data_file_longer_than_header(conv, capsys):
    header = write_envi(conv.inputs / "cube.img", conv.cube(), "bsq")
    with open(conv.inputs / "cube.img", "ab") as fh:
        fh.write(b"\0" * 4)
    conv.expect_error(capsys, conv.argv(header), "is longer than its header says")


@pytest.mark.parametrize("key", ["samples", "lines", "bands", "data type", "interleave", "byte order"])
def test_convert_envi_header_missing_key(conv, capsys, key):
    header = write_envi(conv.inputs / "cube.img", conv.cube(), "bip", drop=(key,))
    conv.expect_error(capsys, conv.argv(header), str(header), f"'{key}'")


def test_convert_envi_unsupported_data_type(conv, capsys):
    header = write_envi(conv.inputs / "cube.img", conv.cube(), "bsq")
    header.write_text(header.read_text().replace("data type = 4", "data type = 6"))
    conv.expect_error(capsys, conv.argv(header), str(header), "ENVI data type 6 not supported")


def test_convert_envi_data_file_missing(conv, capsys):
    header = write_envi(conv.inputs / "cube.img", conv.cube(), "bsq")
    (conv.inputs / "cube.img").unlink()
    conv.expect_error(capsys, conv.argv(header), str(header), "ENVI data file not found next to the header", "cube.img")


def test_convert_wavelength_file_wrong_length(conv, capsys):
    wl = conv.inputs / "wl.txt"
    wl.write_text("\n".join(str(400 + 10 * i) for i in range(N_BANDS - 1)))
    conv.expect_error(
        capsys,
        conv.argv(conv.scene.raw / "hsi.npy", "--wavelengths", str(wl)),
        str(wl),
        f"expected {N_BANDS} wavelengths (one per band of hsi.npy)",
        f"found {N_BANDS - 1}",
    )


def test_convert_envi_wavelengths_wrong_length(conv, capsys):
    header = write_envi(
        conv.inputs / "cube.img",
        conv.cube(),
        "bil",
        wavelengths=np.linspace(0.4, 2.5, N_BANDS + 2),
        units="micrometers",
    )
    conv.expect_error(capsys, conv.argv(header), f"expected {N_BANDS} wavelengths", f"found {N_BANDS + 2}")


def test_convert_geotiff_wavelengths_for_some_bands_only(conv, capsys):
    import rasterio

    path = write_geotiff(conv.inputs / "cube.tif", conv.cube(), np.linspace(400, 2500, N_BANDS))
    with rasterio.open(path, "r+") as dst:
        dst.set_band_description(3, "")
    conv.expect_error(
        capsys, conv.argv(path), str(path), f"wavelengths for {N_BANDS - 1} of {N_BANDS} bands", "--wavelengths"
    )


def test_convert_wavelengths_not_positive(conv, capsys):
    wl = np.linspace(400, 2500, N_BANDS)
    wl[2] = -1.0
    path = conv.save("wl.npy", wl)
    conv.expect_error(
        capsys,
        conv.argv(conv.scene.raw / "hsi.npy", "--wavelengths", str(path)),
        str(path),
        "expected positive finite wavelengths",
    )


def test_convert_mask_wrong_shape_for_geotiff_cube(conv, capsys):
    cube = write_geotiff(conv.inputs / "cube.tif", conv.cube())
    train = conv.save("train.npy", conv.mask()[:, :-1])
    test = conv.save("test.npy", conv.mask("test_crops.npy")[:, :-1])
    conv.expect_error(
        capsys,
        conv.argv(cube, train=train, test=test),
        str(train),
        "training mask",
        f"expected shape ({HEIGHT}, {WIDTH}) (the cube's H x W)",
        f"found ({HEIGHT}, {WIDTH - 1})",
    )


def test_convert_mask_fits_no_two_axes_of_npy_cube(conv, capsys):
    train = conv.save("train.npy", conv.mask()[:-3])
    test = conv.save("test.npy", conv.mask("test_crops.npy")[:-3])
    conv.expect_error(
        capsys,
        conv.argv(conv.scene.raw / "hsi.npy", train=train, test=test),
        f"no two axes of the cube's shape ({N_BANDS}, {HEIGHT}, {WIDTH})",
        f"masks' shape ({HEIGHT - 3}, {WIDTH})",
    )


def test_convert_masks_differ_in_shape(conv, capsys):
    test = conv.save("test.npy", conv.mask("test_crops.npy")[:, :5])
    conv.expect_error(
        capsys,
        conv.argv(conv.scene.raw / "hsi.npy", test=test),
        str(test),
        "test mask",
        f"expected the training mask's shape ({HEIGHT}, {WIDTH})",
        f"found ({HEIGHT}, 5)",
    )


def test_convert_mask_3d(conv, capsys):
    train = conv.save("train.npy", conv.mask()[None])
    conv.expect_error(
        capsys,
        conv.argv(conv.scene.raw / "hsi.npy", train=train),
        str(train),
        "expected a 2-D array",
        f"found shape (1, {HEIGHT}, {WIDTH})",
    )


def test_convert_non_integer_mask(conv, capsys):
    mask = conv.mask().astype(np.float32)
    mask[2, 3] = 1.5
    train = conv.save("train.npy", mask)
    conv.expect_error(
        capsys,
        conv.argv(conv.scene.raw / "hsi.npy", train=train),
        str(train),
        "expected integer labels, found 1 non-integer values",
        "1.5",
    )


def test_convert_non_integer_mask_in_mat(conv, capsys):
    path = write_mat5(conv.inputs / "gt.mat", gt=np.full((HEIGHT, WIDTH), 0.5))
    conv.expect_error(
        capsys, conv.argv(conv.scene.raw / "hsi.npy", train=path), str(path), "(gt)", "expected integer labels"
    )


def test_convert_negative_labels(conv, capsys):
    mask = conv.mask().astype(np.int16)
    mask[0, 0] = -1
    test = conv.save("test.npy", mask)
    conv.expect_error(
        capsys,
        conv.argv(conv.scene.raw / "hsi.npy", test=test),
        str(test),
        "expected labels >= 0 (0 = unlabelled)",
        "found [-1]",
    )


def test_convert_labels_beyond_classes(conv, capsys):
    conv.expect_error(
        capsys,
        conv.argv(conv.scene.raw / "hsi.npy", "--classes", "5"),
        str(conv.scene.raw / "train_crops.npy"),
        "expected labels 0..5 (--classes)",
        "found [6]",
    )


@pytest.mark.parametrize("classes", ["0", "-3"])
def test_convert_zero_or_negative_classes(conv, capsys, classes):
    conv.expect_error(
        capsys,
        conv.argv(conv.scene.raw / "hsi.npy", "--classes", classes),
        "--classes",
        "expected a positive number of classes",
        f"found {classes}",
    )


def test_convert_mask_without_labels(conv, capsys):
    zeros = conv.save("zeros.npy", np.zeros((HEIGHT, WIDTH), dtype=np.uint8))
    conv.expect_error(
        capsys, conv.argv(conv.scene.raw / "hsi.npy", train=zeros, test=zeros), str(zeros), "no labelled pixels"
    )


@pytest.mark.parametrize("where", ["single value", "row of the last band"])
def test_convert_nan_in_cube(conv, capsys, where):
    cube = conv.cube()
    if where == "single value":
        cube[5, 7, 9] = np.nan
        expected = "band 5 has 1 NaN or Inf values"
    else:  # found only after the whole cube went into the staging directory
        cube[N_BANDS - 1, 4, :] = np.inf
        expected = f"band {N_BANDS - 1} has {WIDTH} NaN or Inf values"
    header = write_envi(conv.inputs / "cube.bil", cube, "bil", big_endian=True)
    conv.expect_error(capsys, conv.argv(header), str(conv.inputs / "cube.bil"), expected, "expected finite values")


@pytest.mark.parametrize("dtype", [np.complex64, np.bool_])
def test_convert_cube_wrong_dtype(conv, capsys, dtype):
    path = conv.save("cube.npy", conv.cube().astype(dtype))
    conv.expect_error(capsys, conv.argv(path), str(path), "expected a numeric cube", f"found dtype {np.dtype(dtype)}")


def test_convert_truncated_npy_cube(conv, capsys):
    path = conv.save("cube.npy", conv.cube())
    path.write_bytes(path.read_bytes()[:-50])
    conv.expect_error(capsys, conv.argv(path), str(path), "hyperspectral cube is truncated")


@pytest.mark.parametrize("which", ["cube", "train", "test", "wavelengths"])
def test_convert_missing_input_path(conv, capsys, which):
    missing = conv.inputs / "no_such_file.npy"
    argv = conv.argv(
        missing if which == "cube" else conv.scene.raw / "hsi.npy",
        *(["--wavelengths", str(missing)] if which == "wavelengths" else []),
        train=missing if which == "train" else None,
        test=missing if which == "test" else None,
    )
    conv.expect_error(capsys, argv, str(missing), "not found")


def test_convert_unknown_format(conv, capsys):
    path = conv.inputs / "cube.xyz"
    path.write_bytes(b"\0" * 64)
    conv.expect_error(capsys, conv.argv(path), str(path), "unknown file format")


def test_convert_ambiguous_band_axis(conv, capsys):
    path = conv.save("cube.npy", np.zeros((HEIGHT, HEIGHT, WIDTH), dtype=np.float32))
    conv.expect_error(
        capsys,
        conv.argv(path),
        str(path),
        f"cannot tell which axis of shape ({HEIGHT}, {HEIGHT}, {WIDTH}) holds the bands",
        "pass --band-axis",
    )


@pytest.mark.parametrize(
    "axis,fragment", [("3", "--band-axis 3 is out of range"), ("1", "--band-axis 1 contradicts the file")]
)
def test_convert_bad_band_axis(conv, capsys, axis, fragment):
    cube = write_geotiff(conv.inputs / "cube.tif", conv.cube())
    conv.expect_error(capsys, conv.argv(cube, "--band-axis", axis), str(cube), fragment)


def test_convert_unknown_variable_name(conv, capsys):
    path = write_mat5(conv.inputs / "scene.mat", cube=conv.cube().transpose(1, 2, 0))
    conv.expect_error(
        capsys,
        conv.argv(path, "--var", "cubee"),
        str(path),
        "no variable 'cubee'",
        f"cube [{HEIGHT}x{WIDTH}x{N_BANDS} single]",
    )


def test_convert_unknown_mask_variable_name_v73(conv, capsys):
    path = write_mat73(conv.inputs / "gt.mat", train=conv.mask(), test=conv.mask("test_crops.npy"))
    conv.expect_error(
        capsys,
        conv.argv(conv.scene.raw / "hsi.npy", "--train-var", "trian", train=path),
        str(path),
        "no variable 'trian'",
        f"train [{HEIGHT}x{WIDTH} uint8]",
    )


def test_convert_mat_variable_not_unique(conv, capsys):
    path = write_mat73(conv.inputs / "gt.mat", train=conv.mask(), test=conv.mask("test_crops.npy"))
    conv.expect_error(
        capsys,
        conv.argv(conv.scene.raw / "hsi.npy", train=path),
        str(path),
        "expected exactly one 2-D integer variable, found 2",
        "--train-var/--test-var",
    )


def test_convert_variable_name_for_a_non_mat_file(conv, capsys):
    conv.expect_error(
        capsys,
        conv.argv(conv.scene.raw / "hsi.npy", "--var", "cube"),
        "a variable name ('cube') only applies to .mat files",
    )


def test_convert_refuses_to_replace_a_foreign_directory(conv, capsys):
    conv.save("cube.npy", conv.cube())
    before = sorted(p.name for p in conv.inputs.iterdir())
    argv = conv.argv(conv.inputs / "cube.npy")
    argv[argv.index("--out") + 1] = str(conv.inputs)
    conv.expect_error(capsys, argv, str(conv.inputs), "holds files that are not raw-format files (cube.npy)")
    assert sorted(p.name for p in conv.inputs.iterdir()) == before


@pytest.mark.parametrize(
    "content,fragment",
    [("400 500 nm?", "expected numbers separated by"), (None, "expected a 1-D array, found shape (1, 40)")],
)
def test_convert_unreadable_wavelength_file(conv, capsys, content, fragment):
    if content is None:
        path = conv.save("wl.npy", np.linspace(400, 2500, N_BANDS)[None])
    else:
        path = conv.inputs / "wl.txt"
        path.write_text(content)
    conv.expect_error(capsys, conv.argv(conv.scene.raw / "hsi.npy", "--wavelengths", str(path)), str(path), fragment)


# --------------------------------------------------------------------------- convert: PRISMA products and grids
def test_convert_he5_not_hdf5(conv, capsys):
    path = conv.inputs / "PRS_L2D_STD.he5"
    path.write_bytes(b"\x89HDF but not really" + bytes(range(256)))
    conv.expect_error(capsys, conv.argv(path), str(path), "is not a readable HDF5 file")


def test_convert_he5_not_a_prisma_product(conv, capsys):
    import h5py

    path = conv.inputs / "other.he5"
    with h5py.File(path, "w") as fh:
        fh.create_dataset("HDFEOS/GRIDS/Some_Grid/Data Fields/Cube", data=np.zeros((2, 32, 32), np.uint16))
    conv.expect_error(
        capsys,
        conv.argv(path),
        str(path),
        "not a PRISMA Level-2 product",
        "expected the group HDFEOS/SWATHS with a swath PRS_L2C_HCO or PRS_L2D_HCO",
    )


def test_convert_he5_radiance_product(conv, capsys):
    path = write_prisma(conv.inputs / "PRS_L2B_STD.he5", HEIGHT, WIDTH, level="L2B").path
    conv.expect_error(
        capsys,
        conv.argv(path),
        str(path),
        "found swaths: PRS_L2B_HCO, PRS_L2B_PCO",
        "L2B (at-ground radiance) is not reflectance: convert reads L2C and L2D",
    )


@pytest.mark.parametrize(
    "attribute", ["L2ScaleSwirMax", "List_Cw_Vnir_Flags", "List_Fwhm_Swir", "Epsg_Code", "Product_LRcorner_northing"]
)
def test_convert_he5_missing_attribute(conv, capsys, attribute):
    path = write_prisma(conv.inputs / "p.he5", HEIGHT, WIDTH, drop_attribute=attribute).path
    conv.expect_error(
        capsys, conv.argv(path), str(path), "not a PRISMA Level-2 product", f"root attribute '{attribute}' not found"
    )


def test_convert_he5_cube_disagrees_with_its_band_lists(conv, capsys):
    path = write_prisma(conv.inputs / "p.he5", HEIGHT, WIDTH, vnir_bands=8).path
    conv.expect_error(
        capsys,
        conv.argv(path),
        str(path),
        "HDFEOS/SWATHS/PRS_L2D_HCO/Data Fields/VNIR_Cube",
        "expected as many bands (axis 1 of [rows, bands, columns]) as values in List_Cw_Vnir",
        f"found shape ({HEIGHT}, 8, {WIDTH}) and 9, 9, 9 values",
    )


def test_convert_he5_cube_disagrees_with_its_corners(conv, capsys):
    path = write_prisma(conv.inputs / "p.he5", HEIGHT, WIDTH, corner_shift=30.0).path
    conv.expect_error(
        capsys,
        conv.argv(path),
        str(path),
        f"corner attributes disagree with the cube's {HEIGHT} x {WIDTH} pixels",
        f"= {WIDTH * 30:g} m, expected ({WIDTH} - 1) x 30 m = {(WIDTH - 1) * 30:g} m",
    )


def test_convert_he5_label_on_a_pixel_without_data(conv, capsys):
    path = write_prisma(conv.inputs / "p.he5", HEIGHT, WIDTH).path  # row 0, columns 0..15: no data
    train = conv.mask().copy()
    train[0, 3] = 2
    conv.expect_error(
        capsys,
        conv.argv(path, train=conv.save("train.npy", train)),
        str(conv.inputs / "train.npy"),
        "expected labels only where the cube has data",
        "(first at row 0, column",
    )


def test_convert_geotiff_mask_on_another_grid(conv, capsys):
    import rasterio

    cube = write_geotiff(conv.inputs / "cube.tif", conv.cube())
    test = conv.inputs / "test.tif"
    with rasterio.open(
        test,
        "w",
        driver="GTiff",
        count=1,
        height=HEIGHT,
        width=WIDTH,
        dtype="uint8",
        crs="EPSG:32630",
        transform=rasterio.Affine(30, 0, 230000, 0, -30, 4150030),
    ) as dst:
        dst.write(conv.mask("test_crops.npy")[None])
    conv.expect_error(
        capsys,
        conv.argv(cube, test=test),
        str(test),
        "test mask: expected the cube's grid (EPSG:32630, upper-left corner (230000.000, 4150000.000)",
        "found EPSG:32630, upper-left corner (230000.000, 4150030.000)",
    )


# --------------------------------------------------------------------------- prepare: the optional raw files
@pytest.mark.parametrize(
    "content,fragment",
    [
        ("not json", "not a readable JSON file"),
        (
            '{"crs": "EPSG:32629", "transform": [30, 0, 0, 0, -30, 0], "width": 31, "height": 32}',
            "expected the grid of the cube's H x W (32, 32), found height 32, width 31",
        ),
        (
            '{"crs": "no such crs", "transform": [30, 0, 0, 0, -30, 0], "width": 32, "height": 32}',
            "coordinate reference system not understood",
        ),
    ],
)
def test_prepare_bad_georef_sidecar(scene, capsys, content, fragment):
    (scene.raw / "georef.json").write_text(content)
    scene.expect_error("prepare", capsys, str(scene.raw / "georef.json"), fragment)


def test_prepare_nodata_mask_of_the_wrong_shape(scene, capsys):
    scene.save_raw("nodata.npy", np.zeros((HEIGHT, WIDTH - 1), dtype=bool))
    scene.expect_error(
        "prepare", capsys, str(scene.raw / "nodata.npy"), "no-data mask", f"expected shape ({HEIGHT}, {WIDTH})"
    )


def test_prepare_label_on_a_pixel_without_data(scene, capsys):
    nodata = np.zeros((HEIGHT, WIDTH), dtype=bool)
    labelled = np.argwhere(scene.load_raw("test_crops.npy") > 0)[0]
    nodata[tuple(labelled)] = True
    scene.save_raw("nodata.npy", nodata)
    scene.expect_error(
        "prepare",
        capsys,
        str(scene.raw / "test_crops.npy"),
        "test mask",
        "expected labels only where the cube has data",
        "found 1 labelled pixels on no-data pixels",
    )


def test_prepare_nan_outside_the_nodata_mask(scene, capsys):
    cube = scene.load_raw("hsi.npy")
    nodata = np.zeros((HEIGHT, WIDTH), dtype=bool)
    nodata[5, 5] = True
    cube[:, 5, 5] = np.nan  # allowed: no data there
    cube[KEPT_BAND, 6, 7] = np.nan  # not allowed
    scene.save_raw("hsi.npy", cube)
    scene.save_raw("nodata.npy", nodata)
    scene.expect_error("prepare", capsys, f"band {KEPT_BAND} has 1 NaN or Inf values (first at row 6, column 7)")


# --------------------------------------------------------------------------- the catalogue itself
# Every kind of bad input the issue lists, and the tests above that cover it.
CATALOGUE = {
    "truncated arrays": [
        "test_prepare_cube_truncated",
        "test_prepare_mask_truncated",
        "test_convert_truncated_envi_data",
        "test_convert_truncated_npy_cube",
    ],
    "wrong-dtype arrays": [
        "test_prepare_cube_non_numeric_dtype",
        "test_prepare_mask_float_dtype",
        "test_convert_cube_wrong_dtype",
    ],
    "NaN rows": ["test_prepare_nan_row", "test_prepare_non_finite_in_kept_band", "test_convert_nan_in_cube"],
    "masks of the wrong shape": [
        "test_prepare_mask_shape_differs_from_cube",
        "test_convert_mask_wrong_shape_for_geotiff_cube",
        "test_convert_mask_fits_no_two_axes_of_npy_cube",
    ],
    "unknown labels": ["test_prepare_labels_outside_range", "test_convert_labels_beyond_classes"],
    "an empty class": ["test_prepare_class_without_training_pixels", "test_split_class_without_training_pixels"],
    "wavelengths of the wrong length": [
        "test_prepare_wavelengths_wrong_length",
        "test_convert_wavelength_file_wrong_length",
    ],
    "a band list that does not fit the cube": [
        "test_prepare_band_index_out_of_range",
        "test_prepare_band_range_reaching_past_cube",
    ],
    "a corrupt .mat": ["test_convert_corrupt_mat"],
    "a missing path": ["test_prepare_missing_raw_directory", "test_convert_missing_input_path"],
    "a misspelt params key": ["test_misspelt_top_level_key", "test_misspelt_nested_key"],
    "negative or zero sizes": ["test_negative_or_zero_sizes", "test_convert_zero_or_negative_classes"],
    "a truncated ENVI file or header": ["test_convert_truncated_envi_data", "test_convert_envi_header_missing_key"],
    "a non-integer mask": ["test_prepare_mask_float_dtype", "test_convert_non_integer_mask"],
    "an ambiguous band axis or unknown variable": [
        "test_convert_ambiguous_band_axis",
        "test_convert_unknown_variable_name",
    ],
    "a .he5 that is not a PRISMA L2 product": [
        "test_convert_he5_not_hdf5",
        "test_convert_he5_not_a_prisma_product",
        "test_convert_he5_radiance_product",
        "test_convert_he5_missing_attribute",
    ],
    "a cube whose shape disagrees with its attributes": [
        "test_convert_he5_cube_disagrees_with_its_band_lists",
        "test_convert_he5_cube_disagrees_with_its_corners",
    ],
    "a GeoTIFF mask on another grid": ["test_convert_geotiff_mask_on_another_grid"],
}


def test_catalogue_covers_every_kind():
    assert len(CATALOGUE) >= 15
    missing = [name for names in CATALOGUE.values() for name in names if not callable(globals().get(name))]
    assert missing == []


# --------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_mid_stage_is_one_line_and_leaves_the_outputs(scene, capsys, monkeypatch):
    """Ctrl-C while prepare writes its cube: exit 130, one line, no traceback, the previous outputs untouched."""
    import hsixai.data.prepare as prepare

    def interrupted(bands, **kwargs):
        for i, band in enumerate(bands):
            if i == 3:
                raise KeyboardInterrupt  # what Python raises on SIGINT, here in the middle of the band loop
            yield band

    monkeypatch.setattr(prepare, "tqdm", interrupted)
    rc, out, err = scene.run("prepare", capsys)
    assert rc == 130 and "Traceback" not in err + out
    assert err.strip().splitlines() == ["hsixai prepare: interrupted by SIGINT before it finished; it wrote no output"]
    scene.assert_outputs_intact()
