"""torchaudio's wav2vec2 / HuBERT / WavLM encoders (from a local state-dict checkpoint or a bundle name),
usable only where torchaudio's native library loads; otherwise a `BackendError` points to `hf`."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from nni_emotionnas.errors import BackendError, ConfigError
from nni_emotionnas.features.base import BatchExtractor
from nni_emotionnas.features.neural import Device, file_stamp, resolve_device

# backend -> default torchaudio model factory (torchaudio.models.<name>)
FACTORIES = {"wav2vec2": "wav2vec2_base", "hubert": "hubert_base", "wavlm": "wavlm_base"}


@dataclass
class TorchaudioConfig:
    """`checkpoint`: a state dict saved from `torchaudio.models.<model>()`; or `bundle`: a torchaudio
    pipeline name (e.g. WAV2VEC2_BASE; needs its weights in torch hub's cache). `layer`: 1-based
    transformer layer whose output is kept (-1 = last)."""

    checkpoint: Optional[str] = None
    model: Optional[str] = None
    bundle: Optional[str] = None
    layer: int = -1
    device: Device = "auto"


def import_torchaudio(backend: str) -> Any:
    try:
        import torchaudio
    except Exception as exc:  # ImportError, or OSError when its native library does not match torch
        raise BackendError(
            f"features.deep.backend {backend}: torchaudio cannot be loaded here ({type(exc).__name__}: "
            f"{str(exc)[:200]}); use backend 'hf' with a Hugging Face model directory instead, or install a "
            "torchaudio built for this torch"
        ) from exc
    return torchaudio


class TorchaudioExtractor(BatchExtractor):

    def __init__(self, backend: str, config: TorchaudioConfig) -> None:
        self.name, self.settings = backend, config
        self.torchaudio = import_torchaudio(backend)
        if (config.checkpoint is None) == (config.bundle is None):
            raise ConfigError(f"features.deep: backend {backend} needs exactly one of 'checkpoint' or 'bundle'")
        if config.checkpoint is not None and not Path(config.checkpoint).is_file():
            raise BackendError(f"features.deep.checkpoint: {config.checkpoint} not found")
        self.device = resolve_device(config.device)
        self._model: Optional[torch.nn.Module] = None

    def config(self) -> dict[str, Any]:
        s = self.settings
        source = {"bundle": s.bundle} if s.bundle else {"checkpoint": str(Path(s.checkpoint).resolve()),
                                                       "stamp": file_stamp(Path(s.checkpoint))}
        return {**source, "model": s.model or FACTORIES[self.name], "layer": s.layer}

    def _load(self) -> torch.nn.Module:
        s = self.settings
        if s.bundle:
            try:
                return getattr(self.torchaudio.pipelines, s.bundle).get_model()
            except AttributeError as exc:
                raise ConfigError(f"features.deep.bundle: unknown torchaudio bundle {s.bundle!r}") from exc
        factory = getattr(self.torchaudio.models, s.model or FACTORIES[self.name], None)
        if factory is None:
            raise ConfigError(f"features.deep.model: torchaudio.models has no {s.model!r}")
        model = factory()
        state = torch.load(s.checkpoint, map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
        except (RuntimeError, AttributeError) as exc:
            raise BackendError(
                f"features.deep.checkpoint: {s.checkpoint} is not a state dict of torchaudio.models."
                f"{s.model or FACTORIES[self.name]} ({str(exc)[:200]})"
            ) from exc
        return model

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            self._model = self._load().eval().to(self.device)
        return self._model

    @torch.inference_mode()
    def extract_batch(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        lengths = torch.tensor([len(a) for a in audios])
        waves = torch.zeros(len(audios), int(lengths.max()))
        for i, audio in enumerate(audios):
            waves[i, : len(audio)] = torch.from_numpy(np.asarray(audio, dtype=np.float32))
        layers, frame_lengths = self.model.extract_features(waves.to(self.device), lengths.to(self.device))
        chosen = layers[self.settings.layer if self.settings.layer < 0 else self.settings.layer - 1]
        return [chosen[i, : int(n)].float().cpu().numpy() for i, n in enumerate(frame_lengths)]


# the extractors `features.registry` names, one per torchaudio model
wav2vec2 = functools.partial(TorchaudioExtractor, "wav2vec2")
hubert = functools.partial(TorchaudioExtractor, "hubert")
wavlm = functools.partial(TorchaudioExtractor, "wavlm")
