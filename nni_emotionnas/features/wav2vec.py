"""fairseq wav2vec (v1) checkpoints, e.g. `wav2vec_large.pt`: the context network's output c
(512-d for wav2vec-large, one frame per 10 ms), computed with fairseq's own model code."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from nni_emotionnas.errors import BackendError
from nni_emotionnas.features.base import BatchExtractor
from nni_emotionnas.features.neural import Device, file_stamp, resolve_device

INSTALL_HINT = "install the fairseq extra: pip install 'nni-emotionnas[fairseq]' (fairseq-fixed on Python 3.11+)"


@dataclass
class Wav2VecConfig:
    """`features.deep` for `backend: wav2vec`. `output`: `c` (context network, the paper's features) or
    `z` (the convolutional encoder's output). `batch_size`: utterances per forward pass (equal lengths
    only, see `Wav2VecExtractor.extract_batch`)."""

    checkpoint: str = "wav2vec_large.pt"
    output: Literal["c", "z"] = "c"
    device: Device = "auto"
    batch_size: int = 8


def _import_fairseq() -> Any:
    try:
        import fairseq  # noqa: F401
        from fairseq import models
        from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    except Exception as exc:  # fairseq or the torchaudio it imports may fail in many ways
        message = f"features.deep.backend wav2vec: fairseq cannot be imported ({exc}); {INSTALL_HINT}"
        raise BackendError(message) from exc
    return models, convert_namespace_to_omegaconf


def load_wav2vec(path: Path) -> torch.nn.Module:
    """Builds the fairseq model a checkpoint describes and loads its weights (eval mode, CPU).

    Old checkpoints (wav2vec_large.pt) carry an argparse `args`, newer ones a `cfg`; both are accepted.
    The file is unpickled fully (`weights_only=False`): only load checkpoints you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise BackendError(
            f"features.deep.checkpoint: {path} not found; download wav2vec_large.pt from the fairseq "
            "wav2vec examples and point `checkpoint` at it"
        )
    models, convert = _import_fairseq()
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise BackendError(f"features.deep.checkpoint: {path} is not a PyTorch checkpoint ({exc})") from exc
    if not isinstance(state, dict) or "model" not in state or not (state.get("args") or state.get("cfg")):
        raise BackendError(
            f"features.deep.checkpoint: {path} is not a fairseq checkpoint (needs 'model' and 'args'/'cfg'); "
            "for Hugging Face or torchaudio models use backend 'hf' or 'wav2vec2'"
        )
    if state.get("args") is not None:
        args = copy.deepcopy(state["args"])
        if getattr(args, "arch", None) == "audio_cpc":
            args.arch = "wav2vec"
        if getattr(args, "task", None) == "speech_pretraining":
            args.task = "audio_pretraining"
        arch, model_cfg = getattr(args, "arch", None), convert(args).model
    else:
        from omegaconf import OmegaConf

        cfg = OmegaConf.create(state["cfg"]) if isinstance(state["cfg"], dict) else state["cfg"]
        model_cfg = cfg.model
        arch = model_cfg.get("_name")
    if arch != "wav2vec":
        raise BackendError(
            f"features.deep.checkpoint: {path} holds a fairseq {arch!r} model, not wav2vec (v1); "
            "for wav2vec 2.0 / HuBERT checkpoints use backend 'hf' (or 'wav2vec2' with torchaudio)"
        )
    model = models.build_model(model_cfg, None)
    model.load_state_dict(state["model"])
    return model.eval()


class Wav2VecExtractor(BatchExtractor):
    """Neural encoder: runs in the main process (`parallel = False`), batched, on the GPU when present."""

    name = "wav2vec"

    def __init__(self, config: Wav2VecConfig) -> None:
        self.settings = config
        self.path = Path(config.checkpoint).expanduser()
        self.device = resolve_device(config.device)
        self._model: torch.nn.Module | None = None
        if not self.path.is_file():  # fail at configuration time, before any audio is read
            load_wav2vec(self.path)

    def config(self) -> dict[str, Any]:
        return {"checkpoint": str(self.path.resolve()), "stamp": file_stamp(self.path), "output": self.settings.output}

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            self._model = load_wav2vec(self.path).to(self.device)
        return self._model

    @torch.inference_mode()
    def _encode(self, waves: torch.Tensor) -> torch.Tensor:
        z = self.model.feature_extractor(waves.to(self.device))
        out = z if self.settings.output == "z" else self.model.feature_aggregator(z)
        return out.transpose(1, 2).float().cpu()

    def extract_batch(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        """Batches utterances of equal length only: wav2vec's group norms normalise over time, so zero
        padding would change the features of the shorter utterances."""
        out: list[np.ndarray | None] = [None] * len(audios)
        by_length: dict[int, list[int]] = {}
        for i, audio in enumerate(audios):
            by_length.setdefault(len(audio), []).append(i)
        for indices in by_length.values():
            for start in range(0, len(indices), self.settings.batch_size):
                chunk = indices[start:start + self.settings.batch_size]
                waves = torch.from_numpy(np.stack([np.asarray(audios[i], dtype=np.float32) for i in chunk]))
                for i, frames in zip(chunk, self._encode(waves)):
                    out[i] = frames.numpy()
        return out  # type: ignore[return-value]
