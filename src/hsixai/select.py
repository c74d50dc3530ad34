"""`hsixai select`: rank the experiments of the current baseline commit by explanation consistency.

Reads `dvc exp show --json` (params and metrics) and each experiment's
metrics/consistency_bootstrap.json (from its git commit), groups the
experiments by whatever params vary across them (the patch size along the x
axis, the rest, e.g. the model, as groups), and writes reports/selection.json,
reports/selection.md and reports/selection.png, plus an MLflow selection run.

For each criterion it also checks the method honestly: the Spearman
correlation of the criterion with test F1 across the x values, and the regret
(best test F1 minus the test F1 of the x the criterion selects). Whether the
two best candidates are tied is a paired bootstrap on the consistency
replicates (every experiment resamples the same xAI pixels with the same seed).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from . import plots, tracking
from .config import Params
from .errors import HsixaiError
from .io import staged_outputs, write_json
from .paths import Paths

log = logging.getLogger(__name__)
CRITERIA = ("consistency_instances", "consistency_jsdiv", "f1_macro_val")
METRICS = {  # name in the report -> (metrics file, key)
    "f1_macro_val": ("metrics/train.json", "f1_macro_val"),
    "f1_macro_val_std": ("metrics/train.json", "f1_macro_val_std"),
    "f1_macro_test": ("metrics/evaluate.json", "f1_macro"),
    "consistency_jsdiv": ("metrics/consistency.json", "consistency_jsdiv"),
    "consistency_jsdiv_ci": ("metrics/consistency.json", "consistency_jsdiv_ci"),
    "consistency_instances": ("metrics/consistency.json", "consistency_instances"),
    "consistency_instances_ci": ("metrics/consistency.json", "consistency_instances_ci"),
    "consistency_instances_floor": ("metrics/consistency.json", "consistency_instances_floor"),
}


@dataclass
class Experiment:
    name: str
    rev: str
    timestamp: str
    params: dict
    metrics: dict
    replicates: dict = field(default_factory=dict)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def experiments(paths: Paths, env: dict | None = None) -> list[Experiment]:
    """Completed experiments of the current baseline commit, newest last."""
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
            metrics = {}
            for name, (file, key) in METRICS.items():
                value = (((data.get("metrics") or {}).get(file) or {}).get("data") or {}).get(key)
                metrics[name] = value
            if metrics["f1_macro_test"] is None or metrics["consistency_jsdiv"] is None:
                continue  # queued, running, failed or incomplete
            params = _flatten(((data.get("params") or {}).get("params.yaml") or {}).get("data") or {})
            found.append(Experiment(rev.get("name") or exp.get("name") or rev["rev"][:7], rev["rev"],
                                    data.get("timestamp") or "", params, metrics))
    return sorted(found, key=lambda e: e.timestamp)


def has_experiment(exps: list[Experiment], wanted: dict) -> bool:
    """Whether a completed experiment has exactly the flat params `wanted` (the sweep group aside)."""
    return any(all(_same(e.params.get(k), v) for k, v in wanted.items() if not k.startswith("sweep."))
               for e in exps)


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def _committed_json(paths: Paths, rev: str, path: Path) -> dict:
    """A small JSON output as the experiment's git commit holds it (cache: false outputs are committed)."""
    proc = subprocess.run(["git", "show", f"{rev}:{path.relative_to(paths.root)}"], cwd=paths.root,
                          capture_output=True, text=True)
    return json.loads(proc.stdout) if proc.returncode == 0 else {}


def varying_keys(exps: list[Experiment]) -> list[str]:
    keys = sorted({k for e in exps for k in e.params if not k.startswith("sweep.")})
    return [k for k in keys if len({json.dumps(e.params.get(k), sort_keys=True) for e in exps}) > 1]


def rank(values: list[float | None]) -> list[int | None]:
    """1 = highest; None stays None."""
    order = sorted((v, i) for i, v in enumerate(values) if v is not None)[::-1]
    ranks: list[int | None] = [None] * len(values)
    for r, (_, i) in enumerate(order, 1):
        ranks[i] = r
    return ranks


def paired_tie(best: Experiment, second: Experiment, criterion: str) -> dict:
    """95% interval of (best - second) over paired bootstrap replicates; tied when it contains 0."""
    a, b = best.replicates.get(criterion), second.replicates.get(criterion)
    if criterion.startswith("consistency") and a and b and len(a) == len(b):
        diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
        diff = diff[np.isfinite(diff)]
        low, high = np.percentile(diff, [2.5, 97.5])
        return {"method": "paired bootstrap", "difference_ci": [float(low), float(high)],
                "tied": bool(low <= 0 <= high)}
    if criterion == "f1_macro_val":
        spread = float(np.hypot(best.metrics.get("f1_macro_val_std") or 0, second.metrics.get("f1_macro_val_std") or 0))
        gap = best.metrics[criterion] - second.metrics[criterion]
        return {"method": "instance spread (no paired replicates for F1)", "difference": gap,
                "spread": spread, "tied": bool(gap <= spread)}
    return {"method": "unavailable", "tied": None}


def analyse_group(exps: list[Experiment], x_key: str, criterion: str) -> dict:
    exps = sorted(exps, key=lambda e: e.params[x_key])
    rows = []
    for e in exps:
        rows.append({"experiment": e.name, x_key: e.params[x_key], **{k: e.metrics[k] for k in METRICS}})
    for key in (*CRITERIA, "f1_macro_test"):
        for row, r in zip(rows, rank([row[key] for row in rows])):
            row[f"rank_{key}"] = r
    test = np.array([r["f1_macro_test"] for r in rows], dtype=float)
    checks = {}
    for key in CRITERIA:
        values = np.array([np.nan if r[key] is None else r[key] for r in rows], dtype=float)
        ok = np.isfinite(values)
        if ok.sum() == 0:
            checks[key] = {"selected": None, "spearman_with_test_f1": None, "regret": None}
            continue
        chosen = int(np.nanargmax(values))
        rho = spearmanr(values[ok], test[ok]).statistic if ok.sum() >= 3 else np.nan
        checks[key] = {"selected": rows[chosen][x_key],
                       "spearman_with_test_f1": None if not np.isfinite(rho) else float(rho),
                       "regret": float(np.max(test) - test[chosen])}
    values = [r[criterion] for r in rows]
    ranks = rank(values)
    recommendation: dict = {"criterion": criterion, x_key: None}
    if 1 in ranks:
        best = exps[ranks.index(1)]
        recommendation[x_key] = best.params[x_key]
        if 2 in ranks:
            second = exps[ranks.index(2)]
            recommendation["runner_up"] = second.params[x_key]
            recommendation["tie"] = paired_tie(best, second, criterion)
    return {"x": x_key, "rows": rows, "best_test_f1": rows[int(np.argmax(test))][x_key],
            "recommended": recommendation, "criteria_checks": checks}


def run(params: Params, paths: Paths, progress: bool = True, env: dict | None = None) -> dict:
    """Run the selection. Returns reports/selection.json's content."""
    exps = experiments(paths, env)
    if not exps:
        raise HsixaiError("no completed DVC experiments on the current commit (run `hsixai sweep` or dvc exp run)")
    latest: dict[str, Experiment] = {}  # duplicates of one point (a re-queued sweep): keep the newest
    for e in exps:
        latest[json.dumps({k: v for k, v in e.params.items() if not k.startswith("sweep.")}, sort_keys=True)] = e
    exps = list(latest.values())
    for e in exps:
        e.replicates = _committed_json(paths, e.rev, paths.bootstrap_replicates)
        consistency = _committed_json(paths, e.rev, paths.metrics("consistency"))  # lists: not in exp show
        for key in ("consistency_jsdiv_ci", "consistency_instances_ci"):
            e.metrics[key] = consistency.get(key)
    varying = varying_keys(exps)
    x_key = "patch_size" if "patch_size" in varying else (varying[0] if varying else "patch_size")
    group_keys = [k for k in varying if k != x_key]
    groups: dict[str, list[Experiment]] = {}
    for e in exps:
        label = ", ".join(f"{k}={e.params.get(k)}" for k in group_keys) or "all"
        groups.setdefault(label, []).append(e)
    criterion = params.sweep.criterion
    report = {"criterion": criterion, "x": x_key, "group_by": group_keys,
              "groups": {label: analyse_group(g, x_key, criterion) for label, g in sorted(groups.items())}}

    reports = paths.root / "reports"
    with staged_outputs(reports) as (out,):
        write_json(out / "selection.json", report)
        (out / "selection.md").write_text(markdown(report))
        plots.selection(report, out / "selection.png")
    print(markdown(report))
    _log_to_mlflow(params, paths, report, reports)
    return report


def markdown(report: dict) -> str:
    x = report["x"]
    lines = [f"# Patch-size selection by `{report['criterion']}`", ""]
    for label, g in report["groups"].items():
        rec = g["recommended"]
        tie = rec.get("tie") or {}
        tie_text = {True: f" — statistically tied with {x} = {rec.get('runner_up')} ({tie.get('method')})",
                    False: f" — ahead of {x} = {rec.get('runner_up')} ({tie.get('method')})"}.get(tie.get("tied"), "")
        lines += [f"## {label}", "", f"Recommended {x}: **{rec[x]}**{tie_text}; best test F1 at {x} = {g['best_test_f1']}.",
                  "", f"| {x} | F1 val | F1 test | consistency_jsdiv [95% CI] | consistency_instances [95% CI] | "
                  f"rank jsdiv | rank instances | rank F1 val | rank F1 test |", "|" + " --- |" * 9]
        for r in g["rows"]:
            lines.append(f"| {r[x]} | {_f(r['f1_macro_val'])} | {_f(r['f1_macro_test'])} | "
                         f"{_f(r['consistency_jsdiv'])} {_ci(r['consistency_jsdiv_ci'])} | "
                         f"{_f(r['consistency_instances'])} {_ci(r['consistency_instances_ci'])} | "
                         f"{r['rank_consistency_jsdiv']} | {r['rank_consistency_instances']} | "
                         f"{r['rank_f1_macro_val']} | {r['rank_f1_macro_test']} |")
        lines += ["", "| criterion | selects | Spearman with test F1 | regret (test F1) |", "| --- | --- | --- | --- |"]
        for key, c in g["criteria_checks"].items():
            lines.append(f"| {key} | {c['selected']} | {_f(c['spearman_with_test_f1'])} | {_f(c['regret'])} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _f(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def _ci(ci) -> str:
    return "" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _log_to_mlflow(params: Params, paths: Paths, report: dict, reports: Path) -> None:
    client = tracking.client(paths)
    experiment_id = tracking.experiment_id(client, params.tracking.experiment, paths)
    run = client.create_run(experiment_id, run_name="selection",
                            tags={"hsixai.role": "selection", "hsixai.commit": tracking.git_commit(paths.root)})
    client.log_param(run.info.run_id, "criterion", report["criterion"])
    for label, g in report["groups"].items():
        value = g["recommended"].get(report["x"])
        if isinstance(value, (int, float)):
            safe = re.sub(r"[^A-Za-z0-9_./ -]", "_", label)
            client.log_metric(run.info.run_id, f"recommended_{report['x']}.{safe}", float(value))
    for name in ("selection.json", "selection.md", "selection.png"):
        client.log_artifact(run.info.run_id, str(reports / name))
    client.set_terminated(run.info.run_id, "FINISHED")
