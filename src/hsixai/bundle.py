"""A model bundle: everything `hsixai predict` needs to apply one trained (model, patch_size) point.

A bundle is a directory, self-contained (no path back into a repository), and
never unpickles code:

    bundle.json        plain JSON metadata (BundleMeta below)
    instance_<i>.pt    each instance's checkpoint as the train stage wrote it: tensors and plain values,
                       loaded with weights_only=True (src/hsixai/runtime.py)

What the metadata holds is what turns a raw acquisition into the network's
input exactly as the training pipeline did: the raw band count and the kept
bands' indices (prepare's data.remove_bands), their wavelengths, each kept
band's raw min and max over the TRAINING scene (prepare's min-max scaling, so a
new acquisition is scaled with the training scene's range, not its own), the
per-band mean and std over the train pixels (split; PatchSampler standardises
with them and pads the scene border with zeros, i.e. with the train mean), and
the value a pixel without data takes.

Written by the `bundle` stage for the workspace point, or built from any DVC
experiment's commit (`from_revision`, through DVC's file system: nothing is
checked out). The MLflow registry stores this directory as a registered
model's artifacts.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from numpy.lib import format as npy_format
from torch import nn

from .errors import HsixaiError
from .io import write_json
from .models.inference import load_classifier
from .paths import BUNDLE_META, Paths, instance_checkpoint

FORMAT = "hsixai-bundle/1"
PROBABILITIES = "the mean over the instances of each instance's softmax probabilities"
# Where a pixel without data (raw nodata.npy, or NaN/Inf in a band) gets its value, in scaled units.
FILL_FROM_TRAINING_SCENE = "the training scene's fill: each band's mean over the pixels with data (prepare)"
FILL_TRAIN_MEAN = "each band's mean over the train pixels: standardised to 0, as the zero padding at the border"


@dataclass(frozen=True)
class BundleMeta:
    """bundle.json. Lists are per kept band, in the order of the network's input channels."""

    format: str
    model: str  # a name in hsixai.models.MODELS
    patch_size: int
    n_instances: int
    class_names: list[str]
    raw_bands: int  # the training scene's band count before band removal
    bands: list[int]  # kept bands' indices in the raw cube
    wavelengths: list[float]  # kept bands' centres
    wavelength_unit: str  # "nm", or "band number" when the training scene had no wavelengths
    band_min: list[float]  # raw min over the training scene's pixels with data (prepare)
    band_max: list[float]  # raw max; a band with max == min was written as zeros (a dead band)
    mean: list[float]  # standardisation over the train pixels, in scaled units (split)
    std: list[float]
    fill: list[float]  # the scaled value of a pixel without data
    fill_method: str
    probabilities: str
    source: dict  # where the point came from: git commit or experiment, params

    @property
    def n_bands(self) -> int:
        return len(self.bands)

    def scale(self, raw: np.ndarray) -> np.ndarray:
        """Raw kept bands [bands, ...] -> float32 in [0, 1], as prepare scales each band (dead bands: 0).

        The same float32 arithmetic as prepare: (x - min) / (max - min) with the difference taken in float64
        and then rounded, so the training scene's bundle reproduces its prepared cube bit for bit.
        """
        raw = np.asarray(raw, dtype=np.float32)
        lo = np.asarray(self.band_min, dtype=np.float64)
        hi = np.asarray(self.band_max, dtype=np.float64)
        live = hi > lo
        span = np.where(live, hi - lo, 1.0).astype(np.float32)
        shape = (-1,) + (1,) * (raw.ndim - 1)
        out = (raw - lo.astype(np.float32).reshape(shape)) / span.reshape(shape)
        np.clip(out, 0.0, 1.0, out=out)
        out[~live] = 0.0
        return out


@dataclass
class Bundle:
    directory: Path
    meta: BundleMeta
    models: list[nn.Module]


# --------------------------------------------------------------------------- reading
def read_meta(directory: Path) -> BundleMeta:
    """bundle.json of `directory`, checked (one-line errors naming the file)."""
    path = directory / BUNDLE_META
    if not directory.is_dir():
        raise HsixaiError(f"{directory}: model bundle not found (expected a directory with {BUNDLE_META})")
    if not path.is_file():
        raise HsixaiError(f"{path}: not found: expected a model bundle's metadata (hsixai bundle stage)")
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HsixaiError(f"{path}: not a readable JSON file ({' '.join(str(exc).split())})") from None
    fields = BundleMeta.__dataclass_fields__
    if not isinstance(content, dict) or content.get("format") != FORMAT or not set(fields) <= set(content):
        found = content.get("format") if isinstance(content, dict) else type(content).__name__
        missing = sorted(set(fields) - set(content)) if isinstance(content, dict) else []
        raise HsixaiError(
            f"{path}: expected a model bundle's metadata ({FORMAT}), found format {found!r}"
            + (f", missing {missing[:4]}" if missing else "")
        )
    meta = BundleMeta(**{k: content[k] for k in fields})
    n = meta.n_bands
    for key in ("wavelengths", "band_min", "band_max", "mean", "std", "fill"):
        values = getattr(meta, key)
        if not isinstance(values, list) or len(values) != n or not all(isinstance(v, (int, float)) for v in values):
            raise HsixaiError(f"{path}: '{key}': expected {n} numbers (one per kept band), found {str(values)[:60]}")
    if not all(isinstance(b, int) and 0 <= b < meta.raw_bands for b in meta.bands):
        raise HsixaiError(f"{path}: 'bands': expected indices 0..{meta.raw_bands - 1}, found {meta.bands[:5]}...")
    if not (isinstance(meta.n_instances, int) and meta.n_instances >= 1):
        raise HsixaiError(f"{path}: 'n_instances': expected a positive integer, found {meta.n_instances!r}")
    return meta


def load_bundle(directory: Path, device: torch.device | str = "cpu") -> Bundle:
    """The bundle's metadata and its instances in eval mode, each checked against the metadata."""
    meta = read_meta(directory)
    models = []
    for i in range(meta.n_instances):
        path = instance_checkpoint(directory, i)
        model, ckpt = load_classifier(path, device)
        found = (ckpt.get("model"), ckpt.get("patch_size"), ckpt.get("n_bands"), ckpt.get("n_classes"))
        expected = (meta.model, meta.patch_size, meta.n_bands, len(meta.class_names))
        if found != expected:
            raise HsixaiError(
                f"{path}: expected a checkpoint of (model, patch size, bands, classes) {expected} as "
                f"{directory / BUNDLE_META} says, found {found}"
            )
        models.append(model)
    return Bundle(directory, meta, models)


# --------------------------------------------------------------------------- writing
Opener = Callable[[str], AbstractContextManager[IO[bytes]]]


def write_bundle(out: Path, paths: Paths, open_file: Opener, instances: list[int], source: dict) -> BundleMeta:
    """Write a bundle of the point's `instances` (indices of models/instance_<i>.pt) into the (empty, staging)
    directory `out`; in the bundle they are numbered 0, 1, ... in that order (source["instances"] keeps theirs).

    `open_file(relative path)` opens a file of the point's repository state (the workspace, or a commit
    through DVC) in binary mode; `paths` names the files relative to the repository root.
    """
    rel = lambda p: str(p.relative_to(paths.root))  # noqa: E731
    prepared, split = paths.prepared_files(), paths.split_files()
    prep_meta = json.loads(_read(open_file, rel(prepared.meta)))
    bands = _npy(open_file, rel(prepared.bands))
    wavelengths = _npy(open_file, rel(prepared.wavelengths))
    band_range = _npy(open_file, rel(prepared.band_range))
    with np.load(io.BytesIO(_read(open_file, rel(split.band_stats)))) as stats:
        mean, std = stats["mean"], stats["std"]
    nodata = _npy(open_file, rel(prepared.nodata)) if prep_meta.get("nodata_pixels") else None
    if nodata is not None:  # the value prepare gave those pixels, read back from the cube (one pixel per band)
        fill = _pixel(open_file, rel(prepared.cube), np.flatnonzero(nodata.ravel())[0])
        fill_method = FILL_FROM_TRAINING_SCENE
    else:
        fill, fill_method = mean, FILL_TRAIN_MEAN
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_meta = None
    for i, instance in enumerate(instances):
        target = instance_checkpoint(out, i)
        try:
            with open_file(rel(paths.checkpoint(instance))) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except FileNotFoundError:
            missing = rel(paths.checkpoint(instance))
            raise HsixaiError(f"{missing}: checkpoint not found (run the train stage)") from None
        _, checkpoint_meta = load_classifier(target)  # refuses anything but a tensors-only checkpoint
    meta = BundleMeta(
        format=FORMAT,
        model=checkpoint_meta["model"],
        patch_size=int(checkpoint_meta["patch_size"]),
        n_instances=len(instances),
        class_names=list(prep_meta["class_names"]),
        raw_bands=int(prep_meta["raw_bands"]),
        bands=[int(b) for b in bands],
        wavelengths=[float(w) for w in wavelengths],
        wavelength_unit=str(prep_meta["wavelength_unit"]),
        band_min=[float(v) for v in band_range[0]],
        band_max=[float(v) for v in band_range[1]],
        mean=[float(v) for v in mean],
        std=[float(v) for v in std],
        fill=[float(v) for v in fill],
        fill_method=fill_method,
        probabilities=PROBABILITIES,
        source={**source, "instances": list(instances)},
    )
    write_json(out / BUNDLE_META, asdict(meta))
    read_meta(out)  # what was written reads back
    return meta


def workspace_opener(paths: Paths) -> Opener:
    return lambda rel: open(paths.root / rel, "rb")


def revision_opener(paths: Paths, rev: str) -> Opener:
    """Files of commit `rev` (e.g. a DVC experiment's), DVC outputs read from the cache: nothing checked out."""
    from dvc.api import DVCFileSystem

    fs = DVCFileSystem(str(paths.root), rev=rev)
    return lambda rel: fs.open(rel, mode="rb")


def _read(open_file: Opener, rel: str) -> bytes:
    try:
        with open_file(rel) as fh:
            return fh.read()
    except FileNotFoundError:
        raise HsixaiError(f"{rel}: not found; a bundle needs the point's prepare, split and train outputs") from None


def _npy(open_file: Opener, rel: str) -> np.ndarray:
    return np.load(io.BytesIO(_read(open_file, rel)), allow_pickle=False)


def _pixel(open_file: Opener, rel: str, flat_index: int) -> np.ndarray:
    """One pixel's spectrum [bands] of a [bands, H, W] .npy cube, one small read per band."""
    with open_file(rel) as fh:
        version = npy_format.read_magic(fh)
        read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, _, dtype = read_header(fh)
        offset = fh.tell()
        n_bands, height, width = shape
        out = np.empty(n_bands, dtype=dtype)
        for b in range(n_bands):
            fh.seek(offset + (b * height * width + flat_index) * dtype.itemsize)
            out[b] = np.frombuffer(fh.read(dtype.itemsize), dtype=dtype)[0]
    return out


def describe(meta: BundleMeta) -> dict[str, Any]:
    """What a map's metadata says of the model that made it."""
    return {
        "model": meta.model,
        "patch_size": meta.patch_size,
        "instances": meta.n_instances,
        "probabilities": meta.probabilities,
        **{k: v for k, v in meta.source.items() if isinstance(v, (str, int, float))},
    }


# --------------------------------------------------------------------------- a DVC experiment's point
def experiment_commit(paths: Paths, name: str) -> str:
    """The git commit of DVC experiment `name` (its ref refs/exps/.../<name>)."""
    proc = subprocess.run(
        ["git", "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps"],
        cwd=paths.root,
        capture_output=True,
        text=True,
    )
    found = [  # refs/exps/<baseline>/<name>; refs/exps/exec/ holds DVC's own bookkeeping
        line.split()[0]
        for line in proc.stdout.splitlines()
        if line.rsplit("/", 1)[-1] == name and not line.split()[1].startswith("refs/exps/exec/")
    ]
    if len(found) != 1:
        raise HsixaiError(
            f"DVC experiment {name!r} (the selection's recommended point): expected one experiment of that name "
            f"in this repository, found {len(found)} (`dvc exp list`)"
        )
    return found[0]


def bundle_of_experiment(paths: Paths, name: str, rev: str, out: Path) -> BundleMeta:
    """The model bundle of a DVC experiment's point, from its commit and the DVC cache (nothing checked out)."""
    import yaml

    opener = revision_opener(paths, rev)
    with opener(paths.params_name) as fh:
        instances = int(yaml.safe_load(fh.read())["train"]["instances"])
    return write_bundle(out, paths, opener, list(range(instances)), {"experiment": name, "git_commit": rev})
