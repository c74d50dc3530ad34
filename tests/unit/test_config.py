"""params.yaml loading: defaults, strict keys with suggestions, types, choices and ranges."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from hsixai.config import (
    CROP_NAMES,
    PRISMA_REMOVED_BANDS,
    DataConfig,
    Params,
    load_params,
    params_from_dict,
)
from hsixai.errors import HsixaiError

from ..helpers import write_params

REPO_ROOT = Path(__file__).resolve().parents[2]
REPO_PARAMS = REPO_ROOT / "params.yaml"


def load_error(tmp_path: Path, obj) -> str:
    """Load `obj` as a params file; return the one-line HsixaiError message it must raise."""
    path = write_params(tmp_path, obj)
    with pytest.raises(HsixaiError) as info:
        load_params(path)
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert str(path) in msg, msg  # every load error names the params file
    return msg


# --------------------------------------------------------------------------- defaults
def test_repo_params_yaml_loads():
    params = load_params(REPO_PARAMS)
    assert isinstance(params, Params)
    assert params.data.class_names == CROP_NAMES
    assert params.n_classes == 6
    assert params.data.remove_bands == PRISMA_REMOVED_BANDS
    assert params.split.strategy in ("spatial", "random_stratified")
    assert 0 < params.split.train_size < 1
    assert isinstance(params.split.train_size, float)
    assert isinstance(params.seed, int)
    assert params.xai.samples_per_class >= 1


def test_repo_params_yaml_has_every_group_and_key():
    # Nothing in the repo's file relies on a code default silently.
    raw = yaml.safe_load(REPO_PARAMS.read_text())
    defaults = Params()
    assert set(raw) == set(vars(defaults))
    groups = [name for name, value in vars(defaults).items() if dataclasses.is_dataclass(value)]
    assert {"synthesize", "data", "split", "xai", "train"} <= set(groups)
    for group in groups:
        assert set(raw[group]) == set(vars(getattr(defaults, group))), group


def test_empty_mapping_and_empty_file_give_code_defaults(tmp_path):
    assert params_from_dict({}) == Params()
    assert load_params(write_params(tmp_path, "")) == Params()
    assert load_params(write_params(tmp_path, "# only a comment\n")) == Params()


def test_partial_group_keeps_other_defaults(tmp_path):
    params = load_params(write_params(tmp_path, {"split": {"train_size": 0.7}}))
    assert params.split.train_size == 0.7
    assert params.split.strategy == "spatial"
    assert params.split.train_side == "left"
    assert params.data == DataConfig()


def test_integer_is_accepted_for_a_float_and_converted():
    params = params_from_dict({"synthesize": {"labelled_fraction": 1}})
    assert params.synthesize.labelled_fraction == 1.0
    assert isinstance(params.synthesize.labelled_fraction, float)


# --------------------------------------------------------------------------- unknown keys
def test_misspelt_top_level_key_names_it_and_suggests(tmp_path):
    msg = load_error(tmp_path, {"splt": {"train_size": 0.6}})
    assert "unknown key 'splt'" in msg
    assert "did you mean 'split'" in msg


def test_misspelt_nested_key_names_full_path_and_suggests(tmp_path):
    msg = load_error(tmp_path, {"split": {"trian_size": 0.6}})
    assert "unknown key 'split.trian_size'" in msg
    assert "did you mean 'split.train_size'" in msg


def test_misspelt_key_in_data_group(tmp_path):
    msg = load_error(tmp_path, {"data": {"remove_band": [1]}})
    assert "unknown key 'data.remove_band'" in msg
    assert "did you mean 'data.remove_bands'" in msg


def test_unknown_key_without_close_match_lists_known_keys(tmp_path):
    msg = load_error(tmp_path, {"xai": {"zzzz": 1}})
    assert "unknown key 'xai.zzzz'" in msg
    assert "samples_per_class" in msg


def test_misspelt_key_in_repo_params_copy(tmp_path):
    # The real file with one key misspelt, as a user would do it.
    text = REPO_PARAMS.read_text().replace("train_size:", "trian_size:")
    assert "trian_size:" in text
    msg = load_error(tmp_path, text)
    assert "split.trian_size" in msg and "split.train_size" in msg


def test_group_that_is_not_a_mapping(tmp_path):
    msg = load_error(tmp_path, {"split": 0.6})
    assert "split" in msg and "expected a mapping" in msg and "float" in msg


def test_top_level_that_is_not_a_mapping(tmp_path):
    msg = load_error(tmp_path, "- a\n- b\n")
    assert "top level" in msg and "expected a mapping" in msg and "list" in msg


# --------------------------------------------------------------------------- types
@pytest.mark.parametrize(
    ("raw", "key", "expected", "found"),
    [
        ({"synthesize": {"height": "32"}}, "synthesize.height", "an integer", "'32'"),
        ({"synthesize": {"height": 32.5}}, "synthesize.height", "an integer", "32.5"),
        ({"seed": "zero"}, "seed", "an integer", "'zero'"),
        ({"seed": True}, "seed", "an integer", "True"),
        ({"xai": {"samples_per_class": "64"}}, "xai.samples_per_class", "an integer", "'64'"),
        ({"split": {"train_size": True}}, "split.train_size", "a number", "True"),
        ({"split": {"train_size": "0.6"}}, "split.train_size", "a number", "'0.6'"),
        ({"synthesize": {"test_fraction": False}}, "synthesize.test_fraction", "a number", "False"),
        ({"data": {"raw_dir": 5}}, "data.raw_dir", "a string", "5"),
        ({"data": {"class_names": "wheat, rice"}}, "data.class_names", "a list", "'wheat, rice'"),
        ({"data": {"class_names": ["wheat", 2]}}, "data.class_names[1]", "a string", "2"),
        ({"data": {"remove_bands": 5}}, "data.remove_bands", "a list", "5"),
        ({"data": {"remove_bands": [1.5]}}, "data.remove_bands[0]", "an integer or a string", "1.5"),
        ({"data": {"remove_bands": [True]}}, "data.remove_bands[0]", "an integer or a string", "True"),
    ],
)
def test_wrong_type_names_key_expected_and_found(tmp_path, raw, key, expected, found):
    msg = load_error(tmp_path, raw)
    assert f"{key}: expected {expected}, found {found}" in msg


# --------------------------------------------------------------------------- Literal choices
def test_literal_choice_misspelt_suggests(tmp_path):
    msg = load_error(tmp_path, {"split": {"strategy": "spatil"}})
    assert "split.strategy" in msg
    assert "spatial" in msg and "random_stratified" in msg
    assert "found 'spatil'" in msg
    assert "did you mean 'spatial'" in msg


def test_literal_choice_train_side(tmp_path):
    msg = load_error(tmp_path, {"split": {"train_side": "lefft"}})
    assert "split.train_side" in msg and "found 'lefft'" in msg and "did you mean 'left'" in msg


def test_literal_choice_far_off_has_no_suggestion_but_lists_choices(tmp_path):
    msg = load_error(tmp_path, {"split": {"strategy": "kmeans"}})
    assert "split.strategy: expected one of spatial, random_stratified, found 'kmeans'" in msg
    assert "did you mean" not in msg


def test_criterion_without_its_direction_is_an_error_that_suggests_one(tmp_path):
    msg = load_error(tmp_path, {"sweep": {"criterion": "consistency_jsdiv"}})
    assert "sweep.criterion" in msg and "found 'consistency_jsdiv'" in msg and "max_consistency_jsdiv" in msg
    assert "did you mean '" in msg


def test_every_criterion_names_a_direction_and_is_accepted():
    from hsixai.config import CRITERIA, SELECTION_QUANTITIES

    assert set(CRITERIA) == {f"{d}_{q}" for q in SELECTION_QUANTITIES for d in ("max", "min")} | {"max_f1_macro_val"}
    for name in CRITERIA:
        assert params_from_dict({"sweep": {"criterion": name}}).sweep.criterion == name


@pytest.mark.parametrize("choice", ["spatial", "random_stratified"])
def test_literal_choices_accepted(choice):
    assert params_from_dict({"split": {"strategy": choice}}).split.strategy == choice


# --------------------------------------------------------------------------- ranges
@pytest.mark.parametrize("value", [0, 1, 1.5, -0.1, 0.0, 1.0, float("nan"), float("inf")])
def test_train_size_outside_open_unit_interval_rejected(tmp_path, value):
    msg = load_error(tmp_path, {"split": {"train_size": value}})
    assert "split.train_size" in msg
    assert "(0, 1)" in msg
    assert "found" in msg


@pytest.mark.parametrize("value", [0.01, 0.5, 0.99])
def test_train_size_inside_interval_accepted(value):
    assert params_from_dict({"split": {"train_size": value}}).split.train_size == value


@pytest.mark.parametrize("value", [0, -3])
def test_samples_per_class_not_positive_rejected(tmp_path, value):
    msg = load_error(tmp_path, {"xai": {"samples_per_class": value}})
    assert f"xai.samples_per_class: expected a positive integer, found {value}" in msg


def test_samples_per_class_one_accepted():
    assert params_from_dict({"xai": {"samples_per_class": 1}}).xai.samples_per_class == 1


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"synthesize": {"height": 8}}, "synthesize.height/width"),
        ({"synthesize": {"bands": 4}}, "synthesize.bands"),
        ({"synthesize": {"subpixels": 0}}, "synthesize.subpixels"),
        ({"synthesize": {"min_parcel": 12, "max_parcel": 10}}, "synthesize.min_parcel/max_parcel"),
        ({"synthesize": {"labelled_fraction": 0}}, "synthesize.labelled_fraction"),
        ({"synthesize": {"test_fraction": 1}}, "synthesize.test_fraction"),
        ({"data": {"class_names": ["only one"]}}, "data.class_names"),
        ({"data": {"class_names": ["a", "b", "a"]}}, "data.class_names"),
        ({"train": {"max_batches_per_epoch": -1}}, "train.max_batches_per_epoch"),
        ({"evaluate": {"map_stride": 0}}, "evaluate.map_stride"),
    ],
)
def test_other_range_checks_name_the_key(tmp_path, raw, key):
    msg = load_error(tmp_path, raw)
    assert f"{key}: expected" in msg
    assert "params: " not in msg  # the internal prefix is replaced by the file name


# --------------------------------------------------------------------------- data.remove_bands
def bands(*items) -> list[int]:
    return DataConfig(remove_bands=list(items)).removed_band_indices()


def test_remove_bands_range_is_inclusive():
    assert bands("0-10") == list(range(11))
    assert len(bands("0-10")) == 11


def test_remove_bands_default_expands_to_60_indices():
    removed = DataConfig().removed_band_indices()
    assert len(removed) == 60
    assert removed == sorted(set(removed))
    assert min(removed) == 0 and max(removed) == 233
    assert 234 - len(removed) == 174
    # the kept bands are exactly the ones between the removed ranges
    kept = sorted(set(range(234)) - set(removed))
    assert kept[:3] == [11, 12, 13] and kept[-1] == 209
    assert 57 not in kept and 63 not in kept and 56 in kept and 64 in kept


def test_remove_bands_repo_params_gives_174_of_234():
    removed = load_params(REPO_PARAMS).data.removed_band_indices()
    assert len(removed) == 60 and 234 - len(removed) == 174


def test_remove_bands_mixed_forms_sorted_and_unique():
    assert bands(5, "3-4", "4", 5, "7-7") == [3, 4, 5, 7]
    assert bands() == []


def test_remove_bands_via_params_file(tmp_path):
    params = load_params(write_params(tmp_path, {"data": {"remove_bands": ["0-3", 9, "30-31"]}}))
    assert params.data.removed_band_indices() == [0, 1, 2, 3, 9, 30, 31]


@pytest.mark.parametrize("item", ["10-0", "a-b", "1-b", "a", "", "1-2-3", "-1", "3-"])
def test_remove_bands_bad_string_forms_rejected(tmp_path, item):
    msg = load_error(tmp_path, {"data": {"remove_bands": ["0-2", item]}})
    assert "data.remove_bands" in msg
    assert repr(item) in msg
    assert "a <= b" in msg


@pytest.mark.parametrize("item", [-1, -20])
def test_remove_bands_negative_integer_rejected(tmp_path, item):
    msg = load_error(tmp_path, {"data": {"remove_bands": [item]}})
    assert "data.remove_bands" in msg and "non-negative" in msg and str(item) in msg


def test_remove_bands_errors_are_raised_by_dataclass_too():
    with pytest.raises(HsixaiError, match="data.remove_bands"):
        DataConfig(remove_bands=["10-0"])
    with pytest.raises(HsixaiError, match="non-negative"):
        DataConfig(remove_bands=[-1])


# --------------------------------------------------------------------------- the file itself
def test_missing_params_file_names_it(tmp_path):
    path = tmp_path / "nope" / "params.yaml"
    with pytest.raises(HsixaiError) as info:
        load_params(path)
    assert str(path) in str(info.value)
    assert "not found" in str(info.value)


def test_params_path_that_is_a_directory(tmp_path):
    with pytest.raises(HsixaiError) as info:
        load_params(tmp_path)
    assert str(tmp_path) in str(info.value) and "not found" in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "split: {train_size: 0.6\n",  # unclosed flow mapping
        "split:\n  train_size: 0.6\n bad: 1\n",  # bad indentation
        "seed: [1, 2\n",
        "\tseed: 0\n",  # tab indentation
    ],
)
def test_invalid_yaml_names_file_on_one_line(tmp_path, text):
    msg = load_error(tmp_path, text)
    assert "not valid YAML" in msg


def test_params_accepts_a_str_path(tmp_path):
    path = write_params(tmp_path, {"seed": 3})
    assert load_params(str(path)).seed == 3


def test_params_file_not_utf8_names_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"seed: 0\nsplit: {strategy: \xff\xfe}\n")
    with pytest.raises(HsixaiError) as info:
        load_params(path)
    assert str(path) in str(info.value)


def test_huge_band_range_is_rejected_quickly():
    with pytest.raises(HsixaiError, match="up to 100000"):
        params_from_dict({"data": {"remove_bands": ["0-9999999999"]}})


def test_more_classes_than_int8_labels_hold_is_rejected():
    with pytest.raises(HsixaiError, match="data.class_names"):
        params_from_dict({"data": {"class_names": [f"c{i}" for i in range(128)]}})
