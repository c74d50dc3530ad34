"""The map grid of a raw acquisition: the `georef.json` sidecar, read and written here only.

A raw directory (and data/prepared/) may hold `georef.json`:

    {"crs": "EPSG:32629",                       # "EPSG:<code>", or the CRS as WKT when no EPSG code names it
     "transform": [30.0, 0.0, 752550.0, 0.0, -30.0, 4115550.0],
     "width": 160, "height": 160,               # the cube's W and H: the grid covers exactly the cube
     "source": "where it came from"}

`transform` is the affine map from pixel to map coordinates in rasterio's
order (a, b, c, d, e, f):  x = a*col + b*row + c,  y = d*col + e*row + f,
where (col, row) = (0, 0) is the upper-left *corner* of the upper-left pixel
(pixel centres sit at col + 0.5, row + 0.5). GDAL's geotransform is the same
six numbers as (c, a, b, f, d, e). Without the file a scene is on its pixel grid.

CRSs are parsed with rasterio (GDAL/PROJ), which every reader of the sidecar has.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import paths
from ..errors import HsixaiError
from ..io import write_json

# The synthetic scene's plausible place: UTM zone 29N (WGS 84), 30 m pixels as PRISMA's, centred on the
# rice and cereal plain of the Guadalquivir marshes south-west of Seville (near Isla Mayor, 37.13 N,
# 6.13 W), whatever its size. Only the grid is plausible; the fields drawn on it are not the real ones.
SYNTHETIC_CRS = "EPSG:32629"
SYNTHETIC_CENTRE = (754950.0, 4113150.0)  # easting, northing (m), on the 30 m grid
SYNTHETIC_PIXEL = 30.0


@dataclass(frozen=True)
class Georef:
    """A north-up or rotated affine grid of `height` x `width` pixels in `crs`."""

    crs: str  # "EPSG:<code>" or WKT
    transform: tuple[float, float, float, float, float, float]  # (a, b, c, d, e, f), rasterio's order
    width: int
    height: int
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "crs": self.crs,
            "transform": list(self.transform),
            "width": self.width,
            "height": self.height,
            "source": self.source,
        }

    def describe(self) -> str:
        """One line for messages: CRS, upper-left corner, pixel size, shape."""
        a, b, c, d, e, f = self.transform
        crs = self.crs if self.crs.startswith("EPSG:") else "a WKT CRS"
        rotation = "" if b == 0 and d == 0 else f", rotation terms ({b:g}, {d:g})"
        return (
            f"{crs}, upper-left corner ({c:.3f}, {f:.3f}), pixels {a:g} x {e:g}{rotation}, {self.height} x {self.width}"
        )

    def same_grid(self, other: Georef) -> bool:
        """Same CRS and the same pixel corners to 1/1000 of a pixel, and the same shape."""
        if (self.width, self.height) != (other.width, other.height) or not same_crs(self.crs, other.crs):
            return False
        tolerance = 1e-3 * max(
            abs(self.transform[0]), abs(self.transform[4]), abs(self.transform[1]), abs(self.transform[3])
        )
        return all(abs(x - y) <= tolerance for x, y in zip(self.transform, other.transform))


def same_crs(first: str, second: str) -> bool:
    if first == second:
        return True
    from rasterio.crs import CRS

    return CRS.from_user_input(first) == CRS.from_user_input(second)


def crs_string(crs: Any, source: Path | str) -> str:
    """A rasterio CRS (or anything rasterio reads as one) as "EPSG:<code>" when that EPSG CRS is the same one
    (GDAL's comparison: an unnamed WKT of UTM 30N is EPSG:32630), else as WKT."""
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        crs = crs if isinstance(crs, CRS) else CRS.from_user_input(crs)
    except CRSError as exc:
        raise HsixaiError(
            f"{source}: coordinate reference system not understood ({' '.join(str(exc).split())})"
        ) from None
    code = crs.to_epsg()
    return f"EPSG:{code}" if code is not None and CRS.from_epsg(code) == crs else crs.to_wkt()


def from_rasterio(dataset: Any, source: Path | str) -> Georef | None:
    """The grid of an open rasterio dataset, or None when it has no CRS or no geotransform."""
    from rasterio import Affine

    if dataset.crs is None or dataset.transform == Affine.identity():
        return None
    t = dataset.transform
    return Georef(
        crs_string(dataset.crs, source), (t.a, t.b, t.c, t.d, t.e, t.f), dataset.width, dataset.height, str(source)
    )


def synthetic_grid(height: int, width: int) -> Georef:
    """The plausible grid of the embedded synthetic scene (see SYNTHETIC_*), north up, pixel corners on
    multiples of 30 m."""
    x0 = SYNTHETIC_CENTRE[0] - (width // 2) * SYNTHETIC_PIXEL
    y0 = SYNTHETIC_CENTRE[1] + (height // 2) * SYNTHETIC_PIXEL
    return Georef(
        SYNTHETIC_CRS,
        (SYNTHETIC_PIXEL, 0.0, x0, 0.0, -SYNTHETIC_PIXEL, y0),
        width,
        height,
        "synthetic scene: a plausible grid (UTM 29N, Guadalquivir marshes SW of Seville), not a real place",
    )


def write_synthetic_georef(directory: Path, height: int, width: int) -> None:
    """georef.json of the synthetic scene into `directory` (the synthesizer's staging directory)."""
    write_georef(directory, synthetic_grid(height, width))


def write_georef(directory: Path, georef: Georef) -> None:
    write_json(directory / paths.RAW_GEOREF, georef.to_json())


def read_georef(directory: Path, shape: tuple[int, int]) -> Georef | None:
    """`directory`/georef.json checked against the cube's (H, W), or None when the file is absent."""
    path = directory / paths.RAW_GEOREF
    if not path.exists():
        return None
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HsixaiError(f"{path}: not a readable JSON file ({' '.join(str(exc).split())})") from None
    georef = _parse(content, path)
    if (georef.height, georef.width) != tuple(shape):
        raise HsixaiError(
            f"{path}: expected the grid of the cube's H x W {tuple(shape)}, "
            f"found height {georef.height}, width {georef.width}"
        )
    return georef


def _parse(content: Any, path: Path) -> Georef:
    expected = (
        "expected an object with 'crs' (\"EPSG:<code>\" or WKT), 'transform' (six numbers a, b, c, d, e, f), "
        "'width' and 'height'"
    )
    if not isinstance(content, dict) or not {"crs", "transform", "width", "height"} <= set(content):
        found = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise HsixaiError(f"{path}: {expected}, found {found}")
    transform = content["transform"]
    if (
        not isinstance(transform, list)
        or len(transform) != 6
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in transform)
    ):
        raise HsixaiError(f"{path}: 'transform': expected six finite numbers (a, b, c, d, e, f), found {transform!r}")
    a, b, _, d, e, _ = transform
    if a * e - b * d == 0:
        raise HsixaiError(
            f"{path}: 'transform': expected an invertible affine map, found {transform!r} (a*e - b*d = 0)"
        )
    sizes = {k: content[k] for k in ("width", "height")}
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sizes.values()):
        raise HsixaiError(f"{path}: 'width' and 'height': expected positive integers, found {sizes}")
    if not isinstance(content["crs"], str) or not content["crs"].strip():
        raise HsixaiError(f"{path}: 'crs': expected \"EPSG:<code>\" or WKT, found {content['crs']!r}")
    crs_string(content["crs"], f"{path}: 'crs'")  # parses, or says why not
    return Georef(
        content["crs"],
        tuple(float(v) for v in transform),
        sizes["width"],
        sizes["height"],
        str(content.get("source", "")),
    )
