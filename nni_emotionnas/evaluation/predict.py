"""Labels for new audio from a finished run folder: the main variant's fold models as an ensemble."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nni_emotionnas.config.experiment import ExperimentConfig, experiment_from_dict
from nni_emotionnas.errors import ConfigError


def load_run(run_dir: Path) -> tuple[ExperimentConfig, dict[str, Any]]:
    run_dir = Path(run_dir)
    for name in ("experiment.json", "run.json"):
        if not (run_dir / name).is_file():
            raise ConfigError(f"{run_dir / name}: missing; is {run_dir} a finished `emotionnas run` folder?")
    snapshot = json.loads((run_dir / "experiment.json").read_text())
    base_dir = Path(snapshot.pop("base_dir"))
    return experiment_from_dict(snapshot, base_dir), json.loads((run_dir / "run.json").read_text())


def predict_files(run_dir: Path, files: list[Path]) -> tuple[list[str], Any]:
    """Class probabilities of each file: the mean over the main variant's fold models (an ensemble)."""
    import numpy as np
    import torch

    from nni_emotionnas.corpora.folds import Fold
    from nni_emotionnas.evaluation.crossval import CrossValidation, branch_of
    from nni_emotionnas.features.audio import load_audio
    from nni_emotionnas.features.prepared import PreparedCorpus
    from nni_emotionnas.features.registry import build_deep_extractor
    from nni_emotionnas.features.sequence import unify_length
    from nni_emotionnas.features.spectrogram import SpectrogramExtractor

    experiment, manifest = load_run(run_dir)
    main, classes = manifest["main"], manifest["classes"]
    branch = branch_of(main)
    audios = [load_audio(f) for f in files]
    inputs: dict[str, torch.Tensor] = {}
    if branch in ("spectrogram", "both"):
        spectrogram = SpectrogramExtractor(experiment.features.spectrogram)
        inputs["spectrogram"] = torch.from_numpy(np.stack([spectrogram.extract(a) for a in audios]))[:, None]
    if branch in ("deep", "both"):
        frames = build_deep_extractor(experiment.features.deep).extract_batch(audios)
        unified = [unify_length(f, manifest["max_frames"], experiment.features.sequence) for f in frames]
        inputs["frames"] = torch.from_numpy(np.stack([u[0] for u in unified]))
        inputs["mask"] = torch.from_numpy(np.stack([u[1] for u in unified]))
    batch = inputs["spectrogram"] if branch == "spectrogram" else inputs
    folds = [Fold(name, (), (), ()) for name in manifest["folds"]]
    corpus = PreparedCorpus(experiment, [], classes, folds, deep_dim=manifest["deep_dim"])
    builder = CrossValidation(experiment, corpus, Path(run_dir), progress=False)
    probabilities = []
    for fold in corpus.folds:
        model = builder.build(fold, main)
        model.load_state_dict(torch.load(Path(run_dir) / "folds" / fold.name / main / "model.pt", weights_only=True))
        with torch.no_grad():
            probabilities.append(torch.softmax(model.eval()(batch), dim=1).numpy())
    return classes, np.mean(probabilities, axis=0)
