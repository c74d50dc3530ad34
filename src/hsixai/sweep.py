"""`hsixai sweep`: one queued DVC experiment per (model, patch_size), run in parallel, then `select`.

Several queue workers write runs at the same time, which SQLite alone does not
take; the sweep therefore serves the project's SQLite backend through a local
MLflow server on 127.0.0.1 for as long as the queue runs, and every worker
logs through it. DVC experiments are git commits: where git has no identity,
the sweep gives DVC one through environment variables, never through the
user's git config.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from itertools import product
from pathlib import Path
from typing import NamedTuple

import psutil

from . import select, tracking
from .config import Params, Profile, load_profile
from .errors import HsixaiError, Interrupted
from .paths import Paths

log = logging.getLogger(__name__)
POLL_S = 5
# What one (model, patch_size) point runs: the main pipeline up to its final stage, never the adapt stages,
# which read neither model nor patch_size. `consistency` depends on every earlier stage of the point.
POINT_STAGES = ("consistency",)


def git_identity_env(root: Path) -> dict[str, str]:
    """GIT_AUTHOR_*/GIT_COMMITTER_* for DVC's experiment commits when git has no identity configured."""

    def configured(key: str) -> bool:
        out = subprocess.run(["git", "config", key], cwd=root, capture_output=True, text=True)
        return bool(out.stdout.strip())

    if configured("user.name") and configured("user.email"):
        return {}
    log.warning("git has no user identity here: DVC experiments are committed as 'hsixai sweep'")
    identity = {"NAME": "hsixai sweep", "EMAIL": "hsixai-sweep@localhost"}
    return {f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER") for what, value in identity.items()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(
    paths: Paths, experiment: str, started: Callable[[int | None], None] = lambda pid: None
) -> Iterator[str]:
    """A local MLflow server over the project's SQLite backend; yields its URI (127.0.0.1 only).

    `started` is told the server's pid once it answers (None when the user runs a server of their own).
    """
    if os.environ.get("MLFLOW_TRACKING_URI"):
        started(None)
        yield os.environ["MLFLOW_TRACKING_URI"]  # the user runs a server already
        return
    # Created here, not through the server, so its artifacts stay plain files under mlartifacts/
    # that clients of the SQLite backend (select, make ui) can read too.
    tracking.ensure_experiment(paths, experiment)
    root = tracking.tracking_root(paths)
    port = _free_port()
    log_path = root.mlflow_server_log
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{root.mlflow_db}",
        "--artifacts-destination",
        str(root.mlartifacts),
        "--workers",
        "1",
    ]
    with open(log_path, "w") as log_file:
        # No job runner: MLflow 3.17 otherwise starts ~7 Huey consumer processes (for GenAI scoring jobs this
        # project never submits) that polled away about a fifth of a core during a sweep on 2 cores.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        server = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    uri = f"http://127.0.0.1:{port}"
    try:
        started(server.pid)  # recorded before it answers: a sweep killed while it starts must not orphan it
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.time() > deadline:
                raise HsixaiError(f"the MLflow server did not start (see {log_path})")
            time.sleep(0.5)
        yield uri
    finally:
        _terminate_tree(server.pid)  # its own session: the server and its uvicorn child
        server.wait()


def _dvc(args: list[str], root: Path, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["dvc", *args], cwd=root, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise HsixaiError(f"dvc {' '.join(args)} failed: {(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc


def _queue_states(names: list[str], root: Path, env: dict[str, str]) -> dict[str, str]:
    """Experiment name -> its status in `dvc queue status` (Queued, Running, Success, Failed)."""
    states = {}
    for line in _dvc(["queue", "status"], root, env).stdout.splitlines():
        words = line.split()
        for name in names:
            if name in words and words[-1] in ("Queued", "Running", "Success", "Failed"):
                states[name] = words[-1]
    return states


def load_named_profile(paths: Paths, name: str, params: Params) -> Profile:
    """profiles/<name>.yaml applied over `params`; an unknown name is a one-line error listing the profiles."""
    path = paths.settings_profile(name)
    if not path.is_file():
        known = paths.settings_profile_names()
        raise HsixaiError(
            f"--profile: expected one of {', '.join(known) or 'no profiles'} "
            f"(files in {paths.settings_profiles_dir}), found {name!r}"
        )
    return load_profile(path, params)


def points(params: Params, profile: Profile | None = None) -> list[tuple[str, int, dict]]:
    """(model, patch_size, extra params set on that experiment) for every point of the sweep.

    Without a profile the points are params.yaml's sweep and set nothing; with one, the profile's sweep, each
    point setting whatever its (per-model) profile params change from params.yaml.
    """
    swept = profile.params if profile else params
    return [
        (model, patch, point_settings(params, profile.for_model(model) if profile else params))
        for model, patch in product(swept.sweep.models, swept.sweep.patch_sizes)
    ]


def point_settings(workspace: Params, point: Params) -> dict:
    """The flat params an experiment sets (dvc exp run -S) over the workspace's params.yaml to run with `point`'s."""
    here = tracking.flat_params(workspace)
    settings = {
        k: v
        for k, v in tracking.flat_params(point).items()
        if k not in ("model", "patch_size") and not k.startswith("sweep.") and v != here.get(k)
    }
    # An experiment keeps the workspace's sweep.* keys, against which its split.buffer "auto" would resolve:
    # it gets the buffer that the point's own sweep resolves to.
    if point.split_buffer != point.split.resolve_buffer(workspace.sweep.patch_sizes):
        settings["split.buffer"] = point.split_buffer
    return settings


def run(
    params: Params, paths: Paths, progress: bool = True, jobs: int | None = None, profile: str | None = None
) -> dict:
    """Queue the missing points, run the queue, wait, report failures, then select over the whole grid.

    profile: the name of a settings profile (profiles/<name>.yaml) to sweep instead of params.yaml's points.
    """
    settings = load_named_profile(paths, profile, params) if profile else None
    root = paths.root
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **git_identity_env(root),
    }
    swept = settings.params if settings else params  # the sweep's own settings: jobs, criterion
    jobs = jobs or swept.sweep.jobs
    # Parallel workers share the cores: more threads per worker than that only thrash.
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    env.setdefault("OMP_NUM_THREADS", threads)
    env.setdefault("MKL_NUM_THREADS", threads)
    everything = points(params, settings)
    _stop_leftovers(paths, root, env)
    existing = select.experiments(paths, env, include_incomplete=True)
    _refuse_unfinished(existing)
    current = tracking.flat_params(params)
    expected = [{**current, "model": m, "patch_size": p, **extra} for m, p, extra in everything]
    todo = [
        (m, p, extra)
        for (m, p, extra), point in zip(everything, expected)
        if not select.has_experiment(existing, point)
    ]
    print(
        f"sweep: {len(everything)} points, {len(everything) - len(todo)} already done, "
        f"{len(todo)} to run with {jobs} worker(s)",
        flush=True,
    )
    failed: dict[str, str] = {}
    queued: dict[str, dict] = {}  # experiment name -> its point's params
    if todo:
        failed = _run_queue(todo, paths, swept, current, env, jobs, progress, queued)
    for name, logs in failed.items():
        print(f"sweep: experiment {name} FAILED; the end of its log:\n{logs}", file=sys.stderr)
    if failed:  # said before the selection is written, which marks these points missing
        print(
            f"sweep: {len(failed)} of {len(todo)} experiments failed ({', '.join(failed)}); the selection "
            f"below is incomplete",
            file=sys.stderr,
            flush=True,
        )
    report = select.run(
        swept, paths, progress, env=env, expected=expected, failed={name: queued[name] for name in failed}
    )
    if failed:
        raise HsixaiError(f"{len(failed)} of {len(todo)} experiments failed: {', '.join(failed)} (logs above)")
    map_recommended(params, paths, report, env, progress)
    return report


def map_commands(params: Params, paths: Paths, report: dict, progress: bool) -> list[list[str]]:
    """`hsixai predict` of the workspace scene by each group's recommended point -> reports/map_<group>.tif."""
    commands = []
    for label, group in report["groups"].items():
        if group["recommended"].get(report["x"]) is None:
            continue
        out = paths.selection_report().recommended_map(label).classes
        scene = paths.resolve(params.data.raw_dir)
        quiet = [] if progress else ["--no-progress"]
        # A fresh clone's workspace never ran the data stages: the scene then comes from the experiment.
        where = [str(scene)] if scene.exists() else [params.data.raw_dir, "--scene-from-experiment"]
        command = ["hsixai", *quiet, "predict", *where, "--group", label, "--out", str(out)]
        commands.append([*command, "--device", params.train.device])
    return commands


def map_recommended(params: Params, paths: Paths, report: dict, env: dict[str, str], progress: bool) -> None:
    """The maps of the recommended points (docs/maps.md), each in its own process: its bundle is built from
    the experiment's commit, so the workspace is untouched. `make run` ends with them."""
    for cmd in map_commands(params, paths, report, progress):
        print(f"sweep: {' '.join(cmd[cmd.index('predict') :])}", flush=True)
        if subprocess.run(cmd, cwd=paths.root, env=env).returncode != 0:
            raise HsixaiError(f"the map of a recommended point failed ({' '.join(cmd)}); the selection is written")


class _SweepRecord:
    """What a running sweep owns, in a file: its pid, its MLflow server's and its queued experiments.

    Written while the sweep runs and removed when it ends, after its workers and server; a file left behind
    means a sweep was killed (SIGKILL, a lost machine) and names what the next one must stop.
    """

    def __init__(self, path: Path, names: list[str], tracking_experiment: str):
        self.path, self.names, self.server_pid = path, names, None
        self.tracking_experiment = tracking_experiment

    def server_started(self, pid: int | None) -> None:
        self.server_pid = pid
        self.write()

    def write(self) -> None:
        content = {
            "pid": os.getpid(),
            "pid_started": _started_at(os.getpid()),  # with the pid, what tells this sweep from a recycled pid
            "server_pid": self.server_pid,
            "server_started": _started_at(self.server_pid),
            "experiments": self.names,
            "tracking_experiment": self.tracking_experiment,  # the MLflow experiment of their runs
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staged = self.path.with_suffix(".tmp")
        staged.write_text(json.dumps(content))
        staged.replace(self.path)

    def __enter__(self) -> _SweepRecord:
        self.write()
        return self

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


def _run_queue(
    todo: list[tuple[str, int, dict]],
    paths: Paths,
    swept: Params,
    current: dict,
    env: dict[str, str],
    jobs: int,
    progress: bool,
    queued: dict[str, dict],
) -> dict[str, str]:
    """Queue the points, run them on `jobs` workers through a local MLflow server; the failed ones with logs.

    SIGINT and SIGTERM cancel this sweep's experiments, then stop the workers, then the server (workers log
    through it), and raise Interrupted; `queued` gets each queued experiment's params.
    """
    root = paths.root
    names: list[str] = []
    cancelled: list[str] = []  # the experiments this sweep cancelled: their MLflow runs are marked KILLED
    record = _SweepRecord(paths.sweep_record, names, swept.tracking.experiment)
    try:
        with _signals_stop_the_sweep(), record, _marked_killed(paths, swept.tracking.experiment, cancelled):
            with mlflow_server(paths, swept.tracking.experiment, record.server_started) as uri:
                env["MLFLOW_TRACKING_URI"] = uri
                try:
                    for model, patch, extra in todo:
                        name = f"{model}-p{patch}-{int(time.time()) % 100000}"
                        settings = [f"model={model}", f"patch_size={patch}", *(f"{k}={v}" for k, v in extra.items())]
                        args = [a for s in settings for a in ("-S", s)]
                        names.append(name)  # recorded first: a sweep killed while queueing it must cancel it
                        record.write()
                        _dvc(["exp", "run", "--queue", "--name", name, *args, *POINT_STAGES], root, env)
                        queued[name] = {**current, "model": model, "patch_size": patch, **extra}
                    _start_workers(jobs, root, env)
                    return _wait(names, root, env, progress)
                except _Stop as stop:
                    stopped = _cancel(names, root, env)
                    cancelled += stopped.running + stopped.queued
                    raise Interrupted(
                        f"interrupted by {signal.Signals(stop.signum).name}: cancelled {len(stopped.running)} running "
                        f"and {len(stopped.queued)} queued experiment(s), stopped the queue workers and the MLflow "
                        f"server; {stopped.finished} "
                        f"finished point(s) are kept. Run `hsixai sweep` again to run the rest",
                        stop.signum,
                    ) from None
                except BaseException:  # a failed dvc call: no experiment of this sweep may run on without it
                    _ignore_signals()
                    stopped = _cancel(names, root, env)
                    cancelled += stopped.running + stopped.queued
                    raise
                finally:
                    _ignore_signals()
                    _stop_workers(root, env)  # before the server stops: workers still log through it
    except _Stop as stop:  # while the server was starting, before anything was queued
        raise Interrupted(
            f"interrupted by {signal.Signals(stop.signum).name} before any experiment was queued", stop.signum
        ) from None


def _stop_leftovers(paths: Paths, root: Path, env: dict[str, str]) -> None:
    """Refuse while another sweep runs here; stop what a killed one left (server, workers, its experiments)."""
    if not paths.sweep_record.is_file():
        return
    try:
        record = json.loads(paths.sweep_record.read_text())
    except ValueError:  # cut short while written: it names nothing to stop, but the workers may still run
        record = {}
    if _is_sweep(record.get("pid"), record.get("pid_started")):
        raise HsixaiError(
            f"another hsixai sweep (pid {record['pid']}) is running in {root}; wait for it or stop it "
            f"(Ctrl-C in its terminal, or kill {record['pid']}), then run hsixai sweep again"
        )
    stopped = _cancel(record.get("experiments") or [], root, env)
    _stop_workers(root, env)
    server = _terminate_tree(record.get("server_pid"), started=record.get("server_started") or -1.0)
    # Every experiment the killed sweep had not finished: those it was running died with their workers.
    unfinished = [n for n in record.get("experiments") or [] if n not in stopped.succeeded]
    _mark_runs_killed(paths, record.get("tracking_experiment"), unfinished)
    paths.sweep_record.unlink(missing_ok=True)
    print(
        f"sweep: an earlier sweep (pid {record.get('pid')}) was killed; stopped what it left: "
        f"{len(stopped.running)} running and {len(stopped.queued)} queued experiment(s), its queue "
        f"workers{', its MLflow server' if server else ''}",
        flush=True,
    )


def _started_at(pid: int | None) -> float | None:
    try:
        return psutil.Process(pid).create_time() if pid else None
    except psutil.Error:
        return None


def _alive(pid: int | None, started: float | None) -> bool:
    """Whether the process recorded as (pid, start time) still runs: a recycled pid has another start time."""
    return pid is not None and started is not None and _started_at(pid) == started


def _is_sweep(pid: int | None, started: float | None) -> bool:
    """Whether the recorded `hsixai ... sweep` process still runs."""
    try:
        return _alive(pid, started) and "sweep" in psutil.Process(pid).cmdline()
    except psutil.Error:
        return False


def _terminate_tree(pid: int | None, timeout_s: float = 20, started: float | None = None) -> bool:
    """Terminate an MLflow server and its children (uvicorn); whether there was one to stop.

    With `started` (a recorded start time), only the process that started then: never a recycled pid.
    """
    if started is not None and not _alive(pid, started):
        return False
    try:
        server = psutil.Process(pid) if pid else None
        if server is None or "server" not in server.cmdline():
            return False
        family = [server, *server.children(recursive=True)]
    except psutil.Error:
        return False
    return _terminate(family, timeout_s)


def _terminate(family: list[psutil.Process], timeout_s: float) -> bool:
    for proc in family:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(family, timeout=timeout_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=timeout_s)
    return bool(family)


def _queue_processes(root: Path) -> list[psutil.Process]:
    """The repository's DVC queue processes: workers (started from the repo root) and experiment runs with the
    stage commands under them (in temporary copies under .dvc/tmp/exps)."""
    exps = str(root / ".dvc" / "tmp" / "exps")
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        try:
            cmdline, cwd = " ".join(proc.info["cmdline"] or []), proc.info["cwd"] or ""
        except psutil.Error:
            continue
        if proc.info["pid"] == os.getpid():
            continue
        worker = cwd == str(root) and any(w in cmdline for w in ("queue-worker", "exec-run", "queue start"))
        if worker or cwd.startswith(exps):
            found.append(proc)
    return found


class _Stop(BaseException):
    """SIGINT or SIGTERM while the queue runs (a BaseException, like KeyboardInterrupt: nothing may swallow it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _signals_stop_the_sweep() -> Iterator[None]:
    """SIGINT and SIGTERM raise _Stop in the sweep's main thread, to cancel the queue deliberately."""

    def stop(signum: int, frame) -> None:
        _ignore_signals()  # a second Ctrl-C must not cut the cleanup short and leave orphans
        raise _Stop(signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _ignore_signals() -> None:
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)


def _start_workers(jobs: int, root: Path, env: dict[str, str]) -> None:
    """`dvc queue start`: its workers are daemons that inherit its output, so that goes to a file, not a pipe
    (a pipe stays open as long as the workers run, and reading it would wait for the whole queue)."""
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], cwd=root, env=env, stdout=out, stderr=out)
        if proc.returncode != 0:
            out.seek(0)
            raise HsixaiError(f"dvc queue start failed: {out.read().strip()[-2000:]}")


def _active_workers(root: Path, env: dict[str, str]) -> int:
    status = _dvc(["queue", "status"], root, env, check=False).stdout
    match = re.search(r"Worker status: (\d+) active, (\d+) idle", status)
    return int(match.group(1)) + int(match.group(2)) if match else 0


def _stop_workers(root: Path, env: dict[str, str], timeout_s: float = 120) -> None:
    """Kill what still runs, shut the queue workers down and wait until none is left."""
    _dvc(["queue", "stop", "--kill"], root, env, check=False)
    deadline = time.time() + timeout_s
    while _active_workers(root, env) and time.time() < deadline:
        time.sleep(1)
    # DVC's kill ends an experiment's exec-run process, not the stage command under it, and a worker still
    # starting can miss the shutdown: whatever of the queue is left gets terminated, then killed.
    _terminate(_queue_processes(root), timeout_s=20)


class _Cancelled(NamedTuple):
    running: list[str]  # killed
    queued: list[str]  # removed from the queue
    succeeded: list[str]  # had finished successfully: kept

    @property
    def finished(self) -> int:
        return len(self.succeeded)


def _cancel(names: list[str], root: Path, env: dict[str, str]) -> _Cancelled:
    """Remove the queued and kill the running experiments of `names`."""
    states = _queue_states(names, root, env) if names else {}
    queued = [n for n in names if states.get(n) == "Queued"]
    running = [n for n in names if states.get(n) == "Running"]
    if queued:
        _dvc(["queue", "remove", *queued], root, env, check=False)
    if running:
        _dvc(["queue", "kill", "--force", *running], root, env, check=False)
    return _Cancelled(running, queued, [n for n in names if states.get(n) == "Success"])


@contextlib.contextmanager
def _marked_killed(paths: Paths, experiment: str, names: list[str]) -> Iterator[None]:
    """On the way out (after the workers and the server have stopped), mark the runs of the experiments in `names`
    (filled while inside) KILLED."""
    try:
        yield
    finally:
        _mark_runs_killed(paths, experiment, names)


def _mark_runs_killed(paths: Paths, experiment: str | None, names: list[str]) -> None:
    if not names or not experiment:
        return
    try:
        tracking.mark_killed(paths, experiment, names)
    except Exception as exc:  # the runs stay RUNNING, which is untidy but must not hide why the sweep stopped
        log.warning("could not mark the cancelled experiments' MLflow runs KILLED: %s", exc)


def _refuse_unfinished(exps: list[select.Experiment]) -> None:
    """Stop before queueing anything while experiments of this commit are still queued or running.

    Their points are not done, and queueing them again would run them twice; an earlier sweep (or a user's
    `dvc exp run --queue`) owns them.
    """
    busy = [e for e in exps if e.state in ("queued", "running")]
    if busy:
        names = ", ".join(f"{e.name} ({e.state})" for e in busy)
        raise HsixaiError(
            f"{len(busy)} experiment(s) of this commit are still queued or running: {names}; wait for them "
            f"(`dvc queue status`) or cancel them (`dvc queue kill NAME`, `dvc queue remove --queued`), then run "
            f"hsixai sweep again"
        )


def _wait(names: list[str], root: Path, env: dict[str, str], progress: bool) -> dict[str, str]:
    """Poll the queue until every experiment in `names` has finished; returns failed ones with their logs."""
    from tqdm import tqdm

    bar = tqdm(total=len(names), desc="sweep: experiments", unit="exp", disable=not progress)
    finished: dict[str, str] = {}
    while len(finished) < len(names):
        time.sleep(POLL_S)
        states = _queue_states(names, root, env)
        for name in names:
            if name not in finished and states.get(name) in ("Success", "Failed"):
                finished[name] = states[name]
                bar.update(1)
                bar.set_postfix_str(f"{name}: {states[name]}")
    bar.close()
    failed = {}
    for name, state in finished.items():
        if state == "Failed":
            logs = _dvc(["queue", "logs", name], root, env, check=False)
            failed[name] = "\n".join((logs.stdout + logs.stderr).strip().splitlines()[-40:])
    return failed
