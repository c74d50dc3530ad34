"""A temporary git + DVC repository holding this project's pipeline and a tiny scene."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import REPO, TINY_TRAIN, tiny_params, write_params

BIN = Path(sys.executable).parent


def run(cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """`cmd` in `cwd` with the venv first on PATH; `env` entries override (None removes a variable)."""
    base = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # test the default backend
    base = {**base, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
            # A fixed identity for the test repository's own commits; the user's git config is untouched.
            "GIT_AUTHOR_NAME": "hsixai tests", "GIT_AUTHOR_EMAIL": "tests@hsixai.invalid",
            "GIT_COMMITTER_NAME": "hsixai tests", "GIT_COMMITTER_EMAIL": "tests@hsixai.invalid"}
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
    """The tiny experiment after one `dvc repro` (about 30 s idle; shared: copy it before changing it)."""
    repo = make_dvc_repo(tmp_path_factory.mktemp("built") / "repo")
    run(["dvc", "repro", EXPERIMENT], repo)
    return repo


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
