"""Deep stream hot path, measured in one run on this machine: forward+backward of fixed searched cells
(the catalog LSTM written as a cell, and a typical DARTS-derived cell, both with the space's default
`state_bound` as the product trains them) against `torch.nn.LSTM` of the
same sizes, and one DARTS supernet step (forward, backward, optimizer step) of the recurrent space, both with
the product's mixture step (`spaces.kernels.recurrent_mixture`) and with NNI's mixtures called op by op (the reference).
Every row is the best of `--repeats` runs after a warm-up, the reference's and the supernet steps' alike,
with the memory its forward holds for backward (distinct tensors autograd saved, as in
`bench_spectrogram_search.py`); the product's supernet row also gives the buffers it keeps between steps.

    python benchmarks/bench_recurrent_cell.py                # batch 32, T=727, D=512, H=256
    python benchmarks/bench_recurrent_cell.py --threads 1    # fewer threads: less OpenMP overhead per step
"""

from __future__ import annotations

import argparse
import contextlib
import time
from typing import Callable, Optional
from unittest import mock

import torch
from bench_spectrogram_search import SavedBytes

from nni_emotionnas.spaces import deep as R
from nni_emotionnas.spaces.cells.catalog import lstm
from nni_emotionnas.spaces.cells.fixed import FixedCellLayer
from nni_emotionnas.spaces.cells.spec import Node, make_cell
from nni_emotionnas.spaces.kernels.recurrent_sequence import step_buffers

Step = Callable[[Optional[SavedBytes]], None]  # one timed step; given a SavedBytes, it counts what its forward saves


def darts_like_cell():
    """What a DARTS search of this space typically exports: gates from linear maps, a blend, products."""
    n = Node
    return make_cell([
        n("n1", "linear", ("x",)), n("n2", "linear", ("h1",)), n("n3", "sum", ("n1", "n2")),
        n("n4", "sigmoid", ("n3",)), n("n5", "tanh", ("n3",)), n("n6", "blend", ("n4", "n5", "h1")),
        n("n7", "product", ("n4", "h2")), n("n8", "sum", ("n7", "n6")),
    ], {"h1": "n6", "h2": "n8"})


def best_time(step: Step, repeats: int) -> tuple[float, float]:
    """(best seconds of `repeats` timed steps, MB held for backward by the warm-up step's forward)."""
    held = SavedBytes()
    step(held)  # warm-up (allocator, MKL/oneDNN kernels), counting what the forward saves
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(None)
        times.append(time.perf_counter() - start)
    return min(times), held.mb


def counting(held: Optional[SavedBytes]) -> contextlib.AbstractContextManager:
    """Counts into `held` the tensors autograd saves inside the block (nothing without one)."""
    if held is None:
        return contextlib.nullcontext()
    return torch.autograd.graph.saved_tensors_hooks(held.pack, lambda tensor: tensor)


def forward_backward(module: torch.nn.Module, x: torch.Tensor) -> Step:
    def step(held: Optional[SavedBytes]) -> None:
        module.zero_grad(set_to_none=True)
        with counting(held):
            out = module(x)[0].sum()
        out.backward()

    return step


def darts_supernet_step(args: argparse.Namespace, x: torch.Tensor, mask: torch.Tensor,
                        fast: bool) -> tuple[Step, torch.nn.Module]:
    from nni.nas.strategy import DARTS

    config = R.RecurrentSpaceConfig(input_dim=args.dim, hidden_size=args.hidden, nodes=args.nodes)
    supernet = DARTS().mutate_model(R.build_oneshot_space(config, num_classes=4))
    optimizer = torch.optim.SGD(supernet.parameters(), lr=0.01)
    target = torch.arange(x.shape[0]) % 4

    def step(held: Optional[SavedBytes]) -> None:
        optimizer.zero_grad(set_to_none=True)
        # the reference: without the layer's mixture step (kernels.recurrent_mixture), NNI's mixtures run call by call
        reference = contextlib.nullcontext() if fast else mock.patch.object(R, "layer_mixture", return_value=None)
        with counting(held), reference:
            loss = torch.nn.functional.cross_entropy(supernet({"frames": x, "mask": mask}), target)
        loss.backward()
        optimizer.step()

    return step, supernet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--frames", type=int, default=727)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--nodes", type=int, default=8, help="intermediate nodes of the supernet")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-supernet", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.frames, args.dim)
    print(f"batch {args.batch}, T={args.frames}, D={args.dim}, H={args.hidden}, CPU threads {torch.get_num_threads()}"
          f", best of {args.repeats}, forward+backward")
    reference, held = best_time(forward_backward(torch.nn.LSTM(args.dim, args.hidden, batch_first=True), x),
                                args.repeats)
    print(f"  torch.nn.LSTM                 {reference:7.3f} s   1.00x            held {held:6.0f} MB")
    for name, cell in (("catalog LSTM (fixed cell)", lstm()), ("DARTS-like cell (fixed)", darts_like_cell())):
        layer = FixedCellLayer(cell, args.dim, args.hidden, state_bound=R.RecurrentSpaceConfig().state_bound)
        seconds, held = best_time(forward_backward(layer, x), args.repeats)
        print(f"  {name:29s} {seconds:7.3f} s   {seconds / reference:.2f}x nn.LSTM   held {held:6.0f} MB")
    if not args.skip_supernet:
        mask = torch.ones(args.batch, args.frames, dtype=torch.bool)
        for fast, name in ((False, "NNI's mixtures, op by op"), (True, "mixture step (product)")):
            step, supernet = darts_supernet_step(args, x, mask, fast)
            seconds, held = best_time(step, args.repeats)
            kept = sum(b.nbytes for layer in supernet.recurrent for b in step_buffers(layer).kept()) / 2**20
            print(f"  DARTS supernet step ({args.nodes} nodes), {name:25s} {seconds:7.3f} s   "
                  f"{seconds / reference:.2f}x nn.LSTM   held {held:6.0f} MB   kept between steps {kept:4.0f} MB",
                  flush=True)


if __name__ == "__main__":
    main()
