"""Labels for new audio from a finished run folder: the main variant's fold models as an ensemble."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nni_emotionnas.config.experiment import ExperimentConfig, experiment_from_dict
from nni_emotionnas.errors import ConfigError, RunFolderError
from nni_emotionnas.evaluation.run_folder import RunFolder

REWRITE_HINT = "rerun `emotionnas run` with --out {run_dir}: it writes the statistics again and keeps trained models"
RETRAIN_HINT = "delete that fold's {variant}/ folder and rerun `emotionnas run` with --out {run_dir} to retrain it"


def load_run(run_dir: Path) -> tuple[ExperimentConfig, dict[str, Any]]:
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    for path in (folder.experiment, folder.manifest):
        if not path.is_file():
            raise ConfigError(f"{path}: missing; is {run_dir} a finished `emotionnas run` folder?")
    try:
        snapshot = json.loads(folder.experiment.read_text())
        manifest = json.loads(folder.manifest.read_text())
    except ValueError as exc:
        raise RunFolderError(f"{run_dir}: experiment.json or run.json is damaged ({exc})") from exc
    base_dir = Path(snapshot.pop("base_dir"))
    return experiment_from_dict(snapshot, base_dir), manifest


def check_trusted(run_dir: Path, experiment: ExperimentConfig, trust_checkpoints: bool) -> None:
    """A run folder is data someone may have handed over: it may not make us unpickle a file unasked."""
    from nni_emotionnas.features.registry import unpickled_checkpoint

    checkpoint = unpickled_checkpoint(experiment.features.deep)
    if checkpoint and not trust_checkpoints:
        raise RunFolderError(
            f"{run_dir}/experiment.json: its deep stream loads {checkpoint} by unpickling it, which can run any "
            "code the file holds; pass --trust-checkpoints if you trust that file and this run folder"
        )


def load_weights(path: Path, model: Any, run_dir: Path, variant: str) -> None:
    """Loads a fold model's `model.pt` (tensors only); a missing, damaged or mismatched file says how to redo it."""
    import pickle

    import torch

    hint = RETRAIN_HINT.format(variant=variant, run_dir=run_dir)
    if not path.is_file():
        raise RunFolderError(f"{path}: missing; {hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError, AttributeError) as exc:
        reason = str(exc).strip().splitlines()[0].split(". ")[0][:160]
        raise RunFolderError(f"{path}: damaged or not this run's model ({reason}); {hint}") from exc


def supplementary_inputs(experiment: ExperimentConfig, audios: list[Any]) -> dict[str, Any]:
    """The `run.supplementary` streams' features of the files (openSMILE functionals for `classic`), per-file
    standardised together when the run standardised per speaker (the files are one speaker)."""
    import numpy as np
    import torch

    from nni_emotionnas.features.opensmile_backend import OpenSmileFunctionalsExtractor
    from nni_emotionnas.features.speaker_norm import zscore_per_speaker

    if not experiment.run.supplementary:
        return {}
    extractor = OpenSmileFunctionalsExtractor(experiment.run.classic.feature_set)
    vectors = np.stack([extractor.extract(audio) for audio in audios]).astype(np.float64)
    if experiment.features.standardize == "speaker":
        vectors = zscore_per_speaker(vectors, ["files"] * len(audios))
    return {"classic": torch.from_numpy(vectors)}


def predict_files(run_dir: Path, files: list[Path], trust_checkpoints: bool = False) -> tuple[list[str], Any]:
    """Class probabilities of each file: the mean over the main variant's fold models (an ensemble).

    A run folder whose deep stream needs an unpickled checkpoint (fairseq wav2vec) is refused unless
    `trust_checkpoints`. A run with `features.standardize: speaker` standardises the files with their own
    statistics, so they should come from one speaker and be several (as that speaker's test utterances were).
    """
    import numpy as np
    import torch

    from nni_emotionnas.corpora.folds import Fold
    from nni_emotionnas.evaluation.crossval import CrossValidation, stream_of
    from nni_emotionnas.features.audio import load_audio
    from nni_emotionnas.features.prepared import PreparedCorpus
    from nni_emotionnas.features.registry import build_deep_extractor
    from nni_emotionnas.features.sequence import unify_length
    from nni_emotionnas.features.spectrogram import SpectrogramExtractor
    from nni_emotionnas.features.standardize import Standardization, fit_standardization

    experiment, manifest = load_run(run_dir)
    main, classes = manifest["main"], manifest["classes"]
    stream = stream_of(main)
    audios = [load_audio(f) for f in files]
    inputs: dict[str, torch.Tensor] = {}
    if stream in ("spectrogram", "both"):
        spectrogram = SpectrogramExtractor(experiment.features.spectrogram)
        inputs["spectrogram"] = torch.from_numpy(np.stack([spectrogram.extract(a) for a in audios]))[:, None]
    if stream in ("deep", "both"):
        check_trusted(run_dir, experiment, trust_checkpoints)
        frames = build_deep_extractor(experiment.features.deep).extract_batch(audios)
        unified = [unify_length(f, manifest["max_frames"], experiment.features.sequence) for f in frames]
        inputs["frames"] = torch.from_numpy(np.stack([u[0] for u in unified]))
        inputs["mask"] = torch.from_numpy(np.stack([u[1] for u in unified]))
    if experiment.features.standardize == "speaker":  # the files are one speaker, standardised by their own statistics
        inputs = fit_standardization(
            range(len(audios)),
            spectrogram=(lambda i: inputs["spectrogram"][i, 0].numpy()) if "spectrogram" in inputs else None,
            deep=(lambda i: (inputs["frames"][i].numpy(), inputs["mask"][i].numpy())) if "frames" in inputs else None,
        ).apply(inputs)
    if stream == "both" and experiment.train.fusion_init == "crossfit":
        inputs.update(supplementary_inputs(experiment, audios))
    folds = [Fold(name, (), (), ()) for name in manifest["folds"]]
    corpus = PreparedCorpus(experiment, [], classes, folds, deep_dim=manifest["deep_dim"])
    builder = CrossValidation(experiment, corpus, Path(run_dir), progress=False)
    probabilities = []
    for fold in corpus.folds:
        model = builder.build(fold, main)
        load_weights(builder.folder.model(fold.name, main, builder.seeds[0]), model, run_dir, main)
        fold_inputs = inputs
        statistics = builder.folder.standardization(fold.name)
        if statistics.is_file():  # the fold's training-speaker statistics
            fold_inputs = Standardization.load(statistics, REWRITE_HINT.format(run_dir=run_dir)).apply(inputs)
        fold_batch = fold_inputs["spectrogram"] if stream == "spectrogram" else fold_inputs
        with torch.no_grad():
            probabilities.append(torch.softmax(model.eval()(fold_batch), dim=1).numpy())
    return classes, np.mean(probabilities, axis=0)
