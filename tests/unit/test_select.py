import numpy as np
import pytest

from hsixai.select import Experiment, analyse_group, markdown, paired_tie, rank, varying_keys


def _exp(p, model="cnn2d", val=0.5, test=0.5, jsdiv=0.5, inst=0.5, reps=None, name=None):
    metrics = {"f1_macro_val": val, "f1_macro_val_std": 0.01, "f1_macro_test": test, "consistency_jsdiv": jsdiv,
               "consistency_jsdiv_ci": [jsdiv - 0.01, jsdiv + 0.01], "consistency_instances": inst,
               "consistency_instances_ci": [inst - 0.02, inst], "consistency_instances_floor": 0.9}
    return Experiment(name or f"{model}-{p}", f"rev{p}", "", {"model": model, "patch_size": p, "seed": 0},
                      metrics, reps or {})


def test_rank_puts_the_highest_first_and_keeps_none():
    assert rank([0.2, None, 0.9, 0.5]) == [3, None, 1, 2]


def test_varying_keys_finds_what_differs():
    exps = [_exp(3), _exp(5), _exp(3, model="vit")]
    assert varying_keys(exps) == ["model", "patch_size"]


def test_analysis_ranks_checks_and_regret():
    exps = [_exp(3, test=0.6, inst=0.4, jsdiv=0.7, val=0.55),
            _exp(5, test=0.8, inst=0.7, jsdiv=0.6, val=0.75),
            _exp(7, test=0.7, inst=0.6, jsdiv=0.5, val=0.80)]
    g = analyse_group(exps, "patch_size", "consistency_instances")
    assert g["recommended"]["patch_size"] == 5 and g["recommended"]["runner_up"] == 7
    assert g["best_test_f1"] == 5
    assert [r["rank_consistency_instances"] for r in g["rows"]] == [3, 1, 2]
    checks = g["criteria_checks"]
    assert checks["consistency_instances"] == {"selected": 5, "spearman_with_test_f1": pytest.approx(1.0), "regret": 0.0}
    assert checks["consistency_jsdiv"]["selected"] == 3
    assert checks["consistency_jsdiv"]["regret"] == pytest.approx(0.2)
    assert checks["consistency_jsdiv"]["spearman_with_test_f1"] == pytest.approx(-0.5)
    assert checks["f1_macro_val"]["selected"] == 7 and checks["f1_macro_val"]["regret"] == pytest.approx(0.1)
    assert "Recommended patch_size: **5**" in markdown({"criterion": "consistency_instances", "x": "patch_size",
                                                        "groups": {"all": g}})


def test_paired_bootstrap_tie():
    rng = np.random.default_rng(0)
    shared = rng.normal(0.6, 0.05, 250)  # the same resampled pixels move both experiments alike
    a = _exp(5, reps={"consistency_instances": (shared + 0.01).tolist()})
    b = _exp(7, reps={"consistency_instances": (shared + rng.normal(0, 0.001, 250)).tolist()})
    clear = paired_tie(a, b, "consistency_instances")
    assert clear["method"] == "paired bootstrap" and clear["tied"] is False
    c = _exp(9, reps={"consistency_instances": (shared + rng.normal(0.01, 0.02, 250)).tolist()})
    assert paired_tie(a, c, "consistency_instances")["tied"] is True
    assert paired_tie(_exp(5, val=0.8), _exp(7, val=0.795), "f1_macro_val")["tied"] is True


def test_has_experiment_matches_all_params_but_the_sweep_group():
    from hsixai.select import has_experiment

    exps = [_exp(5)]
    assert has_experiment(exps, {"model": "cnn2d", "patch_size": 5, "seed": 0, "sweep.jobs": 4})
    assert not has_experiment(exps, {"model": "cnn2d", "patch_size": 7, "seed": 0})
    assert not has_experiment(exps, {"model": "cnn2d", "patch_size": 5, "seed": 1})


def test_published_points_set_the_published_profile():
    from hsixai.config import params_from_dict
    from hsixai.sweep import points

    published = points(params_from_dict({}), published=True)
    assert len(published) == 2 * 9 and {p for _, p, _ in published} == set(range(5, 22, 2))
    assert all(extra["train.epochs"] == 30 and extra["xai.samples_per_class"] == 512 for _, _, extra in published)
    assert {m: extra["train.batch_size"] for m, _, extra in published} == {"cnn2d": 256, "vit": 8}
    assert all(extra == {} for _, _, extra in points(params_from_dict({})))
