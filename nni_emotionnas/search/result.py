"""What a finished search hands on: the run folder, its genotype.json and drawing, and the record written."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional


@dataclass
class SearchResult:
    run_dir: Path
    genotype_path: Path
    drawing_path: Optional[Path]
    record: dict[str, Any]
