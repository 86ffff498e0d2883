"""On-disk feature cache: one memory-mapped .npy per utterance and extractor config, written atomically."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing
import os
import uuid
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm.auto import tqdm

from nni_emotionnas.corpora.integrity import file_identity
from nni_emotionnas.corpora.records import Utterance
from nni_emotionnas.errors import AudioError, storage_errors
from nni_emotionnas.features.audio import load_audio
from nni_emotionnas.features.base import FeatureExtractor, config_digest
from nni_emotionnas.locks import entry_lock, is_entry_busy
from nni_emotionnas.workers import compile_before_workers, start_extraction_worker

TEMP_SUFFIX = ".tmp"
_logger = logging.getLogger(__name__)


def atomic_write_bytes(target: Path, write) -> None:
    """Writes through `write(handle)` into a temp file beside `target`, then renames it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}{TEMP_SUFFIX}")
    try:
        with tmp.open("wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def save_array(target: Path, array: np.ndarray) -> None:
    """Serialises in memory first: `np.save` into a real file reports a full disk as a short write without
    an errno, which no caller can tell from a bug."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    atomic_write_bytes(target, lambda handle: handle.write(buffer.getbuffer()))


def remove_stale_temporaries(folder: Path) -> None:
    """Deletes temporary files a killed process left in `folder`'s entry subfolders.

    A temporary file is written only while its entry's lock is held, so one whose entry nobody is
    writing now belongs to a process that died mid-write.
    """
    for tmp in folder.glob(f"*/.*{TEMP_SUFFIX}"):
        if not is_entry_busy(tmp.with_name(tmp.name[1:].rsplit(".", 3)[0])):  # `.<entry>.<pid>.<uuid>.tmp`
            tmp.unlink(missing_ok=True)


def array_problem(path: Path) -> Optional[str]:
    """What makes a cached `.npy` unusable (emptied, cut short, not an array of numbers), None if nothing does.

    Reads the header only: a file's size must be its header's plus what the header's shape and dtype need.
    """
    try:
        with open(path, "rb") as handle:
            major, _ = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(handle)
            header = handle.tell()
    except (ValueError, EOFError, SyntaxError) as exc:  # empty, not .npy, or a header cut short
        return f"no array header ({str(exc)[:80]})"
    if dtype.hasobject or not (np.issubdtype(dtype, np.number) or dtype.kind == "b"):
        return f"holds {dtype} values, not numbers"
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = Path(path).stat().st_size
    return None if size == expected else f"{size} bytes where its header needs {expected}"


def usable_cache_entry(target: Path) -> bool:
    """Whether `target` is a cached array to reuse; a damaged one is deleted with a warning naming it, so the
    caller extracts it again."""
    if not target.exists():
        return False
    problem = array_problem(target)
    if problem is None:
        return True
    _logger.warning("%s: damaged cached features (%s); deleted, extracting them again", target, problem)
    with entry_lock(target):
        target.unlink(missing_ok=True)
    return False


def audio_key(path: Path) -> str:
    """Identity of an audio file: its size and content (a changed file re-extracts; a moved or touched one
    does not)."""
    size, digest = file_identity(path)
    return hashlib.sha1(f"{size}|{digest}".encode()).hexdigest()


@dataclass
class ExtractionReport:
    """What `FeatureStore.extract` did: cached file per utterance (None when skipped), hit/miss counts."""

    files: list[Optional[Path]]
    skipped: list[tuple[Utterance, str]] = field(default_factory=list)
    hits: int = 0
    misses: int = 0

    def load(self, index: int) -> np.ndarray:
        path = self.files[index]
        if path is None:
            raise KeyError(f"utterance {index} was skipped")
        return np.load(path, mmap_mode="r")


def _extract_to(extractor: FeatureExtractor, audio_path: Path, target: Path) -> Optional[str]:
    """Worker: extract one file into the cache (unless another process just did); returns the error
    message of unusable audio."""
    try:
        with entry_lock(target):
            if not target.exists():
                save_array(target, extractor.extract(load_audio(audio_path)))
    except AudioError as exc:
        return str(exc)
    return None


class FeatureStore:
    """Caches features under `root/<extractor name>-<config digest>/<key[:2]>/<key>.npy`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def folder(self, extractor: FeatureExtractor) -> Path:
        folder = self.root / f"{extractor.name}-{config_digest(extractor.name, extractor.config())}"
        description = folder / "config.json"
        if not description.exists():
            payload = json.dumps({"name": extractor.name, "config": extractor.config()}, indent=2, default=str)
            atomic_write_bytes(description, lambda handle: handle.write(payload.encode()))
        return folder

    def extract(
        self,
        utterances: Sequence[Utterance],
        extractor: FeatureExtractor,
        n_jobs: int = 1,
        on_bad_audio: str = "error",
        progress: bool = True,
        batch_size: int = 8,
    ) -> ExtractionReport:
        """Extracts what is not cached yet; bad audio raises `AudioError` unless `on_bad_audio == "skip"`.

        An unwritable cache or a full disk raises `StorageError` naming the file.
        """
        with storage_errors("using the feature cache: features.cache_dir or $EMOTIONNAS_CACHE", self.root):
            return self._extract(utterances, extractor, n_jobs, on_bad_audio, progress, batch_size)

    def _extract(self, utterances, extractor, n_jobs, on_bad_audio, progress, batch_size) -> ExtractionReport:
        folder = self.folder(extractor)
        remove_stale_temporaries(folder)
        targets: list[Optional[Path]] = []
        errors: dict[int, str] = {}
        for i, u in enumerate(utterances):
            if not Path(u.path).is_file():
                errors[i] = f"{u.path}: audio file not found"
                targets.append(None)
                continue
            try:
                key = audio_key(u.path)
            except OSError as exc:
                errors[i] = f"{u.path}: cannot read the audio file ({exc.strerror or exc})"
                targets.append(None)
                continue
            targets.append(folder / key[:2] / f"{key}.npy")
        todo = [i for i, t in enumerate(targets) if t is not None and not usable_cache_entry(t)]
        bar = tqdm(total=len(todo), desc=f"{extractor.name} features", unit="utt", disable=not progress or not todo)
        with bar:
            if extractor.parallel and n_jobs > 1 and len(todo) > 1:
                self._run_parallel(extractor, utterances, targets, todo, n_jobs, errors, bar)
            else:
                self._run_batched(extractor, utterances, targets, todo, batch_size, errors, bar)
        if errors and on_bad_audio != "skip":
            first = min(errors)
            raise AudioError(errors[first] + (f" (and {len(errors) - 1} more bad files)" if len(errors) > 1 else ""))
        return ExtractionReport(
            files=[None if i in errors else t for i, t in enumerate(targets)],
            skipped=[(utterances[i], message) for i, message in sorted(errors.items())],
            hits=len(targets) - len(todo) - sum(t is None for t in targets),
            misses=len(todo),
        )

    @staticmethod
    def _run_parallel(extractor, utterances, targets, todo, n_jobs, errors, bar) -> None:
        compile_before_workers()
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=n_jobs, mp_context=context, initializer=start_extraction_worker, initargs=(os.getpid(),)
        ) as pool:
            futures = {pool.submit(_extract_to, extractor, utterances[i].path, targets[i]): i for i in todo}
            try:
                for future in as_completed(futures):
                    message = future.result()
                    if message is not None:
                        errors[futures[future]] = message
                    bar.update(1)
            except BaseException:  # Ctrl-C / SIGTERM: leaving the pool must not wait for every queued file
                pool.shutdown(wait=False, cancel_futures=True)
                raise

    @staticmethod
    def _run_batched(extractor, utterances, targets, todo, batch_size, errors, bar) -> None:
        for start in range(0, len(todo), batch_size):
            chunk, audios = [], []
            for i in todo[start : start + batch_size]:
                try:
                    audios.append(load_audio(utterances[i].path))
                    chunk.append(i)
                except AudioError as exc:
                    errors[i] = str(exc)
            for i, features in zip(chunk, extractor.extract_batch(audios) if audios else []):
                with entry_lock(targets[i]):
                    if not targets[i].exists():  # another process may have written it meanwhile
                        save_array(targets[i], features)
            bar.update(len(todo[start : start + batch_size]))
