"""Command line: one subcommand per stage. Thin: parse, load params, call the stage's run()."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys

from .config import load_params
from .errors import HsixaiError
from .paths import Paths

# name -> (help, "module:function"). Only the chosen command's module is imported: importing every
# stage (torch, captum, mlflow) cost each `hsixai` call ~3.7 s and ~400 MB before any work.
STAGES: dict[str, tuple[str, str]] = {
    "synthesize": ("generate the synthetic PRISMA-like scene into data/synthetic", "data.synthetic:run"),
    "prepare": ("remove bands, min-max scale, 0-based labels -> data/prepared", "data.prepare:run"),
    "split": ("spatial train/dev split, band statistics, xAI sample -> data/split", "data.split:run"),
    "train": ("train train.instances models for (model, patch_size) -> models/ (torchrun-ready)", "train:run"),
    "evaluate": ("test-set metrics per instance, classification map -> metrics/evaluate.json", "evaluate:run"),
    "attribute": ("Integrated Gradients on the xAI sample -> data/attributions/profiles.npz", "xai.attributions:run"),
    "consistency": (
        "Jensen-Shannon consistency of the explanations -> metrics/consistency.json",
        "xai.consistency:run",
    ),
    "bundle": (
        "the workspace point's model bundle (checkpoints + bands, scaling, classes) -> bundle/",
        "predict:run_bundle",
    ),
    "map": ("the workspace scene mapped by the workspace point's bundle -> maps/scene.tif (+ .png)", "predict:run_map"),
    "adapt_synthesize": (
        "synthesize the target acquisition for domain adaptation -> data/adapt/target_synthetic",
        "data.synthetic:run_target",
    ),
    "adapt_source_synthesize": (
        "synthesize the source scene of the two_scenes pair -> data/adapt/source_synthetic",
        "data.synthetic:run_adapt_source",
    ),
    "adapt_shadow_synthesize": (
        "synthesize the one-scene pair (a cloud shadow) -> data/adapt/shadow_synthetic",
        "data.synthetic:run_shadow",
    ),
    "adapt_prepare": (
        "every pair of adapt.pairs, scaled alike, few target labels -> data/adapt/prepared",
        "adapt.data:run",
    ),
    "adapt_pretrain": ("source segmenters, one per pair and seed -> data/adapt/source_models", "adapt.pretrain:run"),
    "adapt": ("adversarial adaptation, every pair, arm and seed -> data/adapt/target_models", "adapt.adversarial:run"),
    "adapt_evaluate": (
        "the ablation on the target test masks -> metrics/adapt.json, figures/adapt/",
        "adapt.evaluate:run",
    ),
    "adapt_labels": (
        "the labels sweep (adapt.labels_sweep) for adapt.labels_sweep_arms -> metrics/adapt_labels.json",
        "adapt.labels:run",
    ),
    "sweep": ("queue and run one DVC experiment per (model, patch size) of params 'sweep', then select", "sweep:run"),
    "select": ("rank the experiments of this commit by consistency -> reports/selection.*", "select:run"),
}


def _stage_function(name: str):
    module, function = STAGES[name][1].split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), function)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hsixai", description=__doc__)
    parser.add_argument("--root", default=None, help="repository root (default: the current directory)")
    parser.add_argument("--params", default=None, help="params file (default: <root>/params.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_, _) in STAGES.items():
        command = sub.add_parser(name, help=help_)
        if name == "sweep":
            command.add_argument(
                "-j",
                "--jobs",
                type=int,
                default=None,
                help="parallel queue workers (default: sweep.jobs in params.yaml)",
            )
            command.add_argument(
                "--profile",
                default=None,
                metavar="NAME",
                help="sweep a settings profile, profiles/NAME.yaml over params.yaml, e.g. "
                "'published' (profiles/published.yaml: hours on a CPU)",
            )
            command.add_argument(
                "--published",
                dest="profile",
                action="store_const",
                const="published",
                help="the same as --profile published",
            )
    _add_convert(sub)
    _add_predict(sub)
    return parser


def _add_convert(sub: argparse._SubParsersAction) -> None:
    command = sub.add_parser(
        "convert",
        help="GeoTIFF / ENVI / .mat / .npy cube or PRISMA L2C/L2D .he5 product and "
        "masks -> a raw data directory (with its map grid when it has one)",
    )
    command.add_argument("cube", help="the cube: .tif, ENVI .hdr (or its data file), .mat, .npy or a PRISMA .he5")
    command.add_argument("--train", required=True, help="training mask [H, W] (0 = unlabelled), any of those formats")
    command.add_argument("--test", required=True, help="test mask [H, W], any of those formats")
    command.add_argument("--out", required=True, help="raw directory to write (replaced atomically)")
    command.add_argument("--wavelengths", default=None, help=".npy or text file of band centres (nm, or µm if < 30)")
    command.add_argument("--band-axis", type=int, default=None, help="the cube's band axis (default: detected)")
    command.add_argument("--var", default=None, help="the cube's variable in a .mat file (default: the only 3-D one)")
    command.add_argument("--train-var", default=None, help="the training mask's .mat variable")
    command.add_argument("--test-var", default=None, help="the test mask's .mat variable")
    command.add_argument("--classes", type=int, default=None, help="number of classes (default: the largest label)")


def _convert(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .data.formats import ConvertRequest, convert

    def opt(value: str | None) -> Path | None:
        return None if value is None else Path(value)

    summary = convert(
        ConvertRequest(
            cube=Path(args.cube),
            train=Path(args.train),
            test=Path(args.test),
            out=Path(args.out),
            wavelengths=opt(args.wavelengths),
            band_axis=args.band_axis,
            var=args.var,
            train_var=args.train_var,
            test_var=args.test_var,
            n_classes=args.classes,
        ),
        progress=not args.no_progress,
    )
    grid = summary["georef"]["crs"] if summary["georef"] else "none (pixel grid)"
    print(
        f"{args.out}: hsi.npy {summary['shape']} {summary['dtype']} (band axis {summary['band_axis']} of "
        f"{args.cube}), {summary['n_classes']} classes, wavelengths: {summary['wavelengths'] or 'none'}, "
        f"map grid: {grid if grid.startswith(('EPSG:', 'none')) else 'a WKT CRS (georef.json)'}, "
        f"pixels without data: {summary['nodata_pixels']}"
    )


def _add_predict(sub: argparse._SubParsersAction) -> None:
    command = sub.add_parser(
        "predict",
        help="map an acquisition with a trained point -> a GeoTIFF of crop classes, one of probabilities and a PNG",
        description="Map an acquisition (a raw directory, or any cube file `hsixai convert` reads) with a trained "
        "point: OUT (uint8 classes, 0 = not classified, class k -> k + 1, colour table and crop names), "
        "OUT's name + .probability.tif (float32: the mean of the instances' softmax) and OUT's name + .png "
        "(quick-look). Without --model: the recommended point of the last selection (reports/selection.json), "
        "its model bundle built from the DVC experiment's commit and cache. The workspace point's bundle is "
        "bundle/ (dvc repro bundle).",
    )
    command.add_argument("scene", help="raw directory (hsi.npy, ...) or a .tif / ENVI / .mat / .npy / PRISMA .he5 cube")
    command.add_argument("--out", required=True, help="the class map to write (.tif); the others are put beside it")
    command.add_argument(
        "--model",
        default=None,
        help="a model bundle directory (e.g. bundle/), or a registered version (models:/hsixai-cnn2d@champion); "
        "default: the selection's recommended point",
    )
    command.add_argument("--group", default=None, help="with several models in the selection: which group's point")
    command.add_argument(
        "--window",
        type=int,
        nargs=4,
        metavar=("ROW", "COL", "HEIGHT", "WIDTH"),
        default=None,
        help="map only this rectangle of the scene (pixels)",
    )
    command.add_argument("--mask", default=None, help="[H, W] on the scene's grid (.tif, .npy, ...): nonzero = map")
    command.add_argument(
        "--softmax", action="store_true", help="every class's probability (one band each) instead of the chosen one's"
    )
    command.add_argument("--wavelengths", default=None, help="band centres for a cube file without them")
    command.add_argument("--band-axis", type=int, default=None, help="the cube file's band axis (default: detected)")
    command.add_argument("--var", default=None, help="the cube's variable in a .mat file")
    command.add_argument(
        "--wavelength-tolerance",
        type=float,
        default=None,
        metavar="NM",
        help="how far a band's centre may lie from the training scene's (default: 3 nm)",
    )
    command.add_argument(
        "--scene-from-experiment",
        action="store_true",
        help="read SCENE (a path in the repository, e.g. data/synthetic) from the recommended experiment's commit "
        "and the DVC cache: a workspace that never ran the data stages (hsixai sweep on a fresh clone)",
    )
    command.add_argument("--batch-size", type=int, default=512, help="patches per forward pass")
    command.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


def _predict(args: argparse.Namespace, paths: Paths) -> None:
    from pathlib import Path

    from .predict import DEFAULT_TOLERANCE_NM, MapOptions, PredictRequest, Window, run_predict

    options = MapOptions(
        window=None if args.window is None else Window(*args.window),
        mask=None if args.mask is None else Path(args.mask),
        softmax=args.softmax,
        band_axis=args.band_axis,
        var=args.var,
        wavelengths=None if args.wavelengths is None else Path(args.wavelengths),
        tolerance_nm=DEFAULT_TOLERANCE_NM if args.wavelength_tolerance is None else args.wavelength_tolerance,
        batch_size=args.batch_size,
    )
    request = PredictRequest(
        Path(args.scene),
        Path(args.out),
        None if args.model is None else Path(args.model),
        args.group,
        args.device,
        options,
        args.scene_from_experiment,
    )
    summary = run_predict(request, paths, progress=not args.no_progress)
    print(
        f"{args.out}: {summary['classified_pixels']} pixels classified by {summary['model']} "
        f"p={summary['patch_size']} ({summary['instances']} instances, mean softmax), map grid: "
        f"{summary['crs'] or 'none (pixel grid)'}"
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING, stream=sys.stderr)
    logging.addLevelName(logging.WARNING, "warning")
    args = build_parser().parse_args(argv)
    paths = Paths.at(args.root)
    try:
        if args.command == "convert":  # not a DVC stage: no params
            _convert(args)
            return 0
        if args.command == "predict":  # not a DVC stage either: it takes its options on the command line
            _predict(args, paths)
            return 0
        params = load_params(args.params or paths.params)
        extra = {"jobs": args.jobs, "profile": args.profile} if args.command == "sweep" else {}
        _stage_function(args.command)(params, paths, progress=not args.no_progress, **extra)
    except HsixaiError as exc:
        print(f"hsixai {args.command}: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:  # Ctrl-C where no handler of our own runs: outputs are staged, so none was written
        print(f"hsixai {args.command}: interrupted by SIGINT before it finished; it wrote no output", file=sys.stderr)
        return 128 + signal.SIGINT
    return 0


if __name__ == "__main__":
    sys.exit(main())
