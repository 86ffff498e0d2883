"""The one record type every corpus reader produces."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class Utterance:
    """One labelled utterance; `session` groups speakers for leave-one-session-out folds; `source` says
    where the record came from (e.g. `manifest.csv:7`), for messages."""

    path: Path
    label: str
    speaker: str
    session: str
    uid: str
    corpus: str
    gender: Optional[str] = None
    duration: Optional[float] = None
    source: Optional[str] = None

    def with_label(self, label: str) -> Utterance:
        return replace(self, label=label)
