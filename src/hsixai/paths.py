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

    # files inside the stage outputs -------------------------------------------
    @property
    def prepared_cube(self) -> Path:
        return self.prepared_dir / "cube.npy"
