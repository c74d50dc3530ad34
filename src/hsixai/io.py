"""Arrays across stage boundaries: validated reads, streamed writes, atomic outputs.

A stage writes everything into hidden staging directories beside its outputs
and swaps them into place only after the last byte is written, so a failed or
killed stage never leaves a half-written output and earlier good outputs stay.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from .checks import check_array, check_cube
from .errors import HsixaiError


# --------------------------------------------------------------------------- atomic outputs
@contextlib.contextmanager
def staged_outputs(*targets: Path, files: tuple[Path, ...] = ()) -> Iterator[list[Path]]:
    """Yield one empty staging directory per target directory, then one staging path per target file.

    On normal exit each staging directory (or file, which must then exist)
    replaces its target; on an exception the staging paths are removed and the
    targets are left untouched.
    """
    staging = []
    for target in (*targets, *files):
        target.parent.mkdir(parents=True, exist_ok=True)
        for pattern in (f".{target.name}.tmp-*", f".{target.name}.old-*"):  # left by a killed run
            for stale in target.parent.glob(pattern):
                _remove(stale)
        staging.append(target.parent / f".{target.name}.tmp-{os.getpid()}")
    for tmp in staging[: len(targets)]:
        tmp.mkdir()
    try:
        yield staging
    except BaseException:
        for tmp in staging:
            _remove(tmp)
        raise
    for tmp, target in zip(staging, (*targets, *files)):
        _fsync(tmp)
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    for f in path.rglob("*") if path.is_dir() else [path]:
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


def write_json(path: Path, obj: Any) -> None:
    """JSON with NaN and Inf written as null (bare NaN is not JSON, and DVC and MLflow choke on it)."""
    path.write_text(json.dumps(_finite(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- reading .npy
@dataclass(frozen=True)
class NpyInfo:
    """The header of a .npy file, checked against the file size."""

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int  # byte offset of the data


def inspect_npy(path: Path, what: str) -> NpyInfo:
    """Read and check a .npy header without loading the data."""
    if not path.is_file():
        raise HsixaiError(f"{path}: {what} not found")
    try:
        with open(path, "rb") as fh:
            version = npy_format.read_magic(fh)
            reader = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}.get(version)
            if reader is None:
                raise ValueError(f"unsupported .npy version {version}")
            shape, fortran_order, dtype = reader(fh)
            offset = fh.tell()
    except ValueError as exc:
        raise HsixaiError(f"{path}: {what} is not a readable .npy file ({exc})") from None
    if dtype.hasobject or dtype.fields is not None:
        raise HsixaiError(f"{path}: {what}: expected a plain numeric array, found dtype {dtype}")
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = path.stat().st_size
    if actual < expected:
        raise HsixaiError(
            f"{path}: {what} is truncated: header says shape {shape} {dtype} ({expected} bytes), file has {actual}"
        )
    return NpyInfo(path, tuple(shape), dtype, fortran_order, offset)


class BandReader:
    """Reads one band [H, W] at a time from a C-ordered [bands, H, W] .npy cube.

    Plain file reads rather than a memory map: mapped pages count towards the
    process's resident memory, and a full PRISMA cube is 1.24 GB.
    """

    def __init__(self, info: NpyInfo):
        check_cube(info, str(info.path), "[bands, H, W]")
        if info.fortran_order:
            raise HsixaiError(
                f"{info.path}: expected a C-ordered array, found Fortran order (save it with np.ascontiguousarray)"
            )
        self.info = info
        self.n_bands, self.height, self.width = info.shape
        self._band_bytes = self.height * self.width * info.dtype.itemsize
        self._fh = open(info.path, "rb")

    def read(self, band: int) -> np.ndarray:
        """Band `band` as an array [H, W] of the file's dtype."""
        self._fh.seek(self.info.offset + band * self._band_bytes)
        data = np.fromfile(self._fh, dtype=self.info.dtype, count=self.height * self.width)
        return data.reshape(self.height, self.width)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> BandReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_npy(
    path: Path,
    what: str,
    ndim: int | None = None,
    kinds: str = "fiub",
    shape: tuple[int, ...] | None = None,
    mmap: bool = False,
) -> np.ndarray:
    """Load a .npy file with its dimensions, dtype kind and shape checked."""
    check_array(inspect_npy(path, what), f"{path}: {what}", ndim, kinds, shape)
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


# --------------------------------------------------------------------------- writing .npy
class NpyStreamWriter:
    """Writes a C-ordered .npy array one leading-axis slice at a time.

    Used for cubes that must never be held in memory twice: [bands, H, W] is
    written band by band, each band straight after it is computed.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype | type):
        self.path = path
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self._written = 0
        self._fh = open(path, "wb")
        npy_format.write_array_header_2_0(
            self._fh, {"descr": npy_format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        )

    def write(self, block: np.ndarray) -> None:
        """Append `block` of shape [n, *shape[1:]] (or shape[1:] for a single slice)."""
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape == self.shape[1:]:
            block = block[None]
        if block.shape[1:] != self.shape[1:]:
            raise ValueError(f"block shape {block.shape} does not fit array shape {self.shape}")
        block.tofile(self._fh)
        self._written += block.shape[0]

    def close(self) -> None:
        self._fh.close()
        if self._written != self.shape[0]:
            raise ValueError(f"{self.path}: wrote {self._written} of {self.shape[0]} slices")

    def __enter__(self) -> NpyStreamWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._fh.close()
