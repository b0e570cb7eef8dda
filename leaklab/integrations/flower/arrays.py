"""Flower's arrays and leaklab's parameter dicts (named like ``model.named_parameters()``)."""
from __future__ import annotations

from collections.abc import Mapping

import torch
from flwr.app import ArrayRecord
from torch import nn

Params = dict[str, torch.Tensor]

#: The ConfigRecord a leaklab client adds to its reply: how it computed its update
#: (``release``: ``"gradient"`` or ``"parameters"``, ``lr``, ``local-steps``, ``batch-size``,
#: ``partition-id``, and under a defense ``defense``, ``epsilon``, ``delta``, ``sample-rate``, ``steps``).
LEAKLAB_RECORD = "leaklab"
#: Config keys read for a client's training settings (the train config, or the reply's ``leaklab`` record).
KEY_LR, KEY_STEPS, KEY_BATCH = "lr", "local-steps", "batch-size"
_DEFENSE_STATE = "leaklab.defense"
_PRIVACY_STATE = "leaklab.privacy"


# -- arrays <-> leaklab parameter dicts -------------------------------------------------------------

def to_params(model: nn.Module, arrays) -> Params:
    """The parameters in ``arrays`` (an ``ArrayRecord`` or a dict of tensors) named like ``model.named_parameters()``.

    Accepts the keys of ``named_parameters()``, of ``state_dict()`` (buffers are dropped), or
    Flower's numbered keys ``"0", "1", ...`` in the order of ``state_dict()`` or of
    ``parameters()``. Each tensor is a float copy on the model's device, shaped like its parameter.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(arrays, ArrayRecord):
        arrays = arrays.to_torch_state_dict()
    if not isinstance(arrays, Mapping):
        raise TypeError(f"arrays must be a flwr ArrayRecord or a dict of tensors, got {type(arrays).__name__}")
    named = dict(model.named_parameters())
    keys = list(arrays)
    if set(named) <= set(keys):
        picked = {k: arrays[k] for k in named}
    else:
        state = list(model.state_dict())
        numbered = [str(i) for i in range(len(keys))]
        if keys == numbered and len(keys) == len(state):
            by_name = dict(zip(state, (arrays[k] for k in keys)))
            picked = {k: by_name[k] for k in named}
        elif keys == numbered and len(keys) == len(named):
            picked = dict(zip(named, (arrays[k] for k in keys)))
        else:
            missing = sorted(set(named) - set(keys))
            raise ValueError(f"arrays do not match the model's parameters: missing {missing[:5]} "
                             f"(arrays hold {keys[:5]}{'...' if len(keys) > 5 else ''})")
    dev = next(iter(named.values())).device
    out = {}
    for k, p in named.items():
        v = torch.as_tensor(picked[k], device=dev)
        if tuple(v.shape) != tuple(p.shape):
            raise ValueError(f"arrays[{k!r}] has shape {tuple(v.shape)}, the model's parameter {tuple(p.shape)}")
        out[k] = v.detach().to(device=dev, dtype=p.dtype).clone()
    return out


def to_arrays(params) -> ArrayRecord:
    """An ``ArrayRecord`` of a parameter dict (or of a model's parameters), keyed by parameter name."""
    if isinstance(params, nn.Module):
        params = dict(params.named_parameters())
    return ArrayRecord({k: v.detach().cpu().contiguous() for k, v in params.items()})


class LazyParams(Mapping):
    """A parameter dict read from an ``ArrayRecord`` on first use (:func:`to_params`), a snapshot of it.

    Recording keeps the record's arrays (immutable serialised bytes) and converts them
    only when an update is looked at, so that recording a round costs next to nothing.
    """

    def __init__(self, model: nn.Module, arrays: ArrayRecord):
        self._model = model
        self._arrays = ArrayRecord(dict(arrays.items()))     # the Arrays as they are now
        self._params: Params | None = None

    def _get(self) -> Params:
        if self._params is None:
            self._params = to_params(self._model, self._arrays)
            self._arrays = None
        return self._params

    def __getitem__(self, key):
        return self._get()[key]

    def __iter__(self):
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __repr__(self) -> str:
        return f"LazyParams({list(self)})"


def _load(model: nn.Module, params: Mapping[str, torch.Tensor]) -> nn.Module:
    with torch.no_grad():
        for k, p in model.named_parameters():
            p.copy_(params[k])
    return model


def _config_dict(record) -> dict:
    return {k: (list(v) if isinstance(v, list) else v) for k, v in record.items()} if record is not None else {}
