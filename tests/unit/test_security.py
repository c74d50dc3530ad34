"""Nothing listens beyond this machine unless asked, no secret is committed, no checkpoint runs code."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from hsixai.adapt.common import load_segmenter, save_segmenter
from hsixai.adapt.models import Segmenter
from hsixai.errors import HsixaiError
from hsixai.models import build_model
from hsixai.models.inference import load_classifier
from hsixai.runtime import save_checkpoint

from ..conftest import REPO


# --------------------------------------------------------------------------- network binding
def _ui_command(*args: str, env: dict[str, str] | None = None) -> str:
    """The `mlflow ui` line `make ui` would run (make -n: nothing is run)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    proc = subprocess.run(
        ["make", "-n", "-C", str(REPO), "ui", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=True,
    )
    return next(line for line in proc.stdout.splitlines() if line.startswith("mlflow ui"))


def test_make_ui_binds_to_localhost_unless_told_on_the_command_line():
    assert "--host 127.0.0.1 --port 5000" in _ui_command()
    assert "--host 0.0.0.0 --port 5001" in _ui_command("HOST=0.0.0.0", "PORT=5001")
    # Some shells export HOST as the machine's name; that must not open the UI to the network.
    assert "--host 127.0.0.1 " in _ui_command(env={"HOST": "0.0.0.0"})


@pytest.mark.pipeline
def test_sweep_mlflow_server_listens_on_localhost_only(tmp_path, monkeypatch):
    psutil = pytest.importorskip("psutil")
    from hsixai.paths import Paths
    from hsixai.sweep import mlflow_server

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with mlflow_server(Paths.at(tmp_path), "hsixai") as uri:
        port = int(uri.rsplit(":", 1)[1])
        listening = {
            c.laddr.ip
            for c in psutil.net_connections("tcp")
            if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
        }
    assert uri.startswith("http://127.0.0.1:")
    assert listening == {"127.0.0.1"}


# --------------------------------------------------------------------------- committed secrets
SECRET_PATTERNS = {
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36}\b"),
    "credential in a config line": re.compile(
        r"^\s*(?:access_key_id|secret_access_key|session_token|password|account_key|sas_token|"
        r"gdrive_client_secret|aws_secret_access_key)\s*=\s*\S",
        re.IGNORECASE | re.MULTILINE,
    ),
}
CREDENTIAL_KEYS = {
    "access_key_id",
    "secret_access_key",
    "session_token",
    "password",
    "account_key",
    "sas_token",
    "connection_string",
    "gdrive_client_secret",
    "key_file",
    "keyfile",
}


def _tracked_files() -> list[Path]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [REPO / name for name in out.split("\0") if name]


def test_no_tracked_file_holds_credentials():
    files = _tracked_files()
    assert REPO / "pyproject.toml" in files
    found = []
    for path in files:
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        text = path.read_bytes().decode("utf-8", errors="ignore")
        found += [
            f"{path.relative_to(REPO)}: {what}" for what, pattern in SECRET_PATTERNS.items() if pattern.search(text)
        ]
    assert found == []


def test_committed_dvc_config_names_no_credentials():
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc/config")
    assert config.sections(), ".dvc/config is missing or empty"
    keys = {key for section in config.sections() for key in config[section]}
    assert keys & CREDENTIAL_KEYS == set()
    # DVC's own .dvc/.gitignore keeps the per-user config, where credentials belong, out of git.
    assert "/config.local" in (REPO / ".dvc/.gitignore").read_text().split()


# --------------------------------------------------------------------------- checkpoints
def _run_code(marker: str) -> None:  # what a malicious checkpoint would call on load
    Path(marker).write_text("code ran")


class _Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return _run_code, (self.marker,)


# The patch classifiers' and the adapt segmenters' loaders are one loader (runtime.load_checkpoint): each case
# runs through both, and must end in one HsixaiError line naming the file (the CLI prints it and exits 2).
LOADERS = {"classifier": (load_classifier, "the train stage"), "segmenter": (load_segmenter, "the adapt stages")}


def _refused(loader: str, path: Path) -> str:
    load, written_by = LOADERS[loader]
    with pytest.raises(HsixaiError) as err:
        load(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and written_by in message
    return message


def _good_checkpoint(loader: str, path: Path) -> None:
    if loader == "classifier":
        meta = {"model": "cnn2d", "n_bands": 4, "n_classes": 3, "patch_size": 5, "n_comps": 2, "seed": 0}
        save_checkpoint(path, build_model("cnn2d", 4, 3, 5, 2).state_dict(), meta)
    else:
        save_segmenter(path, Segmenter(4, 3), {"n_bands": 4, "n_classes": 3, "feature_map": "linear", "seed": 0})


@pytest.mark.parametrize("loader", LOADERS)
def test_load_checkpoint_refuses_pickled_code(loader, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "instance_0.pt"
    torch.save({"state_dict": {}, "meta": _Payload(marker)}, path)
    message = _refused(loader, path)
    assert "refused: not a tensors-only checkpoint" in message
    assert "_run_code" in message  # names what was refused
    assert not marker.exists()


@pytest.mark.parametrize("loader", LOADERS)
def test_load_checkpoint_refuses_a_whole_pickled_model(loader, tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(3, 2), path)  # the common unsafe habit: the module object, not its state dict
    assert "refused: not a tensors-only checkpoint" in _refused(loader, path)


@pytest.mark.parametrize("loader", LOADERS)
def test_good_checkpoints_load_and_bad_files_are_one_line_errors(loader, tmp_path):
    good = tmp_path / "good.pt"
    _good_checkpoint(loader, good)
    net, meta = LOADERS[loader][0](good)
    assert meta["seed"] == 0 and not net.training
    data = good.read_bytes()
    unreadable, unpickled = "not a readable checkpoint", "refused: not a tensors-only checkpoint"
    cases = {
        "truncated.pt": (data[: len(data) // 2], unreadable),
        "empty.pt": (b"", unreadable),
        "text.pt": (b"not a checkpoint at all\n", unpickled),
    }  # read as a legacy pickle, whose opcodes fail
    for name, (content, expected) in cases.items():
        (tmp_path / name).write_bytes(content)
        assert expected in _refused(loader, tmp_path / name), name
    torch.save({"weights": torch.zeros(2)}, tmp_path / "no_meta.pt")
    assert "expected a checkpoint with 'state_dict' and 'meta'" in _refused(loader, tmp_path / "no_meta.pt")
    assert "checkpoint not found" in _refused(loader, tmp_path / "missing.pt")


@pytest.mark.parametrize("loader", LOADERS)
def test_weights_that_do_not_fit_their_metadata_are_one_line_errors(loader, tmp_path):
    path = tmp_path / "instance_0.pt"
    _good_checkpoint(loader, path)
    checkpoint = torch.load(path, weights_only=True)
    torch.save({"state_dict": checkpoint["state_dict"], "meta": {**checkpoint["meta"], "n_bands": 7}}, path)
    assert "the weights do not fit the network its metadata describes" in _refused(loader, path)
    torch.save({"state_dict": checkpoint["state_dict"], "meta": {"seed": 0}}, path)  # meta lacks the shape keys
    assert "the weights do not fit the network its metadata describes" in _refused(loader, path)
