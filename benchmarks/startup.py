"""Start-up cost of the command against importing torch, whole processes side by side.

Runs each command as a fresh Python process, interleaved (torch, leaklab, torch,
leaklab, ...) so that a busy machine slows both sides alike, and prints the median
wall time of each and its ratio to ``python -c "import torch"``. Target: ``leaklab
--help`` within 1.3x of importing torch.

    python benchmarks/startup.py              # 7 rounds
    python benchmarks/startup.py --rounds 15
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "python -c 'import leaklab'": [sys.executable, "-c", "import leaklab"],
    "leaklab --help": [sys.executable, "-m", "leaklab", "--help"],
    "leaklab game --help": [sys.executable, "-m", "leaklab", "game", "--help"],
    "leaklab reconstruct --help": [sys.executable, "-m", "leaklab", "reconstruct", "--help"],
}


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7, help="runs of each command (default 7)")
    args = p.parse_args(argv)
    for cmd in COMMANDS.values():          # warm the file cache once
        wall(cmd)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):
        for name, cmd in COMMANDS.items():
            times[name].append(wall(cmd))
    base = statistics.median(times["python -c 'import torch'"])
    print(f"whole processes, median of {args.rounds} interleaved runs ({sys.executable})")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<30} {med:6.2f} s   ratio to import torch {med / base:5.2f}")
    ratio = statistics.median(times["leaklab --help"]) / base
    print(f"leaklab --help / import torch: {ratio:.2f} (target <= 1.3: {'met' if ratio <= 1.3 else 'NOT met'})")


if __name__ == "__main__":
    main()
