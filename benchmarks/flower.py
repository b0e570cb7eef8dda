"""Benchmark: what recording a Flower federation costs (leaklab.flower.RecordingStrategy).

The same federation of leaklab clients (a ServerApp running Flower's FedAvg, a ClientApp
of leaklab clients on the digits, an MLP) is run with the strategy wrapped in
:class:`leaklab.flower.RecordingStrategy` and without it, side by side: the two sides
alternate, ``--repeats`` times each, and the median wall time of each is kept. Before
timing, both sides must end at the same global model (the recorder changes nothing).

Only the simulation is timed: building the apps, the rounds, the recording (every
reply's arrays turned into parameter dicts), not the attacks run afterwards. Beside the
ratio of the two sides, the recorder's own time (``RecordingStrategy.recording_seconds``:
its work inside the run, the wrapped strategy's excluded) is printed as a share of a
recorded run: on a busy machine the side-by-side ratio carries the noise of everything
else running, the share does not.

    python benchmarks/flower.py                   # 8 clients, 5 rounds, inline, 5 repeats
    python benchmarks/flower.py --quick           # 4 clients, 3 rounds, 3 repeats
    python benchmarks/flower.py --backend ray     # on Flower's simulation engine (Ray)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")

import torch  # noqa: E402

import leaklab  # noqa: E402
from leaklab import flower as lf  # noqa: E402


def one(model, parts, args, record: bool):
    t0 = time.perf_counter()
    run = lf.simulate(model, parts, rounds=args.rounds, protocol="fedavg", lr=0.05, local_steps=args.local_steps,
                      batch_size=args.batch_size, seed=0, record=record, backend=args.backend)
    return time.perf_counter() - t0, run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--records", type=int, default=64, help="records per client")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--local-steps", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256, help="the MLP's hidden units")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--backend", choices=("inline", "ray"), default="inline")
    p.add_argument("--quick", action="store_true", help="4 clients, 3 rounds, 3 repeats")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.clients, args.rounds, args.repeats = 4, 3, 3
    data = leaklab.load_dataset("digits")
    model = leaklab.build_model("mlp", data.input_shape, data.num_classes, hidden=(args.hidden, args.hidden), seed=0)
    parts = lf.split(data, args.clients, args.records, seed=0)
    n_params = sum(p.numel() for p in model.parameters())

    # the recorder changes nothing: the same global model at the end, and a record of every reply
    _, plain = one(model, parts, args, record=False)
    _, recorded = one(model, parts, args, record=True)
    same = all(torch.equal(plain.params[k], recorded.params[k]) for k in plain.params)
    if not same:
        raise SystemExit("the recorded run ended at another global model than the plain run")
    assert len(recorded.recorder.updates()) == args.clients * args.rounds

    times = {"plain": [], "recorded": []}
    own = []                                  # the recorder's own time within each recorded run
    for _ in range(args.repeats):             # alternate the two sides
        times["plain"].append(one(model, parts, args, record=False)[0])
        t, run = one(model, parts, args, record=True)
        times["recorded"].append(t)
        own.append(run.recorder.recording_seconds / t)
    med = {k: statistics.median(v) for k, v in times.items()}
    share = statistics.median(own)
    ratio = med["recorded"] / med["plain"]
    out = {"flwr": lf.FLWR_VERSION, "backend": args.backend, "clients": args.clients, "rounds": args.rounds,
           "records_per_client": args.records, "batch_size": args.batch_size, "local_steps": args.local_steps,
           "parameters": n_params, "repeats": args.repeats, "same_global_model": same,
           "median_s": med, "all_s": times, "ratio_recorded_over_plain": ratio,
           "overhead_percent": 100 * (ratio - 1), "recorder_share_of_recorded_run": share,
           "torch_threads": torch.get_num_threads()}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"Flower {lf.FLWR_VERSION} ({args.backend}): {args.clients} clients x {args.rounds} rounds of FedAvg "
          f"({args.local_steps} local steps of {args.batch_size}), MLP of {n_params} parameters, "
          f"median of {args.repeats}")
    print(f"  without recording  {med['plain']:8.3f} s")
    print(f"  with recording     {med['recorded']:8.3f} s")
    print(f"  ratio recorded / plain: {ratio:.3f}  (overhead {100 * (ratio - 1):+.1f}%); same global model: {same}")
    print(f"  the recorder's own time (reading and converting every message): {100 * share:.2f}% of a recorded run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
