import numpy as np
import pytest

from hsixai.config import CRITERIA
from hsixai.select import (
    Experiment,
    analyse_group,
    build_report,
    experiment_state,
    markdown,
    order,
    paired_difference,
    rank,
    varying_keys,
)

REPLICATES = 250


def _boot(estimate, replicates=None, centre=None, seed=0):
    replicates = np.full(REPLICATES, estimate) if replicates is None else np.asarray(replicates)
    return {"estimate": estimate, "centre": estimate if centre is None else centre, "replicates": replicates.tolist()}


def _exp(
    p,
    model="cnn2d",
    val=0.5,
    test=0.5,
    leakfree="same",
    jsdiv=0.5,
    inst=0.9,
    conc=0.8,
    centre=0.2,
    reps=None,
    name=None,
    val_instances=None,
    seed=0,
):
    leakfree = test if leakfree == "same" else leakfree
    metrics = {
        "f1_macro_val": val,
        "f1_macro_val_std": 0.01,
        "f1_macro_test": test,
        "f1_macro_test_std": 0.01,
        "f1_macro_test_leakfree": leakfree,
        "f1_macro_test_leakfree_std": 0.02,
        "n_test_leakfree": 100,
        "consistency_jsdiv": jsdiv,
        "consistency_jsdiv_ci": [jsdiv - 0.01, jsdiv + 0.01],
        "consistency_instances": inst,
        "consistency_instances_ci": [inst - 0.02, inst + 0.02],
        "consistency_concordance": conc,
        "consistency_concordance_ci": [conc - 0.05, conc + 0.05],
        "centre_share": centre,
        "centre_share_ci": [centre - 0.01, centre + 0.01],
        "centre_share_uniform": 1 / p**2,
        "instances": 3,
        "xai_samples_per_class": [16] * 6,
    }
    statistics = {
        "consistency_jsdiv": _boot(jsdiv),
        "consistency_instances": _boot(inst),
        "consistency_concordance": _boot(conc),
        "centre_share": _boot(centre),
        **(reps or {}),
    }
    replicates = {
        "seed": seed,
        "replicates": REPLICATES,
        "instances": 3,
        "resamples_instances": True,
        "statistics": statistics,
    }
    per_instance = {
        "f1_macro_val": val_instances or [val - 0.01, val, val + 0.01],
        "f1_macro_test": [test] * 3,
        "f1_macro_test_leakfree": [leakfree] * 3,
    }
    return Experiment(
        name or f"{model}-{p}",
        f"rev{p}",
        "",
        {"model": model, "patch_size": p, "seed": 0},
        metrics,
        replicates,
        per_instance,
        {"dev_same_class": p / 100, "dev_any_class": p / 50, "test_same_class": p / 80, "test_any_class": p / 40},
    )


def test_order_and_rank_follow_the_direction_and_keep_none():
    assert rank([0.2, None, 0.9, 0.5]) == [3, None, 1, 2]
    assert rank([0.2, None, 0.9, 0.5], sign=-1) == [1, None, 3, 2]
    assert order([0.2, None, 0.9, 0.5], [3, 5, 7, 9], sign=-1) == [0, 3, 2]


def test_exact_ties_give_one_point_everywhere():
    """[0.5, 0.7, 0.7]: rank, pick, regret and the best test F1 all refer to the same point (the smaller x)."""
    xs = [3, 5, 7]
    assert rank([0.5, 0.7, 0.7], xs) == [3, 1, 2]
    exps = [_exp(3, inst=0.5, test=0.70), _exp(5, inst=0.7, test=0.80), _exp(7, inst=0.7, test=0.80)]
    g = analyse_group(exps, xs, "patch_size", "max_consistency_instances")
    check = g["criteria"]["max_consistency_instances"]
    assert check["pick"] == 5 and check["exact_tie"] == [7] and check["ranks"] == {"3": 3, "5": 1, "7": 2}
    assert g["recommended"]["patch_size"] == 5 and g["best_test_f1_leakfree"] == 5
    assert check["regret_test_f1_leakfree"] == 0.0  # the pick is the best-F1 point under the same rule
    assert 7 in check["tied"]  # identical replicates: difference interval [0, 0]
    assert "exactly tied with 7 (the smaller patch_size wins)" in check["summary"]


def test_a_point_the_interval_favours_is_never_reported_behind():
    """The issue's constructed case: A 0.6771 > B 0.6693 by estimate, paired 95% interval of A - B below 0."""
    rng = np.random.default_rng(0)
    centre_a, centre_b = 0.6771, 0.6693
    # A's replicates sit well above its centre (its plug-in is biased down by resampling): the basic interval
    # reflects them, so A - B lies in about [-0.107, -0.030].
    a = _exp(
        5,
        inst=centre_a,
        reps={"consistency_instances": _boot(centre_a, centre_a + 0.0763 + rng.normal(0, 0.0196, REPLICATES))},
    )
    b = _exp(7, inst=centre_b, reps={"consistency_instances": _boot(centre_b)})
    comparison = paired_difference(a, b, "consistency_instances", 1)
    low, high = comparison["difference_ci"]
    assert high < 0 and low == pytest.approx(-0.107, abs=0.01) and high == pytest.approx(-0.030, abs=0.01)
    assert comparison["status"] == "favoured_by_interval"
    g = analyse_group([a, b], [5, 7], "patch_size", "max_consistency_instances")
    check = g["criteria"]["max_consistency_instances"]
    assert check["pick"] == 5 and check["behind"] == [] and check["favoured_by_interval"] == [7]
    assert "ahead of" not in check["summary"] and "the interval favours 7" in check["summary"]


def test_min_direction_compares_the_other_way():
    shared = np.random.default_rng(1).normal(0, 0.01, REPLICATES)
    low = _exp(5, jsdiv=0.40, reps={"consistency_jsdiv": _boot(0.40, 0.40 + shared)})
    high = _exp(7, jsdiv=0.50, reps={"consistency_jsdiv": _boot(0.50, 0.50 + shared + 0.001)})
    g = analyse_group([low, high], [5, 7], "patch_size", "min_consistency_jsdiv")
    assert g["criteria"]["min_consistency_jsdiv"]["pick"] == 5
    assert g["criteria"]["min_consistency_jsdiv"]["behind"] == [7]
    assert g["criteria"]["max_consistency_jsdiv"]["pick"] == 7
    assert g["criteria"]["max_consistency_jsdiv"]["behind"] == [5]
    comparison = g["criteria"]["min_consistency_jsdiv"]["comparisons"]["7"]
    assert comparison["difference"] == pytest.approx(0.10) and comparison["difference_ci"][0] > 0


def test_paired_bootstrap_ties_and_unpaired_replicates():
    rng = np.random.default_rng(0)
    shared = rng.normal(0.6, 0.05, REPLICATES)  # the same resampled pixels move both experiments alike
    a = _exp(5, inst=0.61, reps={"consistency_instances": _boot(0.61, shared + 0.01)})
    b = _exp(7, inst=0.60, reps={"consistency_instances": _boot(0.60, shared + rng.normal(0, 0.001, REPLICATES))})
    assert paired_difference(a, b, "consistency_instances", 1)["status"] == "behind"
    c = _exp(9, inst=0.60, reps={"consistency_instances": _boot(0.60, shared + rng.normal(0.0, 0.02, REPLICATES))})
    assert paired_difference(a, c, "consistency_instances", 1)["status"] == "tied"
    other_seed = _exp(11, inst=0.5, seed=1)
    unknown = paired_difference(a, other_seed, "consistency_instances", 1)
    assert unknown["status"] == "unknown" and "not paired" in unknown["reason"]


def test_validation_f1_uses_a_welch_interval_over_instances():
    a = _exp(5, val=0.80, val_instances=[0.79, 0.80, 0.81])
    b = _exp(7, val=0.70, val_instances=[0.69, 0.70, 0.71])
    assert paired_difference(a, b, "f1_macro_val", 1)["status"] == "behind"
    c = _exp(9, val=0.78, val_instances=[0.70, 0.78, 0.86])
    assert paired_difference(a, c, "f1_macro_val", 1)["status"] == "tied"
    two = _exp(11, val=0.7, val_instances=[0.7])
    assert paired_difference(a, two, "f1_macro_val", 1)["status"] == "unknown"


def test_every_criterion_in_both_directions_with_spearman_and_regret():
    exps = [
        _exp(3, test=0.6, inst=0.94, jsdiv=0.7, val=0.55, centre=0.3),
        _exp(5, test=0.8, inst=0.97, jsdiv=0.6, val=0.75, centre=0.2),
        _exp(7, test=0.7, inst=0.96, jsdiv=0.5, val=0.80, centre=0.1),
    ]
    g = analyse_group(exps, [3, 5, 7], "patch_size", "max_consistency_instances")
    assert set(g["criteria"]) == set(CRITERIA)
    checks = g["criteria"]
    assert checks["max_consistency_instances"]["pick"] == 5
    assert checks["max_consistency_instances"]["spearman_with_test_f1_leakfree"] == pytest.approx(1.0)
    assert checks["max_consistency_instances"]["regret_test_f1_leakfree"] == 0.0
    assert checks["min_consistency_instances"]["pick"] == 3
    assert checks["min_consistency_instances"]["regret_test_f1_leakfree"] == pytest.approx(0.2)
    assert checks["max_consistency_jsdiv"]["pick"] == 3 and checks["min_consistency_jsdiv"]["pick"] == 7
    assert checks["min_consistency_jsdiv"]["regret_test_f1_leakfree"] == pytest.approx(0.1)
    assert checks["max_consistency_jsdiv"]["spearman_with_test_f1_leakfree"] == pytest.approx(-0.5)
    assert checks["max_f1_macro_val"]["pick"] == 7
    assert checks["max_f1_macro_val"]["regret_test_f1_leakfree"] == pytest.approx(0.1)
    assert g["recommended"] | {} == {**g["recommended"], "patch_size": 5, "complete": True}


def test_leakfree_f1_is_the_judge_and_a_point_without_it_is_missing_not_skipped():
    exps = [
        _exp(3, test=0.9, leakfree=0.6, inst=0.94),
        _exp(5, test=0.8, leakfree=0.8, inst=0.97),
        _exp(7, test=0.7, leakfree=0.7, inst=0.96),
    ]
    g = analyse_group(exps, [3, 5, 7], "patch_size", "max_consistency_instances")
    assert g["best_test_f1_leakfree"] == 5 and g["best_test_f1_all_pixels"] == 3
    check = g["criteria"]["max_consistency_instances"]
    assert check["regret_test_f1_leakfree"] == 0.0 and check["regret_test_f1_all_pixels"] == pytest.approx(0.1)
    exps[2].metrics["f1_macro_test_leakfree"] = None  # e.g. an evaluate.json from before leak-free metrics
    g = analyse_group(exps, [3, 5, 7], "patch_size", "max_consistency_instances")
    check = g["criteria"]["max_consistency_instances"]
    assert g["best_test_f1_leakfree"] is None  # never the best of the rest
    assert check["regret_test_f1_leakfree"] is None and check["spearman_with_test_f1_leakfree"] is None
    assert check["missing_test_f1_leakfree"] == [7]
    assert "No comparison with leak-free test F1: 7 lack it" in check["summary"]


def test_a_grid_with_a_missing_point_is_incomplete_and_names_it():
    exps = [
        _exp(3, inst=0.9),
        _exp(5, inst=0.95),
        _exp(3, model="vit", inst=0.9),
        _exp(5, model="vit", inst=0.8),
        _exp(7, model="vit", inst=0.85),
    ]
    report = build_report(
        exps, "max_consistency_instances", failed={"cnn2d-p7-123": {"model": "cnn2d", "patch_size": 7, "seed": 0}}
    )
    assert report["complete"] is False and report["failed"] == ["cnn2d-p7-123"]
    assert report["missing"] == [{"group": "model=cnn2d", "patch_size": 7, "reason": "failed (cnn2d-p7-123)"}]
    cnn = report["groups"]["model=cnn2d"]
    assert cnn["recommended"] == {**cnn["recommended"], "patch_size": 5, "complete": False, "missing": [7]}
    assert cnn["criteria"]["max_consistency_instances"]["regret_test_f1_leakfree"] is None
    assert report["groups"]["model=vit"]["recommended"]["complete"] is True
    text = markdown(report)
    assert "**Incomplete**" in text and "model=cnn2d patch_size 7: failed (cnn2d-p7-123)" in text
    assert "missing: 7 (incomplete)" in cnn["criteria"]["max_consistency_instances"]["summary"]


def test_expected_grid_from_the_sweep_names_points_without_any_experiment():
    expected = [{"model": "cnn2d", "patch_size": p, "seed": 0} for p in (3, 5, 7)]
    report = build_report([_exp(3), _exp(5)], "max_consistency_instances", expected=expected)
    assert report["missing"] == [{"group": "all", "patch_size": 7, "reason": "no experiment"}]
    assert report["groups"]["all"]["rows"][2]["missing"] == "no experiment"


def test_summary_is_two_sentences_per_criterion():
    exps = [_exp(3, test=0.6, inst=0.94), _exp(5, test=0.8, inst=0.97), _exp(7, test=0.7, inst=0.96)]
    report = build_report(exps, "max_consistency_instances")
    text = markdown(report)
    for name, check in report["groups"]["all"]["criteria"].items():
        assert check["summary"].count(". ") == 1 and check["summary"].endswith(".")
        assert f"`{name}` selects patch_size" in check["summary"] and f"- {check['summary']}" in text
        assert "Against leak-free test F1 (best at patch_size 5)" in check["summary"]


def test_selection_figure(tmp_path):
    from hsixai import plots

    exps = [_exp(3, test=0.6, inst=0.94), _exp(5, test=0.8, inst=0.97), _exp(3, model="vit"), _exp(7, model="vit")]
    report = build_report(exps, "max_consistency_instances")
    plots.selection(report, tmp_path / "selection.png")
    assert (tmp_path / "selection.png").stat().st_size > 20_000


def test_selection_figure_with_a_group_whose_every_point_is_missing(tmp_path):
    from hsixai import plots

    expected = [{**_exp(p).params, "model": m} for m in ("cnn2d", "vit") for p in (3, 5)]
    report = build_report([_exp(3), _exp(5)], "max_consistency_instances", expected=expected)
    vit = next(g for label, g in report["groups"].items() if "vit" in label)
    assert not [r for r in vit["rows"] if "missing" not in r] and len(vit["missing"]) == 2
    plots.selection(report, tmp_path / "selection.png")  # empty panels say so; no crash
    assert (tmp_path / "selection.png").stat().st_size > 20_000


def test_varying_keys_finds_what_differs():
    exps = [_exp(3), _exp(5), _exp(3, model="vit")]
    assert varying_keys(exps) == ["model", "patch_size"]


def test_has_experiment_matches_all_params_but_the_sweep_group():
    from hsixai.select import has_experiment

    exps = [_exp(5)]
    assert has_experiment(exps, {"model": "cnn2d", "patch_size": 5, "seed": 0, "sweep.jobs": 4})
    assert not has_experiment(exps, {"model": "cnn2d", "patch_size": 7, "seed": 0})
    assert not has_experiment(exps, {"model": "cnn2d", "patch_size": 5, "seed": 1})


def test_a_key_missing_from_the_params_file_matches_its_code_default():
    from hsixai.config import Params
    from hsixai.select import Experiment, has_experiment
    from hsixai.tracking import flat_params

    wanted = flat_params(Params())
    recorded = {k: v for k, v in wanted.items() if k != "adapt.shadow_synthetic.shadow_fraction"}
    done = Experiment(name="e", rev="r", timestamp="", params=recorded, metrics={})
    assert has_experiment([done], wanted)
    assert not has_experiment([done], {**wanted, "adapt.shadow_synthetic.shadow_fraction": 0.3})


@pytest.mark.parametrize(
    ("executor", "state"),
    [
        (None, "success"),
        ({"state": "success"}, "success"),
        ({"state": "running", "name": "dvc-task"}, "running"),
        ({"state": "queued"}, "queued"),
        ({"state": "failed"}, "failed"),
    ],
)
def test_experiment_state_is_dvcs_and_a_commit_without_queue_record_succeeded(executor, state):
    assert experiment_state({"revs": [{}], "executor": executor}) == state
