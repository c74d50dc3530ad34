"""The documentation stays true to the repository.

- Every relative link in README.md and docs/*.md leads to a file or directory of the repository that git
  does not ignore, and a `#anchor` to a heading of the target Markdown file (GitHub's heading slugs).
- README.md stays under 200 lines and shows `make run` and `make test` at the top.
- The README's map of the repository (the first fenced block under "## Map of the repository"; one line
  per path: the path, then what it holds) names exactly the modules and packages under src/hsixai/, only
  paths that exist, and every non-hidden top-level directory that git tracks.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
PACKAGE = REPO / "src" / "hsixai"
MAX_README_LINES = 200
MAP_HEADING = "## Map of the repository"

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+).*?\1")
# [text](target) and ![alt](target), with an optional "title"; the target may be wrapped in <...>.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # https:, mailto:, ...
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def markdown_files() -> list[Path]:
    return [README, *sorted((REPO / "docs").glob("*.md"))]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line outside fenced code blocks."""
    lines, in_fence = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            lines.append((number, line))
    return lines


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every Markdown link and image outside code blocks and code spans."""
    found = []
    for number, line in prose_lines(text):
        for match in LINK.finditer(INLINE_CODE.sub("", line)):
            found.append((number, match.group(1)))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lower case, punctuation dropped, each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts as its text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor; a repeated slug gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    result = set()
    for _, line in prose_lines(text):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def link_problems(markdown: Path, root: Path) -> list[str]:
    """One line per relative link of `markdown` that leads nowhere inside `root`."""
    problems = []
    for number, target in links(markdown.read_text(encoding="utf-8")):
        where = f"{markdown.relative_to(root)}:{number}: link {target!r}"
        if not target:
            problems.append(f"{where}: empty target")
            continue
        if SCHEME.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        destination = (markdown.parent / unquote(path_part)).resolve() if path_part else markdown
        if not destination.is_relative_to(root):
            problems.append(f"{where}: leaves the repository")
        elif not destination.exists():
            problems.append(f"{where}: {destination.relative_to(root)} does not exist")
        elif anchor:
            if destination.suffix != ".md":
                problems.append(f"{where}: an anchor into a file that is not Markdown")
            elif anchor not in anchors(destination.read_text(encoding="utf-8")):
                problems.append(f"{where}: no heading '#{anchor}' in {destination.relative_to(root)}")
    return problems


def in_git_work_tree() -> bool:
    try:
        proc = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--is-inside-work-tree"], capture_output=True, text=True
        )
    except FileNotFoundError:
        return False
    return proc.returncode == 0 and proc.stdout.strip() == "true"


needs_git = pytest.mark.skipif(not in_git_work_tree(), reason="needs a git checkout of the repository")


def code_map() -> list[str]:
    """The paths of the README's map: the first token of each line of the first fenced block after MAP_HEADING."""
    text = README.read_text(encoding="utf-8").splitlines()
    assert MAP_HEADING in text, f"README.md has no '{MAP_HEADING}' heading"
    paths, in_block = [], False
    for line in text[text.index(MAP_HEADING) + 1 :]:
        if FENCE.match(line):
            if in_block:
                return paths
            in_block = True
        elif in_block and line.strip():
            paths.append(line.split()[0])
        elif not in_block and line.startswith("#"):
            break
    raise AssertionError(f"README.md: no fenced block under '{MAP_HEADING}' before the next heading")


def package_entries() -> set[str]:
    """Every module (`.py` other than __init__.py) and package (a directory holding `.py` files) under src/hsixai/."""
    entries = set()
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(REPO)
        if any(part == "__pycache__" or part.startswith(".") for part in relative.parts):
            continue
        if path.name != "__init__.py":
            entries.add(relative.as_posix())
        for parent in path.parents:
            if parent == PACKAGE:
                break
            entries.add(parent.relative_to(REPO).as_posix() + "/")
    return entries


# --- the checker checks: a known slug, a broken link and a broken anchor are caught ---------------------------


def test_slug_follows_github():
    assert slug("What `make run` produces") == "what-make-run-produces"
    assert slug("A sweep and its selection (`make run`)") == "a-sweep-and-its-selection-make-run"
    assert slug("The map grid: `georef.json`") == "the-map-grid-georefjson"
    assert slug("**Bold** and [a link](x.md)") == "bold-and-a-link"
    assert anchors("# Title\n## Notes\n## Notes\n```\n## not a heading\n```\n") == {"title", "notes", "notes-1"}


def test_link_problems_are_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n## Part one\n", encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text(
        "[ok](docs/a.md) [ok](docs/a.md#part-one) [web](https://example.org/x) [self](#top)\n"
        "[gone](docs/b.md) [bad anchor](docs/a.md#part-two) [out](../elsewhere.md)\n"
        "`[in code](docs/c.md)`\n```\n[in a block](docs/d.md)\n```\n# Top\n",
        encoding="utf-8",
    )
    problems = link_problems(readme, tmp_path)
    assert len(problems) == 3, problems
    assert "docs/b.md does not exist" in problems[0]
    assert "no heading '#part-two'" in problems[1]
    assert "leaves the repository" in problems[2]


# --- the repository's documentation -------------------------------------------------------------------------


@pytest.mark.parametrize("markdown", markdown_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(markdown):
    assert link_problems(markdown, REPO) == []


@needs_git
def test_no_link_leads_to_an_ignored_file():
    """A link to a generated file (models/, reports/) works only where the pipeline has run."""
    targets = set()
    for markdown in markdown_files():
        for _, target in links(markdown.read_text(encoding="utf-8")):
            path_part = target.partition("#")[0]
            if path_part and not SCHEME.match(target):
                targets.add(((markdown.parent / unquote(path_part)).resolve()).relative_to(REPO).as_posix())
    proc = subprocess.run(
        ["git", "-C", str(REPO), "check-ignore", "--stdin"],
        input="\n".join(sorted(targets)),
        capture_output=True,
        text=True,
    )
    assert proc.returncode in (0, 1), proc.stderr
    assert proc.stdout.split() == [], "links to files git ignores"


def test_readme_is_short_and_starts_with_the_two_commands():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < MAX_README_LINES, f"README.md has {len(lines)} lines; move detail into docs/"
    top = "\n".join(lines[:20])
    assert re.search(r"^make run\b", top, re.MULTILINE) and re.search(r"^make test\b", top, re.MULTILINE), (
        "README.md: `make run` and `make test` belong in its first 20 lines"
    )


def test_code_map_lists_every_module_and_package():
    listed = code_map()
    duplicates = sorted({p for p in listed if listed.count(p) > 1})
    assert duplicates == [], f"listed twice in the README's map: {duplicates}"
    in_map = {p for p in listed if p.startswith("src/hsixai/") and p != "src/hsixai/"}
    actual = package_entries()
    assert sorted(actual - in_map) == [], "modules or packages missing from the README's map"
    assert sorted(in_map - actual) == [], "the README's map names modules or packages that do not exist"


def test_code_map_paths_exist():
    missing = [p for p in code_map() if not (REPO / p).exists() or (p.endswith("/") and not (REPO / p).is_dir())]
    assert missing == [], "the README's map names paths that do not exist"


@needs_git
def test_code_map_lists_every_tracked_top_level_directory():
    files = subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True, text=True, check=True)
    directories = {name.split("/")[0] + "/" for name in files.stdout.splitlines() if "/" in name}
    visible = {d for d in directories if not d.startswith(".")}
    assert sorted(visible - set(code_map())) == [], "top-level directories missing from the README's map"
