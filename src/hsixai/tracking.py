"""The one MLflow helper: where runs go, one parent run per DVC experiment, one child run per stage.

The default backend is SQLite at <repo root>/mlflow.db with artifacts under
<repo root>/mlartifacts. Both paths are absolute because DVC runs queued
experiments in temporary copies of the repository that are deleted afterwards.
MLFLOW_TRACKING_URI overrides the backend.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

from .config import Params
from .paths import Paths


PARENT_RUN_ID = "mlflow.parentRunId"  # the tag the MLflow UI nests child runs by


def tracking_root(paths: Paths) -> Paths:
    """The repository whose mlflow.db receives the runs.

    `dvc exp run --queue` and `--temp` run stages in a temporary copy under
    .dvc/tmp/exps that is deleted afterwards; DVC_ROOT names the real repository.
    """
    return Paths.at(os.environ["DVC_ROOT"]) if os.environ.get("DVC_ROOT") else paths


def tracking_uri(paths: Paths) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{tracking_root(paths).mlflow_db}"


def experiment_run_name(params: Params) -> str:
    """The DVC experiment's name (DVC sets DVC_EXP_NAME under `dvc exp run`), else e.g. 'cnn2d-p9'."""
    return os.environ.get("DVC_EXP_NAME") or f"{params.model}-p{params.patch_size}"


def flat_params(params: Params) -> dict[str, Any]:
    """params as flat 'group.key' -> value, as logged to MLflow."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        else:
            out[prefix.rstrip(".")] = value

    walk("", asdict(params))
    return out


def git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "none"


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class StageRun:
    """A child run of the experiment's parent run, for one DVC stage."""

    def __init__(self, client: Any, run_id: str, parent_id: str, paths: Paths):
        self.client, self.run_id, self.parent_id, self.paths = client, run_id, parent_id, paths

    def log_params(self, values: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in values.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start:start + 100])

    def log_metrics(self, values: dict[str, float], step: int | None = None, parent: bool = False,
                    only_parent: bool = False) -> None:
        """Numbers on this run (with `step` for curves) and, with parent=True, on the parent run too."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step or 0) for k, v in values.items()]
        if not only_parent:
            self.client.log_batch(self.run_id, metrics=metrics)
        if parent:
            self.client.log_batch(self.parent_id, metrics=metrics)

    def log_experiment_summary(self) -> None:
        """Copy the experiment's headline numbers from the metrics files onto the parent run.

        The last stage calls this, so a parent run made when only later stages
        re-ran (e.g. after an xAI params change) still shows every score.
        """
        wanted = {"train": {"f1_macro_val": "f1_macro_val"},
                  "evaluate": {"f1_macro": "f1_macro_test", "oa": "oa_test", "kappa": "kappa_test",
                               "f1_macro_leakfree": "f1_macro_test_leakfree", "oa_leakfree": "oa_test_leakfree",
                               "kappa_leakfree": "kappa_test_leakfree"}}
        values = {}
        for stage, keys in wanted.items():
            path = self.paths.metrics(stage)
            if path.is_file():
                metrics = json.loads(path.read_text())
                values.update({name: metrics[key] for key, name in keys.items() if metrics.get(key) is not None})
        path = self.paths.metrics("consistency")
        if path.is_file():  # every score with its interval, and the centre share with its radial profile
            values.update(consistency_metrics(json.loads(path.read_text())))
        self.log_metrics(values, parent=True, only_parent=True)

    def log_figure(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path="figures")

    def log_json(self, obj: Any, name: str) -> None:
        self.client.log_text(self.run_id, json.dumps(obj, indent=2), name)

    def log_output(self, path: Path) -> None:
        """Reference a DVC output by path and md5 (large outputs are not copied into MLflow)."""
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            self.client.set_tag(self.run_id, f"output.{f.relative_to(self.paths.root)}", file_md5(f))


CONSISTENCY_SCORES = ("consistency_jsdiv", "consistency_instances", "consistency_concordance", "centre_share")


def consistency_metrics(result: dict) -> dict[str, float]:
    """metrics/consistency.json's numbers as MLflow metrics: each score, its interval, the radial profile."""
    values: dict[str, float] = {}
    for key in (*CONSISTENCY_SCORES, "consistency_instances_plugin", "centre_share_uniform"):
        if result.get(key) is not None:
            values[key] = result[key]
        if result.get(f"{key}_ci"):
            values[f"{key}_ci_low"], values[f"{key}_ci_high"] = result[f"{key}_ci"]
    for ring, share in enumerate(result.get("radial_profile") or []):
        if share is not None:
            values[f"radial_profile.ring{ring}"] = share
    return values


def log_selection(params: Params, paths: Paths, report: dict, files: list[Path]) -> None:
    """A `selection` run: the criterion, per group the recommended x, each criterion's pick, the report files."""
    import re

    mlflow_client = client(paths)
    exp_id = experiment_id(mlflow_client, params.tracking.experiment, paths)
    run = mlflow_client.create_run(exp_id, run_name="selection",
                                   tags={"hsixai.role": "selection", "hsixai.commit": git_commit(paths.root),
                                         "hsixai.selection_complete": str(report["complete"]).lower()})
    mlflow_client.log_param(run.info.run_id, "criterion", report["criterion"])
    x_key = report["x"]
    metrics = {}
    for label, group in report["groups"].items():
        safe = re.sub(r"[^A-Za-z0-9_./ -]", "_", label)
        for name, check in group["criteria"].items():
            if isinstance(check["pick"], (int, float)):
                metrics[f"pick_{x_key}.{name}.{safe}"] = float(check["pick"])
        value = group["recommended"].get(x_key)
        if isinstance(value, (int, float)):
            metrics[f"recommended_{x_key}.{safe}"] = float(value)
    StageRun(mlflow_client, run.info.run_id, run.info.run_id, paths).log_metrics(metrics)
    for path in files:
        mlflow_client.log_artifact(run.info.run_id, str(path))
    mlflow_client.set_terminated(run.info.run_id, "FINISHED")


def client(paths: Paths) -> Any:
    """An MlflowClient on the project's tracking URI, with MLflow's INFO chatter silenced."""
    from mlflow.tracking import MlflowClient

    for noisy in ("alembic", "mlflow"):  # importing mlflow sets its own INFO level; reset it afterwards
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return MlflowClient(tracking_uri(paths))


@contextlib.contextmanager
def stage_run(stage: str, params: Params, paths: Paths, experiment: str | None = None) -> Iterator[StageRun]:
    """A child run for `stage` under the parent run of this DVC experiment, created if needed.

    The parent is identified by the experiment name, the git commit and a hash
    of all params, so re-running after a params change never mixes two points.
    `experiment` names a parent of its own for stages outside the (model,
    patch_size) study, e.g. "adapt".
    """
    mlflow_client = client(paths)
    exp_id = experiment_id(mlflow_client, params.tracking.experiment, paths)
    name = experiment or experiment_run_name(params)
    commit = git_commit(paths.root)
    flat = flat_params(params)
    params_hash = hashlib.sha1(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:12]
    tags = {"hsixai.experiment": name, "hsixai.commit": commit, "hsixai.params_hash": params_hash}
    parent_id = _parent_run(mlflow_client, exp_id, name, tags, flat, paths)
    child = mlflow_client.create_run(exp_id, run_name=stage, tags={**tags, PARENT_RUN_ID: parent_id,
                                                                  "hsixai.role": "stage", "hsixai.stage": stage})
    run = StageRun(mlflow_client, child.info.run_id, parent_id, paths)
    try:
        yield run
    except BaseException:
        mlflow_client.set_terminated(run.run_id, "FAILED")
        raise
    mlflow_client.set_terminated(run.run_id, "FINISHED")


def experiment_id(client: Any, name: str, paths: Paths) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None if os.environ.get("MLFLOW_TRACKING_URI") else tracking_root(paths).mlartifacts.as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # created meanwhile by a parallel stage
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def _parent_run(client: Any, experiment_id: str, name: str, tags: dict[str, str], flat: dict[str, Any],
                paths: Paths) -> str:
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items()) + " and tags.`hsixai.role` = 'experiment'"
    found = client.search_runs([experiment_id], filter_string=query, max_results=1)
    if found:
        return found[0].info.run_id
    parent = client.create_run(experiment_id, run_name=name, tags={**tags, "hsixai.role": "experiment"})
    StageRun(client, parent.info.run_id, parent.info.run_id, paths).log_params(flat)
    client.set_terminated(parent.info.run_id, "FINISHED")
    return parent.info.run_id
