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
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from .config import SELECTION_QUANTITIES, Params, load_params
from .errors import HsixaiError
from .paths import Paths

# The stage modules import this one at their top, so this is close to the start of a stage's process: the
# `stage_seconds` metric (wall time from here to the end of the stage's run) says where a sweep's time goes.
PROCESS_START = time.monotonic()
# The same moment on the wall clock (ms, as MLflow stores times): a stage's child run starts here, not where the
# stage opens it after its work, so the run's duration (and its parent's span) is the stage's wall time.
PROCESS_START_MS = int(time.time() * 1000)
_last_stage_end_ms = PROCESS_START_MS  # a second stage run in one process starts where the previous one ended

# What the MLflow UI opens the experiment on. MLflow's experiment kind tag says these are model training runs,
# not GenAI traces; MLflow 3.17's UI itself decides by its "GenAI | Model training" switch (kept in the browser,
# GenAI by default) unless the address says `workflowType=machine_learning`: `make ui` prints such an address
# (runs_page_url).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
UI_WORKFLOW = "machine_learning"

DATA_CONTEXT_TAG = "mlflow.data.context"  # what a dataset input was used for (MLflow shows it next to the name)
DATA_SOURCE_TYPE = "dvc"

PARENT_RUN_ID = "mlflow.parentRunId"  # the tag the MLflow UI nests child runs by

# An experiment's headline numbers on its parent run: MLflow name -> (metrics file stem, key in that file).
# The consistency scores (SELECTION_QUANTITIES, with their intervals) come through consistency_metrics.
HEADLINE_METRICS = {
    "f1_macro_val": ("train", "f1_macro_val"),
    "f1_macro_test": ("evaluate", "f1_macro"),
    "oa_test": ("evaluate", "oa"),
    "kappa_test": ("evaluate", "kappa"),
    "f1_macro_test_leakfree": ("evaluate", "f1_macro_leakfree"),
    "oa_test_leakfree": ("evaluate", "oa_leakfree"),
    "kappa_test_leakfree": ("evaluate", "kappa_leakfree"),
}

# Which run a metric goes to: the stage's own, the experiment's parent, or both.
Target = Literal["run", "parent", "both"]


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


@dataclass(frozen=True)
class DataVersion:
    """A DVC-tracked file or directory, identified as DVC identifies it."""

    path: str  # relative to the repository root, as dvc.lock and `dvc` commands name it
    md5: str  # DVC's md5; a directory's is the md5 of its file list, with '.dir' appended
    size: int | None  # bytes
    nfiles: int | None  # files, for a directory
    read_from: str  # where the md5 comes from: 'dvc.lock', a .dvc file, or 'computed'


def data_version(paths: Paths, path: Path) -> DataVersion:
    """The DVC md5 of `path`, read where DVC recorded it rather than hashed again (a cube is GBs).

    A stage run by DVC (`dvc repro`, `dvc exp run`; DVC sets DVC_STAGE) reads its inputs after DVC checked
    that every upstream stage's outputs match dvc.lock, so the md5 dvc.lock records for the stage that wrote
    `path` (or the .dvc file of a `dvc add`-ed input) is that of the bytes the stage read. A stage run by hand may
    read outputs dvc.lock no longer describes: then, and for a path DVC records nowhere (a file inside a directory
    output), the md5 is computed as DVC computes it, reading every byte.
    """
    relative = path.resolve().relative_to(paths.root).as_posix()
    if os.environ.get("DVC_STAGE"):
        recorded = _recorded_version(paths, path, relative)
        if recorded is not None:
            return recorded
    md5, size, nfiles = dvc_md5(path)
    return DataVersion(relative, md5, size, nfiles, "computed")


def _recorded_version(paths: Paths, path: Path, relative: str) -> DataVersion | None:
    def version(out: dict, read_from: str) -> DataVersion:
        return DataVersion(relative, out["md5"], out.get("size"), out.get("nfiles"), read_from)

    if paths.dvc_lock.is_file():
        for stage in (yaml.safe_load(paths.dvc_lock.read_text()) or {}).get("stages", {}).values():
            for out in stage.get("outs", []):
                if out.get("path") == relative and out.get("md5"):
                    return version(out, paths.dvc_lock.name)
    dvc_file = paths.dvc_file(path)
    if dvc_file.is_file():
        for out in (yaml.safe_load(dvc_file.read_text()) or {}).get("outs", []):
            if out.get("path") == path.name and out.get("md5"):
                return version(out, str(dvc_file.relative_to(paths.root)))
    return None


def dvc_md5(path: Path) -> tuple[str, int, int | None]:
    """(md5, bytes, files) of a file or directory as DVC 3 computes them; files is None for a file.

    A directory's md5 is that of the JSON list of its files' {md5, relpath} (sorted by relpath, keys sorted),
    with '.dir' appended: dvc.lock's value for a directory output (checked against DVC in the pipeline tests).
    """
    if path.is_file():
        return file_md5(path), path.stat().st_size, None
    files = sorted((f for f in path.rglob("*") if f.is_file()), key=lambda f: f.relative_to(path).as_posix())
    listing = [{"md5": file_md5(f), "relpath": f.relative_to(path).as_posix()} for f in files]
    digest = hashlib.md5(json.dumps(listing, sort_keys=True).encode("utf-8")).hexdigest()
    return f"{digest}.dir", sum(f.stat().st_size for f in files), len(files)


class StageRun:
    """A child run of the experiment's parent run, for one DVC stage."""

    def __init__(self, client: Any, run_id: str, parent_id: str, paths: Paths):
        self.client, self.run_id, self.parent_id, self.paths = client, run_id, parent_id, paths

    def log_params(self, values: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in values.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, values: dict[str, float], step: int | None = None, to: Target = "run") -> None:
        """Numbers (with `step` for curves) on this run, on the experiment's parent run, or on both."""
        from mlflow.entities import Metric

        if to not in ("run", "parent", "both"):
            raise ValueError(f"log_metrics: to must be 'run', 'parent' or 'both', not {to!r}")
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step or 0) for k, v in values.items()]
        if to in ("run", "both"):
            self.client.log_batch(self.run_id, metrics=metrics)
        if to in ("parent", "both"):
            self.client.log_batch(self.parent_id, metrics=metrics)

    def log_curves(self, curves: dict[str, Sequence[float]]) -> None:
        """Each named curve's values at steps 1, 2, ... on this run, one MLflow call per 1000 points."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        points = [
            Metric(name, value, now, step)
            for name, values in curves.items()
            for step, value in enumerate(values, start=1)
        ]
        for start in range(0, len(points), 1000):
            self.client.log_batch(self.run_id, metrics=points[start : start + 1000])

    def log_experiment_summary(self) -> None:
        """Copy the experiment's headline numbers from the metrics files onto the parent run.

        The last stage calls this, so a parent run made when only later stages
        re-ran (e.g. after an xAI params change) still shows every score.
        """
        values = {}
        for stage in dict.fromkeys(stem for stem, _ in HEADLINE_METRICS.values()):
            path = self.paths.metrics(stage)
            if path.is_file():
                values.update(headline_metrics(stage, json.loads(path.read_text())))
        path = self.paths.metrics("consistency")
        if path.is_file():  # every score with its interval, and the centre share with its radial profile
            values.update(consistency_metrics(json.loads(path.read_text())))
        self.log_metrics(values, to="parent")

    def log_figure(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path="figures")

    def log_json(self, obj: Any, name: str) -> None:
        self.client.log_text(self.run_id, json.dumps(obj, indent=2), name)

    def log_inputs(self, inputs: Sequence[Path], context: str) -> None:
        """The DVC data this stage read, as MLflow dataset inputs of its run and of the parent run.

        Name and source: the DVC path (e.g. data/prepared); digest: its DVC md5 (data_version), so the runs
        table's Dataset column says which version of the data a number came from. `context` says what the
        stage used it for (e.g. 'training').
        """
        from mlflow.entities import Dataset, DatasetInput, InputTag

        datasets = []
        for path in inputs:
            version = data_version(self.paths, path)
            dataset = Dataset(
                name=version.path,
                digest=version.md5,
                source_type=DATA_SOURCE_TYPE,
                source=json.dumps({"path": version.path}),
                profile=json.dumps({"size": version.size, "nfiles": version.nfiles, "md5_from": version.read_from}),
            )
            datasets.append(DatasetInput(dataset, tags=[InputTag(DATA_CONTEXT_TAG, context)]))
        for run_id in dict.fromkeys((self.run_id, self.parent_id)):
            self.client.log_inputs(run_id, datasets=datasets)

    def log_output(self, path: Path) -> None:
        """Reference a DVC output by path and md5 (large outputs are not copied into MLflow)."""
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            self.client.set_tag(self.run_id, f"output.{f.relative_to(self.paths.root)}", file_md5(f))


def headline_metrics(stage: str, result: dict) -> dict[str, float]:
    """The headline numbers of one stage's metrics file (HEADLINE_METRICS), named as on the parent run."""
    return {
        name: result[key]
        for name, (stem, key) in HEADLINE_METRICS.items()
        if stem == stage and result.get(key) is not None
    }


def consistency_metrics(result: dict) -> dict[str, float]:
    """metrics/consistency.json's numbers as MLflow metrics: each score, its interval, the radial profile."""
    values: dict[str, float] = {}
    for key in (*SELECTION_QUANTITIES, "consistency_instances_plugin", "centre_share_uniform"):
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
    run = mlflow_client.create_run(
        exp_id,
        run_name="selection",
        tags={
            "hsixai.role": "selection",
            "hsixai.commit": git_commit(paths.root),
            "hsixai.selection_complete": str(report["complete"]).lower(),
        },
    )
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


def ensure_experiment(paths: Paths, name: str) -> str:
    """The id of MLflow experiment `name` on the project's tracking URI; created if new (artifacts: mlartifacts/)."""
    return experiment_id(client(paths), name, paths)


def runs_page_url(base_url: str, root: str | Path | None = None) -> str:
    """The address of the runs table of the project's experiment in an MLflow UI at `base_url` (`make ui`).

    MLflow 3.17's UI opens an experiment on its GenAI trace overview unless told the workflow is model training.
    """
    paths = Paths.at(root)
    exp_id = ensure_experiment(paths, load_params(paths.params).tracking.experiment)
    return f"{base_url.rstrip('/')}/#/experiments/{exp_id}/runs?workflowType={UI_WORKFLOW}"


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
    start_ms = _last_stage_end_ms
    parent_id = _parent_run(mlflow_client, exp_id, name, tags, flat, paths, start_ms)
    child = mlflow_client.create_run(
        exp_id,
        start_time=start_ms,
        run_name=stage,
        tags={**tags, PARENT_RUN_ID: parent_id, "hsixai.role": "stage", "hsixai.stage": stage},
    )
    run = StageRun(mlflow_client, child.info.run_id, parent_id, paths)
    try:
        yield run
    except BaseException:
        _end_stage_run(mlflow_client, run, "FAILED")
        raise
    run.log_metrics({"stage_seconds": time.monotonic() - PROCESS_START})
    _end_stage_run(mlflow_client, run, "FINISHED")


def _end_stage_run(client: Any, run: StageRun, status: str) -> None:
    """Ends the stage's run now, and moves its parent's end to now if earlier: the parent spans its stages.

    The parent's own status is untouched (FINISHED since it was made): a point's stages are separate processes,
    and none knows whether it is the point's last.
    """
    global _last_stage_end_ms
    end_ms = max(int(time.time() * 1000), _last_stage_end_ms)
    client.set_terminated(run.run_id, status, end_time=end_ms)
    parent = client.get_run(run.parent_id).info
    if parent.end_time is None or parent.end_time < end_ms:
        client.set_terminated(run.parent_id, parent.status, end_time=end_ms)
    _last_stage_end_ms = end_ms


def experiment_id(client: Any, name: str, paths: Paths) -> str:
    """The experiment's id, created if new; tagged as model training (EXPERIMENT_KIND) if its kind is unset."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = None if os.environ.get("MLFLOW_TRACKING_URI") else tracking_root(paths).mlartifacts.as_uri()
        try:
            return client.create_experiment(
                name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
            )
        except Exception:  # created meanwhile by a parallel stage
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if EXPERIMENT_KIND_TAG not in experiment.tags:  # made before the project set it (an older mlflow.db)
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment.experiment_id


def _parent_run(
    client: Any,
    experiment_id: str,
    name: str,
    tags: dict[str, str],
    flat: dict[str, Any],
    paths: Paths,
    start_ms: int,
) -> str:
    """The point's parent run: found by its tags, or made starting at `start_ms` (its first stage's start)."""
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items()) + " and tags.`hsixai.role` = 'experiment'"
    found = client.search_runs([experiment_id], filter_string=query, max_results=1)
    if found:
        # A point's stages killed between creating its parent and finishing it (a cancelled sweep) leave the parent
        # RUNNING; the point's next run reuses it, and finishes it.
        if found[0].info.status != "FINISHED":
            client.set_terminated(found[0].info.run_id, "FINISHED")
        return found[0].info.run_id
    parent = client.create_run(
        experiment_id, start_time=start_ms, run_name=name, tags={**tags, "hsixai.role": "experiment"}
    )
    StageRun(client, parent.info.run_id, parent.info.run_id, paths).log_params(flat)
    client.set_terminated(parent.info.run_id, "FINISHED")  # its end moves with each stage's (_end_stage_run)
    return parent.info.run_id


def mark_killed(paths: Paths, experiment: str, names: list[str]) -> int:
    """Mark the runs of the DVC experiments `names`, cancelled or killed mid-run, as KILLED; how many were marked.

    Their processes are gone, so their stage runs would stay RUNNING forever and their parent runs would look like
    complete points. Each parent becomes KILLED, and each stage run that had not finished too; stage runs that
    finished keep FINISHED (what they logged is real). Call it only once no process of those experiments runs.
    """
    if not names:
        return 0
    mlflow_client = client(paths)
    found = mlflow_client.get_experiment_by_name(experiment)
    if found is None:
        return 0
    killed = [
        run
        for name in names  # MLflow's search has no IN for tags
        for run in mlflow_client.search_runs(
            [found.experiment_id], f"tags.`hsixai.experiment` = '{name}'", max_results=5000
        )
        if run.data.tags.get("hsixai.role") == "experiment" or run.info.status not in ("FINISHED", "FAILED")
    ]
    for run in killed:
        mlflow_client.set_terminated(run.info.run_id, "KILLED")
    return len(killed)


# ----------------------------------------------------------------------------------------- the model registry
CHAMPION = "champion"  # the alias of the version `select` recommends last


def registered_model_name(model: str) -> str:
    """One registered model per architecture: hsixai-cnn2d, hsixai-vit."""
    return f"hsixai-{model}"


def register_model(
    paths: Paths,
    experiment: str,
    name: str,
    bundle: Path,
    tags: dict[str, str],
    params: dict[str, Any],
    metrics: dict[str, float],
    alias: str = CHAMPION,
) -> str:
    """A new version of registered model `name` holding the directory `bundle`, aliased `alias`; its version.

    The bundle's files (tensors-only checkpoints and plain JSON) become the artifacts of a run of role 'model'
    that carries `params` and `metrics`; the version carries `tags` and points at those artifacts, so
    `models:/<name>@<alias>` is enough to load it (download_model) without the repository.
    """
    from mlflow.exceptions import MlflowException

    mlflow_client = client(paths)
    same = _version_with_tags(mlflow_client, name, tags)
    if same is not None:  # selected again (a re-run sweep): point the alias at it rather than pile up copies
        mlflow_client.set_registered_model_alias(name, alias, same)
        return same
    exp_id = experiment_id(mlflow_client, experiment, paths)
    run = mlflow_client.create_run(exp_id, run_name=f"{name}-model", tags={**tags, "hsixai.role": "model"})
    logged = StageRun(mlflow_client, run.info.run_id, run.info.run_id, paths)
    logged.log_params(params)
    logged.log_metrics(metrics)
    mlflow_client.log_artifacts(run.info.run_id, str(bundle), artifact_path="bundle")
    mlflow_client.set_terminated(run.info.run_id, "FINISHED")
    try:
        mlflow_client.create_registered_model(
            name, description="hsixai: the patch classifier `hsixai select` recommends (docs/maps.md)"
        )
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = mlflow_client.create_model_version(
        name, source=f"{run.info.artifact_uri}/bundle", run_id=run.info.run_id, tags=tags
    )
    mlflow_client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


def _version_with_tags(mlflow_client: Any, name: str, tags: dict[str, str]) -> str | None:
    """The newest version of registered model `name` carrying exactly `tags`, if any."""
    versions = mlflow_client.search_model_versions(f"name = '{name}'")  # none for a model not registered yet
    same = [v for v in versions if all(v.tags.get(k) == value for k, value in tags.items())]
    return str(max(int(v.version) for v in same)) if same else None


def download_model(paths: Paths, uri: str, dest: Path) -> Path:
    """The files of registered model version `uri` (models:/<name>@<alias> or models:/<name>/<version>) in `dest`."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    client(paths)  # MLflow's logging quietened
    try:
        uri_of_store = tracking_uri(paths)  # the registry lives in the tracking store
        return Path(
            mlflow.artifacts.download_artifacts(
                uri, dst_path=str(dest), tracking_uri=uri_of_store, registry_uri=uri_of_store
            )
        )
    except MlflowException as exc:
        raise HsixaiError(
            f"--model {uri}: no such registered model version in {tracking_uri(paths)} "
            f"({str(exc).splitlines()[0][:200]}); `hsixai select` registers the recommended point as "
            f"models:/hsixai-<model>@{CHAMPION}"
        ) from None
