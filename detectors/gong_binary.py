"""Binary clean-vs-adversarial classifier (Gong, Wang & Ku, "Adversarial and Clean Data Are Not
Twins", arXiv:1704.04960, 2017; seed ref 27): a separate classifier trained on clean inputs and on
adversarial examples crafted against the protected model."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import InputDetector, Need, Needs, register
from .models import fit_clean_vs_adversarial, make_classifier, positive_score


@register("gong_binary")
class GongBinary(InputDetector):
    """Score = the binary classifier's probability (or decision value) that the input is adversarial.

    ``fit(X_clean, model=..., X_adv=X_adversarial)``; ``classifier`` is any scikit-learn classifier
    (default: a standardised one-hidden-layer MLP). It detects attacks like those it was trained on.
    """

    method = "gong2017-binary"
    needs = Needs(trusted_data=Need.REQUIRED, adversarial_examples=Need.REQUIRED)

    def __init__(self, classifier: Any = None, random_state: int = 0, fpr: float = 0.05):
        self.classifier = classifier
        self.random_state = random_state
        self.fpr = fpr

    def _fit(self, X: np.ndarray, y: np.ndarray | None, model: Any, X_adv: np.ndarray | None = None) -> None:
        clf = self.classifier if self.classifier is not None else make_classifier(random_state=self.random_state)
        self.classifier_ = fit_clean_vs_adversarial(clf, X, X_adv)

    def _score(self, X: np.ndarray, model: Any) -> np.ndarray:
        return positive_score(self.classifier_, X)
