"""One LightningModule per learning algorithm of the paper, by the config's ``algorithm`` name."""

from vae.algorithms.aevb import AEVB
from vae.algorithms.base import RunDiverged, SampleAxisModule
from vae.algorithms.mcem import MCEM
from vae.algorithms.wakesleep import WakeSleep

ALGORITHMS: dict[str, type[SampleAxisModule]] = {"aevb": AEVB, "wakesleep": WakeSleep, "mcem": MCEM}

__all__ = ["ALGORITHMS", "AEVB", "MCEM", "RunDiverged", "SampleAxisModule", "WakeSleep"]
