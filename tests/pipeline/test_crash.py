"""A stage killed mid-write (SIGKILL: no handler runs) leaves earlier outputs intact; the next repro recovers."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from ..helpers import edit_params
from .conftest import BIN, run

pytestmark = pytest.mark.pipeline

# Big enough that `prepare` spends about a second writing its staged cube, so the kill lands mid-write.
SIDE = 256
OUTPUTS = ("data/prepared", "figures/prepare")


def _hashes(repo: Path) -> dict[str, str]:
    return {
        str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
        for out in OUTPUTS
        for p in sorted((repo / out).rglob("*"))
        if p.is_file()
    }


def _leftovers(repo: Path) -> list[Path]:
    return [p for out in OUTPUTS for p in (repo / out).parent.glob(f".{Path(out).name}.*-*")]


def _staged_cube(repo: Path) -> Path | None:
    """prepare's staged cube once it holds more than its header, else None."""
    for path in (repo / "data").glob(".prepared.tmp-*/cube.npy"):
        try:
            if path.stat().st_size > 4096:
                return path
        except FileNotFoundError:  # swapped into place between the glob and the stat
            pass
    return None


def _kill_when_staging(repo: Path, cmd: list[str], timeout: float = 120.0) -> Path:
    """Start `cmd` in its own process group; SIGKILL the whole group once prepare's staged cube holds data."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.Popen(
        cmd, cwd=repo, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            staged = _staged_cube(repo)
            if staged:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                return staged
            time.sleep(0.005)
        pytest.fail(f"{' '.join(cmd)} never staged its cube (exit code {proc.poll()})")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_killed_stage_keeps_earlier_outputs_and_next_repro_recovers(dvc_repo):
    edit_params(dvc_repo, synthesize={"height": SIDE, "width": SIDE})
    run(["dvc", "repro", "prepare"], dvc_repo)
    before, lock_before = _hashes(dvc_repo), (dvc_repo / "dvc.lock").read_text()
    # New params, so prepare rewrites its outputs.
    edit_params(dvc_repo, data={"remove_bands": ["0-10", "57-63", "99-108", "145-162", "210-233"]})

    # The stage command killed mid-write: its staging never replaces the earlier outputs.
    staged = _kill_when_staging(dvc_repo, ["hsixai", "--no-progress", "prepare"])
    assert staged.parent.is_dir(), "the kill landed after the swap, not mid-write"
    # Until the stage runs again, its leftover staging must not be one `git add -A` away from git.
    untracked = run(["git", "status", "--porcelain", "--untracked-files=all"], dvc_repo).stdout
    assert staged.parent.name not in untracked
    assert _hashes(dvc_repo) == before
    cube = np.load(dvc_repo / "data/prepared/cube.npy", mmap_mode="r")
    assert cube.shape == (174, SIDE, SIDE) and np.isfinite(cube[:, ::37, ::37]).all()

    # `dvc repro` killed mid-write: DVC itself deletes a stage's cached outputs before running it,
    # so the earlier version comes back from the cache, byte for byte, and dvc.lock still describes it.
    staged = _kill_when_staging(dvc_repo, ["dvc", "repro", "prepare"])
    assert staged.parent.is_dir(), "the kill landed after the swap, not mid-write"
    assert (dvc_repo / "dvc.lock").read_text() == lock_before
    run(["dvc", "checkout", "prepare"], dvc_repo)
    assert _hashes(dvc_repo) == before

    out = run(["dvc", "repro", "prepare"], dvc_repo).stdout
    assert "Running stage 'prepare'" in out
    assert _leftovers(dvc_repo) == []
    assert np.load(dvc_repo / "data/prepared/cube.npy", mmap_mode="r").shape == (164, SIDE, SIDE)
    assert "up to date" in run(["dvc", "status", "prepare"], dvc_repo).stdout

    # The recovered outputs are exactly what an uninterrupted run writes.
    recovered = _hashes(dvc_repo)
    run(["dvc", "repro", "--force", "--single-item", "prepare"], dvc_repo)
    assert _hashes(dvc_repo) == recovered
