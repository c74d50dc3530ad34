"""common.run_jobs: results in job order, one torch thread per job, a worker's error as the same one line."""

import time
from pathlib import Path

import pytest
import torch

from hsixai.adapt.common import run_jobs
from hsixai.errors import HsixaiError


def _threads_and_square(x: int) -> tuple[int, int]:
    if x < 0:
        raise HsixaiError(f"job {x}: negative")
    return x * x, torch.get_num_threads()


@pytest.mark.parametrize("workers", [1, 2])
def test_results_come_in_job_order_each_on_one_thread(workers):
    before = torch.get_num_threads()
    results = list(run_jobs(_threads_and_square, [3, 1, 2], workers, torch.device("cpu")))
    assert results == [(9, 1), (1, 1), (4, 1)]
    assert torch.get_num_threads() == before, "the caller's thread count is restored"


@pytest.mark.parametrize("workers", [1, 2])
def test_an_error_in_a_job_reaches_the_caller_unchanged(workers):
    with pytest.raises(HsixaiError, match="^job -1: negative$"):
        list(run_jobs(_threads_and_square, [2, -1], workers, torch.device("cpu")))


def _mark_then_wait(job: tuple[str, int]) -> int:
    """Job -1 fails at once; the others leave a file and take a moment (Executor.map cancels the jobs not yet
    started when its iterator stops early; the pool waits only for the ones running)."""
    directory, x = job
    if x < 0:
        raise HsixaiError("the first job failed")
    Path(directory, f"ran_{x}").touch()
    time.sleep(0.3)
    return x


def test_an_error_drops_the_jobs_not_yet_started(tmp_path):
    jobs = [(str(tmp_path), -1), *((str(tmp_path), x) for x in range(12))]
    with pytest.raises(HsixaiError, match="the first job failed"):
        list(run_jobs(_mark_then_wait, jobs, 2, torch.device("cpu")))
    ran = len(list(tmp_path.glob("ran_*")))
    assert ran < 12, f"{ran} of 12 later jobs ran after the first one failed"
