"""IEMOCAP: labels from `SessionN/dialog/EmoEvaluation/<dialog>.txt`, audio under `sentences/wav`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from nni_emotionnas.corpora.records import Utterance
from nni_emotionnas.errors import CorpusError

# "[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]"
_LABEL_LINE = re.compile(r"^\[(\d+(?:\.\d+)?) - (\d+(?:\.\d+)?)\]\t(\S+)\t(\S+)\t\[")

Subset = Literal["improvised", "scripted", "all"]


def find_release_root(root: Path) -> Path:
    """Accepts the `IEMOCAP_full_release` folder itself or a folder containing it."""
    root = Path(root)
    if (root / "IEMOCAP_full_release").is_dir():
        root = root / "IEMOCAP_full_release"
    if not any(root.glob("Session*")):
        raise CorpusError(f"{root}: no Session* folders; expected the IEMOCAP_full_release layout")
    return root


def read_iemocap(root: Path, subset: Subset = "improvised") -> list[Utterance]:
    """Reads every labelled utterance of the chosen subset; raw labels (neu, exc, fru, xxx...) are kept."""
    if subset not in ("improvised", "scripted", "all"):
        raise CorpusError(f"iemocap subset {subset!r}: expected improvised, scripted or all")
    release = find_release_root(root)
    utterances = []
    for session_dir in sorted(p for p in release.glob("Session*") if p.is_dir()):
        label_dir = session_dir / "dialog" / "EmoEvaluation"
        if not label_dir.is_dir():
            raise CorpusError(f"{label_dir}: missing EmoEvaluation folder")
        for label_file in sorted(label_dir.glob("*.txt")):
            utterances.extend(_read_label_file(label_file, session_dir, subset))
    if not utterances:
        raise CorpusError(f"{release}: no {subset} utterances found")
    return utterances


def _read_label_file(label_file: Path, session_dir: Path, subset: Subset) -> list[Utterance]:
    records = []
    for line_no, line in enumerate(label_file.read_text(errors="replace").splitlines(), start=1):
        match = _LABEL_LINE.match(line)
        if not match:
            continue
        start, end, uid, label = match.groups()
        dialog, last_token = uid.rsplit("_", 1)
        improvised = "_impro" in dialog
        if (subset == "improvised" and not improvised) or (subset == "scripted" and improvised):
            continue
        wav = session_dir / "sentences" / "wav" / dialog / f"{uid}.wav"
        gender = last_token[0].upper()
        session = uid[:5]
        records.append(
            Utterance(
                path=wav,
                label=label,
                speaker=f"{session}{gender}",
                session=session,
                uid=uid,
                corpus="iemocap",
                gender=gender,
                duration=float(end) - float(start),
                source=f"{label_file}:{line_no}",
            )
        )
    return records
