"""Softmax-confidence baseline (Hendrycks & Gimpel, "Early Methods for Detecting Adversarial
Images", ICLR 2017 workshop; seed ref 24): adversarial and abnormal inputs get lower maximum softmax
probability (or higher predictive entropy) than clean ones.

Adapters: any model with probabilities (SklearnModel, TorchModel, OnnxModel, ArtModel).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import InputDetector, Need, Needs, register
from .models import probabilities, require_model

SCORES = ("max_prob", "entropy")


@register("softmax_baseline")
class SoftmaxBaseline(InputDetector):
    """Score = ``1 - max softmax probability`` (``score_type="max_prob"``) or the entropy of the
    predicted distribution (``"entropy"``). Needs only the model's output."""

    method = "hendrycks2017-softmax"
    needs = Needs(trusted_data=Need.REQUIRED, model=Need.REQUIRED, probabilities=Need.REQUIRED)

    def __init__(self, score_type: str = "max_prob", fpr: float = 0.05):
        self.score_type = score_type
        self.fpr = fpr

    def _fit(self, X: np.ndarray, y: np.ndarray | None, model: Any, X_adv: np.ndarray | None = None) -> None:
        if self.score_type not in SCORES:
            raise ValueError(f"score_type must be one of {SCORES}, got {self.score_type!r}")

    def _score(self, X: np.ndarray, model: Any) -> np.ndarray:
        p = probabilities(require_model(model, type(self).__name__), X)
        if self.score_type == "entropy":
            return -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=1)
        return 1.0 - p.max(axis=1)
