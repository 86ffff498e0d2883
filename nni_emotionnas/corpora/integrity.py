"""Checks on a corpus' utterance list at load, before any fold exists: one audio listed under two speakers
would put a test speaker's audio into training (folds compare speaker names only), one listed under two
labels contradicts itself, one listed twice counts twice."""

from __future__ import annotations

import functools
import hashlib
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from nni_emotionnas.corpora.records import Utterance
from nni_emotionnas.errors import CorpusError

_logger = logging.getLogger(__name__)


def content_digest(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_identity(path: Path) -> tuple[int, str]:
    """(size, content digest) of a file: what it holds, not where or when it was written, so a corpus that was
    copied, remounted or touched keeps its cached features and resumes its run folders."""
    stat = Path(path).stat()
    return stat.st_size, _digest_once(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.cache
def _digest_once(path: str, size: int, mtime_ns: int) -> str:
    """One hash per file version and process (the cache key and the run folder's fingerprint both ask)."""
    return content_digest(Path(path))


def resolved(path: Path) -> Path:
    """`path` with its symlinks resolved; a symlink loop stays as it is (unreadable audio, which the feature
    stage refuses or skips as `corpus.on_bad_audio` says)."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):  # Python 3.11 raises RuntimeError for a loop
        return path.absolute()


def same_audio_groups(utterances: Sequence[Utterance]) -> list[list[int]]:
    """Indices of utterances that are one audio: the same resolved path, or the same bytes.

    Only files whose sizes collide are hashed, so a corpus of distinct files costs one stat per file.
    """
    by_path: dict[Path, list[int]] = defaultdict(list)
    for i, u in enumerate(utterances):
        by_path[resolved(Path(u.path))].append(i)
    by_size: dict[int, list[Path]] = defaultdict(list)
    groups = []
    for path, indices in by_path.items():
        if path.is_file() and path.stat().st_size > 0:  # empty files are bad audio, not one audio listed twice
            by_size[path.stat().st_size].append(path)
        elif len(indices) > 1:
            groups.append(indices)
    for paths in by_size.values():
        by_content: dict[str, list[int]] = defaultdict(list)
        for path in paths:
            by_content[file_identity(path)[1] if len(paths) > 1 else ""].extend(by_path[path])
        groups.extend(indices for indices in by_content.values() if len(indices) > 1)
    return [sorted(g) for g in groups]


def describe(u: Utterance) -> str:
    return u.source or f"{u.uid} ({u.path})"


def check_integrity(utterances: list[Utterance], on_duplicate: str = "error") -> list[Utterance]:
    """Refuses one audio under two speakers or two labels; a repeated row is an error, or with
    `on_duplicate == "drop"` is dropped with a warning. Returns the utterances to use."""
    drop = set()
    for group in same_audio_groups(utterances):
        first = utterances[group[0]]
        for other in (utterances[i] for i in group[1:]):
            both = f"{describe(first)} and {describe(other)}"
            if other.speaker != first.speaker:
                raise CorpusError(
                    f"corpus: the same audio is listed under speakers {first.speaker} and {other.speaker} ({both}): "
                    "it would put one speaker's test audio into training; fix the rows"
                )
            if other.label != first.label:
                raise CorpusError(
                    f"corpus: the same audio is labelled {first.label} and {other.label} ({both}); fix the rows"
                )
            if on_duplicate != "drop":
                raise CorpusError(f"corpus: {both} are the same audio listed twice; remove one, "
                                  "or set corpus.on_duplicate: drop")
        drop.update(group[1:])
    if drop:
        _logger.warning("corpus: dropped %d repeated row(s) (on_duplicate: drop), e.g. %s", len(drop),
                        describe(utterances[min(drop)]))
    return [u for i, u in enumerate(utterances) if i not in drop]
