"""Corpora described by the user: a CSV manifest, or one folder per label."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from nni_emotionnas.config.parse import read_text
from nni_emotionnas.corpora.records import Utterance
from nni_emotionnas.errors import ConfigError, CorpusError

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aiff", ".aif"}


def read_manifest(path: Path) -> list[Utterance]:
    """CSV with header `path,label,speaker[,session][,gender]`; relative paths are relative to the CSV.

    UTF-8 with or without a byte-order mark, LF or CRLF line ends. Rows whose audio is missing are kept:
    `read_corpora` refuses or skips them as `corpus.on_bad_audio` says.
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: manifest not found")
    with io.StringIO(read_text(path, "manifest"), newline="") as handle:
        reader = csv.DictReader(handle)
        reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
        missing = {"path", "label", "speaker"} - set(reader.fieldnames)
        if missing:
            raise CorpusError(f"{path}: manifest lacks column(s) {', '.join(sorted(missing))}")
        records = []
        for line_no, row in enumerate(reader, start=2):
            if not all((row.get(c) or "").strip() for c in ("path", "label", "speaker")):
                raise CorpusError(f"{path}:{line_no}: empty path, label or speaker")
            audio = Path(row["path"].strip())
            audio = audio if audio.is_absolute() else path.parent / audio
            speaker = row["speaker"].strip()
            records.append(
                Utterance(
                    path=audio,
                    label=row["label"].strip(),
                    speaker=speaker,
                    session=(row.get("session") or "").strip() or speaker,
                    uid=f"{line_no - 1:06d}_{audio.stem}",
                    corpus="manifest",
                    gender=(row.get("gender") or "").strip() or None,
                    source=f"{path.name}:{line_no}",
                )
            )
    if not records:
        raise CorpusError(f"{path}: manifest has no rows")
    return records


def read_folders(root: Path, speaker_pattern: str = r"^([^_\-]+)") -> list[Utterance]:
    """`root/<label>/<file>`; the speaker is the first group of `speaker_pattern` on the file name."""
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root}: corpus folder not found")
    try:
        pattern = re.compile(speaker_pattern)
    except (re.error, TypeError) as exc:
        raise ConfigError(f"corpus.options.speaker_pattern: {speaker_pattern!r} is not a regular expression "
                          f"({exc})") from exc
    records = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for audio in sorted(f for f in label_dir.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES):
            match = pattern.search(audio.stem)
            if not match or not match.groups():
                raise CorpusError(f"{audio}: speaker_pattern {speaker_pattern!r} finds no speaker group")
            speaker = match.group(1)
            records.append(
                Utterance(
                    path=audio,
                    label=label_dir.name,
                    speaker=speaker,
                    session=speaker,
                    uid=f"{label_dir.name}/{audio.stem}",
                    corpus="folders",
                )
            )
    if not records:
        raise CorpusError(f"{root}: no audio files in label folders")
    return records
