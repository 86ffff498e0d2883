"""The one seeding rule of every entry point (run, search, train, predict, the nnictl trial entries).

Call `seed_everything(experiment.seed)` before the network is built: weight initialisation draws from torch's
global generator, so a seed set after `build_model` leaves the weights to chance. Data order (the loaders'
own generators) and the search's data split take the same seed from the config.
"""

from __future__ import annotations

import pytorch_lightning as pl


def seed_everything(seed: int) -> int:
    """Seeds Python's, NumPy's and torch's generators (and Lightning's dataloader workers); returns the seed."""
    return pl.seed_everything(seed, workers=True, verbose=False)
