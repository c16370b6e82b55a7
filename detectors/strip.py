"""STRIP, STRong Intentional Perturbation (Gao, Xu, Wang, Chen, Ranasinghe & Nepal, "STRIP: A Defence
Against Trojan Attacks on Deep Neural Networks", ACSAC 2019; not in the seed's Table 1).

A backdoor trigger dominates the decision of a trojaned model: superimposing random clean images
on a triggered input still gives the target class (low prediction entropy), while a clean input's
blends are classified all over the place (high entropy).

Adapters: any model with probabilities.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import InputDetector, Need, Needs, register
from .models import probabilities, require_model


@register("strip")
class STRIP(InputDetector):
    """Score = minus the mean entropy of the model's predictions on ``n_overlays`` superimpositions of
    the input with random clean images (higher = more likely carries a trigger).

    ``blend="add"`` superimposes as the authors' implementation does: pixel sum, clipped to the value
    range of the clean data (a trigger keeps full strength); ``blend="mix"`` uses
    ``alpha * x + (1 - alpha) * x_clean``.
    """

    method = "gao2019-strip"
    needs = Needs(trusted_data=Need.REQUIRED, model=Need.REQUIRED, probabilities=Need.REQUIRED)

    def __init__(self, n_overlays: int = 20, blend: str = "add", alpha: float = 0.5, n_reference: int = 200,
                 random_state: int = 0, fpr: float = 0.05):
        self.n_overlays = n_overlays
        self.blend = blend
        self.alpha = alpha
        self.n_reference = n_reference
        self.random_state = random_state
        self.fpr = fpr

    def _fit(self, X: np.ndarray, y: np.ndarray | None, model: Any, X_adv: np.ndarray | None = None) -> None:
        if self.blend not in ("add", "mix"):
            raise ValueError(f"blend must be 'add' or 'mix', got {self.blend!r}")
        if not 0 < float(self.alpha) < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if int(self.n_overlays) < 1:
            raise ValueError(f"n_overlays must be >= 1, got {self.n_overlays}")
        require_model(model, "STRIP")
        rng = np.random.default_rng(self.random_state)
        self.range_ = (float(X.min()), float(X.max()))
        self.reference_ = X[rng.choice(len(X), min(int(self.n_reference), len(X)), replace=False)]

    def entropy(self, X: np.ndarray, model: Any) -> np.ndarray:
        """Mean prediction entropy over the blends of each input with random clean references."""
        m = require_model(model, "STRIP")
        rng = np.random.default_rng(self.random_state)
        n, T = len(X), int(self.n_overlays)
        idx = rng.integers(0, len(self.reference_), size=(n, T))
        if self.blend == "add":
            blends = np.clip(X[:, None, :] + self.reference_[idx], *self.range_)
        else:
            a = float(self.alpha)
            blends = a * X[:, None, :] + (1.0 - a) * self.reference_[idx]
        p = probabilities(m, blends.reshape(n * T, -1)).reshape(n, T, -1)
        return -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=2).mean(axis=1)

    def _score(self, X: np.ndarray, model: Any) -> np.ndarray:
        return -self.entropy(X, model)
