"""GPU readiness without a GPU: the library's source creates no stray CPU tensor on a device path.

Readers run the chapters on Colab GPUs. Two mistakes would break every chapter there and
pass every test on a CPU: a tensor factory inside a function that computes on its inputs'
device, called without ``device=`` (a CPU tensor meets a CUDA one: "expected all tensors to
be on the same device"), and ``.numpy()`` on a tensor that may live on the GPU. This test
walks the source with ``ast`` and fails on

- a call ``torch.F(...)`` for a factory ``F`` in :data:`FACTORIES` inside a function, unless
  it passes ``device=``, or its value is moved in the same expression (``torch.eye(n).to(x)``,
  also through ``(a if c else b).to(...)`` and arithmetic), or it draws from a seeded
  ``generator=`` (the library draws its random numbers on the CPU generator, so that a seed
  gives the same numbers on every device, and moves them where they meet device tensors;
  a CPU generator cannot fill a CUDA tensor, so these must not take the device);
- ``x.numpy()`` unless the receiver is moved by ``.cpu()`` in the same expression
  (``x.detach().cpu().numpy()``);
- any ``.cuda()`` call (devices come from :func:`leaklab.runtime.get_device`).

``torch.from_numpy`` is not checked: it always gives a CPU tensor sharing numpy's memory
(classifier scores, loaded files), and cannot take a device.

What the walk cannot see (the data flow) is in :data:`ALLOWED`, each entry with its reason.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "leaklab"

#: The factories that take a ``device=`` argument.
FACTORIES = frozenset({"zeros", "ones", "empty", "full", "rand", "randn", "randint", "randperm", "arange",
                       "linspace", "logspace", "eye", "tensor", "as_tensor", "normal", "tril_indices",
                       "triu_indices", "zeros_like_", "scalar_tensor", "complex", "polar"})

#: ``(path relative to leaklab/, qualified function name or "*" for the whole module) -> reason``.
ALLOWED = {
    # Data: records are read or generated on the CPU and moved by their users (Dataset.to, the
    # games' ``.to(dev)``); a loader never sees a device.
    ("data/custom.py", "*"): "converts the user's arrays on the CPU",
    ("data/download.py", "*"): "parses downloaded files on the CPU",
    ("data/embedded.py", "*"): "builds the embedded datasets on the CPU",
    ("data/faces.py", "*"): "parses CelebA files on the CPU",
    ("data/photos.py", "*"): "reads the photographs on the CPU",
    ("data/synthetic.py", "*"): "generates the procedural records on the CPU",
    # The command line reads files and flags on the host.
    ("cli/reconstruct.py", "read_images"): "image files read on the CPU, moved by the attack",
    ("cli/reconstruct.py", "warn_if_not_converged"): "as_tensor keeps a tensor's device; lists are host flags",
    # A module's constructor builds its parameters on the CPU, as torch.nn's layers do; the
    # caller moves the module with .to(device) (imprint_model does).
    ("attacks/imprint.py", "ImprintBlock.__init__"): "parameters built on the CPU like nn.Linear's, moved by .to",
    # Host-side numbers, used as Python floats or returned as CPU summaries.
    ("fl/rounds.py", "aggregate"): "client weights, used as Python floats",
    ("theory/layers.py", "noise_sweep"): "the sigmas and the returned curves are host summaries",
    # A numpy estimator (scikit-learn's interface): numpy in, numpy out, on the CPU throughout.
    ("metrics/_logistic.py", "*"): "numpy in, numpy out: its tensors are made from numpy on the CPU",
    # The receiver was moved to the CPU a line earlier.
    ("plot.py", "to_numpy_image"): "x = x.detach().float().cpu() on its first line",
    ("results.py", "fingerprint"): "t = t.detach().cpu() a line earlier",
    ("games/adversaries.py", "_phi_features"): "concatenates tensors moved by .cpu() in the same call",
    # Index draws for a CPU generator's permutation: indexing a device tensor with CPU indices is allowed.
    ("audit/canaries.py", "_background"): "CPU indices like the randperm of the other branch",
}


def _moved(node, parents, names) -> bool:
    """Whether the value of ``node`` is moved by a method in ``names`` in the same expression."""
    cur = node
    while True:
        p = parents.get(cur)
        if isinstance(p, ast.Attribute) and p.value is cur:
            if p.attr in names:
                return True
            gp = parents.get(p)
            if isinstance(gp, ast.Call) and gp.func is p:   # a method call: follow the chain
                cur = gp
                continue
            return False
        if isinstance(p, (ast.IfExp, ast.BinOp, ast.UnaryOp)) or (isinstance(p, ast.Subscript) and p.value is cur):
            cur = p
            continue
        return False


def _receiver_moved(call: ast.Call, names) -> bool:
    """Whether the receiver chain of a method call passes through one of ``names`` (``x.cpu().numpy()``)."""
    r = call.func.value
    while isinstance(r, (ast.Call, ast.Attribute, ast.Subscript)):
        if isinstance(r, ast.Call) and isinstance(r.func, ast.Attribute):
            if r.func.attr in names:
                return True
            r = r.func.value
        else:
            r = r.value
    return False


def findings(root: Path = ROOT) -> list[tuple[str, str, int, str, str]]:
    """``(path, function, line, what, code)`` for every unguarded factory, ``.numpy()`` and ``.cuda()``."""
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text(), filename=str(path))
        parents = {c: n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}

        def where(n):
            names = []
            while n in parents:
                n = parents[n]
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    names.append(n.name)
            return ".".join(reversed(names))

        def inside_function(n):
            while n in parents:
                n = parents[n]
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                    return True
            return False

        for n in ast.walk(tree):
            if not isinstance(n, ast.Call) or not isinstance(n.func, ast.Attribute):
                continue
            f = n.func
            what = None
            if isinstance(f.value, ast.Name) and f.value.id == "torch" and f.attr in FACTORIES:
                keys = {k.arg for k in n.keywords}
                if inside_function(n) and not keys & {"device", "generator"} and not _moved(n, parents, {"to"}):
                    what = f"torch.{f.attr} without device="
            elif f.attr == "numpy" and not n.args and not _receiver_moved(n, {"cpu"}):
                what = ".numpy() without .cpu()"
            elif f.attr == "cuda":
                what = ".cuda()"
            if what is None:
                continue
            func = where(n)
            if (rel, "*") in ALLOWED or (rel, func) in ALLOWED:
                continue
            out.append((rel, func, n.lineno, what, ast.unparse(n)[:90]))
    return sorted(out, key=lambda f: (f[0], f[2], f[4]))


def test_the_walk_finds_each_kind_of_mistake(tmp_path):
    pkg = tmp_path / "leaklab"
    pkg.mkdir()
    (pkg / "m.py").write_text(
        "import torch\n"
        "TABLE = torch.arange(3)                      # module level: created once, on the CPU\n"
        "def bad(x):\n"
        "    a = torch.zeros(3)                       # 1\n"
        "    b = torch.eye(2, dtype=x.dtype) * 2      # 2\n"
        "    return x.numpy(), x.detach().numpy()     # 3, 4\n"
        "def worse(x):\n"
        "    return x.cuda()                          # 5\n"
        "def good(x, gen):\n"
        "    a = torch.zeros(3, device=x.device)\n"
        "    b = (torch.eye(2) if x.ndim else torch.ones(2, 2)).to(x)\n"
        "    c = torch.randn(3, generator=gen).to(x.device)\n"
        "    d = (2 * torch.arange(3))[None].to(x.device)\n"
        "    return x.detach().cpu().numpy(), x.cpu()[0].numpy(), torch.zeros_like(x)\n")
    found = findings(pkg)
    assert [(f[1], f[2], f[3]) for f in found] == [
        ("bad", 4, "torch.zeros without device="), ("bad", 5, "torch.eye without device="),
        ("bad", 6, ".numpy() without .cpu()"), ("bad", 6, ".numpy() without .cpu()"), ("worse", 8, ".cuda()")]


def test_every_allowance_is_still_needed():
    # an allow-list entry for a module or function that no longer exists hides nothing: remove it
    for (rel, func), reason in ALLOWED.items():
        path = ROOT / rel
        assert path.exists(), f"ALLOWED names {rel}, which does not exist ({reason})"
        if func != "*":
            names = {n.name for n in ast.walk(ast.parse(path.read_text()))
                     if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
            assert func.split(".")[-1] in names, f"ALLOWED names {rel}:{func}, which does not exist ({reason})"


def test_library_is_device_agnostic():
    found = findings()
    assert not found, "tensors made on the CPU inside device code (pass device=, or add a reasoned entry to " \
                      "ALLOWED):\n" + "\n".join(f"  leaklab/{p}:{line} in {fn}: {what}: {code}"
                                                for p, fn, line, what, code in found)
