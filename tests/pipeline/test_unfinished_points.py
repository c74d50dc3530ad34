"""A point counts as done only when its experiment succeeded: queued (or running) ones are neither done nor read.

While an experiment waits in DVC's queue or runs, `dvc exp show` lists it with its params and the metrics files
of the copy it runs in, which until its own stages write them are the baseline commit's. Counted as done, such a
point was skipped by the next sweep and entered the selection with another point's numbers.
"""

import os

import pytest

from hsixai import select
from hsixai.paths import Paths

from ..helpers import edit_params
from .conftest import BIN, run

pytestmark = pytest.mark.pipeline


def test_a_queued_point_is_not_done_and_no_command_reads_it(built_copy):
    repo = built_copy
    edit_params(repo, sweep={"models": ["cnn2d"], "patch_sizes": [3, 5], "jobs": 1})
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "the built patch-5 point, a two-point sweep"], repo)
    run(["dvc", "exp", "run", "--queue", "--name", "waiting-p3", "-S", "patch_size=3", "consistency"], repo)

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    found = select.experiments(Paths.at(repo), env, include_incomplete=True)
    (waiting,) = [e for e in found if e.name == "waiting-p3"]
    # A queued one shows its params but no metrics yet; a running one shows the copy's (the baseline's) metrics,
    # which is why the state, not the presence of metrics, decides.
    assert waiting.params["patch_size"] == 3 and waiting.state == "queued" and not waiting.complete

    sweep = run(["hsixai", "--no-progress", "sweep"], repo, check=False)
    assert sweep.returncode == 2, sweep.stdout + sweep.stderr
    assert "waiting-p3 (queued)" in sweep.stderr and "Traceback" not in sweep.stderr
    assert "dvc queue kill" in sweep.stderr
    queue = run(["dvc", "queue", "status"], repo).stdout
    assert queue.count("Queued") == 1, queue  # the sweep queued nothing next to it

    # select has no finished experiment to read: it says so instead of ranking the queued one.
    chosen = run(["hsixai", "--no-progress", "select"], repo, check=False)
    assert chosen.returncode == 2 and "no completed DVC experiments" in chosen.stderr, chosen.stderr
    assert not (repo / "reports").exists()
