"""Display math renders as display math: every ``$$`` of the book is read by MyST as a block.

A ``$$ ... $$`` block that follows a line of text without a blank line is taken by
MyST's dollarmath as part of the paragraph: the equation collapses into inline math
and the sentence after it into raw ``$`` and run-together italics. A book build with
warnings as errors does not notice. This check parses every markdown cell and book
page with the parser and extensions of ``_config.yml`` (directive bodies such as
``prf:theorem`` or ``dropdown`` included, which Sphinx parses later) and asks that the
``$$`` delimiters of each be exactly those of its math blocks.
"""
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
PAGES = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "book").glob("*.md"))

_BLOCKS = ("math_block", "math_block_label", "amsmath")
_OPTION = re.compile(r"^:[\w-]+:.*$")
_CODE_SPAN = re.compile(r"(`+).*?\1", re.S)


def _parser():
    pytest.importorskip("myst_parser")
    from markdown_it.renderer import RendererHTML
    from myst_parser.config.main import MdParserConfig
    from myst_parser.parsers.mdit import create_md_parser

    extensions = set(CONFIG["parse"]["myst_enable_extensions"]) - {"linkify"}   # linkify needs a package
    return create_md_parser(MdParserConfig(enable_extensions=extensions), RendererHTML)


def _directive_body(content: str) -> str:
    """A directive's body without its leading ``:option: value`` lines (as MyST strips them)."""
    lines = content.split("\n")
    while lines and _OPTION.match(lines[0].strip()):
        lines.pop(0)
    return "\n".join(lines)


def broken_math(md, text: str) -> list[str]:
    """The ``$$`` that MyST does not read as display math in ``text``: one line of context each.

    Counts the ``$$`` of the text outside code and compares them with twice the
    number of math blocks MyST finds; where they differ, names the lines holding
    ``$$`` outside a math block.
    """
    problems = []
    for tok in md.parse(text):
        if tok.type in ("fence", "colon_fence") and tok.info.strip().startswith("{"):
            problems += broken_math(md, _directive_body(tok.content))       # parsed by Sphinx later
        elif tok.type == "inline":                     # a paragraph, heading or list item's text
            prose = _CODE_SPAN.sub("", tok.content)
            if "$$" in prose:
                line = next(k for k, l in enumerate(prose.split("\n")) if "$$" in l)
                problems.append(" / ".join(prose.split("\n")[max(line - 1, 0):line + 1])[:90])
        elif tok.type in _BLOCKS:
            if "$$" in tok.content:                   # a block that swallowed its neighbour's delimiters
                problems.append(tok.content.strip().split("\n")[0][:70])
    return problems


def _markdown(path: Path):
    if path.suffix == ".md":
        yield "page", path.read_text()
        return
    for i, cell in enumerate(json.loads(path.read_text())["cells"]):
        if cell["cell_type"] == "markdown":
            yield f"cell {i}", "".join(cell["source"])


def test_the_check_sees_what_myst_sees():
    """The check flags a block glued to its sentence and passes the same block set apart."""
    md = _parser()
    glued = "Then\n$$\na = \\Phi(b)\n$$\nso that $c$ holds.\n"
    apart = "Then\n\n$$\na = \\Phi(b)\n$$\n\nso that $c$ holds.\n"
    after = "Then\n\n$$\na = b\n$$\nso that $c$ holds.\n"
    assert broken_math(md, glued)
    assert broken_math(md, apart) == []
    assert broken_math(md, after) == []        # text right after a closed block is a new paragraph
    inline = "a sentence with $$x$$ inside"
    assert broken_math(md, inline)
    in_theorem = ":::{prf:theorem}\n:label: t\nThen\n$$\nx\n$$\n:::\n"
    assert broken_math(md, in_theorem)
    assert broken_math(md, in_theorem.replace("Then\n", "Then\n\n")) == []
    code = "```python\ns = '$$'\n```\n\nand `$$` in code\n"
    assert broken_math(md, code) == []


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_display_math_is_display_math(path):
    md = _parser()
    found = [f"{where}: {line!r}" for where, text in _markdown(path) for line in broken_math(md, text)]
    assert found == [], (f"{path.name}: $$ read as inline math (put a blank line before and after "
                         f"each display block): {found}")
