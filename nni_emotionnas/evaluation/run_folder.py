"""Where everything lives in a run folder: the one layout that `run`, resume, the report and `predict` read
and write.

    <run>/experiment.json, run.json, corpus.json        the experiment as run, its manifest, the corpus fingerprint
    <run>/results.{md,csv,json}, confusion_<variant>.png the report
    <run>/folds/<fold>/search/<stream>/genotype.json     searched cells of a stream (per fold, or once)
    <run>/folds/<fold>/<variant>/result.json             test scores of a trained variant (written last)
    <run>/folds/<fold>/<variant>/model.pt                its weights (with `train.refit`: refitted)
    <run>/folds/<fold>/<variant>/selected.pt             with `train.refit`: the weights chosen on validation
    <run>/folds/<fold>/<stream>/heldout.npz              with `fusion_init: crossfit`: held-out stream outputs
    <run>/folds/<fold>/seed<s>/<variant>/...             the same for the second and later `run.seeds`
    <run>/folds/<fold>/standardization.npz               input statistics of the fold's training speakers
    <run>/folds/<fold>/dominance.json                    `dominant: auto` (streams/scratch): probe UA per stream
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LOCK_FILE = ".emotionnas.lock"
REPORT_FILES = ("results.md", "results.csv", "results.json")


@dataclass(frozen=True)
class RunFolder:
    """A run folder; `first_seed` is the seed whose variants sit directly under their fold (what `predict` reads)."""

    root: Path
    first_seed: int = 0

    @property
    def experiment(self) -> Path:
        return self.root / "experiment.json"

    @property
    def manifest(self) -> Path:
        return self.root / "run.json"

    @property
    def corpus(self) -> Path:
        return self.root / "corpus.json"

    @property
    def lock(self) -> Path:
        return self.root / LOCK_FILE

    @property
    def folds(self) -> Path:
        return self.root / "folds"

    def report(self, name: str) -> Path:
        return self.root / name

    def report_paths(self) -> dict[str, Path]:
        """The report's files keyed `markdown`, `csv`, `json` (what `write_report` returns)."""
        return {key: self.report(name) for key, name in zip(("markdown", "csv", "json"), REPORT_FILES)}

    def fold(self, fold: str) -> Path:
        return self.folds / fold

    def search(self, fold: str, stream: str) -> Path:
        """The folder of a stream's finished search (`genotype.json`, `cells.png`)."""
        return self.fold(fold) / "search" / stream

    def variant(self, fold: str, variant: str, seed: int) -> Path:
        base = self.fold(fold)
        return base / variant if seed == self.first_seed else base / f"seed{seed}" / variant

    def result(self, fold: str, variant: str, seed: int) -> Path:
        return self.variant(fold, variant, seed) / "result.json"

    def model(self, fold: str, variant: str, seed: int) -> Path:
        return self.variant(fold, variant, seed) / "model.pt"

    def standardization(self, fold: str) -> Path:
        return self.fold(fold) / "standardization.npz"

    def dominance(self, fold: str) -> Path:
        return self.fold(fold) / "dominance.json"

    def finished_work(self) -> list[Path]:
        """Results a rerun would keep: trained variants and finished searches."""
        return sorted(self.folds.glob("*/*/result.json")) + sorted(self.folds.glob("*/search/*/genotype.json"))
