"""`hsixai sweep`: SIGINT and SIGTERM cancel its experiments and leave no process of it behind; after a SIGKILL the
next sweep stops what was left and runs the points that had not succeeded, on 4 workers, then selects."""

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


def start_sweep(repo, env, patch_sizes=(3, 7), jobs=1) -> subprocess.Popen:
    edit_params(repo, sweep={"models": ["cnn2d"], "patch_sizes": list(patch_sizes), "jobs": jobs})
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", f"a sweep of patch sizes {patch_sizes}"], repo)
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


def mlflow_runs(repo) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    return client, client.search_runs([client.get_experiment_by_name("hsixai").experiment_id], max_results=5000)


@pytest.mark.parametrize("signum, jobs", [(signal.SIGINT, 1), (signal.SIGTERM, 4)])
def test_a_signal_cancels_the_sweep_and_leaves_nothing_running(built_copy, signum, jobs):
    """Also: a second sweep started meanwhile refuses in one line."""
    repo = built_copy
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    sweep = start_sweep(repo, env, jobs=jobs)
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
    # the cancelled experiments' runs are KILLED, not left RUNNING for ever (their processes are gone)
    _, runs = mlflow_runs(repo)
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []


def test_the_next_sweep_stops_what_a_killed_one_left_runs_what_had_not_succeeded_and_selects(built_copy, tmp_path):
    """The recovery sweep also runs as a user with no git identity and an empty home, on 4 workers (more than the
    points: every point runs at once against one MLflow server), and a third sweep finds everything done."""
    repo = built_copy
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    sweep = start_sweep(repo, env, patch_sizes=(3, 5, 7))
    home = tmp_path / "home"
    home.mkdir()
    user = {"HOME": str(home), **{f"GIT_{w}_{k}": None for w in ("AUTHOR", "COMMITTER") for k in ("NAME", "EMAIL")}}
    try:
        wait_until_running(repo, sweep)
        sweep.kill()  # SIGKILL: no handler runs
        sweep.communicate(timeout=60)
        assert processes_of(repo), "a killed sweep leaves its server and workers (what the next sweep must stop)"

        again = run(["hsixai", "--no-progress", "sweep", "--jobs", "4"], repo, check=False, env=user)
        leftovers = processes_of(repo)
    finally:
        stop_everything(repo, sweep)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"an earlier sweep (pid {sweep.pid}) was killed; stopped what it left:" in again.stdout
    assert "its MLflow server" in again.stdout
    assert "3 points, 0 already done, 3 to run with 4 worker(s)" in again.stdout  # none had succeeded
    assert leftovers == []
    assert not (home / ".gitconfig").exists()  # no identity was written into the user's git config
    assert "database is locked" not in again.stdout + again.stderr

    report = json.loads((repo / "reports/selection.json").read_text())
    assert (repo / "reports/selection.png").stat().st_size > 10_000
    assert "Recommended patch_size" in (repo / "reports/selection.md").read_text()
    group = report["groups"]["all"]
    assert [r["patch_size"] for r in group["rows"]] == [3, 5, 7]
    assert group["recommended"]["patch_size"] in (3, 5, 7) and report["missing"] == [] and report["failed"] == []
    for row in group["rows"]:
        assert 0 <= row["consistency_jsdiv"] <= 1 and len(row["consistency_jsdiv_ci"]) == 2
        assert 0 < row["centre_share"] < 1 and len(row["per_instance"]["f1_macro_val"]) == 2
    from hsixai.config import CRITERIA

    assert set(group["criteria"]) == set(CRITERIA)
    for check in group["criteria"].values():  # every criterion in both directions, checked on all test pixels
        assert check["pick"] in (3, 5, 7) and check["regret_test_f1_all_pixels"] is not None
        assert check["summary"].count(". ") == 1
    # paired replicates read from each experiment's commit: every comparison has an interval
    comparisons = group["criteria"]["max_consistency_jsdiv"]["comparisons"]
    assert len(comparisons) == 2 and all(len(c["difference_ci"]) == 2 for c in comparisons.values())

    # MLflow: exactly one FINISHED parent per point of this commit, each with its four FINISHED stage runs; the killed
    # sweep's runs are KILLED; nothing RUNNING or FAILED (no tracking error under 4 concurrent experiments)
    client, runs = mlflow_runs(repo)
    commit = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    ours = [r for r in runs if r.data.tags.get("hsixai.commit") == commit]
    assert {r.info.status for r in ours} <= {"FINISHED", "KILLED"}, [(r.info.run_name, r.info.status) for r in ours]
    parents = [r for r in ours if r.data.tags["hsixai.role"] == "experiment" and r.info.status == "FINISHED"]
    # The patch-5 point has the built point's params: DVC found every output of its experiment in the cache and
    # ran no stage, so it logged no new run (its runs are the built point's, under the fixture's commit).
    assert sorted(int(p.data.params["patch_size"]) for p in parents) == [3, 7]
    for parent in parents:
        assert {"f1_macro_val", "f1_macro_test", "consistency_jsdiv", "centre_share", "radial_profile.ring0"} <= set(
            parent.data.metrics
        )
        stages = [r for r in ours if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert sorted(r.data.tags["hsixai.stage"] for r in stages) == ["attribute", "consistency", "evaluate", "train"]
        assert {r.info.status for r in stages} == {"FINISHED"}
    selection_runs = client.search_runs([parents[0].info.experiment_id], "tags.`hsixai.role` = 'selection'")
    assert selection_runs and "recommended_patch_size.all" in selection_runs[0].data.metrics

    third = run(["hsixai", "--no-progress", "sweep"], repo, env=user)
    assert "3 already done, 0 to run" in third.stdout
