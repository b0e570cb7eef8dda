"""``leaklab linear``: the linear system one layer's gradients pose, and whether it has one solution."""
from __future__ import annotations

import argparse

from .common import non_negative_float, non_negative_int, positive_int, print_json


def _shape(text: str) -> tuple[int, ...]:
    """``N`` or ``C,H,W``: positive integers separated by commas."""
    try:
        vals = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or C,H,W (positive integers), got {text!r}") from None
    if len(vals) not in (1, 3) or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"expected N or C,H,W (positive integers), got {text!r}")
    return vals


def register(sub) -> None:
    p = sub.add_parser(
        "linear", help="rank, uniqueness, twins and noise bound of one layer's linear system",
        allow_abbrev=False,   # --out names an output folder elsewhere; never read it as --out-features
        description=("Build the linear system that a fully connected or convolutional layer's "
                     "gradients pose to an attacker who knows the weights and the output errors, "
                     "for random weights and inputs; report unknowns, equations and rank, solve it, "
                     "and check the verdict (a twin input with the same gradients when the solution "
                     "is not unique; the error against its bound with --noise). The output errors "
                     "are drawn at random by default, as for a hidden layer in general position; "
                     "--errors softmax makes the layer a classifier's last layer under cross-entropy, "
                     "whose errors sum to zero over the classes, so that a batch as large as the "
                     "number of classes is never determined. The output says which was used."),
    )
    p.add_argument("--layer", choices=["fc", "conv"], default="fc", help="layer type (default fc)")
    p.add_argument("--input-shape", type=_shape, required=True, metavar="N|C,H,W",
                   help="input features N (fc) or channels,height,width (conv)")
    p.add_argument("--out-features", type=positive_int, required=True, metavar="K",
                   help="output features (fc; the classes with --errors softmax) or output channels (conv)")
    p.add_argument("--kernel", type=positive_int, default=3, help="conv kernel size (default 3)")
    p.add_argument("--stride", type=positive_int, default=1, help="conv stride (default 1)")
    p.add_argument("--padding", type=non_negative_int, default=0, help="conv padding (default 0)")
    p.add_argument("--batch-size", type=positive_int, default=1, metavar="B", help="inputs in the batch (default 1)")
    p.add_argument("--no-bias", action="store_true", help="a layer without bias")
    p.add_argument("--forward", action="store_true",
                   help="the attacker also knows the layer's outputs (R-GAP's forward equations)")
    p.add_argument("--errors", choices=["random", "softmax"], default="random",
                   help="how the output errors are drawn: 'random' (default; independent Gaussian "
                        "entries, a hidden layer in general position) or 'softmax' (fc only: a "
                        "classifier's last layer, delta = (softmax(o) - onehot(y)) / B for random "
                        "labels; the errors sum to zero, so rank D <= K - 1)")
    p.add_argument("--noise", type=non_negative_float, default=0.0, metavar="SIGMA",
                   help="standard deviation of Gaussian noise on every observed gradient entry")
    p.add_argument("--seed", type=int, default=0, help="seed for weights, inputs and errors (default 0)")
    p.add_argument("--device", default="cpu", help="device (default cpu; 'auto' picks a GPU)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_linear)


def cmd_linear(args) -> int:
    from ..results import timed
    from ..theory import analyse_layer

    if args.errors == "softmax" and args.layer != "fc":
        raise ValueError("--errors softmax describes a classifier's last layer: use it with --layer fc")
    if args.layer == "conv" and len(args.input_shape) != 3:
        raise ValueError(f"--input-shape must be C,H,W for --layer conv, got "
                         f"{','.join(map(str, args.input_shape))}")
    shape = args.input_shape[0] if len(args.input_shape) == 1 else args.input_shape
    with timed() as t:
        result = analyse_layer(args.layer, input_shape=shape, out=args.out_features, kernel=args.kernel,
                               stride=args.stride, padding=args.padding, batch_size=args.batch_size,
                               bias=not args.no_bias, forward=args.forward, noise=args.noise,
                               seed=args.seed, errors=args.errors, device=args.device)
    if args.json:
        d = result.to_dict()
        d["wall_time"] = t["seconds"]
        print_json(d)
        return 0
    print(result.summary())
    return 0
