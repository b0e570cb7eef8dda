"""SPN's secret is the client's, drawn per seed, and no adversary holds it.

The protocol boundary: every adversary of the registry gets, through ``Knowledge``, a
frozen copy of what it may see (shared parameters, the defense's settings, auxiliary
records, phi), with its own draw of the secret (adaptive) or zeros (static), never the
client's head ``polar.weight`` or codes.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import leaklab
from leaklab.data import load_dataset
from leaklab.defenses import make_defense
from leaklab.defenses.spn import SPNModel, secret_generator
from leaklab.games import membership as _membership  # noqa: F401  (registers the membership adversaries)
from leaklab.games import play
from leaklab.games.adversaries import list_adversaries, make_adversary
from leaklab.games.protocol import Knowledge, adversary_model, set_up_players


def _mlp(seed=0, shape=(8,), classes=2):
    return leaklab.build_model("mlp", shape, classes, hidden=(16,), seed=seed)


def _secret(m: SPNModel):
    return m.polar.weight.detach().clone(), m.codes.clone()


# -- item 6: a secret per seed, an adversary's draw of its own ----------------------------------------

def test_two_game_seeds_give_two_secrets_and_one_seed_the_same():
    data = load_dataset("diabetes")
    secrets = {}
    for seed in (0, 1, 1):
        *_, model = set_up_players(data, "spn:bits=16", _mlp(shape=data.input_shape, classes=data.num_classes),
                                   aux_fraction=0.5, seed=seed, device="cpu")
        secrets.setdefault(seed, []).append(_secret(model))
    (h0, c0), = secrets[0]
    (h1, c1), (h1b, c1b) = secrets[1]
    assert not torch.equal(h0, h1) and not torch.equal(c0, c1)
    assert torch.equal(h1, h1b) and torch.equal(c1, c1b)


def test_no_adversary_view_reproduces_a_clients_secret():
    """400 (client seed, adversary seed) pairs, equal seeds included: the adversary's head and
    codes never equal the client's, though both come from the same kind of draw."""
    d = make_defense("spn", bits=32)
    base = _mlp(classes=10)
    clients = {s: d.wrap(base, seed=s) for s in range(20)}
    for t in range(20):
        view = d.adversary_view(clients[0], seed=t)
        for s, c in clients.items():
            assert not torch.equal(view.polar.weight, c.polar.weight), (s, t)
            assert not torch.equal(view.codes, c.codes), (s, t)
        assert view.codes.abs().eq(1).all() and view.polar.weight.abs().gt(0).all()   # a real draw, not zeros


def test_adversary_view_needs_an_int_seed():
    d = make_defense("spn", bits=8)
    client = d.wrap(_mlp(), seed=3)
    for call in (lambda: d.adversary_view(client), lambda: d.adversary_view(client, seed=None),
                 lambda: d.adversary_view(client, seed="1"), lambda: d.adversary_view(client, seed=1.0)):
        with pytest.raises(TypeError, match="seed"):
            call()
    with pytest.raises(TypeError, match="seed"):
        d.wrap(_mlp(), seed=1.5)
    with pytest.raises(TypeError, match="SPN model"):
        d.adversary_view(_mlp(), seed=1)


def test_same_seed_same_view_other_seed_other_view():
    d = make_defense("spn", bits=16)
    client = d.wrap(_mlp(classes=5), seed=3)
    a, b, c = (d.adversary_view(client, seed=s) for s in (7, 7, 8))
    assert torch.equal(a.polar.weight, b.polar.weight) and torch.equal(a.codes, b.codes)
    assert not torch.equal(a.polar.weight, c.polar.weight) and not torch.equal(a.codes, c.codes)
    # the games: the adversary's draw follows the game's seed
    game = leaklab.games.make_game("membership", load_dataset("diabetes").info)
    data = load_dataset("diabetes")
    views = [Knowledge(model=client, game=game, auxiliary=data, batch_size=1, secret_names=("out", "in"),
                       defense=d, adaptive=True, seed=s).model for s in (0, 1)]
    assert not torch.equal(views[0].codes, views[1].codes)


def test_secret_streams_are_seeded_and_distinct():
    a = torch.randn(4, generator=secret_generator("client", 5))
    assert torch.equal(a, torch.randn(4, generator=secret_generator("client", 5)))
    assert not torch.equal(a, torch.randn(4, generator=secret_generator("adversary", 5)))
    for seed in (0, 1, 5, 2**31, 2**63 - 1):        # disjoint: a client's seed is < 2**63, an adversary's >=
        assert secret_generator("client", seed).initial_seed() == seed
        assert secret_generator("adversary", seed).initial_seed() >= 2**63
    assert secret_generator("client", None).initial_seed() < 2**63
    d = make_defense("spn", bits=16)
    assert not torch.equal(d.wrap(_mlp(), seed=None).codes, d.wrap(_mlp(), seed=None).codes)   # fresh draws
    with pytest.raises(ValueError, match="role"):
        secret_generator("server", 5)
    with pytest.raises(ValueError, match="seed"):
        secret_generator("client", 2**63)
    with pytest.raises(ValueError, match="seed"):
        secret_generator("client", -1)


def test_adversary_model_copies_only_what_may_be_seen():
    d = make_defense("spn", bits=8)
    client = d.wrap(_mlp(), seed=3)
    own = dict(client.named_parameters())
    for adaptive in (False, True):
        view = adversary_model(client, d, adaptive=adaptive, seed=4)
        assert view is not client and isinstance(view, SPNModel)
        for k, v in view.named_parameters():
            assert not v.requires_grad and v.data_ptr() != own[k].data_ptr()
            if k != "polar.weight":
                assert torch.equal(v, own[k])                      # the shared parameters, as they are
        assert not torch.equal(view.polar.weight, client.polar.weight)
        assert not torch.equal(view.codes, client.codes)
        assert bool((view.codes == 0).all()) is (not adaptive)    # static: zeros; adaptive: its own draw
    plain = _mlp()
    copy_ = adversary_model(plain, None, adaptive=False, seed=0)
    assert copy_ is not plain and all(torch.equal(a, b) for a, b in zip(copy_.parameters(), plain.parameters()))
    with pytest.raises(TypeError, match="seed"):
        adversary_model(client, d, adaptive=True, seed=None)
    with pytest.raises(TypeError, match="adaptive"):
        adversary_model(client, d, adaptive="yes", seed=0)
    with pytest.raises(TypeError, match="model"):
        adversary_model("mlp", d, adaptive=True, seed=0)


def test_static_neutral_view_simulates_cross_entropy():
    """A head of zeros adds nothing to the gradient: the static view's SPN objective releases
    the cross-entropy gradient of the shared model."""
    from leaklab.release import release

    d = make_defense("spn", alpha=1.0, bits=8)
    client = d.wrap(_mlp(), seed=3)
    view = adversary_model(client, d, adaptive=False, seed=0)
    xs, ys = torch.randn(2, 3, 8), torch.randint(2, (2, 3))
    ce = release(client, xs, ys, static_objective=True)
    mine = release(view, xs, ys)
    for k in ce:
        torch.testing.assert_close(mine[k], ce[k])
    assert any(not torch.allclose(release(client, xs, ys)[k], ce[k]) for k in ce)   # the client's is not CE


# -- item 9 (last part): the protocol boundary ----------------------------------------------------------

def _tensors(obj, seen=None):
    """Every tensor reachable from ``obj`` (attributes, containers, modules' parameters and buffers)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or obj is None or isinstance(obj, (str, bytes, int, float, bool, np.ndarray,
                                                          torch.Generator, type)):
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj
        return
    if isinstance(obj, nn.Module):
        yield from obj.parameters()
        yield from obj.buffers()
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v, seen)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for v in obj:
            yield from _tensors(v, seen)
    if hasattr(obj, "__dict__"):
        for v in vars(obj).values():
            yield from _tensors(v, seen)


def _holds(t: torch.Tensor, s: torch.Tensor) -> bool:
    """Whether ``t`` is ``s``'s storage, equals ``s``, or stacks a copy of it."""
    if t.numel() and t.data_ptr() == s.data_ptr():
        return True
    t = t.detach().cpu()
    if t.shape[-s.ndim:] != s.shape or t.dtype != s.dtype:
        return False
    return bool((t.reshape(-1, *s.shape) == s).flatten(1).all(1).any())


def _watch(adv, client: SPNModel, extra=()):
    """Check, at the first call of ``adv.score`` (after ``prepare``), that nothing the adversary
    holds is the client's secret (as drawn and as trained)."""
    drawn = _secret(client)
    score = adv.score
    checked = []

    def checked_score(obs):
        secrets = [*drawn, *_secret(client), *extra]
        held = list(_tensors(vars(adv)))
        assert held, "the adversary holds nothing?"
        for t in held:
            for s in secrets:
                assert not _holds(t, s.cpu()), f"the {adv.name} adversary holds a client secret {tuple(s.shape)}"
        assert not any(t.data_ptr() == p.data_ptr() for t in held for p in client.parameters())
        checked.append(adv.name)
        return score(obs)

    adv.score = checked_score
    return checked


def _client(data, seed=0):
    return make_defense("spn", alpha=1.0, bits=8).wrap(_mlp(seed, data.input_shape, data.num_classes), seed=seed)


SETTINGS = {
    "informed": [("attribute", {})], "phi": [("attribute", {})], "combined": [("attribute", {})],
    "shadow": [("attribute", {"adversary_options": {"shadow_trials": 32}})],
    "alignment": [("membership", {"adversary_options": {"reference": 16}}), ("tracing", {"clients": 3})],
    "loss": [("membership", {"game_options": {"train_steps": 5}}), ("tracing", {"clients": 3})],
    "lira": [("membership", {"game_options": {"train_steps": 5}, "adversary_options": {"shadows": 2}})],
    "lira-offline": [("membership", {"game_options": {"train_steps": 5}, "adversary_options": {"shadows": 2}})],
}


def test_every_adversary_is_covered():
    assert set(list_adversaries()) == set(SETTINGS)


@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_no_adversary_holds_the_clients_secret(name, adaptive):
    data = load_dataset("diabetes", n=400)
    for game, kw in SETTINGS[name]:
        kw = copy.deepcopy(kw)
        client = _client(data)
        extra = ()
        if game == "tracing":       # the clients' own heads and codes, as the game draws them
            extra = tuple(make_defense("spn", alpha=1.0, bits=8).client_secrets(client, kw["clients"],
                                                                               seed=0 + 11).values())
        adv = make_adversary(name, **kw.pop("adversary_options", {}))
        checked = _watch(adv, client, extra)
        res = play(game, data, adversary=adv, model=client, defense="spn:alpha=1,bits=8", adaptive=adaptive,
                   batch_size=1, trials=16, seed=0, progress=False, **kw)
        assert checked == [name] and np.all(np.isfinite(res.scores()))


def test_the_client_keeps_its_secret_and_the_adversary_works():
    """The game still releases through the client's own secret; the undefended informed adversary
    at batch 1 reaches AUROC ~1, and under noise of std 1e4 it is at chance."""
    data = load_dataset("diabetes")
    client = _client(data, seed=2)
    before = _secret(client)
    play("attribute", data, adversary="informed", model=client, defense="spn:alpha=1,bits=8", batch_size=1,
         trials=16, seed=2, progress=False)
    assert torch.equal(client.codes, before[1])             # the client's codes are its own, untouched
    sharp = play("attribute", data, adversary="informed", batch_size=1, trials=200, seed=0, progress=False)
    assert sharp.score().auroc > 0.97
    null = play("attribute", data, adversary="informed", batch_size=1, trials=200, seed=0, progress=False,
                defense="noise:std=1e4")
    lo, hi = null.score().auroc_ci
    assert lo < 0.5 < hi and 0.0 <= lo and hi <= 1.0


# -- perturb: the surrogate the client fits on its records is the client's --------------------------

def _reachable(root, limit: int = 200_000):
    """Every object reachable from ``root`` through containers and instances (not modules, classes or code)."""
    import gc
    import types
    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
            types.CodeType, types.FrameType)
    seen, todo = {}, [root]
    while todo and len(seen) < limit:
        o = todo.pop()
        if id(o) in seen or isinstance(o, skip):
            continue
        seen[id(o)] = o
        todo.extend(gc.get_referents(o))
    return seen


@pytest.mark.parametrize("adaptive", [False, True])
def test_no_adversary_holds_the_clients_surrogate(adaptive, monkeypatch):
    from leaklab.defenses.perturb import Perturb

    from leaklab.defenses import parse_defense
    client = parse_defense("perturb:budget=0.5,features=32")
    fits = []
    real = Perturb.prepare

    def spy(self, *, data, **kw):
        fits.append((self, data))
        return real(self, data=data, **kw)

    monkeypatch.setattr(Perturb, "prepare", spy)
    adv = make_adversary("informed", sims=4)
    play("attribute", "diabetes", adversary=adv, batch_size=4, trials=24, defense=client, adaptive=adaptive,
         seed=0, progress=False)
    assert client.surrogate_ is not None                       # the client fitted its own, on its pool
    forbidden = {id(client), id(client.surrogate_), *(id(t) for t in client.surrogate_.values())}
    held = _reachable(adv)
    assert not forbidden & set(held), "an adversary-held object references the client's defense or surrogate"
    ptrs = {t.data_ptr() for t in client.surrogate_.values()}
    assert not [o for o in held.values() if isinstance(o, torch.Tensor) and o.numel() and o.data_ptr() in ptrs]
    mine = adv.knowledge.defense
    assert mine is not client and mine.config() == client.config()     # the settings, public
    clients_fits = [d for s, d in fits if s is client]
    own_fits = [d for s, d in fits if s is mine]
    assert clients_fits and all(d is not adv.knowledge.auxiliary for d in clients_fits)
    if adaptive:      # the adaptive adversary refits the surrogate on its own auxiliary records
        assert own_fits and all(d is adv.knowledge.auxiliary for d in own_fits)
        assert mine.surrogate_ is not None
        assert not torch.equal(mine.surrogate_["W"], client.surrogate_["W"])
    else:             # a static adversary ignores M: it fits nothing
        assert own_fits == [] and mine.surrogate_ is None
