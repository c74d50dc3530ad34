"""A temporary git + DVC repository holding this project's pipeline and a tiny scene."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import REPO, TINY_TRAIN, tiny_params
from ..helpers import write_params

BIN = Path(sys.executable).parent


def run(cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """`cmd` in `cwd` with the venv first on PATH; `env` entries override (None removes a variable)."""
    base = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # test the default backend
    base = {
        **base,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        # A fixed identity for the test repository's own commits; the user's git config is untouched.
        "GIT_AUTHOR_NAME": "hsixai tests",
        "GIT_AUTHOR_EMAIL": "tests@hsixai.invalid",
        "GIT_COMMITTER_NAME": "hsixai tests",
        "GIT_COMMITTER_EMAIL": "tests@hsixai.invalid",
    }
    for key, value in (env or {}).items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    env = base
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def dvc_repo(tmp_path: Path) -> Path:
    return make_dvc_repo(tmp_path / "repo")


# The stages of one (model, patch_size) experiment; the domain-adaptation stages are a pipeline of their own.
EXPERIMENT = "consistency"


@pytest.fixture(scope="session")
def built_repo(tmp_path_factory) -> Path:
    """The tiny experiment after one `dvc repro` (about 30 s idle; shared: use `built_copy` to change it).

    That repro's stdout is in `first_repro_output(built_repo)`.
    """
    repo = make_dvc_repo(tmp_path_factory.mktemp("built") / "repo")
    out = run(["dvc", "repro", EXPERIMENT], repo).stdout
    (repo.parent / "first_repro.out").write_text(out)
    return repo


def first_repro_output(repo: Path) -> str:
    """The stdout of the `dvc repro` that built `built_repo`."""
    return (repo.parent / "first_repro.out").read_text()


@pytest.fixture
def built_copy(built_repo: Path, tmp_path: Path) -> Path:
    """A private copy of `built_repo`, to change: far cheaper than building the pipeline again."""
    return copy_repo(built_repo, tmp_path / "repo")


def copy_repo(source: Path, dest: Path) -> Path:
    """`source` (git, DVC cache, outputs, mlflow.db) copied to `dest`, its MLflow store moved along with it.

    The default MLflow backend records its artifact locations as absolute paths (src/hsixai/tracking.py):
    unchanged, the copy's runs would log their artifacts into `source`.
    """
    shutil.copytree(source, dest, symlinks=True)
    db = dest / "mlflow.db"
    if db.exists():
        with contextlib.closing(sqlite3.connect(db)) as con, con:
            for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri")):
                con.execute(f"UPDATE {table} SET {column} = replace({column}, ?, ?)", (str(source), str(dest)))
    return dest


def make_dvc_repo(repo: Path) -> Path:
    """A fresh git + DVC repository at `repo` with this project's pipeline and tiny params, committed."""
    repo.mkdir(parents=True)
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(REPO / name, repo)
    shutil.copytree(REPO / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    write_params(repo, tiny_params(patch_size=5, train=TINY_TRAIN))
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "tiny pipeline"], repo)
    return repo
