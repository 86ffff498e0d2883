"""The demo on a shared machine: alone, two in turn, two side by side (the thread policy's benchmark).

    python benchmarks/bench_shared_machine.py [--torch-defaults] [--out DIR]

Runs `emotionnas demo --quiet` as a user would, each in its own run folder and empty feature cache: twice
one after the other (alone; in turn = their sum), then twice at once (side by side = the later finish).
Prints the wall times and the ratio side by side / in turn: below 1 the two jobs share the machine well,
near 2 they fight over it. `--torch-defaults` runs the same with torch's own thread settings (one intra-op
thread per core everywhere, OpenMP's default spin-then-sleep waiting) instead of the thread policy, for the
comparison. Takes four demo runs of time; run it on an otherwise idle machine and say its load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EMOTIONNAS = Path(sys.executable).with_name("emotionnas")


def start_demo(folder: Path, torch_defaults: bool) -> subprocess.Popen:
    env = {**os.environ, "EMOTIONNAS_CACHE": str(folder / "cache")}
    env.pop("OMP_NUM_THREADS", None)
    if torch_defaults:
        env["EMOTIONNAS_THREADS"] = str(len(os.sched_getaffinity(0)))
        env["OMP_WAIT_POLICY"] = ""  # set but empty: libgomp keeps its default, the command does not override
    else:
        env.pop("EMOTIONNAS_THREADS", None)
        env.pop("OMP_WAIT_POLICY", None)
    log = open(folder / "demo.log", "w")
    return subprocess.Popen([str(EMOTIONNAS), "demo", "--quiet", "--out", str(folder / "run")], env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def wait_all(runs: list[tuple[Path, subprocess.Popen]], started: float) -> list[float]:
    """Each run's wall time from `started` to its exit; a failed demo stops the benchmark."""
    times = [0.0] * len(runs)
    pending = dict(enumerate(runs))
    while pending:
        for i, (folder, process) in list(pending.items()):
            if process.poll() is not None:
                if process.returncode != 0:
                    sys.exit(f"demo in {folder} failed (exit {process.returncode}): see {folder / 'demo.log'}")
                times[i] = time.perf_counter() - started
                del pending[i]
        time.sleep(0.5)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-defaults", action="store_true", help="torch's thread settings, not the policy")
    parser.add_argument("--out", type=Path, help="keep the run folders here (default: a temporary folder)")
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="bench_shared_"))
    folders = [root / name for name in ("turn1", "turn2", "side1", "side2")]
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min); settings: "
          f"{'torch defaults' if args.torch_defaults else 'thread policy'}", flush=True)
    in_turn = []
    for folder in folders[:2]:
        started = time.perf_counter()
        in_turn += wait_all([(folder, start_demo(folder, args.torch_defaults))], started)
        print(f"alone: {in_turn[-1]:.0f} s", flush=True)
    started = time.perf_counter()
    side = wait_all([(folder, start_demo(folder, args.torch_defaults)) for folder in folders[2:]], started)
    print(f"side by side: {side[0]:.0f} s and {side[1]:.0f} s", flush=True)
    print("| demo | wall s |\n| --- | --- |")
    print(f"| alone (mean of 2) | {sum(in_turn) / 2:.0f} |")
    print(f"| two in turn | {sum(in_turn):.0f} |")
    print(f"| two side by side (both done) | {max(side):.0f} |")
    print(f"side by side / in turn: {max(side) / sum(in_turn):.2f} (goal <= 1.2)")
    if args.out is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
