"""A synthetic PRISMA-like scene: the project's embedded default data set.

The scene is built on a sub-pixel grid (`subpixels` per pixel side) so that
parcel edges, roads and the river fall inside pixels and make mixed pixels.
Every surface is a per-sub-pixel mixture of a "canopy" and a "background"
spectrum of its parcel, weighted by a cover fraction whose spatial texture
depends on the crop: tree crops (oranges, olives) are spectrally close
canopy-plus-soil mixtures told apart mainly by texture (dense, even orange
groves; sparse, irregular olive groves).

The cube is written band by band, straight to disk, so the full PRISMA size
(234 x 1215 x 1091) needs a few hundred MB, not several copies of 1.24 GB.

Outputs (the format of a real acquisition):
    hsi.npy          float32 [bands, H, W], reflectance in [0, 1]
    train_crops.npy  uint8 [H, W], 0 = unlabelled, 1..6 = crop classes
    test_crops.npy   uint8 [H, W], on other parcels than train_crops
    wavelengths.npy  float32 [bands], nm
    scene.json       how the scene was made (not needed by prepare)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.special import expit
from tqdm import tqdm

from .. import paths
from ..config import CROP_NAMES, AdaptShadowConfig, AdaptSyntheticConfig, SynthesizeConfig
from ..io import NpyStreamWriter, staged_outputs, write_json
from . import georef, spectra

# Cover types: 1..6 are the crops (label = cover type), the rest is unlabelled background.
SOIL, URBAN, WATER, ROAD = 7, 8, 9, 10
BACKGROUND_NAMES = {SOIL: "bare soil", URBAN: "urban", WATER: "water", ROAD: "road"}
N_CROPS = len(CROP_NAMES)

# Share of parcels per cover type (crops then soil and urban; water and roads are drawn as lines).
COVER_WEIGHTS = {1: 0.16, 2: 0.10, 3: 0.12, 4: 0.12, 5: 0.14, 6: 0.10, SOIL: 0.16, URBAN: 0.10}


@dataclass(frozen=True)
class CropTraits:
    """Mean canopy parameters of a crop on a late-May Andalusian scene, and its cover texture."""

    chlorophyll: float
    red_edge: float
    nir: float
    water: float
    dry: float
    cover: float  # mean canopy cover of a sub-pixel
    texture: float  # pixel-scale std of the cover (tree-crop texture)
    patchiness: float  # amplitude of the smooth within-parcel vigour field
    background: str  # what shows between plants: "soil" or "water"
    brightness: float = 0.0


CROPS = {
    1: CropTraits(0.25, 704, 0.33, 0.35, 0.9, 0.92, 0.02, 0.06, "soil", 0.02),  # durum wheat, ripening
    2: CropTraits(0.90, 721, 0.40, 1.00, 0.1, 0.60, 0.03, 0.03, "soil"),  # oranges, dense even groves
    3: CropTraits(0.45, 711, 0.30, 0.60, 0.6, 0.70, 0.05, 0.18, "soil"),  # permanent grassland
    4: CropTraits(0.85, 717, 0.42, 1.00, 0.1, 0.35, 0.04, 0.10, "water"),  # rice, flooded, tillering
    5: CropTraits(1.00, 726, 0.52, 1.10, 0.0, 0.85, 0.03, 0.08, "soil"),  # sunflower, vigorous
    6: CropTraits(0.82, 719, 0.38, 0.90, 0.2, 0.55, 0.20, 0.05, "soil", 0.01),  # olives, sparse irregular
}


@dataclass
class Layout:
    """The scene on the sub-pixel grid: which parcel each sub-pixel belongs to."""

    parcel: np.ndarray  # int32 [Hs, Ws], parcel id (0..n_parcels-1)
    cover_type: np.ndarray  # int [n_parcels], 1..6 crops, SOIL, URBAN, WATER, ROAD
    district: np.ndarray  # int [n_parcels]


def synthesize(cfg: SynthesizeConfig, seed: int, out_dir: Path, progress: bool = True) -> dict:
    """Generate the scene into `out_dir` (replaced atomically). Returns the summary written to scene.json."""
    return _acquire(cfg, np.random.default_rng(seed), seed, out_dir, progress, CROPS, None)


def synthesize_target(
    cfg: SynthesizeConfig, target: AdaptSyntheticConfig, seed: int, out_dir: Path, progress: bool = True
) -> dict:
    """A target acquisition for domain adaptation, in the raw format, into `out_dir`.

    A neighbouring area (its own parcels and masks, drawn from `seed`) of the
    source scene's landscape, on a later date (crop phenology shifted by
    `target.phenology_shift`), under another illumination and atmosphere
    (band-dependent gain and additive path reflectance) and optionally partly
    under a cloud shadow. The source scene (`synthesize`) is not touched.
    """
    scene_cfg = replace(cfg, height=target.height, width=target.width)
    wl = spectra.prisma_wavelengths(cfg.bands)
    gain = spectra.illumination_gain(wl, target.gain)
    path = spectra.path_reflectance(wl, target.offset)
    dark = spectra.shadow_factor(wl)
    shadow = _shadow(target.height, target.width, target.shadow_fraction, np.random.default_rng([seed, 2]))

    def transform(b: int, band: np.ndarray) -> np.ndarray:
        return band * gain[b] * (1.0 - shadow * (1.0 - dark[b])) + path[b]

    extra = {
        "acquisition": {
            "phenology_shift": target.phenology_shift,
            "gain": target.gain,
            "offset": target.offset,
            "shadow_pixels": int((shadow > 0.5).sum()),
        }
    }
    return _acquire(
        scene_cfg,
        np.random.default_rng([seed, 1]),
        seed,
        out_dir,
        progress,
        later_date(target.phenology_shift),
        transform,
        extra,
    )


def later_date(shift: float) -> dict[int, CropTraits]:
    """The crops about four weeks after the source's late-May date; `shift` scales every change."""
    deltas = {
        1: {"chlorophyll": -0.15, "dry": 0.3, "water": -0.15, "nir": -0.03},  # durum wheat ready for harvest
        2: {"water": -0.1},  # oranges: evergreen, a little water stress
        3: {"chlorophyll": -0.15, "water": -0.2, "dry": 0.2},  # grassland drying out
        4: {"cover": 0.2, "chlorophyll": 0.1, "nir": 0.04},  # rice canopy closing over the water
        5: {"chlorophyll": -0.15, "brightness": 0.03, "nir": -0.04},  # sunflower in flower (yellow)
        6: {"water": -0.1},  # olives: water stress
    }
    return {k: replace(t, **{f: getattr(t, f) + shift * d for f, d in deltas[k].items()}) for k, t in CROPS.items()}


def _shadow(height: int, width: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Soft cloud-shadow weight [H, W] in [0, 1]: an ellipse covering about `fraction` of the scene."""
    if fraction <= 0:
        return np.zeros((height, width), dtype=np.float32)
    aspect = rng.uniform(0.5, 2.0)
    a = np.sqrt(fraction * height * width / (np.pi * aspect))  # semi-axes a (rows) and aspect * a (columns)
    cy, cx = rng.uniform(0.25, 0.75) * height, rng.uniform(0.25, 0.75) * width
    yy, xx = np.mgrid[0:height, 0:width]
    r = np.sqrt(((yy - cy) / a) ** 2 + ((xx - cx) / (aspect * a)) ** 2)
    return expit((1.0 - r) / 0.08).astype(np.float32)


def _acquire(
    cfg: SynthesizeConfig,
    root_rng: np.random.Generator,
    seed: int,
    out_dir: Path,
    progress: bool,
    crops: dict,
    transform,
    extra: dict | None = None,
) -> dict:
    """Draw a scene and write one acquisition of it; `transform(b, band)` alters each noise-free band."""
    layout_rng, spectra_rng, texture_rng, label_rng, noise_rng = root_rng.spawn(5)

    wl = spectra.prisma_wavelengths(cfg.bands)
    layout = _layout(cfg, layout_rng)
    canopy, ground = _parcel_spectra(layout.cover_type, wl, spectra_rng, crops)
    cover = _cover_fraction(cfg, layout, texture_rng, crops)
    train, test = _labels(cfg, layout, label_rng)
    sigma = spectra.noise_std(wl)

    s = cfg.subpixels
    with staged_outputs(out_dir) as (stage,):
        with NpyStreamWriter(stage / paths.RAW_CUBE, (cfg.bands, cfg.height, cfg.width), np.float32) as cube:
            for b in tqdm(range(cfg.bands), desc="synthesize: bands", unit="band", disable=not progress):
                # Mixed pixels: the mean over a pixel's sub-pixels of canopy/background mixtures.
                sub = ground[layout.parcel, b] + cover * (canopy[layout.parcel, b] - ground[layout.parcel, b])
                band = sub.reshape(cfg.height, s, cfg.width, s).mean(axis=(1, 3))
                if transform is not None:
                    band = transform(b, band)
                band += sigma[b] * noise_rng.standard_normal(band.shape, dtype=np.float32)
                cube.write(np.clip(band, 0.0, 1.0))
        np.save(stage / paths.RAW_TRAIN, train)
        np.save(stage / paths.RAW_TEST, test)
        np.save(stage / paths.RAW_WAVELENGTHS, wl)
        georef.write_synthetic_georef(stage, cfg.height, cfg.width)
        summary = {**_summary(cfg, seed, layout, train, test), **(extra or {})}
        write_json(stage / paths.RAW_SYNTHETIC_SUMMARY, summary)
    return summary


# ---------------------------------------------------------------------------- layout
def _layout(cfg: SynthesizeConfig, rng: np.random.Generator) -> Layout:
    """Fields from recursive splits of the scene (roads along the first cuts), then a river."""
    s = cfg.subpixels
    hs, ws = cfg.height * s, cfg.width * s
    parcel = np.zeros((hs, ws), dtype=np.int32)
    road = np.zeros((hs, ws), dtype=bool)
    min_side, max_side = cfg.min_parcel * s, cfg.max_parcel * s
    district_side = 3 * max_side  # blocks at this size share a land-use preference
    districts: list[int] = []
    n_districts = 0
    stack = [(0, hs, 0, ws, -1)]
    while stack:
        y0, y1, x0, x1, district = stack.pop()
        h, w = y1 - y0, x1 - x0
        if district < 0 and max(h, w) <= district_side:
            district, n_districts = n_districts, n_districts + 1
        splittable = max(h, w) >= 2 * min_side
        must_split = max(h, w) > max_side
        if splittable and (must_split or rng.random() < 0.35):
            axis = 0 if (h > w if h != w else rng.random() < 0.5) else 1
            lo, hi = (y0, y1) if axis == 0 else (x0, x1)
            cut = int(rng.integers(lo + min_side, hi - min_side + 1))
            if max(h, w) > district_side:  # main roads between districts, one sub-pixel wide
                if axis == 0:
                    road[cut, x0:x1] = True
                else:
                    road[y0:y1, cut] = True
            if axis == 0:
                stack += [(y0, cut, x0, x1, district), (cut, y1, x0, x1, district)]
            else:
                stack += [(y0, y1, x0, cut, district), (y0, y1, cut, x1, district)]
        else:
            parcel[y0:y1, x0:x1] = len(districts)
            districts.append(max(district, 0))
    district = np.asarray(districts)
    cover_type = _cover_types(district, max(n_districts, 1), rng)

    # Line features become parcels of their own: the road network and a meandering river.
    n = len(cover_type)
    parcel[road] = n
    yy, xx = np.mgrid[0:hs, 0:ws]
    centre = hs * (0.55 + 0.12 * np.sin(2 * np.pi * xx / ws * rng.uniform(0.8, 1.6) + rng.uniform(0, 2 * np.pi)))
    river = np.abs(yy - centre) < (1.2 + 0.5 * np.sin(xx / (7.0 * s))) * s
    parcel[river] = n + 1
    cover_type = np.concatenate([cover_type, [ROAD, WATER]])
    district = np.concatenate([district, [0, 0]])
    return Layout(parcel, cover_type, district)


def _cover_types(district: np.ndarray, n_districts: int, rng: np.random.Generator) -> np.ndarray:
    """Cover type per parcel; districts prefer some types, so crops cluster as in a real landscape."""
    types = np.array(list(COVER_WEIGHTS))
    base = np.array(list(COVER_WEIGHTS.values()))
    preference = rng.dirichlet(np.full(len(types), 0.6), size=n_districts)
    probs = 0.5 * base + 0.5 * preference
    probs /= probs.sum(axis=1, keepdims=True)
    u = rng.random(len(district))[:, None]
    cover = types[(u > np.cumsum(probs[district], axis=1)).sum(axis=1).clip(max=len(types) - 1)]
    # Every crop needs enough parcels for disjoint train and test sets, even on tiny scenes.
    for crop in range(1, N_CROPS + 1):
        missing = 4 - int((cover == crop).sum())
        if missing > 0:
            counts = np.bincount(cover, minlength=ROAD + 1)
            donors = np.flatnonzero((counts[cover] > 4) & (cover != crop))
            cover[rng.choice(donors, size=min(missing, len(donors)), replace=False)] = crop
    return cover


# ---------------------------------------------------------------------------- spectra and texture
def _parcel_spectra(
    cover_type: np.ndarray, wl: np.ndarray, rng: np.random.Generator, crops: dict = CROPS
) -> tuple[np.ndarray, np.ndarray]:
    """Per-parcel canopy and background spectra [n_parcels, bands], with parcel-level variability."""
    n = len(cover_type)
    canopy = np.zeros((n, len(wl)), dtype=np.float32)
    ground = np.zeros((n, len(wl)), dtype=np.float32)
    for p, kind in enumerate(cover_type):
        soil_ = spectra.soil(
            wl, brightness=rng.uniform(0.22, 0.36), moisture=rng.uniform(0.0, 0.25), iron=rng.uniform(0.2, 0.9)
        )
        if kind in crops:
            t = crops[kind]
            # Phenology and vigour differ from field to field.
            canopy[p] = spectra.leaf_canopy(
                wl,
                chlorophyll=float(np.clip(t.chlorophyll + rng.normal(0, 0.07), 0.05, 1.0)),
                red_edge=t.red_edge + rng.normal(0, 2.5),
                nir=t.nir * rng.uniform(0.9, 1.1),
                water=max(t.water + rng.normal(0, 0.08), 0.0),
                dry=max(t.dry + rng.normal(0, 0.08), 0.0),
                brightness=t.brightness,
            )
            ground[p] = spectra.water(wl, rng.uniform(0.3, 1.0)) if t.background == "water" else soil_
        elif kind == SOIL:
            canopy[p] = ground[p] = soil_
        elif kind == URBAN:
            canopy[p] = spectra.urban(wl, "tile", rng.uniform(0.8, 1.2))
            ground[p] = spectra.urban(wl, "concrete", rng.uniform(0.8, 1.2))
        elif kind == ROAD:
            canopy[p] = ground[p] = spectra.urban(wl, "asphalt", 1.0)
        elif kind == WATER:
            canopy[p] = ground[p] = spectra.water(wl, 0.8)
    return canopy, ground


def _cover_fraction(cfg: SynthesizeConfig, layout: Layout, rng: np.random.Generator, crops: dict = CROPS) -> np.ndarray:
    """Canopy cover per sub-pixel [Hs, Ws]: the crop's mean, a smooth vigour field, and its texture."""
    s = cfg.subpixels
    n = len(layout.cover_type)
    mean = np.zeros(n, dtype=np.float32)
    texture = np.zeros(n, dtype=np.float32)
    patchiness = np.zeros(n, dtype=np.float32)
    for p, kind in enumerate(layout.cover_type):
        if kind in crops:
            t = crops[kind]
            mean[p] = np.clip(t.cover + rng.normal(0, 0.04), 0.05, 0.98)
            texture[p], patchiness[p] = t.texture, t.patchiness
        elif kind == URBAN:
            mean[p], texture[p] = 0.45, 0.35  # roofs among streets and yards
    shape = (cfg.height, cfg.width)
    smooth = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 4.0)
    smooth /= smooth.std() + 1e-12
    grain = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 0.7)
    grain /= grain.std() + 1e-12
    # Fields vary at pixel scale; sub-pixels within a pixel share them.
    smooth = np.repeat(np.repeat(smooth, s, axis=0), s, axis=1)
    grain = np.repeat(np.repeat(grain, s, axis=0), s, axis=1)
    pid = layout.parcel
    cover = mean[pid] * (1.0 + patchiness[pid] * smooth) + texture[pid] * grain
    return np.clip(cover, 0.0, 1.0, out=cover)


# ---------------------------------------------------------------------------- ground truth
def _labels(cfg: SynthesizeConfig, layout: Layout, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Train and test label maps on disjoint sets of surveyed crop parcels.

    A pixel carries its parcel's label when the parcel under the pixel centre
    also covers at least half of the pixel, as when field polygons are
    rasterised; mixed edge pixels of that kind stay in the ground truth.
    """
    s = cfg.subpixels
    h, w = cfg.height, cfg.width
    centre = layout.parcel[s // 2 :: s, s // 2 :: s][:h, :w]
    blocks = layout.parcel.reshape(h, s, w, s)
    purity = (blocks == centre[:, None, :, None]).mean(axis=(1, 3))
    kind = layout.cover_type[centre]

    is_test = np.zeros(len(layout.cover_type), dtype=bool)
    surveyed = np.zeros(len(layout.cover_type), dtype=bool)
    for crop in range(1, N_CROPS + 1):
        parcels = rng.permutation(np.flatnonzero(layout.cover_type == crop))
        n_surveyed = max(2, int(round(cfg.labelled_fraction * len(parcels))))
        chosen = parcels[:n_surveyed]
        surveyed[chosen] = True
        n_test = min(max(1, int(round(cfg.test_fraction * len(chosen)))), len(chosen) - 1)
        is_test[chosen[:n_test]] = True

    labelled = (kind <= N_CROPS) & surveyed[centre] & (purity >= 0.5)
    train = np.where(labelled & ~is_test[centre], kind, 0).astype(np.uint8)
    test = np.where(labelled & is_test[centre], kind, 0).astype(np.uint8)
    return train, test


def _summary(cfg: SynthesizeConfig, seed: int, layout: Layout, train: np.ndarray, test: np.ndarray) -> dict:
    counts = lambda m: {name: int((m == k + 1).sum()) for k, name in enumerate(CROP_NAMES)}  # noqa: E731
    kinds = np.bincount(layout.cover_type, minlength=11)
    return {
        "generator": "hsixai synthetic PRISMA-like scene",
        "seed": seed,
        "shape": [cfg.bands, cfg.height, cfg.width],
        "n_parcels": int(len(layout.cover_type) - 2),
        "parcels_per_cover_type": {
            **{n: int(kinds[k + 1]) for k, n in enumerate(CROP_NAMES)},
            **{BACKGROUND_NAMES[k]: int(kinds[k]) for k in (SOIL, URBAN)},
        },
        "train_pixels": counts(train),
        "test_pixels": counts(test),
    }


def run(params, paths, progress: bool = True) -> dict:
    """The `synthesize` stage: the scene of `params.synthesize` into data/synthetic/."""
    return synthesize(params.synthesize, params.seed, paths.synthetic_dir, progress)


def run_target(params, paths, progress: bool = True) -> dict:
    """The `adapt_synthesize` stage: the target acquisition of `params.adapt.synthetic` into data/adapt/."""
    return synthesize_target(
        params.synthesize, params.adapt.synthetic, params.seed, paths.adapt_target_synthetic, progress
    )


# ---------------------------------------------------------------------------- the one-scene adaptation pair
# Added for domain adaptation (docs/adaptation.md, "The shadow pair"); uses only `synthesize`, the raw format and
# spectra.py, so it follows whatever scene the generator above draws.
SHADOW_PLACEMENTS = 64  # candidate shadow ellipses; the one whose worst class count is largest is kept


def synthesize_shadow_scene(
    cfg: SynthesizeConfig, shadow: AdaptShadowConfig, seed: int, out_dir: Path, progress: bool = True
) -> dict:
    """One scene partly under a cloud shadow, in the raw format plus region.npy (1 = under the shadow).

    The published University of Houston setting: a single acquisition, source =
    labelled pixels in the sun, target = labelled pixels in the shadow, so no
    pixel is labelled in both and there is no global gain or offset: the gap
    is the shadow alone. The scene is drawn by `synthesize` (sunlit; its own
    size and seed), then every band is scaled in the shadow by the diffuse-only
    factor of spectra.shadow_factor (soft edge), and noise is added back so the
    shadow keeps the sensor's noise level at a lower signal (a lower SNR, as a
    real shadow has). The ellipse is placed, among SHADOW_PLACEMENTS seeded
    candidates, where every crop has the most train and test pixels both in
    the sun and in the shadow: the pair needs every class on both sides.
    """
    import shutil

    from .. import paths as names

    scene_cfg = replace(cfg, height=shadow.height, width=shadow.width)
    rng = np.random.default_rng([seed, 3])
    scene_seed = int(rng.integers(0, 2**31 - 1))
    with staged_outputs(out_dir) as (stage,):
        sunlit = stage / "sunlit"
        synthesize(scene_cfg, scene_seed, sunlit, progress)
        train, test = np.load(sunlit / names.RAW_TRAIN), np.load(sunlit / names.RAW_TEST)
        wl = np.load(sunlit / names.RAW_WAVELENGTHS)
        weight, worst = _place_shadow(train, test, shadow.shadow_fraction, rng)
        dark, sigma = spectra.shadow_factor(wl), spectra.noise_std(wl)
        noise_rng = np.random.default_rng([seed, 4])
        cube = np.load(sunlit / names.RAW_CUBE, mmap_mode="r")
        with NpyStreamWriter(stage / names.RAW_CUBE, cube.shape, np.float32) as out:
            for b in tqdm(
                range(cube.shape[0]), desc="adapt_shadow_synthesize: bands", unit="band", disable=not progress
            ):
                scale = 1.0 - weight * (1.0 - dark[b])  # 1 in the sun, dark[b] deep in the shadow
                restore = sigma[b] * np.sqrt(np.clip(1.0 - scale**2, 0.0, None))
                band = cube[b] * scale + restore * noise_rng.standard_normal(scale.shape, dtype=np.float32)
                out.write(np.clip(band, 0.0, 1.0).astype(np.float32))
        del cube
        for name in (names.RAW_TRAIN, names.RAW_TEST, names.RAW_WAVELENGTHS, names.RAW_GEOREF):
            shutil.copyfile(sunlit / name, stage / name)  # the map grid too: the shadow is on the same ground
        region = (weight >= 0.5).astype(np.int8)
        np.save(stage / names.RAW_REGION, region)
        summary = {
            "generator": "hsixai one-scene adaptation pair (cloud shadow)",
            "seed": seed,
            "scene_seed": scene_seed,
            "shape": [int(len(wl)), shadow.height, shadow.width],
            "shadow_pixels": int(region.sum()),
            "shadow_fraction": float(region.mean()),
            "worst_class_count": worst,
            **_region_counts(train, test, region),
        }
        shutil.rmtree(sunlit)
        write_json(stage / names.RAW_SYNTHETIC_SUMMARY, summary)
    return summary


def _place_shadow(
    train: np.ndarray, test: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """Soft shadow weight [H, W] in [0, 1] (an ellipse over about `fraction` of the scene, 0 beyond its soft edge),
    and its worst count.

    The worst count is the smallest number of labelled pixels of any crop in any
    of: train in the shadow, test in the shadow, train in the sun, test in the sun.
    """
    h, w = train.shape
    yy, xx = np.mgrid[0:h, 0:w]
    best, best_worst = None, -1
    for _ in range(SHADOW_PLACEMENTS):
        aspect = rng.uniform(0.6, 1.6)
        a = np.sqrt(fraction * h * w / (np.pi * aspect))  # semi-axes a (rows) and aspect * a (columns)
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        r = np.sqrt(((yy - cy) / a) ** 2 + ((xx - cx) / (aspect * a)) ** 2)
        weight = expit((1.0 - r) / 0.05).astype(np.float32)
        weight[weight < 1e-3] = 0.0  # the sunlit part stays exactly the sunlit scene
        counts = _region_counts(train, test, (weight >= 0.5).astype(np.int8))
        worst = min(min(v.values()) for v in counts.values())
        if worst > best_worst:
            best, best_worst = weight, worst
    return best, int(best_worst)


def _region_counts(train: np.ndarray, test: np.ndarray, region: np.ndarray) -> dict:
    """Labelled pixels per crop name in and out of the region, for the train and the test mask."""
    out = {}
    for mask_name, mask in (("train", train), ("test", test)):
        for side, inside in (("shadow", region == 1), ("sun", region == 0)):
            out[f"{mask_name}_{side}"] = {
                name: int(((mask == k + 1) & inside).sum()) for k, name in enumerate(CROP_NAMES)
            }
    return out


def run_adapt_source(params, paths, progress: bool = True) -> dict:
    """The `adapt_source_synthesize` stage: the two_scenes pair's source, the scene generator at
    `params.adapt.source_synthetic`'s size, into data/adapt/source_synthetic/."""
    size = params.adapt.source_synthetic
    return synthesize(
        replace(params.synthesize, height=size.height, width=size.width),
        params.seed,
        paths.adapt_source_synthetic,
        progress,
    )


def run_shadow(params, paths, progress: bool = True) -> dict:
    """The `adapt_shadow_synthesize` stage: the one-scene pair of `params.adapt.shadow_synthetic`."""
    return synthesize_shadow_scene(
        params.synthesize, params.adapt.shadow_synthetic, params.seed, paths.adapt_shadow_synthetic, progress
    )
