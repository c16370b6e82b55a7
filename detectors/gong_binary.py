"""Binary clean-vs-adversarial classifier (Gong, Wang & Ku, "Adversarial and Clean Data Are Not
Twins", arXiv:1704.04960, 2017; seed ref 27): a separate classifier trained on clean inputs and on
adversarial examples crafted against the protected model."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import InputDetector, Need, Needs, register
from .models import adversarial_or_crafted, fit_clean_vs_adversarial, make_classifier, positive_score


@register("gong_binary")
class GongBinary(InputDetector):
    """Score = the binary classifier's probability (or decision value) that the input is adversarial.

    ``fit(X_clean, model=..., X_adv=X_adversarial)``; ``classifier`` is any scikit-learn classifier
    (default: a standardised one-hidden-layer MLP). It detects attacks like those it was trained on.
    Without ``X_adv`` it crafts its own against ``model`` (white-box PGD with input gradients,
    black-box HopSkipJump otherwise; ``craft_eps``, ``craft_samples``, seeded by ``random_state``:
    :func:`kizashi.detectors.models.craft_adversarial`). Adapters: any (SklearnModel, TorchModel,
    OnnxModel, ArtModel).
    """

    method = "gong2017-binary"
    needs = Needs(trusted_data=Need.REQUIRED, adversarial_examples=Need.OPTIONAL, model=Need.OPTIONAL,
                  gradients=Need.OPTIONAL)

    def __init__(self, classifier: Any = None, random_state: int = 0, fpr: float = 0.05, craft_eps: float = 0.15,
                 craft_samples: int = 200):
        self.classifier = classifier
        self.random_state = random_state
        self.fpr = fpr
        self.craft_eps = craft_eps
        self.craft_samples = craft_samples

    def _fit(self, X: np.ndarray, y: np.ndarray | None, model: Any, X_adv: np.ndarray | None = None) -> None:
        clf = self.classifier if self.classifier is not None else make_classifier(random_state=self.random_state)
        X_adv = adversarial_or_crafted(self, X, y, model, X_adv)
        self.classifier_ = fit_clean_vs_adversarial(clf, X, X_adv)

    def _score(self, X: np.ndarray, model: Any) -> np.ndarray:
        return positive_score(self.classifier_, X)
