"""The one place that knows where artifacts live.

Every path is absolute and built from the repository root, because DVC runs
queued experiments in temporary copies of the repository.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class Paths:
    root: Path

    @classmethod
    def at(cls, root: str | Path | None = None) -> "Paths":
        return cls(Path(root or Path.cwd()).resolve())

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def settings_profiles_dir(self) -> Path:
        """Settings profiles: overlays on params.yaml, e.g. the published experiments' (hsixai sweep --profile)."""
        return self.root / "profiles"

    def settings_profile(self, name: str) -> Path:
        return self.settings_profiles_dir / f"{name}.yaml"

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
        return self.attributions_dir / "profiles.npz"

    def figures_dir(self, stage: str) -> Path:
        return self.root / "figures" / stage

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    def checkpoint(self, instance: int) -> Path:
        return self.models_dir / f"instance_{instance}.pt"

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
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlartifacts(self) -> Path:
        return self.root / "mlartifacts"

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
    def adapt_prepared_files(self, pair: str, directory: Path | None = None) -> "AdaptPreparedFiles":
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
        return self.prepared_dir / "cube.npy"


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
