"""Shared fixtures: a private cache per test session, audio writers, miniature corpora."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
EMODB = REPO.parent / "shared" / "data" / "emodb"


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory: pytest.TempPathFactory):
    """Keeps every test's features and generated corpora out of the user's cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("EMOTIONNAS_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tests train tiny nets and small linear models: one torch intra-op thread and one BLAS thread avoid
    OpenMP/OpenBLAS spin contention on 2 shared cores (10-50x for torch, 6x for a ComParE logistic regression)."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1, user_api="blas"):
        yield
    torch.set_num_threads(before)


@pytest.fixture
def emodb() -> Path:
    if not (EMODB / "wav").is_dir():
        pytest.skip(f"EmoDB not found at {EMODB}")
    return EMODB


def write_tone(path: Path, seconds: float = 1.0, rate: int = 16000, freq: float = 220.0, channels: int = 1,
               amplitude: float = 0.3, seed: int = 0) -> Path:
    """A harmonic tone with a little noise: enough signal for every extractor."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    signal = amplitude * np.sin(2 * np.pi * freq * t) + 0.1 * amplitude * np.sin(2 * np.pi * 3 * freq * t)
    signal = signal + 0.01 * rng.standard_normal(len(t))
    data = np.stack([signal] * channels, axis=1) if channels > 1 else signal
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data.astype(np.float32), rate, subtype="PCM_16")
    return path


EMOTIONS = ["neu", "ang", "hap", "sad"]


def write_mini_iemocap(root: Path, sessions: int = 5, per_label: int = 2, extra_labels=("exc", "xxx")) -> Path:
    """A tiny IEMOCAP release: improvised and scripted dialogs, real EmoEvaluation syntax."""
    release = root / "IEMOCAP_full_release"
    for s in range(1, sessions + 1):
        session = release / f"Session{s}"
        for kind in ("impro01", "script01_1"):
            for speaker in "FM":
                dialog = f"Ses0{s}{speaker}_{kind}"
                lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
                labels = [e for e in EMOTIONS for _ in range(per_label)] + list(extra_labels)
                start = 1.0
                for idx, label in enumerate(labels):
                    for gender in "FM":
                        uid = f"{dialog}_{gender}{idx:03d}"
                        write_tone(session / "sentences" / "wav" / dialog / f"{uid}.wav", seconds=0.5,
                                   freq=150 + 20 * idx, seed=zlib.crc32(uid.encode()))  # distinct audio
                        lines += [f"[{start:.4f} - {start + 0.5:.4f}]\t{uid}\t{label}\t[2.5000, 3.0000, 2.0000]",
                                  "C-E1:\tNeutral state;\t()", ""]
                        start += 1.0
                label_dir = session / "dialog" / "EmoEvaluation"
                label_dir.mkdir(parents=True, exist_ok=True)
                (label_dir / f"{dialog}.txt").write_text("\n".join(lines))
    return release


# A small synthetic corpus and cheap features shared by the pipeline, recipe and baseline tests, so a test
# session generates and extracts them once (same cache keys).
SMALL_CORPUS = {
    "reader": "synthetic",
    "options": {"sessions": 5, "utterances_per_emotion": 2, "min_seconds": 1.0, "max_seconds": 1.5},
}
SMALL_FEATURES = {
    "n_jobs": 1,
    "spectrogram": {"duration": 2.0, "size": [32, 32]},
    "deep": {"backend": "fbank"},
    "sequence": {"target_frames": 16},
}


def fixed_genotype(net: Any) -> dict[str, Any]:
    """The readable genotype of a frozen spectrogram network, read from its modules (to check a rebuild
    against its file)."""
    from nni_emotionnas.nni_compat import ChosenInputs

    genotype: dict[str, Any] = {}
    for cell in net.cells:
        pairs = []
        for ops, inputs in zip(cell.ops, cell.inputs):
            for op, chosen in zip(ops, inputs):
                assert isinstance(chosen, ChosenInputs), "network is not frozen: its cells still hold input choices"
                pairs.append([getattr(op, "darts_op", type(op).__name__), int(chosen.chosen[0])])
        genotype.setdefault(cell.label, pairs)
        genotype.setdefault(f"{cell.label}_concat", list(cell.output_node_indices))
    return genotype
