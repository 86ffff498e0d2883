"""The thread policy (`nni_emotionnas.threads`): one thread for stream networks, every core for a search
step, `EMOTIONNAS_THREADS` for all of them, a config's own `threads` above both, passive OpenMP waiting set
before torch loads. Its speed on a busy machine is measured in benchmarks/bench_shared_machine.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import TensorDataset

from nni_emotionnas.config.training import TrainConfig
from nni_emotionnas.errors import ConfigError
from nni_emotionnas.threads import THREADS_ENV, policy_threads, usable_cores
from nni_emotionnas.training.evaluator import build_evaluator


def threads_during_fit(config: TrainConfig, work: str) -> list[int]:
    seen: list[int] = []

    class Watch(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            seen.append(torch.get_num_threads())

    data = TensorDataset(torch.randn(16, 4), torch.tensor([0, 1] * 8))
    build_evaluator(data, data, 2, config, callbacks=[Watch()], work=work).evaluate(nn.Linear(4, 2))
    return seen


def test_stream_fits_take_one_thread_and_search_steps_every_core(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    torch.set_num_threads(3)  # whatever the caller had: a fit sets its own and gives it back
    try:
        assert threads_during_fit(TrainConfig(epochs=1, batch_size=8), "stream") == [1, 1]
        assert threads_during_fit(TrainConfig(epochs=1, batch_size=8), "supernet") == [usable_cores()] * 2
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(1)


def test_the_environment_setting_overrides_the_policy_and_a_config_key_overrides_both(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "3")
    assert policy_threads("stream") == policy_threads("supernet") == policy_threads("worker") == 3
    assert threads_during_fit(TrainConfig(epochs=1, batch_size=8), "stream") == [3, 3]
    assert threads_during_fit(TrainConfig(epochs=1, batch_size=8, threads=2), "supernet") == [2, 2]


@pytest.mark.parametrize("value", ["0", "two", "-1", "1.5"])
def test_a_bad_environment_setting_is_an_error_naming_it(monkeypatch, value):
    monkeypatch.setenv(THREADS_ENV, value)
    with pytest.raises(ConfigError, match=f"{THREADS_ENV} must be a whole number of at least 1, got '{value}'"):
        policy_threads("stream")


@pytest.mark.parametrize("given, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_command_sets_passive_openmp_waiting_before_torch_loads_unless_the_user_chose(given, expected):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    probe = ("import os, sys, runpy; sys.argv = ['emotionnas', '--version']\n"
             "import nni_emotionnas.cli.app as app\n"
             "app.main = lambda: print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules) or 0\n"
             "app.console()")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [expected, "False"]
