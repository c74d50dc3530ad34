"""Parametric reflectance spectra for the synthetic scene, and PRISMA-like sensor traits.

The models are deliberately simple but keep the features that separate crops:
the green peak and red chlorophyll well, the red-edge position, the NIR plateau,
and liquid-water and dry-matter absorption in the SWIR.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit


def _gauss(wl: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((wl - centre) / width) ** 2)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return expit(x)


def prisma_wavelengths(n_bands: int = 234) -> np.ndarray:
    """Band centres (nm) of a PRISMA-like two-detector sensor, increasing.

    VNIR (silicon) takes the first 27% of the bands over 400-1000 nm; SWIR
    takes the rest over 1005-2500 nm, sampled a little finer towards long
    wavelengths. The anchors place the published 174-band list's removed
    ranges on the blue end, the VNIR/SWIR junction (with the 940 nm water
    vapour band), the 1800-1950 nm water-vapour band and the SWIR end.
    """
    scale = (n_bands - 1) / 233.0
    idx = np.array([0, 62, 63, 145, 162, 233], dtype=float) * scale
    nm = np.array([400.0, 1000.0, 1005.0, 1800.0, 1950.0, 2500.0])
    return np.interp(np.arange(n_bands), idx, nm).astype(np.float32)


# ---------------------------------------------------------------------------- the atmosphere and sensor
def atmospheric_transmittance(wl: np.ndarray) -> np.ndarray:
    """Two-way transmittance after correction residuals: deep water-vapour bands at 1400 and 1900 nm."""
    t = 1.0
    for centre, width, depth in [
        (760, 4, 0.5),
        (940, 25, 0.55),
        (1130, 30, 0.45),
        (1395, 45, 0.97),
        (1880, 65, 0.99),
        (2500, 60, 0.5),
    ]:
        t = t * (1.0 - depth * _gauss(wl, centre, width))
    return t


def detector_response(wl: np.ndarray) -> np.ndarray:
    """Relative detector throughput: weak in the blue, at the silicon cut-off and at the SWIR end."""
    blue = _sigmoid((wl - 500.0) / 14.0)
    vnir_edge = np.where(wl <= 1002.0, 1.0 - 0.9 * _sigmoid((wl - 950.0) / 10.0), 1.0)
    swir_start = np.where(wl > 1002.0, 0.2 + 0.8 * _sigmoid((wl - 1012.0) / 4.0), 1.0)
    swir_end = 1.0 - 0.9 * _sigmoid((wl - 2330.0) / 25.0)
    return blue * vnir_edge * swir_start * swir_end


def noise_std(wl: np.ndarray, base: float = 0.004) -> np.ndarray:
    """Per-band reflectance noise: low SNR where the signal is weak (PRISMA SNR is ~100-200 at best)."""
    throughput = atmospheric_transmittance(wl) * detector_response(wl)
    return (base / np.maximum(throughput, 0.04)).astype(np.float32)


# ---------------------------------------------------------------------------- surfaces
def _liquid_water(wl: np.ndarray) -> np.ndarray:
    """A smooth stand-in for the absorption of liquid water in leaves and soil."""
    return (
        0.04 * _gauss(wl, 970, 40)
        + 0.12 * _gauss(wl, 1200, 60)
        + 0.95 * _gauss(wl, 1450, 90)
        + 1.5 * _gauss(wl, 1940, 110)
        + 0.9 * _sigmoid((wl - 2350.0) / 80.0)
        + 0.15 * _sigmoid((wl - 1300) / 200)
    )


def _dry_matter(wl: np.ndarray) -> np.ndarray:
    """Cellulose/lignin absorption in senescent vegetation (2100 and 2300 nm)."""
    return 0.25 * _gauss(wl, 2100, 45) + 0.15 * _gauss(wl, 2300, 40) + 0.08 * _gauss(wl, 1730, 30)


def leaf_canopy(
    wl: np.ndarray, chlorophyll: float, red_edge: float, nir: float, water: float, dry: float, brightness: float = 0.0
) -> np.ndarray:
    """Reflectance of a closed canopy.

    chlorophyll in [0, 1] deepens the blue and red wells and raises the green
    peak (low values look yellow, as ripening wheat); red_edge is the inflexion
    (nm); nir the plateau level; water and dry scale the SWIR absorptions.
    """
    red_floor = 0.03 + 0.13 * (1.0 - chlorophyll) + brightness
    green_peak = red_floor + 0.05 + 0.05 * chlorophyll
    visible = red_floor + (green_peak - red_floor) * _gauss(wl, 555, 38)
    visible = visible * (1.0 - 0.35 * chlorophyll * _gauss(wl, 450, 35))  # blue chlorophyll well
    edge = _sigmoid((wl - red_edge) / 13.0)
    plateau = nir * (1.0 - 0.12 * _sigmoid((wl - 1250.0) / 120.0))
    r = visible * (1.0 - edge) + plateau * edge
    return r * np.exp(-water * _liquid_water(wl) - dry * _dry_matter(wl))


def soil(wl: np.ndarray, brightness: float, moisture: float, iron: float = 0.5) -> np.ndarray:
    """Bare soil: rising from the blue, iron-oxide shoulder, clay feature at 2200 nm, water darkening."""
    base = brightness * (0.35 + 0.65 * (1.0 - np.exp(-(wl - 380.0) / 450.0)))
    base = base * (1.0 - 0.25 * iron * _gauss(wl, 480, 60)) * (1.0 - 0.07 * _gauss(wl, 2200, 25))
    return base * np.exp(-moisture * _liquid_water(wl))


def water(wl: np.ndarray, turbidity: float) -> np.ndarray:
    """Open water: a weak green-red peak (sediment), near-black beyond 900 nm."""
    return 0.02 + turbidity * 0.05 * _gauss(wl, 580, 70) - 0.018 * _sigmoid((wl - 750.0) / 40.0)


def urban(wl: np.ndarray, kind: str, brightness: float) -> np.ndarray:
    """Man-made surfaces: concrete (bright, flat), asphalt (dark), clay-tile roofs (red)."""
    if kind == "concrete":
        return brightness * (0.22 + 0.06 * np.tanh((wl - 500.0) / 300.0) - 0.03 * _gauss(wl, 2330, 40))
    if kind == "asphalt":
        return brightness * (0.06 + 0.05 * (wl - 400.0) / 2100.0)
    if kind == "tile":
        return brightness * (0.08 + 0.22 * _sigmoid((wl - 580.0) / 25.0) - 0.05 * _gauss(wl, 900, 80))
    raise ValueError(f"unknown urban material {kind!r}")


# ---------------------------------------------------------------------------- another acquisition
def illumination_gain(wl: np.ndarray, amplitude: float) -> np.ndarray:
    """Band-dependent gain of a second acquisition: a lower sun and a different water-vapour column.

    Falls linearly from 1 at 400 nm to 1 - amplitude at 2500 nm, with the
    water-vapour residuals at 940 and 1130 nm deepened by amplitude as well.
    """
    slope = 1.0 - amplitude * (wl - 400.0) / 2100.0
    vapour = 1.0 - amplitude * (0.8 * _gauss(wl, 940, 25) + 0.6 * _gauss(wl, 1130, 30))
    return (slope * vapour).astype(np.float32)


def path_reflectance(wl: np.ndarray, level: float) -> np.ndarray:
    """Additive atmospheric path term left after correction: Rayleigh-like, `level` at 400 nm."""
    return (level * (400.0 / wl) ** 4).astype(np.float32)


def shadow_factor(wl: np.ndarray) -> np.ndarray:
    """Reflectance scale in a cloud shadow: only diffuse skylight, relatively bluer."""
    return (0.25 + 0.2 * (400.0 / wl) ** 2).astype(np.float32)
