"""docs/experiment-file.md is generated from the config dataclasses; a key added without regenerating fails here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from nni_emotionnas.config.reference import COMMAND, render

PAGE = Path(__file__).resolve().parents[1] / "docs" / "experiment-file.md"


def test_committed_reference_page_is_what_the_generator_prints() -> None:
    assert PAGE.read_text(encoding="utf-8") == render(), f"docs/experiment-file.md is stale: run `{COMMAND}`"


@dataclass
class Inner:
    """Inner prose."""

    depth: int = 3


@dataclass
class Toy:
    """Toy prose."""

    mode: Literal["fast", "slow"] = "fast"
    inner: Inner = field(default_factory=Inner)
    maybe: Optional[Inner] = None
    names: list[str] = field(default_factory=lambda: ["a", "b"])
    rate: Optional[float] = None  # null: the section's lr
    required_path: str = field(default="x")


def test_every_key_with_type_default_and_comment() -> None:
    page = render(Toy)
    assert "| `mode` | fast \\| slow | `fast` |  |" in page
    assert "| `inner` | section `inner` | its section's defaults |  |" in page
    assert "| `maybe` | section `maybe` \\| null | `null` |  |" in page
    assert "| `names` | list of str | `[a, b]` |  |" in page
    assert "| `rate` | float \\| null | `null` | null: the section's lr |" in page
    assert "## `inner`\n\nInner prose." in page and "## Top level\n\nToy prose." in page


def test_a_new_key_changes_the_page() -> None:
    @dataclass
    class Grown(Toy):
        extra: int = 7

    grown = render(Grown)
    assert "| `extra` | int | `7` |" in grown and "`extra`" not in render(Toy)
    assert "| `rate` | float \\| null | `null` | null: the section's lr |" in grown  # inherited comment
