"""Where a spectrogram supernet forward+backward spends its time: torch.profiler's top ops (self CPU time) for
the naive plain-PyTorch reference and the fast cell, each in its own process, at the paper's C6 L3 N4.

    python benchmarks/profile_spectrogram_step.py [--batch 8] [--size 140] [--threads 1] [--top 10]
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import torch
import torch.nn.functional as F


def profile(variant: str, args: argparse.Namespace) -> None:
    from bench_spectrogram_search import PlainSupernet, nni_supernet
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from nni_emotionnas.spaces.spectrogram import SpectrogramSpaceConfig

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = SpectrogramSpaceConfig()
    net = PlainSupernet(config, 4) if variant == "plain" else nni_supernet(config)[0]
    x, y = torch.randn(args.batch, 1, args.size, args.size), torch.randint(0, 4, (args.batch,))

    def step() -> None:
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()

    step()  # warm-up
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    total = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e6
    print(f"== {variant}: one forward+backward, batch {args.batch}, {args.threads} thread(s), {total:.2f} s self CPU")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=140)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--variant", choices=["plain", "fast"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        profile(args.variant, args)
        return
    for variant in ("plain", "fast"):
        cmd = [
            sys.executable,
            __file__,
            "--variant",
            variant,
            "--batch",
            str(args.batch),
            "--size",
            str(args.size),
            "--threads",
            str(args.threads),
            "--top",
            str(args.top),
        ]
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
