"""The book's form: every chapter is listed, opens on Colab, installs from the one address."""
import re
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
REPO = CONFIG["repository"]["url"].rstrip("/")
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _toc_files(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("file", "root"):
                yield v
            else:
                yield from _toc_files(v)
    elif isinstance(node, list):
        for v in node:
            yield from _toc_files(v)


def test_toc_files_exist_and_every_chapter_is_listed():
    files = set(_toc_files(TOC))
    for f in files:
        assert any((ROOT / f"{f}{ext}").exists() for ext in ("", ".md", ".ipynb")), f"{f} in _toc.yml is missing"
    for nb in NOTEBOOKS:
        assert f"notebooks/{nb.stem}" in files, f"{nb.name} is not in _toc.yml"
    assert CONFIG["only_build_toc_files"] is True
    assert CONFIG["execute"]["allow_errors"] is False


def test_there_are_chapters():
    assert NOTEBOOKS, "no chapter notebooks found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_form(path):
    nb = nbformat.read(path, as_version=4)
    cells = nb.cells
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    first = cells[0]
    assert first.cell_type == "markdown" and first.source.lstrip().startswith("# Chapter")
    badge = f"https://colab.research.google.com/github/{REPO.split('github.com/')[1]}/blob/main/notebooks/{path.name}"
    assert badge in first.source, "the Colab badge must point at this notebook in the configured repository"
    install = cells[1]
    assert install.cell_type == "code" and "remove-cell" in install.metadata.get("tags", [])
    assert "google.colab" in install.source and f"git+{REPO}" in install.source
    text = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    assert "Learning objectives" in text
    assert "## Summary" in text and "## Exercises" in text
    for c in cells:
        if c.cell_type == "code":
            assert not c.get("outputs"), f"{path.name} is committed with outputs; clear them"
    import json
    ids = [c.get("id") for c in json.loads(path.read_text())["cells"]]     # as stored, before nbformat fills them
    assert None not in ids, f"{path.name} has cells without an id (nbformat 4.5 requires one)"
    assert len(set(ids)) == len(ids), f"{path.name} has duplicate cell ids"
    leaked = re.search(r"(?<![\w:.])/(?:home|root|tmp|work|Users)/\w", path.read_text())
    assert leaked is None, f"{path.name} mentions a machine path: {leaked and leaked.group(0)}"


def test_the_bibliography_parses_and_holds_every_cited_key():
    from pybtex.database import parse_file

    root = Path(__file__).resolve().parents[1]
    keys = set(parse_file(str(root / "book" / "references.bib")).entries)
    texts = [p.read_text() for p in (root / "notebooks").glob("*.ipynb")]
    texts += [p.read_text() for p in (root / "book").glob("*.md")]
    cited = set()
    for t in texts:
        for group in re.findall(r"\{cite[a-z:]*\}`([^`]+)`", t):
            cited.update(k.strip() for k in group.split(","))
    assert cited, "no citation found: the pattern is wrong"
    assert not cited - keys, f"cited but not in references.bib: {sorted(cited - keys)}"


#: Every notebook of the book, appendices included, for the checks of its exercises.
ALL_NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _exercises(path: Path) -> list[tuple[int, str]]:
    """The numbered items of a notebook's "## Exercises" section: (number, text with its indented blocks)."""
    nb = nbformat.read(path, as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "## Exercises" in text, f"{path.name} has no '## Exercises' section"
    section = text.split("## Exercises", 1)[1]
    section = re.split(r"(?m)^#{1,2} ", section)[0]             # up to the next heading of level 1 or 2
    parts = re.split(r"(?m)^(\d+)\. ", section)                 # list items start at the margin
    return [(int(n), body) for n, body in zip(parts[1::2], parts[2::2])]


def _dropdown(body: str, title: str) -> str | None:
    """The text of the ``{admonition} title`` with ``:class: dropdown`` inside a list item, or None."""
    m = re.search(r"(?m)^ {3}(`{3,})\{admonition\} " + title + r"[ \t]*\n {3}:class: dropdown[ \t]*\n", body)
    if m is None:
        return None
    end = re.search(r"(?m)^ {3}" + m.group(1) + r"[ \t]*$", body[m.end():])
    return None if end is None else body[m.end():m.end() + end.start()]


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.name)
def test_every_exercise_has_a_hint_and_a_solution_in_dropdowns(path):
    exercises = _exercises(path)
    assert exercises, f"{path.name}: no numbered exercise under '## Exercises'"
    assert [n for n, _ in exercises] == list(range(1, len(exercises) + 1)), \
        f"{path.name}: exercises are not numbered 1, 2, ...: {[n for n, _ in exercises]}"
    for n, body in exercises:
        hint, solution = _dropdown(body, "Hint"), _dropdown(body, "Solution")
        assert hint is not None, f"{path.name}, exercise {n}: no closed Hint dropdown indented under it"
        assert solution is not None, f"{path.name}, exercise {n}: no closed Solution dropdown indented under it"
        assert body.index("{admonition} Hint") < body.index("{admonition} Solution"), \
            f"{path.name}, exercise {n}: the hint must come before the solution"
        for what, inner in (("hint", hint), ("solution", solution)):
            assert len(inner.split()) >= 10, f"{path.name}, exercise {n}: the {what} is (nearly) empty"


def test_every_solution_with_code_compiles_and_is_found():
    """The python blocks of the Solution dropdowns (what `make solutions` runs) parse, and the
    extractor finds at least one in every chapter with exercises."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("chapters", ROOT / "benchmarks" / "chapters.py")
    chapters = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(chapters)
    found = 0
    for path in ALL_NOTEBOOKS:
        codes = chapters.solutions(nbformat.read(path, as_version=4))
        assert codes, f"{path.name}: no solution with python code found"
        for k, code in enumerate(codes):
            compile(code, f"{path.name} solution {k + 1}", "exec")
        found += len(codes)
    assert found >= 2 * len(ALL_NOTEBOOKS)


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.name)
def test_hidden_checks_are_removed_and_run_in_the_book_profile_only(path):
    """The cells that check the numbers a chapter's text quotes from its own run are hidden from
    the page and guarded by the book profile (the text quotes that profile's numbers; a smoke run
    gives others), so that a book build fails when a change makes the text wrong."""
    checks = [c for c in nbformat.read(path, as_version=4).cells
              if c.cell_type == "code" and c.source.startswith("# Hidden check")]
    for c in checks:
        assert "remove-cell" in c.metadata.get("tags", []), f"{path.name}: a hidden check without the remove-cell tag"
        body = [line for line in c.source.splitlines()[1:] if line.strip()]
        assert body and body[0] == 'if profile.name == "book":', \
            f"{path.name}: a hidden check must start with `if profile.name == \"book\":`, got {body[:1]}"
        assert len(body) > 1 and all(line.startswith("    ") for line in body[1:]), \
            f"{path.name}: every line of a hidden check belongs under its profile guard"
        assert "assert" in c.source, f"{path.name}: a hidden check that asserts nothing"
