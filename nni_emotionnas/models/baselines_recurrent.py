"""Paper Table 3 baselines for the deep-feature stream: RNN and LSTM (H=512, 1 or 2 layers) followed by
the same attention pooling and classifier as the searched network, trained by the same trainer."""

from __future__ import annotations

import torch
from torch import nn

from nni_emotionnas.errors import ConfigError
from nni_emotionnas.spaces.pooling import AttentionPooling, PooledSequenceMixin

# name -> (torch recurrent class, hidden size, layers)
RECURRENT_BASELINES: dict[str, tuple[type[nn.RNNBase], int, int]] = {
    "rnn_h512_l1": (nn.RNN, 512, 1),
    "rnn_h512_l2": (nn.RNN, 512, 2),
    "lstm_h512_l1": (nn.LSTM, 512, 1),
    "lstm_h512_l2": (nn.LSTM, 512, 2),
}


class RecurrentBaseline(PooledSequenceMixin, nn.Module):
    """torch's fused RNN/LSTM. Padding sits after the valid frames, so a forward recurrence leaves the
    valid outputs untouched and the masked attention pooling ignores the rest."""

    def __init__(self, kind: type[nn.RNNBase], hidden_size: int, num_layers: int, input_dim: int, num_classes: int,
                 attention_dim: int = 128, dropout: float = 0.2) -> None:
        super().__init__()
        self.input_dim = input_dim
        self.rnn = kind(input_dim, hidden_size, num_layers=num_layers, batch_first=True,
                        dropout=dropout if num_layers > 1 else 0.0)
        self.pool = AttentionPooling(hidden_size, attention_dim)
        self.input_statistics = None  # no skip of the input statistics (PooledSequenceMixin)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_classes)
        self.embedding_dim = hidden_size

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        return self.rnn(frames)[0]


def build_recurrent_baseline(name: str, input_dim: int, num_classes: int, **options) -> RecurrentBaseline:
    """A baseline by name (`model.deep` in the config), e.g. `lstm_h512_l2`."""
    if name not in RECURRENT_BASELINES:
        raise ConfigError(f"model.deep: unknown baseline {name!r} (known: {', '.join(RECURRENT_BASELINES)})")
    kind, hidden, layers = RECURRENT_BASELINES[name]
    return RecurrentBaseline(kind, hidden, layers, input_dim, num_classes, **options)
