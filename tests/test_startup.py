"""Start-up: what ``import leaklab`` and the command's parser import (modules, not timings)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

#: Heavy packages that a command imports only when it uses them.
HEAVY = ("sklearn", "scipy.stats", "matplotlib", "skimage", "pandas", "opacus")


def _modules(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         check=True, capture_output=True, text=True, env=os.environ.copy())
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _heavy(mods: set[str]) -> list[str]:
    return sorted(m for m in mods if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_import_leaklab_is_light():
    mods = _modules("import leaklab")
    assert "torch" in mods                    # the check sees what was imported
    assert _heavy(mods) == []
    assert "leaklab.attacks" not in mods and "leaklab.games" not in mods


def test_command_parser_is_light():
    # every subcommand's --help, in one process: building the parser imports all subcommands
    code = ("from leaklab.cli import build_parser\n"
            "import contextlib, io\n"
            "p = build_parser()\n"
            "for argv in ([], ['game'], ['reconstruct'], ['data'], ['linear']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "        try:\n"
            "            p.parse_args(argv + ['--help'])\n"
            "        except SystemExit:\n"
            "            pass\n"
            "    assert 'usage: leaklab' in out.getvalue(), argv\n")
    mods = _modules(code)
    assert "leaklab.cli.reconstruct" in mods and "leaklab.cli.game" in mods
    assert _heavy(mods) == []


def test_submodules_are_attributes_imported_on_use():
    mods = _modules("import leaklab\nassert callable(leaklab.attacks.dlg)\nassert callable(leaklab.games.play)\n"
                    "assert callable(leaklab.metrics.auroc)\nassert 'attacks' in dir(leaklab)")
    assert {"leaklab.attacks", "leaklab.games", "leaklab.metrics"} <= mods
    assert _heavy(mods) == []                 # using them does not pull in the heavy packages either


def test_unknown_attribute_is_an_attribute_error():
    import leaklab

    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        leaklab.nonexistent  # noqa: B018
    assert not hasattr(leaklab, "not_a_module")


def test_scoring_a_game_needs_neither_scipy_nor_sklearn():
    mods = _modules("import numpy as np\nfrom leaklab.metrics import score_guesses\n"
                    "s = score_guesses(np.array([0, 1, 0, 1, 1]), np.array([0.1, 0.9, 0.3, 0.2, 0.8]))")
    assert _heavy(mods) == []


# -- the numpy ROC helpers against their scipy / scikit-learn oracles ----------------------------

def _cases():
    rng = np.random.default_rng(0)
    for n in (2, 5, 40, 301):
        y = rng.integers(0, 2, n)
        y[0], y[-1] = 0, 1
        yield y, rng.normal(size=n)                                   # distinct scores
        yield y, rng.integers(0, 4, n).astype(float)                  # many ties
        yield y, np.repeat(rng.normal(size=(n + 1) // 2), 2)[:n]      # pairs of ties


def test_roc_helpers_match_scipy_and_sklearn():
    from scipy import stats
    from sklearn import metrics

    from leaklab.metrics import _roc

    for y, s in _cases():
        np.testing.assert_allclose(_roc.rankdata(s), stats.rankdata(s))
        assert _roc.roc_auc_score(y, s) == pytest.approx(metrics.roc_auc_score(y, s), abs=1e-12)
        for drop in (True, False):
            ours = _roc.roc_curve(y, s, drop_intermediate=drop)
            ref = metrics.roc_curve(y, s, drop_intermediate=drop)
            for a, b in zip(ours, ref):
                np.testing.assert_allclose(a, b)
    for q in (0.5, 0.9, 0.975, 0.995, 1e-6):
        assert _roc.norm_ppf(q) == pytest.approx(stats.norm.ppf(q), abs=1e-9)
    with pytest.raises(ValueError, match="both classes"):
        _roc.roc_auc_score(np.zeros(4), np.arange(4.0))


def test_diabetes_without_sklearn_equals_sklearn():
    from sklearn.datasets import load_diabetes

    from leaklab.data.embedded import _diabetes_arrays

    raw, target = _diabetes_arrays()
    d = load_diabetes(scaled=False)
    assert np.array_equal(raw, d.data) and np.array_equal(target, d.target)


def test_a_game_on_diabetes_imports_no_heavy_package():
    mods = _modules("from leaklab.games import play\n"
                    "r = play('attribute', 'diabetes', adversary='informed', batch_size=4, trials=64, progress=False)\n"
                    "assert 0 <= r.score().auroc <= 1")
    assert "leaklab.games.protocol" in mods
    assert _heavy(mods) == []
