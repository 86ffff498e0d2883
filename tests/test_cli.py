"""The command line forgives mistakes: one-line failures with the right exit status, no silent overwrites,
a search summary that says something, a warning before nnictl would run trials with the wrong python."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nni_emotionnas.cli.app import main
from nni_emotionnas.cli.failures import describe
from nni_emotionnas.cli.nni_commands import trial_python_note
from nni_emotionnas.cli.search_train import search_summary
from nni_emotionnas.errors import ConfigError

SMALL_DEEP = "hidden_size: 8\nnodes: 2\nattention_dim: 4\n"


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_space_json_keeps_an_existing_other_space_unless_forced(tmp_path: Path, capsys) -> None:
    (tmp_path / "deep.yml").write_text(SMALL_DEEP)
    out = tmp_path / "search_spaces" / "deep.json"
    assert main(["space-json", "--stream", "deep", "--space", str(tmp_path / "deep.yml"), "--out", str(out)]) == 0
    mine = out.read_text()  # --branch, the old spelling of --stream, names the same space
    assert main(["space-json", "--branch", "deep", "--space", str(tmp_path / "deep.yml"), "--out", str(out)]) == 0
    capsys.readouterr()
    # the reported mistake: no --space, the packaged 8-node space would silently replace the user's
    assert main(["space-json", "--stream", "deep", "--out", str(out)]) == 2
    message = one_line(capsys.readouterr().err)
    assert f"{out}: exists and holds another search space than the packaged deep space" in message
    assert "--force" in message and out.read_text() == mine
    assert main(["space-json", "--stream", "deep", "--out", str(out), "--force"]) == 0
    assert len(json.loads(out.read_text())) > len(json.loads(mine))


def test_space_json_warns_when_the_python_trials_run_lacks_the_package(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "python").symlink_to(Path(sys._base_executable).resolve())  # a real python outside the virtualenv
    monkeypatch.setenv("PATH", str(bare))
    note = trial_python_note()
    assert note is not None and f"({bare / 'python'})" in note and "activate" in note and sys.executable in note
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{bare}")  # an activated virtualenv
    assert trial_python_note() is None


def test_search_summary_shows_the_best_trial_of_a_multi_trial_search() -> None:
    multi = {"seconds": 30.0, "nni_experiment": "x1", "nni_trial": "Ab3dE", "nni_trials_ranked": 2,
             "nni_final": {"default": 0.4375, "wa": 0.5, "params": 1234}}
    assert search_summary(multi) == "best of 2 trials is Ab3dE: val UA 43.8 %, WA 50.0 %"
    oneshot = {"seconds": 3.0, "epochs": 1, "train_loss": 1.25, "supernet_arch_half_ua": 0.3}
    assert search_summary(oneshot) == "final train loss 1.2500, supernet UA 30.0 % on the architecture half"
    catalog = {"candidate_val_loss": {"lstm": 1.5, "gru": 1.25, "rnn": None}}
    assert search_summary(catalog) == "best of 3 candidates: val loss 1.2500"


def test_a_folder_where_a_file_belongs_is_one_line_and_debug_shows_the_traceback(tmp_path: Path, capsys) -> None:
    (tmp_path / "deep.yml").write_text(SMALL_DEEP)
    folder = tmp_path / "taken"
    (folder / "inside").mkdir(parents=True)
    args = ["space-json", "--stream", "deep", "--space", str(tmp_path / "deep.yml"), "--out", str(folder)]
    assert main(args) == 1
    assert one_line(capsys.readouterr().err) == (
        f"emotionnas space-json: error: {folder}: is a folder where a file is expected: pass the file, "
        "or move the folder away")
    assert main([*args, "--debug"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "IsADirectoryError" in err
    assert err.strip().splitlines()[-1].startswith("emotionnas space-json: error: ")


def test_input_errors_exit_2_with_the_file_named(tmp_path: Path, capsys) -> None:
    (tmp_path / "exp.yml").write_text("corpus: {reader: emodb, path: nowhere}\nprotcol: {}\n")
    assert main(["run", str(tmp_path / "exp.yml")]) == 2
    message = one_line(capsys.readouterr().err)
    assert message.startswith("emotionnas run: error: ") and "exp.yml.protcol: unknown key" in message


@pytest.mark.parametrize("command", ["run", "demo"])
def test_jobs_flag_needs_a_whole_number_of_at_least_one(tmp_path: Path, capsys, command: str) -> None:
    args = [command, str(tmp_path / "exp.yml")] if command == "run" else [command, "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as caught:
        main([*args, "--jobs", "0"])
    assert caught.value.code == 2
    assert "argument --jobs: expected a whole number of at least 1, got '0'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_disk_full_names_the_file_being_written() -> None:
    def write_report() -> None:
        with open("/dev/full", "wb") as handle:  # a real ENOSPC from the kernel, with no file name attached
            handle.write(b"x" * 10)
            handle.flush()

    with pytest.raises(OSError) as caught:
        write_report()
    assert caught.value.filename is None
    message, status = describe(caught.value)
    assert status == 1 and message == ("error: /dev/full: no space left on the device: free some space "
                                       "(or move --out / features.cache_dir), then rerun")


def test_lightning_exit_after_ctrl_c_is_reported_as_an_interrupt() -> None:
    """Lightning turns a KeyboardInterrupt inside `fit` into sys.exit(1): still 130 and a message, not 1 and none."""
    import pytorch_lightning as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, index):
            raise KeyboardInterrupt  # what Python's default SIGINT handler raises mid-batch

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = DataLoader(TensorDataset(torch.zeros(4, 2)), batch_size=2)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    before = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as caught:
            trainer.fit(Tiny(), data)
    finally:
        signal.signal(signal.SIGINT, before)  # Lightning ignores Ctrl-C from then on
    assert caught.value.code == 1
    assert describe(caught.value) == ("interrupted by Ctrl-C (SIGINT); rerun the command to start again", 130)
    assert describe(SystemExit(1)) is None  # a plain exit is not an interrupt
    assert describe(ConfigError("x.yml.k: bad")) == ("error: x.yml.k: bad", 2)


def test_torch_version_warning_is_silenced_where_trials_import_the_package() -> None:
    """NNI 3.0 on this torch prints "might not be supported" when `nni.nas` is imported (seen in trial stderr);
    a trial imports our package first, which filters exactly that warning."""
    quiet = subprocess.run([sys.executable, "-c", "import nni_emotionnas.nni_support, nni.nas.nn.pytorch"],
                           capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert "might not be supported" not in quiet.stderr
