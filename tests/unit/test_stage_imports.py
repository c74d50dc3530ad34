"""A stage module imports no other stage module, and every hsixai module it imports is among its dvc.yaml deps.

dvc.yaml's stages are mapped to their modules through cli.STAGES (the
`hsixai <command>` of each `cmd`), and each module's imports within hsixai are
followed transitively, function-level imports included. Every stage of dvc.yaml
is checked, both ways: an hsixai module a stage imports but does not list is a
stage that editing the module would not re-run; a listed source path the stage
never imports re-runs it for nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from hsixai.cli import STAGES

from ..conftest import REPO

PACKAGE = REPO / "src" / "hsixai"


def module_file(name: str) -> Path:
    """hsixai.a.b -> src/hsixai/a/b.py or src/hsixai/a/b/__init__.py."""
    parts = name.split(".")[1:]
    base = PACKAGE.joinpath(*parts)
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def is_module(name: str) -> bool:
    return name.split(".")[0] == "hsixai" and module_file(name).is_file()


def direct_imports(name: str) -> set[str]:
    """The hsixai modules `name` imports anywhere in its source (relative imports resolved)."""
    path = module_file(name)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            found.add(origin)
            found.update(f"{origin}.{a.name}" for a in node.names)  # `from .. import plots` imports a module
    return {m for m in found if is_module(m)} - {name}


def has_code(name: str) -> bool:
    """Whether a module holds more than a docstring and dunder metadata such as __version__.

    A package __init__ with only those is not worth a dep: editing it changes no stage's output.
    """

    def metadata(node: ast.stmt) -> bool:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            return True
        return isinstance(node, ast.Assign) and all(
            isinstance(t, ast.Name) and t.id.startswith("__") for t in node.targets
        )

    return not all(metadata(n) for n in ast.parse(module_file(name).read_text()).body)


def imported_modules(name: str) -> set[str]:
    """Every hsixai module `name` imports, transitively, with the packages whose __init__ runs on the way."""
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        parts = current.split(".")
        todo += [".".join(parts[:i]) for i in range(2, len(parts)) if is_module(".".join(parts[:i]))]
        todo += sorted(direct_imports(current))
    return seen - {name}


def dvc_stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def stage_modules(stages: dict[str, dict] | None = None) -> dict[str, str]:
    """dvc.yaml stage -> the hsixai module its `hsixai <command>` runs."""
    stages = dvc_stages() if stages is None else stages
    out = {}
    for stage, spec in stages.items():
        words = spec["cmd"].split()
        command = next(w for w in words[1:] if not w.startswith("-"))
        out[stage] = f"hsixai.{STAGES[command][1].split(':')[0]}"
    return out


def relative(name: str) -> str:
    return str(module_file(name).relative_to(REPO))


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def problems(stage: str, stages: dict[str, dict] | None = None) -> list[str]:
    """What is wrong with `stage` of `stages` (default: dvc.yaml's): stage modules it imports, imports its deps
    lack, and source deps it never imports."""
    stages = dvc_stages() if stages is None else stages
    modules = stage_modules(stages)
    own = modules[stage]
    others = set(modules.values()) - {own}
    imported = imported_modules(own)
    out = [f"{stage}: {own} imports the stage module {m}" for m in sorted(imported & others)]
    deps = [str(d) for d in stages[stage].get("deps", [])]
    needed = [relative(m) for m in sorted(imported | {own}) if has_code(m)]
    out += [f"{stage}: imports {p} but dvc.yaml does not list it in deps" for p in needed if not covered(p, deps)]
    every = [relative(m) for m in imported | {own}]
    out += [
        f"{stage}: dvc.yaml lists {d} in deps but the stage never imports it"
        for d in deps
        if d.startswith("src/") and not any(covered(p, [d]) for p in every)
    ]
    return out


def test_every_stage_maps_to_a_module():
    for stage, module in stage_modules().items():
        assert module_file(module).is_file(), f"{stage}: {module}"


@pytest.mark.parametrize("stage", list(dvc_stages()))
def test_stage_imports_no_stage_and_lists_its_imports(stage):
    assert not problems(stage), "\n".join(problems(stage))


def _graph(monkeypatch, imports: dict[str, set[str]]) -> None:
    """Replace the source's imports by a synthetic graph of real module names (module -> what it imports)."""
    monkeypatch.setattr(__import__(__name__, fromlist=["x"]), "direct_imports", lambda name: imports.get(name, set()))


SYNTHETIC_STAGES = {  # two stages over real module names; the graph is set per test
    "evaluate": {
        "cmd": "hsixai --no-progress evaluate",
        "deps": ["models", "src/hsixai/evaluate.py", "src/hsixai/runtime.py", "src/hsixai/errors.py"],
    },
    "train": {
        "cmd": "hsixai --no-progress train",
        "deps": ["src/hsixai/train.py", "src/hsixai/runtime.py", "src/hsixai/errors.py"],
    },
}


def test_a_synthetic_graph_in_line_with_its_deps_passes(monkeypatch):
    _graph(
        monkeypatch,
        {
            "hsixai.evaluate": {"hsixai.runtime"},
            "hsixai.train": {"hsixai.runtime"},
            "hsixai.runtime": {"hsixai.errors"},
        },
    )
    assert problems("evaluate", SYNTHETIC_STAGES) == [] and problems("train", SYNTHETIC_STAGES) == []


def test_a_stage_importing_a_stage_fails_even_through_a_shared_module(monkeypatch):
    """Half one: evaluate -> runtime -> train is caught, though evaluate never names train itself."""
    _graph(monkeypatch, {"hsixai.evaluate": {"hsixai.runtime"}, "hsixai.runtime": {"hsixai.errors", "hsixai.train"}})
    found = problems("evaluate", SYNTHETIC_STAGES)
    assert "evaluate: hsixai.evaluate imports the stage module hsixai.train" in found
    with pytest.raises(AssertionError, match="imports the stage module hsixai.train"):
        assert not found, "\n".join(found)


def test_an_import_missing_from_the_deps_fails(monkeypatch):
    """Half two: evaluate imports io (through runtime) and dvc.yaml does not list it."""
    _graph(monkeypatch, {"hsixai.evaluate": {"hsixai.runtime"}, "hsixai.runtime": {"hsixai.errors", "hsixai.io"}})
    assert problems("evaluate", SYNTHETIC_STAGES) == [
        "evaluate: imports src/hsixai/io.py but dvc.yaml does not list it in deps"
    ]


def test_a_source_dep_the_stage_never_imports_fails(monkeypatch):
    _graph(monkeypatch, {"hsixai.train": {"hsixai.errors"}})
    assert problems("train", SYNTHETIC_STAGES) == [
        "train: dvc.yaml lists src/hsixai/runtime.py in deps but the stage never imports it"
    ]


def test_the_checker_catches_a_stage_importing_a_stage(monkeypatch):
    """On the real graph: adapt/evaluate.py as it was (importing adversarial and train) is caught."""
    original = direct_imports

    def with_old_imports(name: str) -> set[str]:
        found = original(name)
        return found | {"hsixai.adapt.adversarial", "hsixai.train"} if name == "hsixai.adapt.evaluate" else found

    monkeypatch.setattr(__import__(__name__, fromlist=["x"]), "direct_imports", with_old_imports)
    found = problems("adapt_evaluate")
    assert any("imports the stage module hsixai.adapt.adversarial" in p for p in found)
    assert any("imports the stage module hsixai.train" in p for p in found)
    assert any("src/hsixai/adapt/adversarial.py but dvc.yaml does not list it" in p for p in found)


def test_relative_imports_resolve():
    assert "hsixai.adapt.common" in direct_imports("hsixai.adapt.evaluate")
    assert "hsixai.plots" in direct_imports("hsixai.adapt.evaluate"), "from .. import plots is a module import"
    assert "hsixai.data.spectra" in direct_imports("hsixai.data.synthetic")
