"""SIGINT and SIGTERM to a running `hsixai sweep` cancel its experiments and leave no process of it behind."""

import contextlib
import json
import os
import re
import signal
import subprocess
import time

import psutil
import pytest

from hsixai import select
from hsixai.paths import Paths

from ..helpers import edit_params
from .conftest import BIN, run

pytestmark = pytest.mark.pipeline


def processes_of(repo) -> list[str]:
    """Live processes working in `repo` or naming it on their command line (the MLflow server, queue workers,
    experiment runs in .dvc/tmp), as 'pid: command'."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        try:
            cmdline, cwd = " ".join(proc.info["cmdline"] or []), proc.info["cwd"] or ""
        except psutil.Error:
            continue
        if proc.info["pid"] != os.getpid() and (cwd.startswith(str(repo)) or str(repo) in cmdline):
            found.append(f"{proc.info['pid']}: {cmdline[:200]}")
    return found


def wait_until_running(repo, sweep: subprocess.Popen, timeout_s: float = 600) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        assert sweep.poll() is None, sweep.communicate()
        if "Running" in run(["dvc", "queue", "status"], repo).stdout:
            return
        time.sleep(1)
    raise AssertionError("no experiment started running")


def two_point_sweep(repo, env) -> subprocess.Popen:
    edit_params(repo, sweep={"models": ["cnn2d"], "patch_sizes": [3, 7], "jobs": 1})
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "a two-point sweep"], repo)
    return subprocess.Popen(
        ["hsixai", "--no-progress", "sweep"],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as in a terminal: Ctrl-C reaches the group
    )


def stop_everything(repo, sweep: subprocess.Popen) -> None:
    """After a failed assertion: kill the sweep and whatever of it is left, so no test leaves processes behind."""
    if sweep.poll() is None:
        sweep.kill()
        sweep.wait()
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["pid"] != os.getpid() and (
                (proc.info["cwd"] or "").startswith(str(repo)) or str(repo) in " ".join(proc.info["cmdline"] or [])
            ):
                proc.kill()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_cancels_the_sweep_and_leaves_nothing_running(built_copy, signum):
    """Also: a second sweep started meanwhile refuses in one line."""
    repo = built_copy
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    sweep = two_point_sweep(repo, env)
    try:
        wait_until_running(repo, sweep)
        second = run(["hsixai", "--no-progress", "sweep"], repo, check=False)
        assert second.returncode == 2 and f"another hsixai sweep (pid {sweep.pid}) is running" in second.stderr
        if signum == signal.SIGINT:
            os.killpg(sweep.pid, signum)  # Ctrl-C in a terminal: the sweep and the dvc calls it is making
        else:
            sweep.send_signal(signum)  # a scheduler's SIGTERM, to the sweep alone
        out, err = sweep.communicate(timeout=300)
        leftovers = processes_of(repo)
    finally:
        stop_everything(repo, sweep)
    assert sweep.returncode == 128 + signum, out + err
    assert "Traceback" not in err
    (message,) = [line for line in err.splitlines() if "error:" in line]
    # how many had started when the signal came depends on timing; that something was cancelled does not
    counts = re.search(
        rf"interrupted by {signal.Signals(signum).name}: cancelled (\d) running and (\d) queued", message
    )
    assert counts and int(counts[1]) + int(counts[2]) >= 1, message
    assert "Run `hsixai sweep` again" in message

    assert leftovers == []  # no server, no queue worker, no experiment or stage command still running
    states = {e.name: e.state for e in select.experiments(Paths.at(repo), env, include_incomplete=True)}
    assert "queued" not in states.values() and "running" not in states.values(), states
    assert not (repo / "reports").exists()  # no selection was built on unfinished points


def test_the_next_sweep_stops_what_a_killed_one_left_and_runs_what_had_not_succeeded(built_copy):
    repo = built_copy
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    sweep = two_point_sweep(repo, env)
    try:
        wait_until_running(repo, sweep)
        sweep.kill()  # SIGKILL: no handler runs
        sweep.communicate(timeout=60)
        assert processes_of(repo), "a killed sweep leaves its server and workers (what the next sweep must stop)"

        again = run(["hsixai", "--no-progress", "sweep"], repo, check=False)
        leftovers = processes_of(repo)
    finally:
        stop_everything(repo, sweep)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"an earlier sweep (pid {sweep.pid}) was killed; stopped what it left:" in again.stdout
    assert "its MLflow server" in again.stdout
    assert "2 points, 0 already done, 2 to run" in again.stdout  # neither point had succeeded
    assert leftovers == []

    report = json.loads((repo / "reports/selection.json").read_text())
    assert [r["patch_size"] for r in report["groups"]["all"]["rows"]] == [3, 7] and report["missing"] == []
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("hsixai")
    finished = client.search_runs(
        [experiment.experiment_id], "tags.`hsixai.role` = 'experiment' and attributes.status = 'FINISHED'"
    )
    # the built point (patch 5, from the fixture's repro) and each point of the sweep: the killed one's parent
    # (created when its first stage started) is reused and finished by its re-run
    assert {int(r.data.params["patch_size"]) for r in finished} == {3, 5, 7}
