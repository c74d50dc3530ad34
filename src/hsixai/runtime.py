"""What every stage that runs a network shares: the device it runs on and its checkpoints.

Not a stage module: train, evaluate, attribute and the adapt stages import it
(tests/unit/test_stage_imports.py checks that no stage imports another). It
knows nothing of any particular network: a loader passes a `build` function
that makes the network its checkpoint's metadata describes.

A checkpoint is {"state_dict": tensors, "meta": plain values} written by
torch.save and read back with weights_only=True, so loading one never runs
pickled code; anything else (pickled code, a whole pickled module, a truncated
or foreign file, weights that do not fit their metadata) is refused in one line.
"""

from __future__ import annotations

import os
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .errors import HsixaiError


def resolve_device(setting: str, key: str) -> torch.device:
    """The torch device of a params setting ("auto", "cpu", "cuda" or "cuda:<i>").

    `key` is the params key the setting came from (e.g. "train.device" or
    "adapt.device"), named in the error when CUDA is asked for but absent.
    Under torchrun (LOCAL_RANK set) "cuda" is this rank's GPU.
    """
    if setting == "cuda" and not torch.cuda.is_available():
        raise HsixaiError(f"params: {key}: 'cuda' was asked for, but torch sees no CUDA device")
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(setting)


def save_checkpoint(path: Path, state_dict: dict[str, torch.Tensor], meta: dict) -> None:
    """Write tensors and plain metadata only, so that load_checkpoint reads them with weights_only=True."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state_dict, "meta": meta}, path)


def load_checkpoint(
    path: Path,
    build: Callable[[dict], nn.Module],
    device: torch.device | str = "cpu",
    *,
    written_by: str,
    missing_hint: str,
) -> tuple[nn.Module, dict]:
    """The network `build(meta)` makes, with the checkpoint's weights, on `device` in eval mode, and its metadata.

    `written_by` names the stage(s) whose checkpoints these are and
    `missing_hint` what to run when the file is absent; both go into the one-line
    errors (HsixaiError: the CLI prints it and exits 2).
    """
    if not path.is_file():
        raise HsixaiError(f"{path}: checkpoint not found ({missing_hint})")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise HsixaiError(
            f"{path}: refused: not a tensors-only checkpoint ({_unpickler_reason(exc)}); "
            f"only load checkpoints written by {written_by}"
        ) from None
    # truncated, empty, not a torch file; struct.error: bytes that the unpickler reads as a truncated opcode
    except (RuntimeError, OSError, EOFError, KeyError, ValueError, struct.error) as exc:
        raise HsixaiError(
            f"{path}: not a readable checkpoint ({_first_line(exc)}); expected one written by {written_by}"
        ) from None
    if not (
        isinstance(checkpoint, dict)
        and isinstance(checkpoint.get("state_dict"), dict)
        and isinstance(checkpoint.get("meta"), dict)
    ):
        found = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise HsixaiError(
            f"{path}: expected a checkpoint with 'state_dict' and 'meta' written by {written_by}, found {found}"
        )
    meta = checkpoint["meta"]
    try:
        net = build(meta)
        net.load_state_dict(checkpoint["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # meta lacks a key, or weights do not fit it
        raise HsixaiError(
            f"{path}: the weights do not fit the network its metadata describes "
            f"({_first_line(exc)}); expected a checkpoint written by {written_by}"
        ) from None
    return net.to(device).eval(), meta


def _unpickler_reason(exc: Exception) -> str:
    """The one line of torch's multi-paragraph weights_only refusal that names the offending object."""
    text = str(exc)
    reason = text.split("WeightsUnpickler error:", 1)[-1].split("Check the documentation", 1)[0]
    return " ".join(reason.split()).split(". ")[0] or "unreadable"


def _first_line(exc: Exception) -> str:
    """An exception's message as one short line (load_state_dict's lists every key on its own line)."""
    text = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    return (text[:200] + "...") if len(text) > 200 else text
