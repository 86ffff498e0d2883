"""`hf` deep backend: hidden states of wav2vec2 / HuBERT / WavLM / data2vec-audio checkpoints on disk.

Users mostly hold these encoders as Hugging Face `transformers` directories (`config.json`, weights,
`preprocessor_config.json`); this loads one strictly offline and returns the frames of one hidden layer, or
of every layer side by side (the deep stream's input layer learns how to mix them). Needs the `hf` extra
(`pip install 'nni-emotionnas[hf]'`).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

import numpy as np
import torch

from nni_emotionnas.errors import BackendError
from nni_emotionnas.features.base import BatchExtractor
from nni_emotionnas.features.neural import Device, LayerSpec, file_stamp, resolve_device, select_layers

SAMPLE_RATE = 16000
# model_type in config.json -> what users call it; all share the strided-conv front end and hidden_states
SUPPORTED_TYPES = {
    "wav2vec2": "wav2vec 2.0",
    "wav2vec2-conformer": "wav2vec 2.0 conformer",
    "hubert": "HuBERT",
    "wavlm": "WavLM",
    "data2vec-audio": "data2vec-audio",
    "unispeech": "UniSpeech",
    "unispeech-sat": "UniSpeech-SAT",
}
# types whose encoder zeroes padded frames before a single positional conv, so masked batches equal single
# calls; data2vec-audio stacks several positional convs and the conformer has convolution modules in every
# layer, both of which would mix batch padding into the last valid frames
MASK_SAFE_TYPES = {"wav2vec2", "hubert", "wavlm", "unispeech", "unispeech-sat"}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack")


@dataclass
class HFOptions:
    """The `features.deep` section for `backend: hf`.

    `path`: the checkpoint directory (what `save_pretrained` writes). `layer`: index into the model's
    hidden states, 0 = the CNN features after projection, 1..N = transformer layers, negative counts from
    the top (default -1, the last); or `weighted` for all N+1 stacked as frames x ((N+1)*dim).
    """

    path: str
    layer: LayerSpec = -1
    device: Device = "auto"


def hide_broken_torchaudio() -> None:
    """Makes an installed but unloadable torchaudio look absent.

    PyPI torchaudio (pulled in by the fairseq extra) cannot load its native library beside torch 2.13, and
    transformers imports torchaudio whenever it is installed, which would break every speech model import.
    Marking it absent in `sys.modules` is what Python itself does for a blocked module: `import torchaudio`
    then raises ImportError, which every optional-torchaudio code path (ours and transformers') handles.
    """
    if "torchaudio" in sys.modules or importlib.util.find_spec("torchaudio") is None:
        return
    try:
        import torchaudio  # noqa: F401
    except (ImportError, OSError):
        for name in [m for m in sys.modules if m == "torchaudio" or m.startswith("torchaudio.")]:
            del sys.modules[name]
        sys.modules["torchaudio"] = None  # type: ignore[assignment]


def import_transformers() -> ModuleType:
    hide_broken_torchaudio()
    try:
        import transformers
    except ImportError as exc:
        raise BackendError(
            "features.deep.backend 'hf' needs Hugging Face transformers: pip install 'nni-emotionnas[hf]' "
            f"(or pip install transformers) [{exc}]"
        ) from exc
    cached_check = getattr(transformers.utils.import_utils, "is_torchaudio_available", None)
    if sys.modules.get("torchaudio", ...) is None and hasattr(cached_check, "cache_clear"):
        cached_check.cache_clear()  # it may have seen the broken install before we hid it
    return transformers


def read_checkpoint_config(directory: Path) -> dict[str, Any]:
    """Checks that `directory` is a speech SSL checkpoint we can run, before anything heavy is loaded."""
    fix = "point features.deep.path at a directory written by `save_pretrained` (config.json + weights)"
    if not directory.exists():
        raise BackendError(f"features.deep.path: {directory} does not exist; {fix}")
    if not directory.is_dir():
        raise BackendError(f"features.deep.path: {directory} is a file, not a checkpoint directory; {fix}")
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise BackendError(f"features.deep.path: {directory} is not a Hugging Face checkpoint (no config.json); {fix}")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BackendError(f"{config_file}: not valid JSON ({exc})") from exc
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in SUPPORTED_TYPES:
        raise BackendError(
            f"features.deep.path: {directory} holds a {model_type!r} checkpoint, not a speech encoder the hf "
            f"backend runs (model_type one of {', '.join(sorted(SUPPORTED_TYPES))})"
        )
    if not weight_files(directory):
        raise BackendError(
            f"features.deep.path: {directory} has config.json but no model weights "
            f"(*{', *'.join(WEIGHT_SUFFIXES)}); save the model with `model.save_pretrained(dir)`"
        )
    return config


def weight_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def frames_after_convs(n_samples: int, kernels: list[int], strides: list[int]) -> int:
    """Frames the strided conv front end makes from `n_samples` (no padding): floor((n - k) / s) + 1 per layer."""
    length = n_samples
    for kernel, stride in zip(kernels, strides):
        length = (length - kernel) // stride + 1
    return max(length, 0)


class HFExtractor(BatchExtractor):
    """Hidden-state frames (20 ms for the standard front end) of a transformers speech encoder, float32."""

    name = "hf"

    def __init__(self, options: HFOptions) -> None:
        self.options = options
        self.path = Path(options.path).expanduser().resolve()
        self._transformers = import_transformers()
        self.raw_config = read_checkpoint_config(self.path)
        n_layers = int(self.raw_config.get("num_hidden_layers", 0))
        self.layers = select_layers(options.layer, list(range(n_layers + 1)))
        self.n_stacked_layers = len(self.layers)
        self.dim = int(self.raw_config.get("hidden_size", 0)) * len(self.layers)
        self.device = resolve_device(options.device)
        self._model: Optional[torch.nn.Module] = None
        self._normalizer: Any = None

    @property
    def model_type(self) -> str:
        return self.raw_config["model_type"]

    @property
    def batchable(self) -> bool:
        """Whether a padded, masked batch gives each utterance the frames it gets alone.

        Group-norm front ends (wav2vec2-base, HuBERT-base) were trained without attention masks, so padding
        changes their output; they, and the types outside `MASK_SAFE_TYPES`, run one utterance at a time.
        """
        return (
            self.model_type in MASK_SAFE_TYPES
            and self.raw_config.get("feat_extract_norm", "layer") == "layer"
            and not self.raw_config.get("add_adapter", False)
        )

    def config(self) -> dict[str, Any]:
        identity = [file_stamp(self.path / name) for name in ("config.json", "preprocessor_config.json")
                    if (self.path / name).is_file()]
        return {
            "path": str(self.path),
            "model_type": self.model_type,
            "layers": self.layers,
            "files": identity + [file_stamp(p) for p in weight_files(self.path)],
        }

    def normalizer(self) -> Any:
        """The checkpoint's own feature extractor (its `do_normalize` etc.); a wav2vec2 default if it has none.

        Without `preprocessor_config.json` we follow the fairseq convention: layer-norm front ends expect
        zero-mean unit-variance input, group-norm ones raw audio.
        """
        if self._normalizer is None:
            tf = self._transformers
            if (self.path / "preprocessor_config.json").is_file():
                try:
                    self._normalizer = tf.AutoFeatureExtractor.from_pretrained(self.path, local_files_only=True)
                except (OSError, ValueError, KeyError) as exc:
                    raise BackendError(f"{self.path / 'preprocessor_config.json'}: cannot be loaded ({exc})") from exc
            else:
                self._normalizer = tf.Wav2Vec2FeatureExtractor(
                    sampling_rate=SAMPLE_RATE, do_normalize=self.raw_config.get("feat_extract_norm") == "layer"
                )
            rate = getattr(self._normalizer, "sampling_rate", SAMPLE_RATE)
            if rate != SAMPLE_RATE:
                raise BackendError(f"{self.path}: the checkpoint expects {rate} Hz audio; this backend feeds 16 kHz")
        return self._normalizer

    def model(self) -> torch.nn.Module:
        if self._model is None:
            try:
                model = self._transformers.AutoModel.from_pretrained(self.path, local_files_only=True)
            except Exception as exc:  # corrupt weights surface as safetensors/pickle/torch errors of many types
                raise BackendError(f"features.deep.path: cannot load the model in {self.path}: {exc}") from exc
            self._model = model.float().eval().to(self.device)
        return self._model

    def extract_batch(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        audios = [np.asarray(a, dtype=np.float32) for a in audios]
        if self.batchable:
            return self._run(audios)
        return [self._run([a])[0] for a in audios]

    def _run(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        """One forward pass; frames past each utterance's own length (batch padding) are dropped."""
        if not audios:
            return []
        model = self.model()
        batch = self.normalizer()(
            audios, sampling_rate=SAMPLE_RATE, padding=True, return_attention_mask=len(audios) > 1,
            return_tensors="pt",
        )
        inputs = {"input_values": batch["input_values"].to(self.device)}
        if len(audios) > 1:
            inputs["attention_mask"] = batch["attention_mask"].to(self.device)
        with torch.inference_mode():
            hidden = model(**inputs, output_hidden_states=True).hidden_states
        stacked = torch.cat([hidden[i] for i in self.layers], dim=-1).float().cpu().numpy()
        kernels, strides = list(model.config.conv_kernel), list(model.config.conv_stride)
        lengths = [frames_after_convs(len(a), kernels, strides) for a in audios]
        if min(lengths) < 1:
            raise ValueError(f"audio of {min(len(a) for a in audios)} samples is too short for {self.model_type}")
        return [np.ascontiguousarray(stacked[i, :n]) for i, n in enumerate(lengths)]
