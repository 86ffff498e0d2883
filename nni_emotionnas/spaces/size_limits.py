"""Sizes no machine of ours can run, refused while a space config is read (before anything is allocated).

A space file or genotype with 10^9 channels would ask torch for hundreds of GB, and one with 10^6 nodes makes
building the space (and its search-space JSON) run for hours; both are typos, and both deserve a line naming
the key rather than an out-of-memory kill or a hang. The estimates count the weights a fixed network of the
config has at least, so a refused config could not have been trained.
"""

from __future__ import annotations

MAX_NODES = 64  # a DARTS cell has 4 nodes, the paper's recurrent cell 8; the choices grow with nodes^2
MAX_LAYERS = 1000  # DARTS stacks 8-20 cells
MAX_PARAMETERS = 500_000_000  # 2 GB of float32 weights, 8 GB with their gradients and Adam's two moments


def check_count(name: str, value: int, limit: int, what: str) -> None:
    """A ValueError naming the key when `value` exceeds `limit` (the config parser adds the file's name)."""
    if value > limit:
        raise ValueError(f"{name}: {value} {what} is more than this space supports (at most {limit})")


def check_parameters(name: str, value: int, parameters: int) -> None:
    """A ValueError naming the key that makes the network too large, with the estimate."""
    if parameters > MAX_PARAMETERS:
        gigabytes = 4 * parameters / 1e9
        raise ValueError(f"{name}: {value} makes a network of at least {parameters:.2g} parameters "
                         f"({gigabytes:.3g} GB as float32, before gradients and optimiser state); "
                         f"at most {MAX_PARAMETERS:.0e} can be trained here")
