"""Round trips through real DVC remotes: push everything, lose every local copy, pull it back byte for byte."""

from __future__ import annotations

import configparser
import hashlib
import shutil
import socket
from pathlib import Path

import pytest
import yaml

from ..conftest import REPO
from .conftest import EXPERIMENT, copy_repo, run

pytestmark = pytest.mark.pipeline

BUCKET = "hsixai-test"
FAKE_KEYS = {"access_key_id": "hsixai-test-access-key", "secret_access_key": "hsixai-test-secret-not-a-real-key"}


def cached_outputs(repo: Path) -> list[str]:
    """Every output dvc.lock records and DVC caches (and so pushes): `cache: false` metrics live in git instead."""
    uncached = set()
    for stage in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"].values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                if isinstance(entry, dict):
                    path, opts = next(iter(entry.items()))
                    if not (opts or {}).get("cache", True):
                        uncached.add(path)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return [
        out["path"] for stage in lock["stages"].values() for out in stage.get("outs", []) if out["path"] not in uncached
    ]


def file_hashes(repo: Path, outputs: list[str]) -> dict[str, str]:
    """sha256 of every file under every output, keyed by its path in the repository."""
    hashes = {}
    for out in outputs:
        root = repo / out
        assert root.exists(), f"{out} is missing"
        for path in sorted([root] if root.is_file() else root.rglob("*")):
            if path.is_file():
                hashes[str(path.relative_to(repo))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


@pytest.fixture
def repo(built_repo: Path, tmp_path: Path) -> Path:
    """A private copy of the built tiny pipeline, with the project's committed .dvc/config and raw data `dvc add`-ed."""
    repo = tmp_path / "repo"
    copy_repo(built_repo, repo)
    shutil.copy(REPO / ".dvc/config", repo / ".dvc/config")
    # A user's own acquisition, tracked with `dvc add` (a .dvc file) rather than by a stage.
    shutil.copytree(repo / "data/synthetic", repo / "data/prisma")
    run(["dvc", "add", "-q", "data/prisma"], repo)
    return repo


def round_trip(repo: Path, *remote: str) -> None:
    """Push, wipe the cache and every tracked output, pull; the workspace must come back identical and clean."""
    tracked = cached_outputs(repo) + ["data/prisma"]
    # Everything that was built: the experiment's stages and the .dvc file. A bare `dvc push` (make push)
    # would also want the outputs of the domain-adaptation stages, which this repository never ran.
    targets = ["--with-deps", EXPERIMENT, "data/prisma.dvc"]
    before = file_hashes(repo, tracked)
    assert len(before) > 20

    run(["dvc", "push", *remote, *targets], repo)
    shutil.rmtree(repo / ".dvc/cache")
    for out in tracked:
        path = repo / out
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert "deleted" in run(["dvc", "status", EXPERIMENT], repo).stdout

    run(["dvc", "pull", *remote, *targets], repo)
    assert file_hashes(repo, tracked) == before
    assert "Data and pipelines are up to date" in run(["dvc", "status", EXPERIMENT, "data/prisma.dvc"], repo).stdout
    assert "in sync" in run(["dvc", "status", "--cloud", *remote, *targets], repo).stdout


def test_default_local_remote_round_trip(repo, tmp_path):
    # The committed url is relative to .dvc/: a directory beside the clone, shared by clones side by side.
    # Not the default remote (see .dvc/config): queued experiments would try to fetch from it.
    assert "local" in run(["dvc", "remote", "list"], repo).stdout
    assert "No default remote set" in run(["dvc", "remote", "default"], repo, check=False).stdout
    store = tmp_path / "hsixai-dvc-remote"
    assert not store.exists()
    round_trip(repo, "-r", "local")
    assert any(p.is_file() for p in (store / "files/md5").rglob("*"))


# --------------------------------------------------------------------------- S3 (moto on 127.0.0.1)
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_endpoint():
    """A real S3-compatible HTTP server (moto) on 127.0.0.1 with an empty bucket; stopped afterwards."""
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        url = f"http://127.0.0.1:{port}"
        credentials = {f"aws_{key}": value for key, value in FAKE_KEYS.items()}
        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", **credentials)
        s3.create_bucket(Bucket=BUCKET)
        yield url, s3
    finally:
        server.stop()


def test_s3_remote_round_trip_with_credentials_in_config_local(repo, s3_endpoint):
    url, s3 = s3_endpoint
    run(["dvc", "remote", "add", "s3", f"s3://{BUCKET}/store"], repo)
    run(["dvc", "remote", "modify", "s3", "endpointurl", url], repo)
    run(["dvc", "remote", "modify", "s3", "region", "us-east-1"], repo)
    for key, value in FAKE_KEYS.items():
        run(["dvc", "remote", "modify", "--local", "s3", key, value], repo)

    local = configparser.ConfigParser()
    local.read(repo / ".dvc/config.local")
    section = local["'remote \"s3\"'"]  # DVC writes the quotes into the section name
    assert {k: section[k] for k in FAKE_KEYS} == FAKE_KEYS
    committed = (repo / ".dvc/config").read_text()
    assert url in committed
    assert not any(key in committed or value in committed for key, value in FAKE_KEYS.items())
    assert run(["git", "check-ignore", ".dvc/config.local"], repo).returncode == 0

    round_trip(repo, "-r", "s3")
    stored = s3.list_objects_v2(Bucket=BUCKET, Prefix="store/")
    assert stored["KeyCount"] > 0
