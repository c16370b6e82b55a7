"""Quieting adversarial-robustness-toolbox: it warns about missing frameworks and logs every attack
step, which would drown a bench's JSON or a demo's progress line."""

from __future__ import annotations

import logging
import warnings


def quiet_art() -> None:
    warnings.filterwarnings("ignore", message=".*PyTorch not found.*")
    warnings.filterwarnings("ignore", category=UserWarning, module="art")
    for name in ("art", "art.attacks", "art.estimators"):
        logging.getLogger(name).setLevel(logging.ERROR)
