"""The paper's learning algorithms as update rules for a stack of k models, by the config's ``algorithm``."""

from vae.algorithms.aevb import AEVB
from vae.algorithms.mcem import MCEM
from vae.algorithms.stack import Stack
from vae.algorithms.wakesleep import WakeSleep

ALGORITHMS: dict[str, type[Stack]] = {"aevb": AEVB, "wakesleep": WakeSleep, "mcem": MCEM}

__all__ = ["AEVB", "ALGORITHMS", "MCEM", "Stack", "WakeSleep"]
