"""Bi-model decision mismatch (Monteiro, Albuquerque, Akhtar & Falk, "Generalizable Adversarial
Examples Detection Based on Bi-model Decision Mismatch", IEEE SMC 2019; seed ref 32): two
differently trained classifiers agree on clean inputs; adversarial examples crafted against one
rarely transfer exactly to the other, so their outputs disagree.

Adapters: any model with probabilities.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .base import InputDetector, Need, Needs, register
from .models import as_model, fit_clean_vs_adversarial, probabilities, require_model


@register("bimodel_mismatch")
class BiModelMismatch(InputDetector):
    """Score = total-variation distance between the two models' predicted distributions (plus 1 when
    their decisions differ). ``second_model``: a fitted model, or an unfitted scikit-learn classifier
    trained in ``fit`` on ``(X, y)`` (default an RBF-SVM); with ``X_adv`` a meta-classifier over both
    outputs is trained, as in the paper."""

    method = "monteiro2019-bimodel"
    needs = Needs(trusted_data=Need.REQUIRED, adversarial_examples=Need.OPTIONAL, labels=Need.OPTIONAL, model=Need.REQUIRED, probabilities=Need.REQUIRED)

    def __init__(self, second_model: Any = None, random_state: int = 0, fpr: float = 0.05):
        self.second_model = second_model
        self.random_state = random_state
        self.fpr = fpr

    def _fit(self, X: np.ndarray, y: np.ndarray | None, model: Any, X_adv: np.ndarray | None = None) -> None:
        from sklearn.base import clone
        from sklearn.svm import SVC

        model = require_model(model, "BiModelMismatch")
        second = self.second_model
        if second is None or not _is_fitted(second):
            labels = y if y is not None else np.asarray(model.predict_proba(X)).argmax(axis=1)
            est = clone(second) if second is not None else SVC(kernel="rbf", C=10.0, probability=True,
                                                               random_state=self.random_state)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                second = est.fit(X, labels)
        self.second_ = as_model(second)
        self.meta_ = None
        if X_adv is not None:
            from sklearn.linear_model import LogisticRegression

            self.meta_ = fit_clean_vs_adversarial(LogisticRegression(max_iter=2000), self._pair(X, model),
                                                  self._pair(X_adv, model))

    def _pair(self, X: np.ndarray, model: Any) -> np.ndarray:
        p, q = probabilities(model, X), probabilities(self.second_, X)
        if p.shape != q.shape:
            raise ValueError(f"the two models disagree on the number of classes: {p.shape[1]} vs {q.shape[1]}")
        return np.hstack([p, q, np.abs(p - q)])

    def _score(self, X: np.ndarray, model: Any) -> np.ndarray:
        model = require_model(model, "BiModelMismatch")
        if self.meta_ is not None:
            return self.meta_.decision_function(self._pair(X, model))
        p, q = probabilities(model, X), probabilities(self.second_, X)
        return 0.5 * np.abs(p - q).sum(axis=1) + (p.argmax(axis=1) != q.argmax(axis=1))


def _is_fitted(model: Any) -> bool:
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    if not hasattr(model, "get_params"):
        return True  # not scikit-learn: assume a ready model
    try:
        check_is_fitted(model)
    except NotFittedError:
        return False
    return True
