"""How long each chapter takes, cell by cell, as a reader runs it; and whether its solutions run.

Executes a notebook in one kernel (nbclient), one code cell at a time, and prints each
cell's wall time and the chapter's total. With ``--solutions`` it then appends the python
block of every ``Solution`` dropdown under "## Exercises" as code cells, runs them after
the chapter (they use the chapter's names), prints their time apart from the chapter's
and their outputs, and fails if one raises. The profile is the environment's
(``LEAKLAB_PROFILE``; the chapters' target is 3 minutes each in ``book`` on 2 cores).

    LEAKLAB_PROFILE=book LEAKLAB_PROGRESS=0 python benchmarks/chapters.py notebooks/10_spn.ipynb
    LEAKLAB_PROFILE=smoke python benchmarks/chapters.py --solutions notebooks/*.ipynb
    python benchmarks/chapters.py --solutions --save _build/run notebooks/09_tradeoff.ipynb
"""
from __future__ import annotations

import argparse
import re
import sys
import textwrap
import time
from pathlib import Path

#: A solution's code: a python fence inside a ``Solution`` dropdown of a numbered exercise
#: (indented by three spaces under its list item), after any text that opens the solution
#: (but not past the next dropdown).
SOLUTION = re.compile(r"(?ms)^ {3}(`{4,})\{admonition\} Solution\n {3}:class: dropdown\n"
                      r"(?:(?! {3}`{3,}\{admonition\}).)*?^ {3}```python\n(.*?)^ {3}```\n")


def solutions(nb) -> list[str]:
    """The code of every solution of the notebook's "## Exercises" section, dedented."""
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    if "## Exercises" not in text:
        return []
    section = text.split("## Exercises", 1)[1]
    return [textwrap.dedent(code) for _, code in SOLUTION.findall(section)]


def run(path: Path, *, with_solutions: bool, save: Path | None, timeout: int) -> bool:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    n_chapter = len(nb.cells)
    codes = solutions(nb) if with_solutions else []
    for code in codes:
        nb.cells.append(nbformat.v4.new_code_cell(code))
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3")
    times, ok = [], True
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            start = time.perf_counter()
            try:
                client.execute_cell(cell, i)
            except CellExecutionError as err:
                print(f"{path.name}: cell {i} failed:\n{str(err)[-2000:]}", file=sys.stderr)
                ok = False
                break
            finally:
                times.append((i, time.perf_counter() - start))
    chapter = sum(t for i, t in times if i < n_chapter)
    solved = sum(t for i, t in times if i >= n_chapter)
    slow = ", ".join(f"cell {i}: {t:.1f} s" for i, t in sorted(times, key=lambda p: -p[1])[:4] if i < n_chapter)
    print(f"{path.name}: chapter {chapter:.1f} s ({slow})"
          + (f"; {len(codes)} solutions {solved:.1f} s" if with_solutions else ""))
    for cell in nb.cells[n_chapter:]:
        for out in cell.get("outputs", []):
            shown = out.get("text") or out.get("data", {}).get("text/plain", "")
            if shown:
                print(textwrap.indent(str(shown).rstrip()[:2500], "    "))
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, save / path.name)
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="+", type=Path)
    ap.add_argument("--solutions", action="store_true", help="also run every exercise's solution after the chapter")
    ap.add_argument("--save", type=Path, help="write the executed notebooks (with outputs) to this folder")
    ap.add_argument("--timeout", type=int, default=1200, help="seconds a cell may take (default 1200)")
    args = ap.parse_args(argv)
    missing = [str(p) for p in args.notebooks if not p.is_file()]
    if missing:
        ap.error(f"no such notebook: {', '.join(missing)}")
    results = [run(p, with_solutions=args.solutions, save=args.save, timeout=args.timeout) for p in args.notebooks]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
