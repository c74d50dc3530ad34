"""params.yaml -> typed, validated dataclasses.

Every stage loads the whole file strictly, so a misspelt key anywhere fails
before any work with a message that names the key and suggests the right one.
"""

from __future__ import annotations

import copy
import difflib
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import HsixaiError

CROP_NAMES = ["durum wheat", "oranges", "permanent grassland", "rice", "sunflower", "olives"]
# PRISMA's 234 bands -> the 174 used in the published experiments (inclusive ranges).
PRISMA_REMOVED_BANDS = ["0-10", "57-63", "145-162", "210-233"]
MAX_BAND_INDEX = 100_000  # far beyond any imaging spectrometer; stops "0-9999999999" from eating memory
MAX_CLASSES = 127  # labels are stored as int8 with -1 for unlabelled


@dataclass(frozen=True)
class SynthesizeConfig:
    """The synthetic PRISMA-like scene (the embedded default data set)."""

    height: int = 160
    width: int = 160
    bands: int = 234
    # Sub-pixels per pixel side: parcel edges fall inside pixels, which makes mixed pixels.
    subpixels: int = 3
    min_parcel: int = 3  # smallest parcel side, pixels
    max_parcel: int = 16  # parcels larger than this are always split, pixels
    labelled_fraction: float = 0.8  # share of crop parcels that carry ground truth
    test_fraction: float = 0.5  # share of labelled parcels that go to the test mask

    def __post_init__(self) -> None:
        _check(
            self.height >= 16 and self.width >= 16,
            "synthesize.height/width",
            "at least 16",
            f"{self.height} x {self.width}",
        )
        _check(self.bands >= 8, "synthesize.bands", "at least 8", self.bands)
        _check(1 <= self.subpixels <= 8, "synthesize.subpixels", "1..8", self.subpixels)
        _check(
            2 <= self.min_parcel <= self.max_parcel,
            "synthesize.min_parcel/max_parcel",
            "2 <= min_parcel <= max_parcel",
            f"{self.min_parcel}, {self.max_parcel}",
        )
        _check(0 < self.labelled_fraction <= 1, "synthesize.labelled_fraction", "in (0, 1]", self.labelled_fraction)
        _check(0 < self.test_fraction < 1, "synthesize.test_fraction", "in (0, 1)", self.test_fraction)


@dataclass(frozen=True)
class DataConfig:
    """Where the raw acquisition lives and how it is prepared."""

    raw_dir: str = "data/synthetic"
    class_names: list[str] = field(default_factory=lambda: list(CROP_NAMES))
    # Band indices to drop: integers or inclusive ranges written "a-b".
    remove_bands: list[int | str] = field(default_factory=lambda: list(PRISMA_REMOVED_BANDS))

    def __post_init__(self) -> None:
        _check(
            2 <= len(self.class_names) <= MAX_CLASSES,
            "data.class_names",
            f"2..{MAX_CLASSES} classes",
            len(self.class_names),
        )
        _check(
            len(set(self.class_names)) == len(self.class_names), "data.class_names", "unique names", self.class_names
        )
        self.removed_band_indices()  # validates the syntax early

    def removed_band_indices(self) -> list[int]:
        """The band list expanded to sorted unique indices."""
        out: set[int] = set()
        for item in self.remove_bands:
            if isinstance(item, int):
                lo = hi = item
            else:
                parts = item.split("-")
                try:
                    lo, hi = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (None, None)
                except ValueError:
                    lo = hi = None
                if lo is None or hi is None or hi < lo:
                    raise HsixaiError(
                        f"params: data.remove_bands: expected integers or ranges 'a-b' with a <= b, found {item!r}"
                    )
            if hi > MAX_BAND_INDEX:
                raise HsixaiError(
                    f"params: data.remove_bands: expected band indices up to {MAX_BAND_INDEX}, found {item!r}"
                )
            if lo < 0:
                raise HsixaiError(f"params: data.remove_bands: expected non-negative band indices, found {item!r}")
            out.update(range(lo, hi + 1))
        return sorted(out)


@dataclass(frozen=True)
class SplitConfig:
    """How the training mask is divided into train and dev, and the buffer against spatial leakage.

    `buffer` (pixels): dev pixels within this Chebyshev distance of any train pixel are dropped, and
    test pixels farther than it from every train pixel form the leak-free test subset. "auto" is the
    radius of the largest patch in `sweep.patch_sizes`, so one split serves every point of a sweep.
    """

    strategy: Literal["spatial", "random_stratified"] = "spatial"
    train_size: float = 0.6
    train_side: Literal["left", "right", "top", "bottom"] = "left"
    buffer: int | Literal["auto"] = "auto"
    # A class with fewer leak-free test pixels than this is reported and left out of the leak-free
    # macro scores (AA, macro F1); its pixels still count in OA and kappa.
    min_leakfree_pixels: int = 10

    def __post_init__(self) -> None:
        _check(0 < self.train_size < 1, "split.train_size", "a fraction in (0, 1)", self.train_size)
        _check(
            self.buffer == "auto" or self.buffer >= 0, "split.buffer", "a non-negative integer or 'auto'", self.buffer
        )
        _check(
            self.min_leakfree_pixels >= 1, "split.min_leakfree_pixels", "a positive integer", self.min_leakfree_pixels
        )

    def resolve_buffer(self, sweep_patch_sizes: list[int]) -> int:
        """The buffer in pixels: `buffer` itself, or for "auto" the radius of the largest swept patch."""
        return max(sweep_patch_sizes) // 2 if self.buffer == "auto" else int(self.buffer)


@dataclass(frozen=True)
class XaiConfig:
    """Integrated Gradients on the xAI sample, and the consistency scores' bootstrap.

    IG with a zero baseline inside a NoiseTunnel, as published; the published
    profile's values are in profiles/published.yaml.
    """

    samples_per_class: int = 16
    n_steps: int = 50
    method: Literal["gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle"] = (
        "gausslegendre"
    )
    noise_tunnel: bool = True
    nt_type: Literal["smoothgrad", "smoothgrad_sq", "vargrad"] = "smoothgrad_sq"
    nt_samples: int = 10
    stdevs: float = 0.2
    batch_size: int = 16  # samples per captum call (every class mixed, per-sample targets)
    internal_batch_size: int = 256  # model inputs per forward/backward inside IG (fastest in bench/xai.json)
    bootstrap: int = 250  # replicates for the 95% intervals

    def __post_init__(self) -> None:
        for key in ("samples_per_class", "n_steps", "nt_samples", "batch_size", "internal_batch_size"):
            _check(getattr(self, key) >= 1, f"xai.{key}", "a positive integer", getattr(self, key))
        _check(self.stdevs >= 0, "xai.stdevs", "a non-negative number", self.stdevs)
        _check(self.bootstrap >= 10, "xai.bootstrap", "at least 10 replicates", self.bootstrap)


@dataclass(frozen=True)
class TrainConfig:
    """Training of `instances` independently seeded models per (model, patch_size) point.

    The defaults are a fast demo profile; the published one is profiles/published.yaml.
    """

    epochs: int = 8
    batch_size: int = 64
    lr: float = 3e-4
    max_lr_factor: float = 100.0  # OneCycleLR peaks at max_lr_factor * lr
    weight_decay: float = 1e-6
    n_comps: int = 15  # channels of the 1x1 spectral reduction
    class_weights: bool = True  # balanced cross-entropy weights
    instances: int = 2  # instance i is trained with seed + i
    device: Literal["auto", "cpu", "cuda"] = "auto"
    eval_batch_size: int = 512
    # Batches per epoch at most (a random subset, new each epoch); 0 = every batch. Bounds a run on a
    # full-size scene, e.g. for bench/bench_pipeline.py.
    max_batches_per_epoch: int = 0

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "n_comps", "instances", "eval_batch_size"):
            _check(getattr(self, key) >= 1, f"train.{key}", "a positive integer", getattr(self, key))
        _check(
            self.max_batches_per_epoch >= 0,
            "train.max_batches_per_epoch",
            "0 (every batch) or a positive integer",
            self.max_batches_per_epoch,
        )
        _check(self.lr > 0, "train.lr", "a positive number", self.lr)
        _check(self.max_lr_factor >= 1, "train.max_lr_factor", "a number >= 1", self.max_lr_factor)
        _check(self.weight_decay >= 0, "train.weight_decay", "a non-negative number", self.weight_decay)


@dataclass(frozen=True)
class EvaluateConfig:
    """The `evaluate` stage's classification map of the whole scene (test metrics always use every test pixel)."""

    # Predict every map_stride-th pixel along rows and columns: the map costs 1 / map_stride**2 of a
    # full one (a full PRISMA scene is 1.3 M patches).
    map_stride: int = 1

    def __post_init__(self) -> None:
        _check(self.map_stride >= 1, "evaluate.map_stride", "a positive integer", self.map_stride)


@dataclass(frozen=True)
class TrackingConfig:
    experiment: str = "hsixai"  # MLflow experiment that holds every run of this project

    def __post_init__(self) -> None:
        _check(bool(self.experiment.strip()), "tracking.experiment", "a non-empty name", self.experiment)


@dataclass(frozen=True)
class AdaptSyntheticConfig:
    """The synthetic target acquisition: a neighbouring area on a later date, under other light."""

    height: int = 96
    width: int = 96
    phenology_shift: float = 1.0  # 0 = the source's date; 1 = about four weeks later
    gain: float = 0.25  # band-dependent gain change: 1 at 400 nm, 1 - gain at 2500 nm
    offset: float = 0.03  # additive path reflectance at 400 nm (falls as wavelength^-4)
    shadow_fraction: float = 0.12  # share of the scene under a cloud shadow; 0 = none

    def __post_init__(self) -> None:
        _check(
            self.height >= 16 and self.width >= 16,
            "adapt.synthetic.height/width",
            "at least 16",
            f"{self.height} x {self.width}",
        )
        _check(0 <= self.phenology_shift <= 2, "adapt.synthetic.phenology_shift", "in [0, 2]", self.phenology_shift)
        _check(0 <= self.gain < 1, "adapt.synthetic.gain", "in [0, 1)", self.gain)
        _check(0 <= self.offset <= 0.2, "adapt.synthetic.offset", "in [0, 0.2]", self.offset)
        _check(0 <= self.shadow_fraction <= 0.5, "adapt.synthetic.shadow_fraction", "in [0, 0.5]", self.shadow_fraction)


@dataclass(frozen=True)
class AdaptSourceConfig:
    """The embedded source scene of the two_scenes pair: the project's scene generator at a CPU-sized extent
    (whole-scene adversarial training costs in proportion to both scenes' pixels)."""

    height: int = 96
    width: int = 96

    def __post_init__(self) -> None:
        _check(
            self.height >= 32 and self.width >= 32,
            "adapt.source_synthetic.height/width",
            "at least 32",
            f"{self.height} x {self.width}",
        )


@dataclass(frozen=True)
class AdaptShadowConfig:
    """The embedded one-scene pair (the published University of Houston setting): one scene, partly under a
    cloud shadow; source = labelled pixels in the sun, target = labelled pixels in the shadow. No global gain or
    offset: the shadow (diffuse light only, relatively bluer, lower signal-to-noise) is the whole gap."""

    height: int = 96
    width: int = 96
    shadow_fraction: float = 0.4  # share of the scene under the shadow

    def __post_init__(self) -> None:
        _check(
            self.height >= 32 and self.width >= 32,
            "adapt.shadow_synthetic.height/width",
            "at least 32",
            f"{self.height} x {self.width}",
        )
        _check(
            0.1 <= self.shadow_fraction <= 0.6,
            "adapt.shadow_synthetic.shadow_fraction",
            "in [0.1, 0.6]",
            self.shadow_fraction,
        )


ADAPT_PAIRS = ("two_scenes", "shadow")
# Trained or recalibrated arms of the ablation; `source_only` (S as it is) is always evaluated besides them.
ADAPT_ARMS = ("adabn", "finetune", "binary", "kplus1", "kplus1_attention")
ALL_LABELS = "all"  # target_labels_per_class: every labelled target training pixel (the published UH setting)


def _check_labels(key: str, value: int | str) -> None:
    _check(
        value == ALL_LABELS or (isinstance(value, int) and value >= 1),
        key,
        f"a positive integer or '{ALL_LABELS}'",
        value,
    )


@dataclass(frozen=True)
class AdaptConfig:
    """Attention-guided semi-supervised adversarial domain adaptation (docs/adaptation.md).

    Defaults follow the authors' code where it fits a CPU: whole scenes, D in
    eval mode during T steps, a linear feature map, the published gate and
    stopping rule; the pair sizes and `seeds` keep `make adapt` under 30
    minutes on two cores.
    """

    pairs: list[str] = field(default_factory=lambda: list(ADAPT_PAIRS))
    # two_scenes: any two raw acquisitions (the embedded ones: stages adapt_source_synthesize, adapt_synthesize)
    source_dir: str = "data/adapt/source_synthetic"
    target_dir: str = "data/adapt/target_synthetic"
    source_synthetic: AdaptSourceConfig = field(default_factory=AdaptSourceConfig)
    synthetic: AdaptSyntheticConfig = field(default_factory=AdaptSyntheticConfig)
    # shadow: one raw scene with region.npy (1 = target region); the embedded one: stage adapt_shadow_synthesize
    shadow_dir: str = "data/adapt/shadow_synthetic"
    shadow_synthetic: AdaptShadowConfig = field(default_factory=AdaptShadowConfig)
    # The ablation's arms besides source_only (always evaluated); binary is an extra ablation, off by default.
    arms: list[str] = field(default_factory=lambda: ["adabn", "finetune", "kplus1", "kplus1_attention"])
    target_labels_per_class: int | str = 10  # or "all"
    labels_sweep: list[int | str] = field(default_factory=lambda: [50, ALL_LABELS])  # stage adapt_labels
    labels_sweep_arms: list[str] = field(default_factory=lambda: ["finetune", "kplus1_attention"])
    val_fraction: float = 0.2  # share of each class's source training pixels kept for early stopping
    tile: int = 0  # 0 = whole scenes (published); else random tiles of this side, one pair per iteration
    seeds: int = 5  # the ablation is repeated with seed, seed + 1, ...
    pretrain_steps: int = 400
    pretrain_patience: int = 80  # steps without a better source validation F1
    pretrain_lr: float = 0.001
    feature_map: Literal["linear", "batchnorm_relu"] = "linear"  # S's and T's last decoder layers
    iterations: int = 40  # at most; sized for `make adapt` on 2 CPU cores (docs/adaptation.md, "Budget")
    d_steps: int = 20
    t_steps: int = 5
    d_lr: float = 0.001
    t_lr: float = 0.0001
    d_target_pixels: Literal["labelled", "all"] = "labelled"
    feature_attention: bool = False  # also gate the target segmenter's feature map (published widths 2, 1)
    # T's BatchNorm while adapting: target batch statistics in T steps (running statistics in D steps and for
    # inference, as published), or frozen at S's. The `adabn` arm measures what target statistics alone are worth.
    target_batchnorm: Literal["target", "source"] = "target"
    # D (and its gate) during T steps: eval = running statistics of both domains (published); train = batch
    # statistics of the target features alone (the earlier hsixai).
    d_mode_in_t_steps: Literal["eval", "train"] = "eval"
    # Stop once stop_patience iterations in a row (after the first) are quiet, on per-iteration mean losses:
    # supervised_ce (the authors' C2Seg rule, few target labels): T's own classifier's CE on the labelled target
    # pixels < stop_loss_supervised; adversarial_losses (their UH/BOT rule, every non-test target pixel labelled):
    # mean D loss < stop_loss_d and mean T loss < stop_loss_t (finetune has no D: its T loss only).
    stop_rule: Literal["supervised_ce", "adversarial_losses"] = "supervised_ce"
    stop_loss_supervised: float = 1.0
    stop_loss_d: float = 5.0e-5
    stop_loss_t: float = 0.05
    stop_patience: int = 15
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # (pair, seed) jobs trained at once on the CPU, each in its own process on one torch thread, so results do
    # not depend on it (not a dvc.yaml param). On CUDA the jobs run one after another.
    workers: int = 2

    def __post_init__(self) -> None:
        for key in (
            "seeds",
            "workers",
            "pretrain_steps",
            "pretrain_patience",
            "iterations",
            "d_steps",
            "t_steps",
            "stop_patience",
        ):
            _check(getattr(self, key) >= 1, f"adapt.{key}", "a positive integer", getattr(self, key))
        bad = [p for p in self.pairs if p not in ADAPT_PAIRS]
        _check(
            bool(self.pairs) and not bad and len(set(self.pairs)) == len(self.pairs),
            "adapt.pairs",
            f"distinct names from {', '.join(ADAPT_PAIRS)}",
            self.pairs,
        )
        bad = [a for a in self.arms if a not in ADAPT_ARMS]
        _check(
            bool(self.arms) and not bad and len(set(self.arms)) == len(self.arms),
            "adapt.arms",
            f"distinct names from {', '.join(ADAPT_ARMS)}",
            self.arms,
        )
        _check_labels("adapt.target_labels_per_class", self.target_labels_per_class)
        for i, level in enumerate(self.labels_sweep):
            _check_labels(f"adapt.labels_sweep[{i}]", level)
        bad = [a for a in self.labels_sweep_arms if a not in ADAPT_ARMS or a == "adabn"]
        _check(
            bool(self.labels_sweep_arms) and not bad,
            "adapt.labels_sweep_arms",
            f"trained arms from {', '.join(ADAPT_ARMS[1:])}",
            self.labels_sweep_arms,
        )
        _check(0 < self.val_fraction < 1, "adapt.val_fraction", "a fraction in (0, 1)", self.val_fraction)
        _check(self.tile == 0 or self.tile >= 8, "adapt.tile", "0 (whole scenes) or at least 8 pixels", self.tile)
        for key in ("pretrain_lr", "d_lr", "t_lr", "stop_loss_d", "stop_loss_t", "stop_loss_supervised"):
            _check(getattr(self, key) > 0, f"adapt.{key}", "a positive number", getattr(self, key))


MODEL_NAMES = ("cnn2d", "vit")
# `hsixai select`'s criteria: a quantity and the direction that counts as better (docs/selection.md).
# Every consistency quantity is reported in both directions whichever one selects. SELECTION_QUANTITIES is
# also the one list of headline consistency scores: `select` reports them, tracking logs them to MLflow.
SELECTION_QUANTITIES = ("consistency_jsdiv", "consistency_instances", "consistency_concordance", "centre_share")
Criterion = Literal[
    "max_consistency_jsdiv",
    "min_consistency_jsdiv",
    "max_consistency_instances",
    "min_consistency_instances",
    "max_consistency_concordance",
    "min_consistency_concordance",
    "max_centre_share",
    "min_centre_share",
    "max_f1_macro_val",
]
CRITERIA: tuple[str, ...] = typing.get_args(Criterion)


@dataclass(frozen=True)
class SweepConfig:
    """`hsixai sweep`: the (model, patch_size) points to run as DVC experiments, and the selection."""

    models: list[str] = field(default_factory=lambda: list(MODEL_NAMES))
    patch_sizes: list[int] = field(default_factory=lambda: [3, 5, 7, 9])
    jobs: int = 2  # parallel queue workers
    # The criterion that picks the recommended point: direction_quantity (see CRITERIA).
    criterion: Criterion = "min_consistency_jsdiv"

    def __post_init__(self) -> None:
        bad = [m for m in self.models if m not in MODEL_NAMES]
        _check(bool(self.models) and not bad, "sweep.models", f"names from {', '.join(MODEL_NAMES)}", self.models)
        bad_p = [p for p in self.patch_sizes if p < 3 or p % 2 == 0]
        _check(bool(self.patch_sizes) and not bad_p, "sweep.patch_sizes", "odd integers >= 3", self.patch_sizes)
        _check(self.jobs >= 1, "sweep.jobs", "a positive integer", self.jobs)


@dataclass(frozen=True)
class Params:
    seed: int = 0
    model: Literal["cnn2d", "vit"] = "cnn2d"
    patch_size: int = 9  # side of the square patch around each pixel; odd
    synthesize: SynthesizeConfig = field(default_factory=SynthesizeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    xai: XaiConfig = field(default_factory=XaiConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)

    def __post_init__(self) -> None:
        _check(self.seed >= 0, "seed", "a non-negative integer", self.seed)
        _check(self.patch_size >= 3 and self.patch_size % 2 == 1, "patch_size", "an odd integer >= 3", self.patch_size)

    @property
    def n_classes(self) -> int:
        return len(self.data.class_names)

    @property
    def split_buffer(self) -> int:
        """The split's buffer in pixels (split.buffer, "auto" resolved against sweep.patch_sizes)."""
        return self.split.resolve_buffer(self.sweep.patch_sizes)


def load_params(path: str | Path) -> Params:
    """Read and validate params.yaml. Raises HsixaiError naming the key on any problem."""
    path = Path(path)
    return params_from_dict(_read_yaml(path, "params file"), source=str(path))


def params_from_dict(raw: Any, source: str = "params") -> Params:
    return _build(Params, raw, prefix="", source=source)


PER_MODEL = "per_model"  # a profile's overlays for one model's points only


@dataclass(frozen=True)
class Profile:
    """A settings profile (profiles/<name>.yaml): an overlay on params.yaml, validated as params.yaml is.

    Its top-level keys are params keys and replace params.yaml's; `per_model` maps a model name to a
    further overlay for that model's points only (e.g. a batch size that differs between the models).
    """

    name: str
    params: Params  # params.yaml with the profile's overlay
    per_model: dict[str, Params]  # model -> params.yaml with the overlay and that model's own

    def for_model(self, model: str) -> Params:
        return self.per_model.get(model, self.params)


def load_profile(path: str | Path, params: Params) -> Profile:
    """The profile at `path` applied over `params` (params.yaml as loaded). Raises HsixaiError naming the key."""
    path = Path(path)
    raw = _read_yaml(path, "profile")
    if not isinstance(raw, dict):
        raise HsixaiError(f"{path}: top level: expected a mapping, found {type(raw).__name__}")
    overlay = {k: v for k, v in raw.items() if k != PER_MODEL}
    models = raw.get(PER_MODEL) or {}
    if not isinstance(models, dict) or any(m not in MODEL_NAMES for m in models):
        raise HsixaiError(
            f"{path}: {PER_MODEL}: expected a mapping from model names ({', '.join(MODEL_NAMES)}) "
            f"to params overlays, found {models!r}"
        )
    base = _overlay(asdict(params), overlay)
    per_model = {
        model: params_from_dict(_overlay(base, own), source=f"{path}: {PER_MODEL}.{model}")
        for model, own in models.items()
    }
    return Profile(path.stem, params_from_dict(base, source=str(path)), per_model)


def _overlay(base: dict, overlay: Any) -> Any:
    """`base` with `overlay`'s values, mappings merged key by key (neither argument is changed)."""
    if not (isinstance(base, dict) and isinstance(overlay, dict)):
        return copy.deepcopy(overlay)
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        merged[key] = _overlay(base[key], value) if key in base else copy.deepcopy(value)
    return merged


def _read_yaml(path: Path, what: str) -> Any:
    if not path.is_file():
        raise HsixaiError(f"{path}: {what} not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise HsixaiError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from None


def _check(ok: bool, key: str, expected: str, found: Any) -> None:
    if not ok:
        raise HsixaiError(f"params: {key}: expected {expected}, found {found!r}")


def _build(cls: type, raw: Any, prefix: str, source: str) -> Any:
    where = prefix.rstrip(".") or "top level"
    if not isinstance(raw, dict):
        raise HsixaiError(f"{source}: {where}: expected a mapping, found {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (known keys: {', '.join(known)})"
            raise HsixaiError(f"{source}: unknown key '{prefix}{key}'{hint}")
    values = {}
    for name, f in known.items():
        if name in raw:
            values[name] = _coerce(hints[name], raw[name], f"{prefix}{name}", source)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise HsixaiError(f"{source}: missing key '{prefix}{name}'")
    try:
        return cls(**values)
    except HsixaiError as exc:
        raise HsixaiError(f"{source}: {str(exc).removeprefix('params: ')}") from None


def _coerce(tp: Any, value: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    if is_dataclass(tp):
        return _build(tp, value, prefix=f"{key}.", source=source)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise HsixaiError(f"{source}: {key}: expected one of {', '.join(map(str, choices))}, found {value!r}{hint}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise HsixaiError(f"{source}: {key}: expected a list, found {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(item_tp, v, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            if _matches(value, option):
                return value
        raise HsixaiError(f"{source}: {key}: expected {_type_name(tp)}, found {value!r}")
    if not _is_instance(value, tp):
        raise HsixaiError(f"{source}: {key}: expected {_type_name(tp)}, found {value!r}")
    return float(value) if tp is float else value


def _matches(value: Any, option: Any) -> bool:
    """Whether `value` is one option of a union: a plain type, or a Literal such as "auto"."""
    if typing.get_origin(option) is Literal:
        return any(value == choice and type(value) is type(choice) for choice in typing.get_args(option))
    return _is_instance(value, option)


def _is_instance(value: Any, tp: type) -> bool:
    if tp is float:  # YAML writes 1 for 1.0; bool is an int subclass and never a number here
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _type_name(tp: Any) -> str:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in args)
    if args:
        return " or ".join(_type_name(a) for a in args)
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))
