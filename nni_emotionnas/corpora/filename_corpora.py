"""Corpora whose labels and speakers are coded in file names: EmoDB, RAVDESS, CREMA-D."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable, Optional

from nni_emotionnas.corpora.records import Utterance
from nni_emotionnas.errors import CorpusError

EMODB_EMOTIONS = {"W": "ang", "L": "bor", "E": "dis", "A": "fea", "F": "hap", "T": "sad", "N": "neu"}
EMODB_MALE_SPEAKERS = {"03", "10", "11", "12", "15"}
RAVDESS_EMOTIONS = {
    "01": "neu", "02": "cal", "03": "hap", "04": "sad", "05": "ang", "06": "fea", "07": "dis", "08": "sur",
}
CREMAD_EMOTIONS = {"ANG": "ang", "DIS": "dis", "FEA": "fea", "HAP": "hap", "NEU": "neu", "SAD": "sad"}


def parse_emodb_name(path: Path) -> Utterance:
    """`03a01Fa.wav`: speaker 03, text a01, emotion F (happiness), version a."""
    stem = path.stem
    if len(stem) != 7 or stem[5] not in EMODB_EMOTIONS:
        raise CorpusError(f"{path}: not an EmoDB file name (SSTTTEV, emotion one of {''.join(EMODB_EMOTIONS)})")
    speaker = stem[:2]
    return Utterance(
        path=path,
        label=EMODB_EMOTIONS[stem[5]],
        speaker=speaker,
        session=speaker,
        uid=stem,
        corpus="emodb",
        gender="M" if speaker in EMODB_MALE_SPEAKERS else "F",
    )


def parse_ravdess_name(path: Path) -> Utterance:
    """`03-01-05-01-01-01-12.wav`: modality, channel, emotion, intensity, statement, repetition, actor."""
    fields = path.stem.split("-")
    if len(fields) != 7 or fields[2] not in RAVDESS_EMOTIONS or not fields[6].isdigit():
        raise CorpusError(f"{path}: not a RAVDESS file name (7 dash-separated codes, emotion 01-08)")
    actor = fields[6]
    return Utterance(
        path=path,
        label=RAVDESS_EMOTIONS[fields[2]],
        speaker=f"Actor_{actor}",
        session=f"Actor_{actor}",
        uid=path.stem,
        corpus="ravdess",
        gender="M" if int(actor) % 2 else "F",
    )


def parse_cremad_name(path: Path, genders: Optional[dict[str, str]] = None) -> Utterance:
    """`1001_DFA_ANG_XX.wav`: actor, sentence, emotion, intensity."""
    fields = path.stem.split("_")
    if len(fields) != 4 or fields[2] not in CREMAD_EMOTIONS:
        raise CorpusError(f"{path}: not a CREMA-D file name (ACTOR_SENTENCE_EMOTION_LEVEL)")
    actor = fields[0]
    return Utterance(
        path=path,
        label=CREMAD_EMOTIONS[fields[2]],
        speaker=actor,
        session=actor,
        uid=path.stem,
        corpus="cremad",
        gender=(genders or {}).get(actor),
    )


def _read_named(root: Path, pattern: str, parse_name: Callable[[Path], Utterance]) -> list[Utterance]:
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root}: corpus folder not found")
    files = sorted(root.rglob(pattern))
    if not files:
        raise CorpusError(f"{root}: no {pattern} files found")
    return [parse_name(f) for f in files]


def read_emodb(root: Path) -> list[Utterance]:
    return _read_named(root, "*.wav", parse_emodb_name)


def read_ravdess(root: Path, speech_only: bool = True) -> list[Utterance]:
    """RAVDESS; `speech_only` drops the song recordings (vocal channel 02)."""
    records = _read_named(root, "*.wav", parse_ravdess_name)
    return [r for r in records if not speech_only or r.uid.split("-")[1] == "01"]


def read_cremad(root: Path) -> list[Utterance]:
    """CREMA-D; genders come from `VideoDemographics.csv` (ActorID, Sex) when it lies in the tree."""
    demographics = next(Path(root).rglob("VideoDemographics.csv"), None)
    genders: dict[str, str] = {}
    if demographics is not None:
        with demographics.open(newline="") as handle:
            for row in csv.DictReader(handle):
                genders[row["ActorID"].strip()] = row["Sex"].strip()[:1].upper()
    return _read_named(root, "*.wav", lambda p: parse_cremad_name(p, genders))
