"""paths.py is the one place that names artifacts: no other module of src/hsixai writes a file name down.

The check reads each module with ast and reports every string constant, or
f-string, that is a file name on its own: one path-like token (no spaces)
with a stem and an artifact's extension, e.g. "cube.npy", "reports/x.md",
f"instance_{i}.pt", "*.png" or "_labels.npy". Not reported, by rule:
docstrings; a bare extension (".npy", used to pick a reader by suffix); a
name inside a sentence (an error or help text such as "-> metrics/train.json",
which only tells a person where to look).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from hsixai.paths import Paths

from ..conftest import REPO

PACKAGE = REPO / "src" / "hsixai"
EXTENSIONS = (
    "npy",
    "npz",
    "pt",
    "pth",
    "ckpt",
    "json",
    "png",
    "svg",
    "pdf",
    "csv",
    "tsv",
    "tif",
    "tiff",
    "md",
    "yaml",
    "yml",
    "txt",
    "log",
    "db",
    "h5",
    "hdf5",
    "he5",
    "hdr",
    "mat",
    "lock",
    "html",
)
# One token of path characters whose last part has a stem ({} stands for an f-string's placeholder).
FILE_NAME = re.compile(rf"^[\w.{{}}*/<>-]*[\w{{}}*<>-]\.(?:{'|'.join(EXTENSIONS)})$", re.IGNORECASE)

# (module under src/hsixai, the string as reported, why it is not an artifact). Each entry must still occur:
# a stale one fails test_allowed_names_still_occur, so the list cannot grow stale.
ALLOWED = {
    # The ENVI header beside a data file the user hands to `hsixai convert`: an input's name, found by the
    # convention of the format (data.bsq -> data.bsq.hdr), not an artifact of this project.
    ("data/formats.py", "{}.hdr"),
}


def docstring_nodes(tree: ast.AST) -> set[int]:
    """ids of the constants that are docstrings of the module, a class or a function."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                found.add(id(first.value))
    return found


def rendered(node: ast.AST) -> str | None:
    """A str constant as it is; an f-string with {} for each placeholder; None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return None


def file_names(source: str, filename: str = "<source>") -> list[tuple[int, str]]:
    """(line, string) for each string in `source` that is a file name on its own, in source order."""
    tree = ast.parse(source, filename)
    docstrings = docstring_nodes(tree)
    hits = []
    for node in ast.walk(tree):
        text = rendered(node)
        if text is not None and id(node) not in docstrings and FILE_NAME.match(text):
            hits.append((node.lineno, text))
    return sorted(set(hits))


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "paths.py")


def test_no_file_name_outside_paths_py():
    found = []
    for path in modules():
        module = path.relative_to(PACKAGE).as_posix()
        for line, text in file_names(path.read_text(), str(path)):
            if (module, text) not in ALLOWED:
                found.append(f"src/hsixai/{module}:{line}: {text!r}")
    assert not found, (
        "file names written outside src/hsixai/paths.py (name them there, or allow them in "
        "tests/unit/test_paths.py with the reason):\n" + "\n".join(found)
    )


def test_allowed_names_still_occur():
    for module, text in ALLOWED:
        assert text in {t for _, t in file_names((PACKAGE / module).read_text())}, (
            f"ALLOWED: {text!r} no longer occurs in src/hsixai/{module}; remove the entry"
        )


def test_file_names_finds_what_it_should_and_only_that():
    source = '''
"""A module docstring naming out/cube.npy is prose."""
import numpy as np

RAW = "hsi.npy"


def write(out, i, name, suffix):
    """Writes meta.json."""
    np.save(out / "cube.npy", 0)
    np.save(out / f"instance_{i}.pt", 0)
    np.save(out / (name + "_labels.npy"), 0)
    figures = sorted(out.glob("*.png"))
    report = out / "reports/selection.md"
    log = out / ".server.log"
    if suffix == ".npy" or suffix in (".tif", ".tiff"):
        raise ValueError(f"{out}: not a valid meta.json of the prepare stage")
    print("evaluate -> metrics/evaluate.json")
    return out / "reports", out / f"{name}.tmp-1", figures, report, log, RAW
'''
    assert file_names(source) == [
        (5, "hsi.npy"),
        (10, "cube.npy"),
        (11, "instance_{}.pt"),
        (12, "_labels.npy"),
        (13, "*.png"),
        (14, "reports/selection.md"),
        (15, ".server.log"),
    ]


def test_paths_are_absolute_and_the_two_label_maps_differ(tmp_path):
    paths = Paths.at(tmp_path)
    files = [
        paths.prepared_files().training_mask,
        paths.split_files().train_labels,
        paths.checkpoint(0),
        paths.figures("train").training_curves,
        paths.selection_report().json,
        paths.mlflow_server_log,
    ]
    assert all(f.is_absolute() and f.is_relative_to(tmp_path.resolve()) for f in files)
    assert paths.prepared_files().training_mask.name != paths.split_files().train_labels.name
    assert paths.checkpoint(3, tmp_path / "staging") == tmp_path / "staging" / paths.checkpoint(3).name
    assert paths.params_name == "params.yaml"
