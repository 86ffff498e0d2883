"""One stream's search on one fold's training speakers: what `emotionnas search` and `emotionnas run` both ask."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from nni_emotionnas.config.experiment import ExperimentConfig
from nni_emotionnas.features.prepared import PreparedCorpus


@dataclass(frozen=True)
class SearchRequest:
    """`strategy_file` and `space_file` override the experiment's (else the packaged defaults)."""

    experiment: ExperimentConfig
    stream: str
    fold: str
    run_dir: Path
    strategy_file: Optional[Path] = None
    space_file: Optional[str] = None

    def strategy(self) -> Path:
        from nni_emotionnas.config.resources import default_file

        chosen = self.strategy_file or self.experiment.resolve(self.experiment.strategy)
        return Path(chosen) if chosen else default_file("strategies", "darts.yml")

    def run(self, corpus: PreparedCorpus) -> Any:
        """Searches on the fold's training speakers (validation speakers for strategies that need them) and
        writes `genotype.json` into `run_dir`; returns the `SearchResult`."""
        from nni_emotionnas.models.networks import space_config_for
        from nni_emotionnas.search.run import run_search
        from nni_emotionnas.search.strategies import load_strategy_spec

        name, args = load_strategy_spec(self.strategy())
        module, space_config = space_config_for(self.experiment, self.stream, self.space_file, corpus.deep_dim)
        return run_search(
            space_mod=module,
            space_config=space_config,
            train_dataset=corpus.dataset(self.fold, "train", self.stream),
            val_dataset=corpus.dataset(self.fold, "val", self.stream),
            num_classes=len(corpus.classes),
            search_config=self.experiment.search,
            strategy_name=name,
            strategy_args=args,
            run_dir=self.run_dir,
            stream=self.stream,
            classes=list(corpus.classes),
            fold=self.fold,
        )
