"""One DARTS search step at paper scale on CPU: the fast supernet cell against the naive plain-PyTorch supernet.

A step = architecture step (forward + backward on an architecture batch, Adam on the alphas) + weight
step (forward + backward on a weight batch, clip 5, optimizer step), as NNI's `DartsLightningModule` does.

Variants, each run in its own child process (so peak RSS is its own), in this one run:
- `plain` (the reference): the supernet (same ops and cell wiring, same number of weights) written in plain
  PyTorch, every edge running every candidate, with a hand-written loop;
- `fast`: NNI's DARTS supernet of our space with the fast cell (`supernet: fast`, `spaces.kernels.fast_cell`), driven
  by the same hand-written loop, whose architecture step computes the alphas' gradients only, as
  `emotionnas search`'s DARTS does (`search.darts_strategies`; the reference computes the weights' gradients
  too and discards them, as NNI's and the public DARTS code do); `fast-ckpt`: the same with
  `checkpoint_cells: true`;
- `pc-darts`: the fast cell with partial channels (`partial_channels`, PC-DARTS: a different algorithm; K=2
  by default, as K=4 does not divide the paper's C=6);
- `nni`: `emotionnas search`'s path (NasExperiment, the project's DARTS strategy class, Lightning, `supernet: fast`);
- `*-bf16` (`fast-bf16`, `fast-ckpt-bf16`, `nni-bf16`): the same under bfloat16 autocast, what
  `search.precision: bf16-mixed` does (convs in bfloat16, on CPUs with AMX/AVX512-BF16 units); not the same
  float32 arithmetic, so a row of its own beside the float32 targets;
- opt-in: `nni-stock` (NNI's supernet with NNI's stock cell, the fast cell's reference, hand loop);
- external reference `ptdarts`: khanrc/pt.darts' search step (`SearchCNNController` of the same C, L, N, its
  `Architect.unrolled_backward`, DARTS' second-order architecture step and pt.darts' only one, then its weight
  step: SGD, clip 5), what people use for DARTS in PyTorch; opt-in `ptdarts-1st`: its network with a
  first-order architecture step (the gradient of the validation loss, as `emotionnas search`). pt.darts is not
  shipped or installed with this project: clone khanrc/pt.darts (GitHub) yourself and pass `--ptdarts DIR` (or
  set PTDARTS_PATH); without it these rows are skipped with a note.

Usage: python benchmarks/bench_spectrogram_search.py [--batch 32] [--size 140] [--steps 3] [--live-memory]
       [--ptdarts DIR]
Prints seconds per step (median after one warm-up step), peak RSS, the memory held for backward at the end of
the arch step's forward (bytes of the distinct tensors autograd saved, counted with saved-tensor hooks; with
`checkpoint_cells` the cells' recomputed activations are held only one cell at a time during backward and are
not in this number), and ratios to `plain`.

Peak RSS under glibc's default malloc includes freed memory the allocator keeps (its mmap threshold grows
to 32 MB after the first frees, so activations come from the heap and fragment it); how much depends on the
order of allocations, not on how much a loop holds. `--live-memory` gives every allocation of 128 KB or
more its own mapping, returned to the OS when freed, so peak RSS is the peak of memory actually held
(steps are slower: every activation page-faults fresh pages).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def batches(batch: int, size: int, count: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 1, size, size, generator=g), torch.randint(0, 4, (batch,), generator=g))
            for _ in range(count)]


class PlainMixedCell(nn.Module):
    """DARTS search cell without NNI: every edge mixes all candidates + `none` by softmaxed alphas."""

    def __init__(self, config: Any, channels: int, reduction: bool, preprocessor: nn.Module,
                 alphas: nn.ParameterDict, label: str) -> None:
        from nni_emotionnas.spaces.darts_ops import build_op

        super().__init__()
        self.preprocessor, self.alphas, self.label, self.nodes = preprocessor, alphas, label, config.nodes
        self.edges = nn.ModuleDict()
        for node in range(2, 2 + config.nodes):
            for source in range(node):
                stride = 2 if reduction and source < 2 else 1
                self.edges[f"{node}_{source}"] = nn.ModuleList(
                    build_op(op, channels, stride) for op in config.candidate_ops
                )
                key = f"{label}_{node}_{source}"
                if key not in alphas:
                    alphas[key] = nn.Parameter(torch.randn(len(config.candidate_ops) + 1) * 1e-3)

    def forward(self, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        states = self.preprocessor(inputs)
        for node in range(2, 2 + self.nodes):
            total: Any = 0
            for source in range(node):
                weights = F.softmax(self.alphas[f"{self.label}_{node}_{source}"], dim=-1)
                for k, op in enumerate(self.edges[f"{node}_{source}"]):
                    total = total + weights[k] * op(states[source])
            states.append(total)
        return inputs[-1], torch.cat(states[2:], dim=1)


class PlainSupernet(nn.Module):
    def __init__(self, config: Any, num_classes: int) -> None:
        from nni_emotionnas.spaces.darts_ops import CellInputs

        super().__init__()
        stem = config.stem.multiplier * config.channels
        self.stem = nn.Sequential(nn.Conv2d(1, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem))
        self.alphas = nn.ParameterDict()
        self.cells = nn.ModuleList()
        c_pp, c_p, channels, prev_reduction = stem, stem, config.channels, False
        for layer in range(config.layers):
            reduction = layer in config.reduction_layers
            channels *= 2 if reduction else 1
            pre = CellInputs(c_pp, c_p, channels, prev_reduction)
            self.cells.append(PlainMixedCell(config, channels, reduction, pre, self.alphas,
                                             "reduce" if reduction else "normal"))
            c_pp, c_p, prev_reduction = c_p, channels * config.nodes, reduction
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = cell([s0, s1])
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))


def nni_supernet(config: Any, stock: bool = False) -> tuple[nn.Module, list[nn.Parameter]]:
    """NNI's DARTS supernet of our space (no Lightning), with its architecture parameters."""
    from nni.nas.strategy import DARTS

    from nni_emotionnas.spaces.spectrogram import build_space

    space = build_space(config, 4)
    if stock:  # without the space's one-shot hook NNI's DARTS keeps its own cell mixture (the reference)
        space.extra_oneshot_hooks = lambda strategy: []
    net = DARTS().mutate_model(space)
    return net, [p for name, p in net.named_parameters() if "_arch_alpha" in name]


class SavedBytes:
    """Bytes of the distinct storages autograd saves for backward while active (saved-tensor hooks)."""

    def __init__(self) -> None:
        self.storages: dict[int, int] = {}

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        self.storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    @property
    def mb(self) -> float:
        return sum(self.storages.values()) / 2**20


def autocast(args: argparse.Namespace) -> torch.autocast:
    """bfloat16 autocast for the `*-bf16` variants (as Lightning's `bf16-mixed` on CPU), off otherwise."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.variant.endswith("-bf16"))


def run_plain(config: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The hand-written search loop, on the plain supernet or on NNI's mutated one."""
    torch.manual_seed(0)
    if args.variant == "plain":
        net = PlainSupernet(config, 4)
        alphas = list(net.alphas.parameters())
    else:
        net, alphas = nni_supernet(config, stock=args.variant == "nni-stock")
        from nni_emotionnas.spaces.kernels.cell_checkpoint import enable_cell_checkpointing

        enable_cell_checkpointing(net, args.variant.startswith("fast-ckpt"), "benchmark")  # as `emotionnas search`
    alpha_ids = {id(p) for p in alphas}
    weights = [p for p in net.parameters() if id(p) not in alpha_ids]
    w_opt = torch.optim.Adam(weights, lr=1e-3, weight_decay=3e-4)
    a_opt = torch.optim.Adam(alphas, lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    if args.variant not in ("plain", "nni-stock"):  # as `emotionnas search`: alphas' gradients only in the arch step
        from nni_emotionnas.search.darts_strategies import ArchitectureAdam

        a_opt = ArchitectureAdam(a_opt, weights)
    train, arch = batches(args.batch, args.size, args.steps + 1, 1), batches(args.batch, args.size, args.steps + 1, 2)
    rss_before, times, held = current_rss_mb(), [], SavedBytes()
    for (xt, yt), (xa, ya) in zip(train, arch):
        start = time.perf_counter()
        a_opt.zero_grad()
        held.storages.clear()
        with torch.autograd.graph.saved_tensors_hooks(held.pack, lambda tensor: tensor), autocast(args):
            loss = F.cross_entropy(net(xa), ya)
        held_mb = held.mb
        loss.backward()
        a_opt.step()
        w_opt.zero_grad()
        with autocast(args):
            loss = F.cross_entropy(net(xt), yt)
        loss.backward()
        nn.utils.clip_grad_norm_(weights, 5.0)
        w_opt.step()
        times.append(time.perf_counter() - start)
    return {"times": times, "rss_before": rss_before, "peak": peak_rss_mb(), "held": held_mb,
            "weights": sum(p.numel() for p in weights), "alphas": sum(p.numel() for p in alphas)}


PTDARTS_FILES = ("models/search_cnn.py", "architect.py", "genotypes.py")


def ptdarts_missing(root: Optional[str]) -> Optional[str]:
    """Why the pt.darts rows cannot run (None when `root` looks like a clone of khanrc/pt.darts)."""
    if not root:
        return "no clone given (--ptdarts DIR or PTDARTS_PATH)"
    missing = [name for name in PTDARTS_FILES if not (Path(root) / name).is_file()]
    return f"{root} has no {missing[0]} (a clone of khanrc/pt.darts expected)" if missing else None


def ptdarts_classes(root: str) -> tuple[Any, Any]:
    """pt.darts' `SearchCNNController` and `Architect` from the user's clone (its modules import each other as the
    top-level `models`, `genotypes`, so the clone goes first on sys.path of this child process)."""
    sys.path.insert(0, str(Path(root).resolve()))
    from architect import Architect  # type: ignore[import-not-found]
    from models.search_cnn import SearchCNNController  # type: ignore[import-not-found]

    return SearchCNNController, Architect


def run_ptdarts(config: Any, args: argparse.Namespace) -> dict[str, Any]:
    """pt.darts' search step as its search.py trains: architect step on (train, val) batches, then SGD on the
    weights with clip 5 (its defaults: w_lr 0.025, momentum 0.9, w_weight_decay 3e-4; alpha Adam 3e-4)."""
    controller, architect_class = ptdarts_classes(args.ptdarts)
    torch.manual_seed(0)
    # device_ids=[0]: its forward runs the network directly (no scatter over GPUs); nothing is moved to a GPU
    net = controller(1, config.channels, 4, config.layers, nn.CrossEntropyLoss(), n_nodes=config.nodes,
                     stem_multiplier=config.stem.multiplier, device_ids=[0])
    w_lr, w_momentum, w_decay = 0.025, 0.9, 3e-4
    w_opt = torch.optim.SGD(net.weights(), w_lr, momentum=w_momentum, weight_decay=w_decay)
    a_opt = torch.optim.Adam(net.alphas(), 3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    architect = architect_class(net, w_momentum, w_decay)
    train, val = batches(args.batch, args.size, args.steps + 1, 1), batches(args.batch, args.size, args.steps + 1, 2)
    rss_before, times = current_rss_mb(), []
    for (xt, yt), (xv, yv) in zip(train, val):
        start = time.perf_counter()
        a_opt.zero_grad()
        if args.variant == "ptdarts":
            architect.unrolled_backward(xt, yt, xv, yv, w_lr, w_opt)
        else:  # first order: the alphas' gradient of the validation loss at the current weights
            alphas = list(net.alphas())
            for alpha, grad in zip(alphas, torch.autograd.grad(net.loss(xv, yv), alphas)):
                alpha.grad = grad
        a_opt.step()
        w_opt.zero_grad()
        net.loss(xt, yt).backward()
        nn.utils.clip_grad_norm_(net.weights(), 5.0)
        w_opt.step()
        times.append(time.perf_counter() - start)
    return {"times": times, "rss_before": rss_before, "peak": peak_rss_mb(),
            "weights": sum(p.numel() for p in net.weights()), "alphas": sum(p.numel() for p in net.alphas())}


def run_nni(config: Any, args: argparse.Namespace) -> dict[str, Any]:
    import pytorch_lightning as pl
    from nni.nas.experiment import NasExperiment, NasExperimentConfig
    from torch.utils.data import TensorDataset

    from nni_emotionnas.search.darts_strategies import DARTS
    from nni_emotionnas.spaces.spectrogram import build_space
    from nni_emotionnas.training.evaluator import TrainConfig, build_evaluator

    times: list[float] = []
    marks: dict[str, float] = {}

    class StepTimer(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            marks.setdefault("rss_before", current_rss_mb())
            marks["start"] = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            times.append(time.perf_counter() - marks["start"])

    def dataset(seed: int) -> TensorDataset:
        data = batches(args.batch, args.size, args.steps + 1, seed)
        return TensorDataset(torch.cat([x for x, _ in data]), torch.cat([y for _, y in data]))

    torch.manual_seed(0)
    train_config = TrainConfig(epochs=1, batch_size=args.batch, lr=1e-3, weight_decay=3e-4,
                               precision="bf16-mixed" if args.variant.endswith("-bf16") else "32")
    evaluator = build_evaluator(dataset(1), dataset(2), 4, train_config, shuffle_val=True, callbacks=[StepTimer()])
    space = build_space(config, 4)
    strategy = DARTS(arc_learning_rate=3e-4, gradient_clip_val=5.0)
    exp_config = NasExperimentConfig.default(space, evaluator, strategy)
    exp_config.experiment_working_directory = args.workdir
    experiment = NasExperiment(space, evaluator, strategy, exp_config)
    experiment.run()
    experiment.stop()
    params = list(strategy.supernet.parameters())
    alphas = {id(p) for p in strategy.oneshot_module.arch_parameters()}
    return {"times": times, "rss_before": marks["rss_before"], "peak": peak_rss_mb(),
            "weights": sum(p.numel() for p in params if id(p) not in alphas),
            "alphas": sum(p.numel() for p in params if id(p) in alphas),
            "cell": type(strategy.supernet.cells[0]).__name__}


def child(args: argparse.Namespace) -> None:
    from nni_emotionnas.spaces.spectrogram import SpectrogramSpaceConfig

    torch.set_num_threads(args.threads)
    config = SpectrogramSpaceConfig(partial_channels=args.partial_channels if args.variant == "pc-darts" else 1)
    if args.variant.startswith("ptdarts"):
        result = run_ptdarts(config, args)
    elif args.variant in ("nni", "nni-bf16"):
        result = run_nni(config, args)
    else:
        result = run_plain(config, args)
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=140)
    parser.add_argument("--steps", type=int, default=3, help="measured steps (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--variants", nargs="+", default=["plain", "fast", "fast-ckpt", "pc-darts", "nni", "ptdarts"],
                        choices=["plain", "fast", "fast-ckpt", "pc-darts", "nni", "fast-bf16", "fast-ckpt-bf16",
                                 "nni-bf16", "nni-stock", "ptdarts", "ptdarts-1st"])
    parser.add_argument("--ptdarts", default=os.environ.get("PTDARTS_PATH"),
                        help="a clone of khanrc/pt.darts for the external reference rows (default: $PTDARTS_PATH)")
    parser.add_argument("--partial-channels", type=int, default=2,
                        help="K of the pc-darts variant (K=4 does not divide the paper's C=6)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run the variants this many times in turn; prints each run's ratios and their median")
    parser.add_argument("--live-memory", action="store_true", help="peak RSS = peak live memory (see above)")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default="/tmp/emotionnas-bench-nni", help="NNI experiment folder")
    args = parser.parse_args()
    if args.variant:
        child(args)
        return
    print(f"DARTS search step, C6 L3 N4, batch {args.batch} x 1x{args.size}x{args.size}, CPU, "
          f"{args.threads} threads, median of {args.steps} steps after 1 warm-up, "
          + ("live memory (MALLOC_MMAP_THRESHOLD_=131072)" if args.live_memory else "glibc malloc defaults"))
    args.variants = available_variants(args.variants, args.ptdarts)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    if args.live_memory:
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    ratios: dict[str, list[tuple[float, float]]] = {}
    for repeat in range(args.repeats):
        if args.repeats > 1:
            print(f"-- run {repeat + 1} of {args.repeats}", flush=True)
        results = {variant: run_variant(variant, args, env) for variant in args.variants}
        if "plain" in results:
            base = results["plain"]
            for variant, r in results.items():
                if variant != "plain":
                    ratios.setdefault(variant, []).append((r["step"] / base["step"], r["peak"] / base["peak"]))
                    print(f"ratio {variant}/plain: time {r['step'] / base['step']:.3f}x   "
                          f"peak RSS {r['peak'] / base['peak']:.3f}x   step memory "
                          f"{(r['peak'] - r['rss_before']) / max(base['peak'] - base['rss_before'], 1):.3f}x"
                          + (f"   held {r['held'] / base['held']:.3f}x" if "held" in r else ""))
    if args.repeats > 1:
        for variant, pairs in ratios.items():
            times, peaks = [t for t, _ in pairs], [p for _, p in pairs]
            print(f"median of {len(pairs)} runs {variant}/plain: time {statistics.median(times):.3f}x "
                  f"(range {min(times):.3f}-{max(times):.3f})   peak RSS {statistics.median(peaks):.3f}x "
                  f"(range {min(peaks):.3f}-{max(peaks):.3f})")


def available_variants(variants: list[str], ptdarts: Optional[str]) -> list[str]:
    """The variants that can run here: the pt.darts rows need the user's clone, else a note says why not."""
    why = ptdarts_missing(ptdarts)
    skipped = [v for v in variants if v.startswith("ptdarts")] if why else []
    if skipped:
        print(f"{', '.join(skipped)}: skipped, pt.darts not found: {why}", flush=True)
    return [v for v in variants if v not in skipped]


def run_variant(variant: str, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """One variant's child process; its result with the median step time, printed as a row."""
    cmd = [sys.executable, __file__, "--variant", variant, "--batch", str(args.batch), "--size",
           str(args.size), "--steps", str(args.steps), "--threads", str(args.threads), "--workdir", args.workdir,
           "--partial-channels", str(args.partial_channels)] + (["--ptdarts", args.ptdarts] if args.ptdarts else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        sys.exit(f"{variant} failed:\n{out.stderr[-3000:]}")
    r = json.loads(lines[-1][len("RESULT "):])
    r["step"] = statistics.median(r["times"][1:]) if len(r["times"]) > 1 else r["times"][0]
    print(f"{variant:10s} {r['step']:7.2f} s/step   peak RSS {r['peak']:8.0f} MB "
          f"(+{r['peak'] - r['rss_before']:.0f} MB over steps)"
          + (f"   held for backward {r['held']:7.0f} MB" if "held" in r else "")
          + f"   weights {r['weights']} alphas {r['alphas']}" + (f"   cell {r['cell']}" if "cell" in r else ""),
          flush=True)
    return r

if __name__ == "__main__":
    main()
