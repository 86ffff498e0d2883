"""Faults around a run folder: --out is a file, a folder of another experiment, a failed start, a changed
corpus, two runs at once, a killed run (its lock, workers and temporary files), full and read-only disks."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import write_tone
from filesystems import read_only, small_filesystem

from nni_emotionnas.cli.app import main
from nni_emotionnas.config.experiment import load_experiment
from nni_emotionnas.corpora.fingerprint import corpus_fingerprint
from nni_emotionnas.corpora.folds import make_folds
from nni_emotionnas.corpora.load import read_corpora
from nni_emotionnas.errors import RunFolderError
from nni_emotionnas.evaluation.run import LOCK_FILE, check_corpus, claim_run_dir, experiment_snapshot
from nni_emotionnas.locks import FolderLock

EMOTIONNAS = str(Path(sys.executable).parent / "emotionnas")


def write_corpus(folder: Path, speakers: int = 3, seconds: float = 0.5) -> Path:
    """A manifest of distinct tones: `speakers` speakers x (ang, sad) x 2 utterances."""
    rows = []
    for s in range(speakers):
        for j, label in enumerate(["ang", "ang", "sad", "sad"]):
            wav = write_tone(folder / f"s{s}_{j}.wav", seconds=seconds, freq=120 + 30 * j + 7 * s, seed=10 * s + j)
            rows.append(f"{wav.name},{label},s{s}")
    (folder / "m.csv").write_text("\n".join(["path,label,speaker", *rows]) + "\n")
    return folder / "m.csv"


def write_experiment(folder: Path, **changes) -> Path:
    data = {
        "name": "faults",
        "corpus": {"reader": "manifest", "path": "m.csv"},
        "features": {"n_jobs": 1, "cache_dir": "cache", "spectrogram": {"duration": 0.5, "size": [8, 8]}},
        "model": {"spectrogram": "resnet_small"},
        "run": {"variants": ["spectrogram"], "main": "spectrogram"},
        **changes,
    }
    path = folder / "exp.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def snapshot(path: Path) -> dict:
    return experiment_snapshot(load_experiment(path))


def test_out_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    exp = write_experiment(tmp_path)
    (tmp_path / "taken").write_text("mine")
    assert main(["run", str(exp), "--out", str(tmp_path / "taken"), "--quiet"]) == 2
    assert f"{tmp_path / 'taken'}: is a file, not a folder" in capsys.readouterr().err
    # the file system refuses the folder (ENOTDIR): a storage error, exit status 1
    assert main(["run", str(exp), "--out", str(tmp_path / "taken" / "sub"), "--quiet"]) == 1
    assert f"{tmp_path / 'taken' / 'sub'}: a part of the path is a file, not a folder" in capsys.readouterr().err
    assert (tmp_path / "taken").read_text() == "mine"


def test_folder_of_a_run_that_failed_at_start_is_reusable(tmp_path, capsys):
    wrong = write_experiment(tmp_path, corpus={"reader": "manifest", "path": "nowhere.csv"})
    assert main(["run", str(wrong), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "nowhere.csv: manifest not found" in capsys.readouterr().err
    assert (tmp_path / "run" / "experiment.json").is_file() and not (tmp_path / "run" / LOCK_FILE).exists()
    corrected = snapshot(write_experiment(tmp_path))
    with claim_run_dir(tmp_path / "run", corrected) as state:  # was: "holds a run of a different experiment"
        assert state == "new"
    assert json.loads((tmp_path / "run" / "experiment.json").read_text()) == corrected


def test_other_experiment_is_refused_once_work_is_finished_unless_restart(tmp_path):
    run = tmp_path / "run"
    with claim_run_dir(run, snapshot(write_experiment(tmp_path))):
        (run / "folds" / "tests0" / "spectrogram").mkdir(parents=True)
        (run / "folds" / "tests0" / "spectrogram" / "result.json").write_text("{}")
        (run / "notes.txt").write_text("the user's own file")
    other = snapshot(write_experiment(tmp_path, seed=3))
    with pytest.raises(RunFolderError, match=r"holds a run of a different experiment \(.*seed.* differ\)"):
        with claim_run_dir(run, other):
            pass
    with claim_run_dir(run, other, restart=True) as state:
        assert state == "new"
    assert not (run / "folds").exists() and (run / "notes.txt").read_text() == "the user's own file"


def test_changed_corpus_is_refused_naming_the_change(tmp_path):
    manifest = write_corpus(tmp_path)
    experiment = load_experiment(write_experiment(tmp_path))

    def fingerprint() -> dict:
        loaded = read_corpora(experiment)
        utterances, classes = loaded.utterances, loaded.classes
        return corpus_fingerprint(utterances, make_folds(utterances, classes, experiment.protocol))

    run = tmp_path / "run"
    run.mkdir()
    check_corpus(run, fingerprint())
    check_corpus(run, fingerprint())  # same corpus: resumes
    (run / "folds" / "tests0" / "spectrogram").mkdir(parents=True)
    (run / "folds" / "tests0" / "spectrogram" / "result.json").write_text("{}")
    manifest.write_text(manifest.read_text().replace("s1_0.wav,ang", "s1_0.wav,sad"))
    with pytest.raises(RunFolderError, match=r"1 label\(s\) changed \(.*s1_0.wav: ang -> sad\).*--restart"):
        check_corpus(run, fingerprint())
    manifest.write_text(manifest.read_text().replace("s1_0.wav,sad", "s1_0.wav,ang"))
    write_tone(tmp_path / "s2_3.wav", seconds=0.6)
    with pytest.raises(RunFolderError, match=r"1 audio file\(s\) modified since \(.*s2_3.wav\)"):
        check_corpus(run, fingerprint())


def test_a_touched_corpus_resumes_and_an_old_fingerprint_still_compares(tmp_path):
    """The fingerprint holds each file's size and content digest, not its time stamp: new mtimes (a remounted
    or copied corpus) resume the run; a fingerprint written before digests (size, mtime_ns) compares by size."""
    write_corpus(tmp_path)
    experiment = load_experiment(write_experiment(tmp_path))
    loaded = read_corpora(experiment)
    utterances = loaded.utterances
    folds = make_folds(utterances, loaded.classes, experiment.protocol)
    run = tmp_path / "run"
    run.mkdir()
    check_corpus(run, corpus_fingerprint(utterances, folds))
    (run / "folds" / "tests0" / "spectrogram").mkdir(parents=True)
    (run / "folds" / "tests0" / "spectrogram" / "result.json").write_text("{}")  # finished work to protect
    for u in utterances:
        os.utime(u.path, ns=(10**18, 10**18))
    check_corpus(run, corpus_fingerprint(utterances, folds))  # same bytes: resumes
    old = json.loads((run / "corpus.json").read_text())
    for record in old["utterances"].values():
        record["mtime_ns"] = 1
        del record["sha1"]
    (run / "corpus.json").write_text(json.dumps(old))
    check_corpus(run, corpus_fingerprint(utterances, folds))
    write_tone(Path(utterances[0].path), seconds=0.6)  # another size
    with pytest.raises(RunFolderError, match="1 audio file\\(s\\) modified since"):
        check_corpus(run, corpus_fingerprint(utterances, folds))


def test_unwritable_out_and_cache_are_one_line_errors(tmp_path, capsys):
    write_corpus(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    exp = write_experiment(tmp_path, features={"n_jobs": 1, "cache_dir": str(locked / "cache")})
    with read_only(locked):
        assert main(["run", str(exp), "--out", str(locked / "run"), "--quiet"]) == 1
        err = capsys.readouterr().err
        assert f"{locked / 'run'}: " in err and "(creating the run folder, --out)" in err
        assert main(["run", str(exp), "--out", str(tmp_path / "run"), "--quiet"]) == 1
        err = capsys.readouterr().err
    assert "(using the feature cache: features.cache_dir or $EMOTIONNAS_CACHE)" in err
    assert "permission denied" in err or "read-only file system" in err
    assert len(err.strip().splitlines()) == 1


def test_full_disk_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    write_corpus(tmp_path, seconds=1.0)
    with small_filesystem(tmp_path / "disk", size_kb=40) as disk:
        if disk is None:  # no tmpfs without root: a full disk as the file system reports it, at fsync
            def full(fd: int) -> None:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            monkeypatch.setattr(os, "fsync", full)
        where = disk or tmp_path
        big = {"n_jobs": 1, "cache_dir": str(where / "cache"), "spectrogram": {"duration": 1.0, "size": [64, 64]}}
        exp = write_experiment(tmp_path, features=big)  # 12 utterances x 16 kB
        assert main(["features", str(exp), "--branches", "spectrogram"]) == 1  # the old spelling of --streams
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]  # after the progress bar
        assert last.startswith("emotionnas features: error: ") and "Traceback" not in err
        assert "no space left on the device (using the feature cache" in last
        if disk is not None:
            assert not list(disk.rglob("*.tmp"))
            with pytest.raises(OSError), open(disk / "filler", "wb") as filler:
                while True:  # the last bytes the cache left
                    filler.write(b"\0" * 4096)
                    filler.flush()
            assert main(["run", str(exp), "--out", str(disk / "run"), "--quiet"]) == 1
            err = capsys.readouterr().err
            assert f"{disk / 'run'}" in err and "no space left on the device (locking the run folder, --out)" in err


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.slow
def test_second_run_on_the_same_out_is_refused_and_a_killed_runs_lock_is_taken_over(tmp_path, capsys):
    write_corpus(tmp_path, speakers=3, seconds=1.0)
    exp = write_experiment(tmp_path, train={"epochs": 500})  # outlives the second run's start
    run = tmp_path / "run"
    first = subprocess.Popen([EMOTIONNAS, "run", str(exp), "--out", str(run), "--quiet"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lock = FolderLock(run / LOCK_FILE)
        wait_for(lambda: (lock.holder() or {}).get("pid") == first.pid, 120, "the first run to lock its folder")
        second = subprocess.run([EMOTIONNAS, "run", str(exp), "--out", str(run), "--quiet"],
                                capture_output=True, text=True, timeout=300)
        assert first.poll() is None, "the first run ended before the second tried its folder"
    finally:
        first.kill()
        first.wait()
    assert second.returncode in (1, 2)
    message = second.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert f"in use by another emotionnas process (pid {first.pid} on {socket.gethostname()}, started " in message
    with claim_run_dir(run, snapshot(exp)) as state:  # the killed run's lock file is still there: taken over
        assert state == "resumed"
    assert f"taking over the lock of pid {first.pid} on {socket.gethostname()}" in capsys.readouterr().out
    assert not (run / LOCK_FILE).exists()


def spawned_children(pid: int) -> list[psutil.Process]:
    try:
        return [c for c in psutil.Process(pid).children(recursive=True) if "multiprocessing" in " ".join(c.cmdline())]
    except psutil.Error:
        return []


def alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_killed_extraction_leaves_no_worker_and_the_next_run_removes_its_temporary_files(tmp_path):
    write_corpus(tmp_path, speakers=10, seconds=2.0)
    features = {"n_jobs": 2, "cache_dir": "cache", "spectrogram": {"duration": 2.0}}
    exp = write_experiment(tmp_path, features=features)
    extraction = subprocess.Popen([EMOTIONNAS, "features", str(exp), "--streams", "spectrogram"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: list[psutil.Process] = []

    def workers_started() -> bool:
        children[:] = spawned_children(extraction.pid)
        return len(children) >= 3 or extraction.poll() is not None  # 2 workers + the resource tracker

    wait_for(workers_started, 120, "extraction workers")
    os.kill(extraction.pid, signal.SIGKILL)
    extraction.wait()
    assert len(children) >= 3, "extraction ended before its workers could be seen"
    wait_for(lambda: not any(alive(c) for c in children), 10, "the workers of the killed run to exit")

    from nni_emotionnas.features.spectrogram import SpectrogramExtractor
    from nni_emotionnas.features.store import FeatureStore

    # a write killed halfway (a real process, SIGKILLed while its temporary file is open)
    experiment = load_experiment(exp)
    store = FeatureStore(experiment.cache_dir / "features")
    extractor = SpectrogramExtractor(experiment.features.spectrogram)
    target = store.folder(extractor) / "ab" / "ab-killed.npy"
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout.readline().strip() == "writing"
    writer.kill()
    writer.wait()
    assert len(list(target.parent.glob(".ab-killed.npy.*.tmp"))) == 1
    store.extract([], extractor, progress=False)
    assert not list(store.folder(extractor).rglob("*.tmp")) and not target.exists()


KILLED_WRITER = """
import sys, time
from pathlib import Path
from nni_emotionnas.features.store import atomic_write_bytes
from nni_emotionnas.locks import entry_lock

def stall(handle):
    handle.write(b"half")
    print("writing", flush=True)
    time.sleep(600)

target = Path(sys.argv[1])
with entry_lock(target):
    atomic_write_bytes(target, stall)
"""
