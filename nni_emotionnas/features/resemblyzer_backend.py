"""`resemblyzer` deep backend: frame outputs of the pretrained speaker LSTM shipped inside the resemblyzer wheel.

It is the one pretrained speech encoder a plain `pip install` brings, so it is the deep stream that works
offline out of the box. The package only exposes utterance embeddings; we rebuild its 3-layer LSTM layer by
layer from the packaged `pretrained.pt` so that any layer's per-frame outputs (256-d every 10 ms) can be read.
The mel input is exactly the package's `wav_to_mel_spectrogram` (40 power-mel bands, 25 ms / 10 ms).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence, pad_sequence

from nni_emotionnas.corpora.integrity import content_digest
from nni_emotionnas.errors import BackendError
from nni_emotionnas.features.base import BatchExtractor
from nni_emotionnas.features.neural import Device, LayerSpec, resolve_device, select_layers
from nni_emotionnas.threads import torch_threads

HIDDEN = 256
LAYERS = [1, 2, 3]
LSTM_PARAMETERS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


@dataclass
class ResemblyzerOptions:
    """The `features.deep` section for `backend: resemblyzer`.

    `layer`: 1..3 (or -1..-3 from the top; default the last) or `weighted` for all three stacked as
    frames x 768 (the deep stream's input layer learns how to mix them).
    `normalize_volume`: raise quiet audio to -30 dBFS as `resemblyzer.preprocess_wav` does (the encoder was
    trained on such input; loud audio is left alone). `trim_silence`: the package's VAD trimming of long
    pauses, off by default because it changes the timing the deep stream sees.
    `weights`: another checkpoint in resemblyzer's format; default the one inside the installed package.
    `cpu_threads`: torch threads while the LSTM runs on CPU (its per-step matrices are tiny: more threads spin).
    """

    layer: LayerSpec = -1
    normalize_volume: bool = True
    trim_silence: bool = False
    weights: Optional[str] = None
    device: Device = "auto"
    cpu_threads: int = 1


def import_resemblyzer() -> ModuleType:
    """The package's `audio` module; a missing or broken install becomes a `BackendError` saying the fix."""
    try:
        from resemblyzer import audio
    except ImportError as exc:
        hint = " (webrtcvad needs pkg_resources: pip install 'setuptools<80')" if "pkg_resources" in str(exc) else ""
        raise BackendError(
            f"features.deep.backend 'resemblyzer' needs the resemblyzer package: pip install resemblyzer{hint} "
            f"[{exc}]"
        ) from exc
    return audio


def packaged_weights() -> Path:
    """`pretrained.pt` inside the installed resemblyzer package (never copied into this repository)."""
    audio = import_resemblyzer()
    return Path(audio.__file__).resolve().parent / "pretrained.pt"


def load_lstm_layers(weights: Path, count: int) -> nn.ModuleList:
    """The first `count` layers of resemblyzer's LSTM as separate single-layer LSTMs, so each output is visible."""
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)["model_state"]
        layers = nn.ModuleList()
        for k in range(count):
            lstm = nn.LSTM(state["lstm.weight_ih_l0"].shape[1] if k == 0 else HIDDEN, HIDDEN, batch_first=True)
            lstm.load_state_dict({f"{p}_l0": state[f"lstm.{p}_l{k}"] for p in LSTM_PARAMETERS})
            layers.append(lstm)
    except (KeyError, RuntimeError, OSError, TypeError) as exc:
        raise BackendError(
            f"features.deep.weights: {weights} is not a resemblyzer voice-encoder checkpoint "
            f"(expected a dict with 'model_state' holding lstm.*_l0..l2): {exc}"
        ) from exc
    return layers.eval()


class ResemblyzerExtractor(BatchExtractor):
    """Frames x 256 (or x 768 for `weighted`) float32 at 10 ms; runs batched in the main process (GPU if any)."""

    name = "resemblyzer"

    def __init__(self, options: ResemblyzerOptions) -> None:
        self.options = options
        self.layers = select_layers(options.layer, LAYERS)
        self.n_stacked_layers = len(self.layers)
        self.dim = HIDDEN * len(self.layers)
        self._audio = import_resemblyzer()
        self._hparams = importlib.import_module("resemblyzer.hparams")
        self.weights = Path(options.weights).expanduser() if options.weights else packaged_weights()
        if not self.weights.is_file():
            raise BackendError(f"features.deep.weights: {self.weights} not found")
        self.device = resolve_device(options.device)
        self._digest: Optional[str] = None
        self._lstm: Optional[nn.ModuleList] = None

    def config(self) -> dict[str, Any]:
        if self._digest is None:
            self._digest = content_digest(self.weights)[:16]  # a cache never outlives the weights that made it
        hp = self._hparams
        return {
            "layers": self.layers,
            "normalize_volume": self.options.normalize_volume,
            "trim_silence": self.options.trim_silence,
            "weights_sha1": self._digest,
            "mel": [hp.sampling_rate, hp.mel_window_length, hp.mel_window_step, hp.mel_n_channels],
        }

    def mel_frames(self, audio: np.ndarray) -> np.ndarray:
        """Frames x 40 mel input, computed by the package's own `wav_to_mel_spectrogram`."""
        wav = np.asarray(audio, dtype=np.float32)
        if wav.ndim != 1:
            raise ValueError(f"resemblyzer backend expects mono audio (1-D), got shape {wav.shape}")
        if self.options.normalize_volume and np.any(wav):
            wav = self._audio.normalize_volume(wav, self._hparams.audio_norm_target_dBFS, increase_only=True)
        if self.options.trim_silence:
            trimmed = self._audio.trim_long_silences(wav)
            wav = trimmed if len(trimmed) else wav  # all silence: keep the audio rather than return nothing
        return self._audio.wav_to_mel_spectrogram(np.asarray(wav, dtype=np.float32))

    def lstm(self) -> nn.ModuleList:
        if self._lstm is None:
            self._lstm = load_lstm_layers(self.weights, max(self.layers)).to(self.device)
        return self._lstm

    def extract_batch(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        if not audios:
            return []
        return self.frames_from_mels([torch.from_numpy(self.mel_frames(a)) for a in audios])

    def frames_from_mels(self, mels: list[torch.Tensor]) -> list[np.ndarray]:
        """Runs the LSTM on packed (unpadded) sequences, so each utterance's frames ignore the batch's padding."""
        lengths = torch.tensor([m.shape[0] for m in mels])
        padded = pad_sequence(mels, batch_first=True).to(self.device)
        sequence = pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False)
        outputs = []
        with torch.inference_mode(), torch_threads(self.options.cpu_threads if self.device.type == "cpu" else None):
            for number, layer in enumerate(self.lstm(), start=1):
                sequence, _ = layer(sequence)
                if number in self.layers:
                    outputs.append(pad_packed_sequence(sequence, batch_first=True)[0])
        stacked = torch.cat(outputs, dim=-1).float().cpu().numpy()
        return [np.ascontiguousarray(stacked[i, :n]) for i, n in enumerate(lengths.tolist())]
