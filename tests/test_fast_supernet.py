"""The fast DARTS supernet cell (`kernels.fast_cell`) computes NNI's stock cell mixture, the reference: same logits,
same gradients for weights and alphas, same batch-norm statistics; cell checkpointing changes none of them.

Tolerances are float32 rounding of a different summation order (fused convs, one batch norm per state)
through three cells of batch norms: relative 1e-4."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from nni.nas.strategy import DARTS, GumbelDARTS
from torch.utils.data import TensorDataset

from nni_emotionnas.nni_compat import DifferentiableMixedCell
from nni_emotionnas.search.run import run_search
from nni_emotionnas.spaces import spectrogram as S
from nni_emotionnas.spaces.kernels.fast_cell import FastMixedCell
from nni_emotionnas.training.evaluator import TrainConfig

# reduction cells at layers 1 and 2: normal and reduction cells, stride-2 edges and FactorizedReduce skips
CONFIG = S.SpectrogramSpaceConfig(channels=4, layers=3, nodes=3)
TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


def stock_space(config: S.SpectrogramSpaceConfig) -> S.SpectrogramSpace:
    """The space without its one-shot hook: NNI's DARTS gives it NNI's own cell mixture (the reference)."""
    space = S.build_space(config, 3)
    space.extra_oneshot_hooks = lambda strategy: []
    return space


def supernets(config: S.SpectrogramSpaceConfig, strategy: type = DARTS) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(fast, NNI's stock) supernets with the same weights and strong, distinct alphas (the `none` one included)."""
    torch.manual_seed(0)
    stock = strategy().mutate_model(stock_space(config))
    fast = strategy().mutate_model(S.build_space(config, 3))
    with torch.no_grad():
        for name, p in stock.named_parameters():
            p.normal_() if "_arch_alpha" in name else p.add_(torch.randn_like(p) * 0.1)
    fast.load_state_dict(stock.state_dict())
    return fast, stock


def assert_same_step(fast: torch.nn.Module, stock: torch.nn.Module, x: torch.Tensor) -> None:
    out_fast, out_stock = fast(x), stock(x)
    torch.testing.assert_close(out_fast, out_stock, **TOLERANCE)
    out_fast.square().sum().backward()
    out_stock.square().sum().backward()
    stock_params = dict(stock.named_parameters())
    for name, p in fast.named_parameters():
        torch.testing.assert_close(p.grad, stock_params[name].grad, **TOLERANCE, msg=name)
    stock_buffers = dict(stock.named_buffers())
    for name, b in fast.named_buffers():
        torch.testing.assert_close(b, stock_buffers[name], **TOLERANCE, msg=name)


@pytest.mark.parametrize("size", [(13, 16), (16, 16)])
def test_fast_cell_gives_the_naive_logits_gradients_and_statistics(size: tuple[int, int]) -> None:
    fast, stock = supernets(CONFIG)
    assert type(fast.cells[0]) is FastMixedCell and type(stock.cells[0]) is DifferentiableMixedCell
    assert fast.cells[1].label == "reduce" and fast.cells[0].label == "normal"
    assert sum(p.numel() for p in fast.parameters()) == sum(p.numel() for p in stock.parameters())
    assert_same_step(fast, stock, torch.randn(3, 1, *size))
    fast.eval(), stock.eval()  # running statistics now
    x = torch.randn(2, 1, *size)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), stock(x), **TOLERANCE)


def test_fast_cell_with_an_op_subset_and_gumbel_noise() -> None:
    config = replace(CONFIG, ops=["max_pool_3x3", "skip_connect", "sep_conv_3x3", "none"])
    fast, stock = supernets(config, GumbelDARTS)
    x = torch.randn(2, 1, 11, 11)
    torch.manual_seed(5)
    out_fast = fast(x)
    torch.manual_seed(5)
    torch.testing.assert_close(out_fast, stock(x), **TOLERANCE)  # the same Gumbel draws, edge by edge


def test_checkpointed_cells_give_the_same_gradients_and_statistics() -> None:
    fast, plain = supernets(CONFIG)
    plain.load_state_dict(fast.state_dict())
    fast.checkpoint_cells = True
    assert_same_step(fast, plain, torch.randn(3, 1, 15, 15))


def tiny_data(n: int) -> TensorDataset:
    g = torch.Generator().manual_seed(3)
    y = torch.arange(n) % 4
    x = torch.randn(n, 1, 12, 12, generator=g)
    for c in range(4):
        x[y == c, :, (c // 2) * 6 : (c // 2) * 6 + 6, (c % 2) * 6 : (c % 2) * 6 + 6] += 1.5
    return TensorDataset(x, y)


def test_seeded_search_derives_the_same_genotype_with_both_cells(tmp_path: Path, monkeypatch) -> None:
    genotypes = []
    for supernet in ("stock", "fast"):
        config = S.SpectrogramSpaceConfig(channels=2, layers=3, nodes=2, stem=S.StemConfig(multiplier=2))
        if supernet == "stock":  # the reference: NNI's own cell mixture
            monkeypatch.setattr(S.SpectrogramSpace, "extra_oneshot_hooks", lambda self, strategy: [])
        else:
            monkeypatch.undo()
        result = run_search(
            space_mod=S,
            space_config=config,
            train_dataset=tiny_data(32),
            num_classes=4,
            search_config=TrainConfig(epochs=2, batch_size=8, seed=4),
            strategy_name="DARTS",
            strategy_args={"arc_learning_rate": 0.05},
            run_dir=tmp_path / supernet,
            stream="spectrogram",
        )
        genotypes.append((result.record["genotype"], result.record["edge_weights"]))
    (stock_genotype, stock_weights), (fast_genotype, fast_weights) = genotypes
    assert fast_genotype == stock_genotype
    for label, probs in stock_weights.items():
        assert fast_weights[label] == pytest.approx(probs, abs=1e-4), label


def test_search_with_accelerator_auto_and_bf16_mixed_precision_on_cpu(tmp_path: Path) -> None:
    """`accelerator: auto` and `precision` reach Lightning; no GPU here, so this is CPU autocast (bf16)."""
    from nni_emotionnas.training.evaluator import build_evaluator

    config = TrainConfig(
        epochs=1, batch_size=8, seed=0, accelerator="auto", precision="bf16-mixed", checkpoint_cells=True
    )
    assert build_evaluator(tiny_data(8), None, 4, config).trainer.precision == "bf16-mixed"
    space = S.SpectrogramSpaceConfig(channels=2, layers=3, nodes=2, stem=S.StemConfig(multiplier=2))
    result = run_search(
        space_mod=S,
        space_config=space,
        train_dataset=tiny_data(16),
        num_classes=4,
        search_config=config,
        strategy_name="DARTS",
        strategy_args={},
        run_dir=tmp_path,
        stream="spectrogram",
    )
    assert result.record["search_metrics"]["search"]["precision"] == "bf16-mixed"
    assert result.record["search_metrics"]["train_loss"] > 0


def test_checkpoint_cells_on_a_network_without_cells_is_a_config_error() -> None:
    from nni_emotionnas.errors import ConfigError
    from nni_emotionnas.spaces import deep as R
    from nni_emotionnas.spaces.kernels.cell_checkpoint import enable_cell_checkpointing

    deep = R.build_space(R.RecurrentSpaceConfig(input_dim=4, hidden_size=4, nodes=2), 2)
    with pytest.raises(ConfigError, match="train.checkpoint_cells: RecurrentSpace has no cells to checkpoint"):
        enable_cell_checkpointing(deep, True, "train.checkpoint_cells")
    enable_cell_checkpointing(deep, False, "train.checkpoint_cells")  # off: nothing to check


FREED_MEMORY_PROBE = """
import resource, torch
from nni_emotionnas.spaces import spectrogram as S
from nni_emotionnas.spaces.kernels.cell_checkpoint import enable_cell_checkpointing

def rss_mb():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20

config = S.SpectrogramSpaceConfig(channels=4, layers=3, nodes=3)
enable_cell_checkpointing(S.build_space(config, 4), True, "t")  # the network is freed
for _ in range(2):  # as a recomputation does every step: 320 MB of 16 MB activations, freed, allocated again
    tensors = [torch.ones(4 << 20) for _ in range(20)]
    held = rss_mb()
    del tensors
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(held - rss_mb())
tensors = [torch.ones(4 << 20) for _ in range(20)]
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
"""


GLIBC_LINUX = Path("/proc/self/statm").exists() and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC_LINUX, reason="glibc on Linux only")
def test_checkpointing_keeps_freed_memory_for_the_recomputation() -> None:
    """With checkpoint_cells the heap keeps what a step frees, so the recomputed activations reuse it: no
    memory returned, no page faulted in again. The contrast is a user's own glibc cap, under which the same
    code returns every block and faults it in again (glibc's untuned default is not a fixed contrast: its
    dynamic mmap threshold returned all 320 MB here and none on a CI machine)."""

    def probe(**malloc_environment: str) -> tuple[float, int]:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
        env = inherited | malloc_environment
        out = subprocess.run([sys.executable, "-c", FREED_MEMORY_PROBE], capture_output=True, text=True,
                             check=True, env=env).stdout.split()
        return float(out[-2]), int(out[-1])

    returned_on, faults_on = probe()
    assert returned_on < 20 and faults_on < 5_000
    # a user who capped RSS with glibc's own variable (docs/search-cost.md) keeps it: every freed block is returned
    returned_capped, faults_capped = probe(MALLOC_MMAP_THRESHOLD_="131072")
    assert returned_capped > 250 and faults_capped > 60_000  # 320 MB = 81920 pages of 4 KB
