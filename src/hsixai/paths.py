"""The one place that knows where artifacts live.

Every path is absolute and built from the repository root, because DVC runs
queued experiments in temporary copies of the repository.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

RAW_CUBE = "hsi.npy"
RAW_TRAIN = "train_crops.npy"
RAW_TEST = "test_crops.npy"
RAW_WAVELENGTHS = "wavelengths.npy"
# A one-scene adaptation pair (adapt.shadow_dir) adds this to the raw format: int8 [H, W], 1 = the target region.
RAW_REGION = "region.npy"
RAW_FWHM = "fwhm.npy"  # optional: band widths (nm), as PRISMA products give them
RAW_NODATA = "nodata.npy"  # optional: bool [H, W], True where the acquisition has no data
RAW_GEOREF = "georef.json"  # optional: the map grid (src/hsixai/data/georef.py)
# Summaries written beside the raw format by the command that made it; no reader needs them.
RAW_SYNTHETIC_SUMMARY = "scene.json"  # hsixai synthesize and the adapt_*synthesize stages
RAW_CONVERT_SUMMARY = "convert.json"  # hsixai convert
# A model bundle (src/hsixai/bundle.py): what `hsixai predict` needs to apply a trained point, self-contained.
BUNDLE_META = "bundle.json"


def instance_checkpoint(directory: Path, instance: int) -> Path:
    """One instance's tensors-only checkpoint: in models/ (train), and the same file in a model bundle."""
    return directory / f"instance_{instance}.pt"


@dataclass(frozen=True)
class MapFiles:
    """What `hsixai predict` writes for one map: `classes` is the path the user names (a .tif)."""

    classes: Path

    @property
    def probability(self) -> Path:
        """float32 GeoTIFF beside the class map: the chosen class's probability, or every class's (--softmax).
        A GeoTIFF holds one data type for all its bands, so it cannot share the uint8 class map's file."""
        return self.classes.with_name(f"{self.classes.stem}.probability.tif")

    @property
    def quicklook(self) -> Path:
        return self.classes.with_suffix(".png")

    @property
    def files(self) -> tuple[Path, Path, Path]:
        return self.classes, self.probability, self.quicklook


@dataclass(frozen=True)
class Paths:
    root: Path

    @classmethod
    def at(cls, root: str | Path | None = None) -> Paths:
        return cls(Path(root or Path.cwd()).resolve())

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def params_name(self) -> str:
        """The params file as DVC names it (relative to the repo root), e.g. in `dvc exp show --json`."""
        return str(self.params.relative_to(self.root))

    @property
    def settings_profiles_dir(self) -> Path:
        """Settings profiles: overlays on params.yaml, e.g. the published experiments' (hsixai sweep --profile)."""
        return self.root / "profiles"

    def settings_profile(self, name: str) -> Path:
        return self.settings_profiles_dir / f"{name}.yaml"

    def settings_profile_names(self) -> list[str]:
        """The profiles there are, sorted (`hsixai sweep --profile NAME` takes one of these)."""
        return sorted(p.stem for p in self.settings_profiles_dir.glob("*.yaml"))

    def resolve(self, path: str | Path) -> Path:
        """A params path (relative to the repo root, or absolute) as an absolute path."""
        path = Path(path)
        return path if path.is_absolute() else self.root / path

    # stage outputs -----------------------------------------------------------
    @property
    def synthetic_dir(self) -> Path:
        return self.root / "data" / "synthetic"

    @property
    def prepared_dir(self) -> Path:
        return self.root / "data" / "prepared"

    @property
    def split_dir(self) -> Path:
        return self.root / "data" / "split"

    @property
    def attributions_dir(self) -> Path:
        return self.root / "data" / "attributions"

    @property
    def profiles(self) -> Path:
        return self.attribution_files().profiles

    def figures_dir(self, stage: str) -> Path:
        return self.root / "figures" / stage

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    # Like the adapt methods below, each method with a `directory` builds in it (a stage's staging directory)
    # and defaults to the final one, so a file name is written down here only.
    def prepared_files(self, directory: Path | None = None) -> PreparedFiles:
        return PreparedFiles(directory or self.prepared_dir)

    def split_files(self, directory: Path | None = None) -> SplitFiles:
        return SplitFiles(directory or self.split_dir)

    def attribution_files(self, directory: Path | None = None) -> AttributionFiles:
        return AttributionFiles(directory or self.attributions_dir)

    def figures(self, stage: str, directory: Path | None = None) -> Figures:
        return Figures(directory or self.figures_dir(stage))

    def checkpoint(self, instance: int, directory: Path | None = None) -> Path:
        """The best-dev checkpoint of one model instance (train)."""
        return instance_checkpoint(directory or self.models_dir, instance)

    def training_curve(self, instance: int, directory: Path | None = None) -> Path:
        """One instance's metrics per epoch, a DVC plot (train)."""
        return (directory or self.plots_dir("train")) / f"instance_{instance}.csv"

    def confusion_table(self, directory: Path | None = None) -> Path:
        """The best-dev instance's test predictions, one `actual,predicted` row per pixel, a DVC plot (evaluate)."""
        return (directory or self.plots_dir("evaluate")) / "confusion.csv"

    @property
    def bundle_dir(self) -> Path:
        """The workspace point's model bundle (stage bundle; src/hsixai/bundle.py)."""
        return self.root / "bundle"

    @property
    def maps_dir(self) -> Path:
        return self.root / "maps"

    def scene_map(self, directory: Path | None = None) -> MapFiles:
        """The map of the workspace scene by the workspace point (stage map)."""
        return MapFiles((directory or self.maps_dir) / "scene.tif")

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    def selection_report(self, directory: Path | None = None) -> SelectionReport:
        return SelectionReport(directory or self.reports_dir)

    @property
    def metrics_dir(self) -> Path:
        return self.root / "metrics"

    def metrics(self, stage: str) -> Path:
        return self.metrics_dir / f"{stage}.json"

    @property
    def bootstrap_replicates(self) -> Path:
        """The consistency scores' bootstrap replicates, paired across experiments (read by select)."""
        return self.metrics_dir / "consistency_bootstrap.json"

    def plots_dir(self, stage: str) -> Path:
        return self.root / "plots" / stage

    @property
    def dvc_lock(self) -> Path:
        """DVC's record of each stage's deps and outs with their md5 (read for the data versions MLflow shows)."""
        return self.root / "dvc.lock"

    def dvc_file(self, path: Path) -> Path:
        """The .dvc file `dvc add path` writes beside `path` (a raw input tracked by DVC, not made by a stage)."""
        return path.with_name(f"{path.name}.dvc")

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlartifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def mlflow_server_log(self) -> Path:
        """What the MLflow server a sweep starts prints."""
        return self.root / ".mlflow-server.log"

    @property
    def sweep_record(self) -> Path:
        """The running sweep's pid, its MLflow server's and its experiments (under DVC's git-ignored tmp)."""
        return self.root / ".dvc" / "tmp" / "hsixai-sweep.json"

    @property
    def bench_dir(self) -> Path:
        return self.root / "bench"

    # domain adaptation ----------------------------------------------------------
    @property
    def adapt_dir(self) -> Path:
        return self.root / "data" / "adapt"

    @property
    def adapt_target_synthetic(self) -> Path:
        return self.adapt_dir / "target_synthetic"

    @property
    def adapt_prepared(self) -> Path:
        return self.adapt_dir / "prepared"

    @property
    def adapt_source_models(self) -> Path:
        return self.adapt_dir / "source_models"

    @property
    def adapt_target_models(self) -> Path:
        return self.adapt_dir / "target_models"

    @property
    def adapt_source_synthetic(self) -> Path:
        """The embedded two_scenes pair's source scene (adapt_source_synthesize)."""
        return self.adapt_dir / "source_synthetic"

    @property
    def adapt_shadow_synthetic(self) -> Path:
        """The embedded one-scene pair: a scene partly under a cloud shadow (adapt_shadow_synthesize)."""
        return self.adapt_dir / "shadow_synthetic"

    @property
    def adapt_target_labels(self) -> Path:
        """The few labelled target pixels per seed, one file per pair (adapt_prepare)."""
        return self.adapt_dir / "target_labels"

    # Each method below takes the directory to build in (a stage's staging directory) and defaults to the
    # final one, so a file name is written down here only.
    def adapt_prepared_files(self, pair: str, directory: Path | None = None) -> AdaptPreparedFiles:
        return AdaptPreparedFiles((directory or self.adapt_prepared) / pair)

    def adapt_few_labels(self, pair: str, directory: Path | None = None) -> Path:
        return (directory or self.adapt_target_labels) / f"{pair}.npy"

    def adapt_source_checkpoint(self, pair: str, seed: int, directory: Path | None = None) -> Path:
        return (directory or self.adapt_source_models) / pair / f"source_{seed}.pt"

    def adapt_target_checkpoint(self, pair: str, arm: str, seed: int, directory: Path | None = None) -> Path:
        return (directory or self.adapt_target_models) / pair / f"{arm}_{seed}.pt"

    def adapt_gate_map(self, pair: str, seed: int, directory: Path | None = None) -> Path:
        """The attention gate of the kplus1_attention arm over the whole target scene, float32 [H, W]."""
        return (directory or self.adapt_target_models) / pair / f"gate_{seed}.npy"

    # files inside the stage outputs -------------------------------------------
    @property
    def prepared_cube(self) -> Path:
        return self.prepared_files().cube


@dataclass(frozen=True)
class PreparedFiles:
    """data/prepared/: the scene with noisy bands removed and each band scaled (prepare)."""

    directory: Path

    @property
    def cube(self) -> Path:
        """float32 [bands, H, W], each band min-max scaled to [0, 1]."""
        return self.directory / "cube.npy"

    @property
    def training_mask(self) -> Path:
        """int8 [H, W], labels 0..K-1, -1 = unlabelled: every training pixel, which split divides into train and
        dev. Named apart from data/split/train_labels.npy, the train part (called train_labels.npy here too
        before issue 16)."""
        return self.directory / "training_mask.npy"

    @property
    def test_labels(self) -> Path:
        """int8 [H, W], the whole test mask, as training_mask."""
        return self.directory / "test_labels.npy"

    @property
    def wavelengths(self) -> Path:
        """The kept bands' wavelengths."""
        return self.directory / "wavelengths.npy"

    @property
    def bands(self) -> Path:
        """The kept bands' indices in the raw cube."""
        return self.directory / "bands.npy"

    @property
    def band_range(self) -> Path:
        """float32 [2, bands]: each kept band's raw minimum and maximum over the pixels with data."""
        return self.directory / "band_range.npy"

    @property
    def nodata(self) -> Path:
        """As the raw format's, when the scene has one."""
        return self.directory / RAW_NODATA

    @property
    def georef(self) -> Path:
        """The raw format's, copied as it is, when the scene has one."""
        return self.directory / RAW_GEOREF

    @property
    def meta(self) -> Path:
        return self.directory / "meta.json"


@dataclass(frozen=True)
class SplitFiles:
    """data/split/: the training mask divided into train and dev, the leak-free test subset, the xAI sample (split)."""

    directory: Path

    def labels(self, part: str) -> Path:
        """int8 [H, W] label map of one part: train, dev, xai or test_leakfree (-1 elsewhere)."""
        return self.directory / f"{part}_labels.npy"

    @property
    def train_labels(self) -> Path:
        return self.labels("train")

    @property
    def dev_labels(self) -> Path:
        return self.labels("dev")

    @property
    def xai_labels(self) -> Path:
        return self.labels("xai")

    @property
    def test_leakfree_labels(self) -> Path:
        return self.labels("test_leakfree")

    @property
    def band_stats(self) -> Path:
        """Per-band mean and std over the train pixels (npz: mean, std)."""
        return self.directory / "band_stats.npz"

    @property
    def leakfree(self) -> Path:
        """The leak-free test subset's buffer and size per class."""
        return self.directory / "leakfree.json"

    @property
    def summary(self) -> Path:
        return self.directory / "split.json"


@dataclass(frozen=True)
class AttributionFiles:
    """data/attributions/ (attribute)."""

    directory: Path

    @property
    def profiles(self) -> Path:
        """Per-sample spectral profiles of every instance, read by consistency."""
        return self.directory / "profiles.npz"

    @property
    def maps(self) -> Path:
        """One full attribution map per class (instance 0)."""
        return self.directory / "maps.npz"


@dataclass(frozen=True)
class Figures:
    """figures/<stage>/: each stage's figures, under the stage that draws them (dvc.yaml's plots list the
    (model, patch_size) ones)."""

    directory: Path

    def drawn(self) -> list[Path]:
        """Every figure in the directory, sorted: what a stage logs to MLflow."""
        return sorted(self.directory.glob("*.png"))

    # prepare
    @property
    def class_spectra(self) -> Path:
        return self.directory / "class_spectra.png"

    @property
    def false_colour(self) -> Path:
        return self.directory / "false_colour.png"

    # split
    @property
    def masks(self) -> Path:
        return self.directory / "masks.png"

    # train
    @property
    def training_curves(self) -> Path:
        return self.directory / "curves.png"

    # evaluate
    @property
    def confusion(self) -> Path:
        return self.directory / "confusion.png"

    @property
    def classification_map(self) -> Path:
        return self.directory / "classification_map.png"

    # attribute
    @property
    def attribution_maps(self) -> Path:
        return self.directory / "maps.png"

    # consistency
    @property
    def class_profiles(self) -> Path:
        return self.directory / "profiles.png"

    @property
    def instance_distances(self) -> Path:
        return self.directory / "instance_distances.png"

    @property
    def radial_profile(self) -> Path:
        return self.directory / "radial.png"

    # adapt_evaluate: one of each per adaptation pair
    def adapt_label_maps(self, pair: str) -> Path:
        return self.directory / f"maps_{pair}.png"

    def adapt_losses(self, pair: str) -> Path:
        return self.directory / f"losses_{pair}.png"

    def adapt_gate(self, pair: str) -> Path:
        return self.directory / f"gate_{pair}.png"


@dataclass(frozen=True)
class SelectionReport:
    """reports/: the patch-size selection (hsixai select), never a DVC output."""

    directory: Path

    @property
    def json(self) -> Path:
        return self.directory / "selection.json"

    @property
    def markdown(self) -> Path:
        return self.directory / "selection.md"

    @property
    def figure(self) -> Path:
        return self.directory / "selection.png"

    @property
    def files(self) -> tuple[Path, Path, Path]:
        return self.json, self.markdown, self.figure

    def recommended_map(self, group: str) -> MapFiles:
        """The workspace scene mapped by a group's recommended point (hsixai sweep, after the selection)."""
        slug = re.sub(r"[^A-Za-z0-9.-]+", "_", group).strip("_") or "all"
        return MapFiles(self.directory / f"map_{slug}.tif")


@dataclass(frozen=True)
class AdaptPreparedFiles:
    """data/adapt/prepared/<pair>/: one adaptation pair, scaled alike (adapt_prepare)."""

    directory: Path

    @property
    def source_cube(self) -> Path:
        return self.directory / "source_cube.npy"

    @property
    def target_cube(self) -> Path:
        """Absent for a one-scene pair: the target is the source cube."""
        return self.directory / "target_cube.npy"

    @property
    def source_train(self) -> Path:
        return self.directory / "source_train.npy"

    @property
    def source_val(self) -> Path:
        return self.directory / "source_val.npy"

    @property
    def source_test(self) -> Path:
        return self.directory / "source_test.npy"

    @property
    def target_pool(self) -> Path:
        """Every target pixel that may be labelled for training: the few labels are drawn from it."""
        return self.directory / "target_pool.npy"

    @property
    def target_test(self) -> Path:
        return self.directory / "target_test.npy"

    @property
    def target_region(self) -> Path:
        return self.directory / "target_region.npy"

    @property
    def band_range(self) -> Path:
        return self.directory / "band_range.npy"

    @property
    def meta(self) -> Path:
        return self.directory / "meta.json"
