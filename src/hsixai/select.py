"""`hsixai select`: which patch size, and how sure, from the DVC experiments of the current commit.

Reads `dvc exp show --json` (which experiments exist, their params) and, from
each experiment's git commit, metrics/{train,evaluate,consistency}.json and
metrics/consistency_bootstrap.json. Experiments are grouped by whatever params
vary across them: the patch size along the x axis, the rest (e.g. the model)
as groups. Writes reports/selection.json, reports/selection.md and
reports/selection.png, plus an MLflow selection run. docs/selection.md
describes the method; in short:

- A criterion is a quantity and a direction (`max_consistency_instances`,
  `min_consistency_jsdiv`, ...). Every consistency quantity is reported in
  both directions, each with its Spearman correlation with the leak-free test
  macro F1 across the x values and its regret (best leak-free test F1 minus
  the leak-free test F1 at the criterion's pick); the same against the F1 on
  all test pixels, labelled as such.
- One order everywhere: by the estimate in the criterion's direction, exact
  ties broken towards the smaller x (the smaller patch: cheaper and less
  exposed to spatial leakage). Rank, pick, regret and "best test F1" all use it.
- Every other point is *tied* with the pick when the 95% interval of their
  difference contains 0, *behind* when it lies on the pick's side of 0, and
  *favoured by the interval* when it lies on the other side (the estimates
  and the interval disagree: never reported as the pick being ahead). The
  interval is the basic bootstrap interval of the paired replicates (every
  experiment resamples the same xAI pixels and instance indices with the same
  seed); for validation F1 a Welch interval over instances.
- Missing points (an expected point without a completed experiment, or
  without the value a criterion or a check needs) are named in every output
  and make what depends on them incomplete; nothing is computed on a subset.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from . import plots, tracking
from .config import CRITERIA, SELECTION_QUANTITIES, Params
from .errors import HsixaiError
from .io import staged_outputs, write_json
from .paths import Paths

log = logging.getLogger(__name__)
LEVEL = 0.95
TIE_RULE = (
    "order by the estimate in the criterion's direction; exact ties go to the smaller x; "
    "the same order gives ranks, the pick, regret and the best test F1"
)
TEST_F1 = "f1_macro_test_leakfree"  # what the checks judge by (issue 12: leak-free test pixels only)
TEST_F1_ALL = "f1_macro_test"  # every test pixel: shown next to it, and checked too, labelled as such
# name in the report -> (metrics file stem, key in it); the F1s and scores are named as on the MLflow parent run
# A point is done when its experiment succeeded and wrote these (its validation, test and consistency results).
DONE_REQUIRES = ("f1_macro_val", TEST_F1_ALL, "consistency_jsdiv")
SCALARS = {
    "f1_macro_val": tracking.HEADLINE_METRICS["f1_macro_val"],
    "f1_macro_val_std": ("train", "f1_macro_val_std"),
    TEST_F1_ALL: tracking.HEADLINE_METRICS[TEST_F1_ALL],
    f"{TEST_F1_ALL}_std": ("evaluate", "f1_macro_std"),
    TEST_F1: tracking.HEADLINE_METRICS[TEST_F1],
    f"{TEST_F1}_std": ("evaluate", "f1_macro_leakfree_std"),
    "n_test_leakfree": ("evaluate", "n_test_leakfree"),
    **{key: ("consistency", key) for key in SELECTION_QUANTITIES},
    **{f"{key}_ci": ("consistency", f"{key}_ci") for key in SELECTION_QUANTITIES},
    "centre_share_uniform": ("consistency", "centre_share_uniform"),
    "instances": ("consistency", "instances"),
}


@dataclass
class Experiment:
    name: str
    rev: str
    timestamp: str
    params: dict
    metrics: dict
    replicates: dict = field(default_factory=dict)  # metrics/consistency_bootstrap.json
    per_instance: dict = field(default_factory=dict)  # quantity -> [value per instance]
    leakage: dict = field(default_factory=dict)  # evaluate.json "leakage"
    complete: bool = True
    state: str = "success"  # DVC's: success, queued, running or failed


# --------------------------------------------------------------------------- reading the experiments
def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def experiments(paths: Paths, env: dict | None = None, include_incomplete: bool = False) -> list[Experiment]:
    """Experiments of the current baseline commit, oldest first; with include_incomplete, also those without metrics."""
    env = env or dict(os.environ)
    proc = subprocess.run(["dvc", "exp", "show", "--json"], cwd=paths.root, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise HsixaiError(f"dvc exp show failed: {proc.stderr.strip()[-1000:]}")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.root, capture_output=True, text=True).stdout.strip()
    found = []
    for entry in json.loads(proc.stdout or "[]"):
        if entry.get("rev") != head:
            continue
        for exp in entry.get("experiments") or []:
            rev = (exp.get("revs") or [{}])[0]
            data = rev.get("data") or {}
            files = {Path(f).stem: (v or {}).get("data") or {} for f, v in (data.get("metrics") or {}).items()}
            params = _flatten(((data.get("params") or {}).get(paths.params_name) or {}).get("data") or {})
            metrics = {name: files.get(stem, {}).get(key) for name, (stem, key) in SCALARS.items()}
            state = experiment_state(exp)
            # A queued or running experiment shows the metrics files of the copy it runs in, which until its own
            # stages write them are the baseline commit's: only a finished, successful experiment's are its own.
            complete = state == "success" and all(metrics[name] is not None for name in DONE_REQUIRES)
            if complete or include_incomplete:
                found.append(
                    Experiment(
                        rev.get("name") or exp.get("name") or str(rev.get("rev"))[:7],
                        rev.get("rev") or "",
                        data.get("timestamp") or "",
                        params,
                        metrics,
                        complete=complete,
                        state=state,
                    )
                )
    return sorted(found, key=lambda e: e.timestamp)


def experiment_state(exp: dict) -> str:
    """An experiment's state in `dvc exp show --json`: success, queued, running or failed.

    DVC gives the state of experiments its queue knows about; a finished experiment whose queue record is gone
    (e.g. one run with `dvc exp run`, no queue) has none, and its commit exists: a success.
    """
    return str((exp.get("executor") or {}).get("state") or "success").lower()


def has_experiment(exps: list[Experiment], wanted: dict) -> bool:
    """Whether a completed experiment has exactly the flat params `wanted` (the sweep group aside)."""
    return any(_matches(e, wanted) for e in exps if e.complete)


def _matches(e: Experiment, wanted: dict) -> bool:
    # `dvc exp show` lists only the keys the params file has; a key it lacks ran with the code default.
    defaults = tracking.flat_params(Params())
    return all(
        _same(e.params[k] if k in e.params else defaults.get(k), v)
        for k, v in wanted.items()
        if not k.startswith("sweep.")
    )


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def _committed_json(paths: Paths, rev: str, path: Path) -> dict:
    """A small JSON output as the experiment's git commit holds it (cache: false outputs are committed)."""
    proc = subprocess.run(
        ["git", "show", f"{rev}:{path.relative_to(paths.root)}"], cwd=paths.root, capture_output=True, text=True
    )
    return json.loads(proc.stdout) if proc.returncode == 0 else {}


def load_details(paths: Paths, e: Experiment) -> None:
    """Lists and replicates, which `dvc exp show` leaves out or flattens, from the experiment's commit."""
    files = {stem: _committed_json(paths, e.rev, paths.metrics(stem)) for stem in ("train", "evaluate", "consistency")}
    for name, (stem, key) in SCALARS.items():
        if files[stem].get(key) is not None:
            e.metrics[name] = files[stem][key]
    e.per_instance = {
        "f1_macro_val": [i.get("f1_macro_val") for i in files["train"].get("instances") or []],
        TEST_F1_ALL: [i.get("f1_macro") for i in files["evaluate"].get("per_instance") or []],
        TEST_F1: [i.get("f1_macro_leakfree") for i in files["evaluate"].get("per_instance") or []],
    }
    e.leakage = files["evaluate"].get("leakage") or {}
    e.metrics["xai_samples_per_class"] = [
        c.get("samples") for c in (files["consistency"].get("per_class") or {}).values()
    ]
    e.replicates = _committed_json(paths, e.rev, paths.bootstrap_replicates)


def varying_keys(exps: list[Experiment] | list[dict]) -> list[str]:
    all_params = [e.params if isinstance(e, Experiment) else e for e in exps]
    keys = sorted({k for p in all_params for k in p if not k.startswith("sweep.")})
    return [k for k in keys if len({json.dumps(p.get(k), sort_keys=True) for p in all_params}) > 1]


# --------------------------------------------------------------------------- order, ties, checks
def parse_criterion(name: str) -> tuple[int, str]:
    """'max_consistency_jsdiv' -> (+1, 'consistency_jsdiv'); 'min_...' -> (-1, ...)."""
    if name not in CRITERIA:
        raise HsixaiError(f"criterion: expected one of {', '.join(CRITERIA)}, found {name!r}")
    direction, quantity = name.split("_", 1)
    return (1 if direction == "max" else -1), quantity


def order(values: list[float | None], xs: list, sign: int = 1) -> list[int]:
    """Indices of the points with a value, best first: by sign * value, exact ties to the smaller x."""
    present = [i for i, v in enumerate(values) if v is not None and np.isfinite(v)]
    return sorted(present, key=lambda i: (-sign * values[i], xs[i]))


def rank(values: list[float | None], xs: list | None = None, sign: int = 1) -> list[int | None]:
    """1 = best in the direction `sign`; exact ties ranked by the tie rule (smaller x first); None stays None."""
    xs = list(range(len(values))) if xs is None else xs
    ranks: list[int | None] = [None] * len(values)
    for r, i in enumerate(order(values, xs, sign), 1):
        ranks[i] = r
    return ranks


def paired_difference(best: Experiment, other: Experiment, quantity: str, sign: int) -> dict:
    """95% interval of sign * (best - other) and what it says: tied, behind, favoured_by_interval or unknown."""
    if quantity == "f1_macro_val":
        return _welch_difference(best, other, quantity, sign)
    a, b = (
        (best.replicates.get("statistics") or {}).get(quantity),
        (other.replicates.get("statistics") or {}).get(quantity),
    )
    why = _unpaired_reason(best, other) if a and b else f"no bootstrap replicates of {quantity}"
    if why:
        return {"method": "paired bootstrap", "status": "unknown", "reason": why}
    estimate = sign * (a["estimate"] - b["estimate"])
    if a["centre"] is None or b["centre"] is None:
        return {"method": "paired bootstrap", "status": "unknown", "reason": "no bootstrap centre"}
    ra = np.array([np.nan if v is None else v for v in a["replicates"]], dtype=float) - a["centre"]
    rb = np.array([np.nan if v is None else v for v in b["replicates"]], dtype=float) - b["centre"]
    pivot = sign * (ra - rb)
    pivot = pivot[np.isfinite(pivot)]
    if pivot.size == 0:
        return {"method": "paired bootstrap", "status": "unknown", "reason": "no finite paired replicate"}
    low_q, high_q = np.quantile(pivot, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return _verdict("paired bootstrap (basic interval)", estimate, [estimate - high_q, estimate - low_q])


def _unpaired_reason(a: Experiment, b: Experiment) -> str | None:
    """Why two experiments' replicates are not paired (None when they are)."""
    for key in ("seed", "replicates", "instances", "resamples_instances"):
        if a.replicates.get(key) != b.replicates.get(key):
            return f"bootstrap {key} differs ({a.replicates.get(key)} vs {b.replicates.get(key)}): not paired"
    if a.metrics.get("xai_samples_per_class") != b.metrics.get("xai_samples_per_class"):
        return "different xAI samples: not paired"
    return None


def _welch_difference(best: Experiment, other: Experiment, quantity: str, sign: int) -> dict:
    a = np.array([v for v in best.per_instance.get(quantity) or [] if v is not None], dtype=float)
    b = np.array([v for v in other.per_instance.get(quantity) or [] if v is not None], dtype=float)
    method = "Welch t interval over instances"
    if len(a) < 2 or len(b) < 2:
        return {"method": method, "status": "unknown", "reason": "needs 2 or more instances per point"}
    estimate = sign * (a.mean() - b.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = np.sqrt(va + vb)
    if se == 0:
        return _verdict(method, estimate, [estimate, estimate])
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf((1 + LEVEL) / 2, df) * se
    return _verdict(method, estimate, [estimate - half, estimate + half])


def _verdict(method: str, estimate: float, interval: list[float]) -> dict:
    low, high = interval
    status = "tied" if low <= 0 <= high else ("behind" if low > 0 else "favoured_by_interval")
    return {
        "method": method,
        "difference": float(estimate),
        "difference_ci": [float(low), float(high)],
        "status": status,
    }


def _spearman(values: list[float | None], test: list[float | None]) -> float | None:
    if len(values) < 3 or any(v is None for v in (*values, *test)) or len(set(values)) < 2 or len(set(test)) < 2:
        return None  # undefined for fewer than 3 points or a constant side
    rho = stats.spearmanr(values, test).statistic
    return float(rho) if np.isfinite(rho) else None


def _value(e: Experiment, key: str) -> float | None:
    v = e.metrics.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) else None


def check_criterion(points: list[Experiment | None], xs: list, criterion: str) -> dict:
    """The pick of one criterion on one group, what is tied with it, and how it compares with test F1.

    `points` follows `xs` (the expected x values); None = a missing point.
    """
    sign, quantity = parse_criterion(criterion)
    values = [None if e is None else _value(e, quantity) for e in points]
    missing = [x for x, v in zip(xs, values) if v is None]
    out: dict = {
        "direction": "max" if sign > 0 else "min",
        "quantity": quantity,
        "pick": None,
        "estimate": None,
        "missing": missing,
        "complete": not missing,
        "exact_tie": [],
        "tied": [],
        "behind": [],
        "favoured_by_interval": [],
        "unknown": [],
        "comparisons": {},
    }
    ranks = rank(values, xs, sign)
    out["ranks"] = {str(x): r for x, r in zip(xs, ranks)}
    ranked = order(values, xs, sign)
    if not ranked:
        return out | _f1_checks(points, xs, values, None)
    best = ranked[0]
    out["pick"], out["estimate"] = xs[best], values[best]
    out["exact_tie"] = [xs[i] for i in ranked[1:] if values[i] == values[best]]
    for i in ranked[1:]:
        comparison = paired_difference(points[best], points[i], quantity, sign)
        out["comparisons"][str(xs[i])] = comparison
        out[comparison["status"]].append(xs[i])
    return out | _f1_checks(points, xs, values, best)


def _f1_checks(points: list[Experiment | None], xs: list, values: list, best: int | None) -> dict:
    """Spearman and regret against leak-free test F1, and against all-pixel test F1; None where a point lacks one."""
    out = {}
    for suffix, key in (("test_f1_leakfree", TEST_F1), ("test_f1_all_pixels", TEST_F1_ALL)):
        test = [None if e is None else _value(e, key) for e in points]
        lacking = [x for x, t in zip(xs, test) if t is None]
        out[f"spearman_with_{suffix}"] = None if lacking else _spearman(values, test)
        regret = None
        if not lacking and best is not None and not any(v is None for v in values):
            top = order(test, xs, 1)[0]
            regret = float(test[top] - test[best])
        out[f"regret_{suffix}"] = regret
        out[f"missing_{suffix}"] = lacking
    return out


def analyse_group(
    points: list[Experiment | None], xs: list, x_key: str, criterion: str, reasons: dict | None = None
) -> dict:
    """Every criterion on one group; `points` follows the expected `xs`, None where missing (reason in `reasons`)."""
    reasons = reasons or {}
    rows = []
    for x, e in zip(xs, points):
        row = {x_key: x, "experiment": None if e is None else e.name}
        if e is None:
            row["missing"] = reasons.get(x, "no completed experiment")
        else:
            row.update({k: e.metrics.get(k) for k in SCALARS})
            row["per_instance"] = e.per_instance
            row["leakage"] = e.leakage
        rows.append(row)
    missing = [{x_key: r[x_key], "reason": r["missing"]} for r in rows if "missing" in r]
    criteria = {name: check_criterion(points, xs, name) for name in CRITERIA}
    best_f1 = {}
    for key in (TEST_F1, TEST_F1_ALL):
        test = [None if e is None else _value(e, key) for e in points]
        top = order(test, xs, 1)
        best_f1[key] = xs[top[0]] if top and None not in test else None
    chosen = criteria[criterion]
    recommended = {
        "criterion": criterion,
        x_key: chosen["pick"],
        "tied": chosen["tied"],
        "exact_tie": chosen["exact_tie"],
        "favoured_by_interval": chosen["favoured_by_interval"],
        "complete": chosen["complete"] and not missing,
        "missing": sorted({m[x_key] for m in missing} | set(chosen["missing"])),
    }
    for c in criteria.values():
        c["summary"] = summary_sentences(c, x_key, best_f1)
    return {
        "rows": rows,
        "missing": missing,
        "best_test_f1_leakfree": best_f1[TEST_F1],
        "best_test_f1_all_pixels": best_f1[TEST_F1_ALL],
        "criteria": criteria,
        "recommended": recommended,
    }


def summary_sentences(c: dict, x_key: str, best_f1: dict) -> str:
    """Two sentences: what was selected, tied, missing; how the choice compares with the best leak-free test F1."""
    name = f"{c['direction']}_{c['quantity']}"
    if c["pick"] is None:
        first = f"`{name}` selects nothing: no point has a value (missing: {_xs(c['missing'])})."
    else:
        parts = [f"`{name}` selects {x_key} {c['pick']} ({_f(c['estimate'])})"]
        if c["exact_tie"]:
            parts.append(f"exactly tied with {_xs(c['exact_tie'])} (the smaller {x_key} wins)")
        parts.append(f"tied with {_xs(c['tied'])}" if c["tied"] else "tied with no other point")
        if c["behind"]:
            parts.append(f"ahead of {_xs(c['behind'])}")
        if c["favoured_by_interval"]:
            parts.append(f"but the interval favours {_xs(c['favoured_by_interval'])}")
        if c["unknown"]:
            parts.append(f"no interval against {_xs(c['unknown'])}")
        parts.append(f"missing: {_xs(c['missing'])}" + (" (incomplete)" if c["missing"] else ""))
        first = "; ".join(parts) + "."
    if c["missing_test_f1_leakfree"]:
        second = (
            f"No comparison with leak-free test F1: {_xs(c['missing_test_f1_leakfree'])} lack it"
            + (
                f" (all test pixels, best at {best_f1[TEST_F1_ALL]}: Spearman "
                f"{_f(c['spearman_with_test_f1_all_pixels'])}, regret {_f(c['regret_test_f1_all_pixels'])})"
                if best_f1.get(TEST_F1_ALL) is not None
                else ""
            )
            + "."
        )
    else:
        second = (
            f"Against leak-free test F1 (best at {x_key} {best_f1[TEST_F1]}): Spearman "
            f"{_f(c['spearman_with_test_f1_leakfree'])}, regret {_f(c['regret_test_f1_leakfree'])}."
        )
    return f"{first} {second}"


def _xs(values: list) -> str:
    return ", ".join(str(v) for v in values) if values else "none"


def _f(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def _ci(ci) -> str:
    return "" if not ci else f" [{ci[0]:.3f}, {ci[1]:.3f}]"


# --------------------------------------------------------------------------- the command
def _group_label(params: dict, group_keys: list[str]) -> str:
    return ", ".join(f"{k}={params.get(k)}" for k in group_keys) or "all"


def run(
    params: Params,
    paths: Paths,
    progress: bool = True,
    env: dict | None = None,
    expected: list[dict] | None = None,
    failed: dict[str, dict] | None = None,
) -> dict:
    """Run the selection. Returns reports/selection.json's content.

    expected: the flat params of every point that should be there (from
    `hsixai sweep`); without it, every combination of the groups and x values
    present. failed: experiment name -> its point's params, for experiments the
    sweep saw fail (named in every output).
    """
    everything = experiments(paths, env, include_incomplete=True)
    complete = [e for e in everything if e.complete]
    if expected is not None:
        complete = [e for e in complete if any(_matches(e, point) for point in expected)]
    if not complete and not expected:
        raise HsixaiError("no completed DVC experiments on the current commit (run `hsixai sweep` or dvc exp run)")
    latest: dict[str, Experiment] = {}  # duplicates of one point (a re-queued sweep): keep the newest
    for e in complete:
        latest[json.dumps({k: v for k, v in e.params.items() if not k.startswith("sweep.")}, sort_keys=True)] = e
    for e in latest.values():
        load_details(paths, e)
    report = build_report(
        list(latest.values()), params.sweep.criterion, expected, failed, [e for e in everything if not e.complete]
    )

    with staged_outputs(paths.reports_dir) as (out,):
        staged = paths.selection_report(out)
        write_json(staged.json, report)
        staged.markdown.write_text(markdown(report))
        plots.selection(report, staged.figure)
    print(markdown(report))
    tracking.log_selection(params, paths, report, list(paths.selection_report().files))
    for label, uri in register_recommended(params, paths, report, list(latest.values())).items():
        print(f"select: {label}: the recommended point is registered as {uri}", flush=True)
    return report


def register_recommended(params: Params, paths: Paths, report: dict, exps: list[Experiment]) -> dict[str, str]:
    """Each group's recommended point as a new version of hsixai-<model> in MLflow's Model Registry: label -> URI.

    The version holds the point's model bundle (tensors-only checkpoints and plain metadata, built from the
    experiment's commit and the DVC cache) and carries the experiment's name and commit, its params, its leak-free
    test metrics and consistency scores. Its alias is `champion`, or `champion-<group>` where several groups
    recommend points of one architecture (each group has its own champion).
    """
    import tempfile

    from . import bundle

    chosen = {label: _recommended_experiment(report, label, exps) for label in report["groups"]}
    chosen = {label: e for label, e in chosen.items() if e is not None}
    per_model: dict[str, int] = {}
    for e in chosen.values():
        per_model[e.params.get("model")] = per_model.get(e.params.get("model"), 0) + 1
    registered = {}
    for label, e in chosen.items():
        model = str(e.params.get("model"))
        name = tracking.registered_model_name(model)
        alias = tracking.CHAMPION if per_model[model] == 1 else f"{tracking.CHAMPION}-{_alias_safe(label)}"
        tags = {
            "hsixai.experiment": e.name,
            "hsixai.commit": e.rev,
            "hsixai.group": label,
            "hsixai.criterion": report["criterion"],
            **{f"hsixai.{k}": str(e.params[k]) for k in ("model", "patch_size") if k in e.params},
        }
        metrics = {k: float(v) for k, v in e.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        with tempfile.TemporaryDirectory(prefix="hsixai-register-") as tmp:
            bundle.bundle_of_experiment(paths, e.name, e.rev, Path(tmp) / "bundle")
            version = tracking.register_model(
                paths, params.tracking.experiment, name, Path(tmp) / "bundle", tags, e.params, metrics, alias
            )
        registered[label] = f"models:/{name}@{alias} (version {version})"
    return registered


def _recommended_experiment(report: dict, label: str, exps: list[Experiment]) -> Experiment | None:
    group, x_key = report["groups"][label], report["x"]
    x = group["recommended"].get(x_key)
    names = [r.get("experiment") for r in group["rows"] if x is not None and _same(r.get(x_key), x)]
    return next((e for e in exps if e.name in names), None)


def _alias_safe(label: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_-]+", "-", label).strip("-").lower() or "group"


def build_report(
    exps: list[Experiment],
    criterion: str,
    expected: list[dict] | None = None,
    failed: dict[str, dict] | None = None,
    incomplete: list[Experiment] | None = None,
) -> dict:
    """reports/selection.json's content from completed experiments (one per point) and the expected grid.

    Without `expected`, the grid is every combination of the groups and the x
    values present; `failed` (name -> params) and `incomplete` (experiments
    without metrics) explain missing points.
    """
    failed, incomplete = failed or {}, incomplete or []
    basis = expected if expected is not None else [e.params for e in exps]
    varying = varying_keys(basis)
    x_key = "patch_size" if "patch_size" in varying or not varying else varying[0]
    group_keys = [k for k in varying if k != x_key]
    xs = sorted({p.get(x_key) for p in basis}, key=lambda v: (v is None, v))
    labels = sorted({_group_label(p, group_keys) for p in basis})
    report: dict = {
        "criterion": criterion,
        "x": x_key,
        "group_by": group_keys,
        "tie_rule": TIE_RULE,
        "interval": "95%: basic bootstrap of paired replicates (consistency scores, centre share); "
        "Welch over instances (validation F1)",
        "judged_by": TEST_F1,
        "failed": sorted(failed),
        "groups": {},
    }
    for label in labels:
        points, reasons = [], {}
        for x in xs:
            found = [e for e in exps if _group_label(e.params, group_keys) == label and _same(e.params.get(x_key), x)]
            points.append(found[-1] if found else None)
            if not found:
                reasons[x] = _missing_reason(label, x, x_key, group_keys, failed, incomplete)
        report["groups"][label] = analyse_group(points, xs, x_key, criterion, reasons)
    report["missing"] = [{"group": label, **m} for label, g in report["groups"].items() for m in g["missing"]]
    report["complete"] = all(g["recommended"]["complete"] for g in report["groups"].values())
    return report


def _missing_reason(
    label: str, x, x_key: str, group_keys: list[str], failed: dict[str, dict], incomplete: list[Experiment]
) -> str:
    def here(p: dict) -> bool:
        return _group_label(p, group_keys) == label and _same(p.get(x_key), x)

    names = [name for name, p in failed.items() if here(p)]
    if names:
        return f"failed ({', '.join(names)})"
    names = [e.name for e in incomplete if here(e.params)]
    if names:
        return f"no metrics ({', '.join(names)}: failed, queued or running)"
    return "no experiment"


def markdown(report: dict) -> str:
    x = report["x"]
    lines = [f"# Patch-size selection by `{report['criterion']}`", ""]
    if not report["complete"]:
        where = "; ".join(f"{m['group']} {x} {m[x]}: {m['reason']}" for m in report["missing"])
        lines += [f"**Incomplete**: missing points ({where or 'a criterion lacks values, see below'}).", ""]
    if report.get("failed"):
        lines += [f"Failed experiments: {', '.join(report['failed'])}.", ""]
    lines += [
        f"Tie rule: {report['tie_rule']}. Intervals: {report['interval']}. Checks judge by `{report['judged_by']}`.",
        "",
    ]
    for label, g in report["groups"].items():
        rec = g["recommended"]
        status = "" if rec["complete"] else f" — **incomplete** (missing {x}: {_xs(rec['missing'])})"
        tied = f", statistically tied with {x} {_xs(rec['tied'])}" if rec["tied"] else ", ahead of every other point"
        if rec[x] is None:
            tied = ""
        lines += [
            f"## {label}",
            "",
            f"Recommended {x}: **{rec[x]}** by `{rec['criterion']}`{tied}{status}. "
            f"Best leak-free test F1 at {x} = {g['best_test_f1_leakfree']}; on all test pixels at "
            f"{g['best_test_f1_all_pixels']}.",
            "",
        ]
        lines += [
            f"| {x} | F1 val | F1 test leak-free | F1 test all pixels | consistency_jsdiv | "
            f"consistency_instances | consistency_concordance | centre share (uniform) | test leakage "
            f"(same class) |",
            "|" + " --- |" * 9,
        ]
        for r in g["rows"]:
            if "missing" in r:
                lines.append(f"| {r[x]} | missing: {r['missing']} |" + " |" * 7)
                continue
            leak = (r.get("leakage") or {}).get("test_same_class")
            lines.append(
                f"| {r[x]} | {_f(r['f1_macro_val'])} ± {_f(r['f1_macro_val_std'])} | "
                f"{_f(r[TEST_F1])} ± {_f(r[f'{TEST_F1}_std'])} | {_f(r[TEST_F1_ALL])} | "
                f"{_f(r['consistency_jsdiv'])}{_ci(r['consistency_jsdiv_ci'])} | "
                f"{_f(r['consistency_instances'])}{_ci(r['consistency_instances_ci'])} | "
                f"{_f(r['consistency_concordance'])}{_ci(r['consistency_concordance_ci'])} | "
                f"{_f(r['centre_share'])}{_ci(r['centre_share_ci'])} ({_f(r['centre_share_uniform'])}) | "
                f"{_f(leak)} |"
            )
        lines += [
            "",
            "| criterion | pick | tied with | Spearman with leak-free test F1 | regret (leak-free) | "
            "Spearman (all pixels) | regret (all pixels) | missing |",
            "|" + " --- |" * 8,
        ]
        for name, c in g["criteria"].items():
            lines.append(
                f"| `{name}` | {c['pick']} | {_xs(c['tied'])} | {_f(c['spearman_with_test_f1_leakfree'])} | "
                f"{_f(c['regret_test_f1_leakfree'])} | {_f(c['spearman_with_test_f1_all_pixels'])} | "
                f"{_f(c['regret_test_f1_all_pixels'])} | {_xs(c['missing'])} |"
            )
        lines.append("")
        for c in g["criteria"].values():
            lines += [f"- {c['summary']}"]
        lines.append("")
    return "\n".join(lines) + "\n"
