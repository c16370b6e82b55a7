"""Output-label distribution monitor: per-account predicted labels against the benign reference.

The seed's simple monitor (section 2.1.1): an account crafting adversarial examples queries around
one decision boundary, so the labels it receives concentrate on few classes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from ._stream_parts import as_label
from .base import Need, Needs, StreamDetector, check_array, check_positive_int, register
from .models import as_model


@dataclass
class _LabelState:
    labels: deque = field(default_factory=deque)
    counts: dict[int, int] = field(default_factory=dict)
    seen: int = 0
    detections: int = 0


@register("label_distribution")
class LabelDistribution(StreamDetector):
    """G statistic (likelihood-ratio chi-square) of an account's last ``window`` predicted labels
    against the benign label distribution; tested once ``min_queries`` labels are in; threshold
    calibrated on simulated benign accounts (about ``fpr`` of them would ever alarm).

    ``fit(X, y)`` takes benign queries and the labels the model returned for them (or ``model=`` to
    compute them). Labels unseen in the reference get a small floor probability.
    """

    method = "monitor-label-distribution"
    needs = Needs(trusted_data=Need.REQUIRED, predictions=Need.REQUIRED, model=Need.OPTIONAL,
                  probabilities=Need.OPTIONAL)
    calibration_with_replacement = True

    def __init__(self, window: int = 100, min_queries: int = 30, fpr: float = 0.01, calibration_streams: int = 40,
                 calibration_length: int = 300, max_accounts: int = 10_000, random_state: int = 0):
        self.window = window
        self.min_queries = min_queries
        self.fpr = fpr
        self.calibration_streams = calibration_streams
        self.calibration_length = calibration_length
        self.max_accounts = max_accounts
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None, *, model: Any = None) -> LabelDistribution:
        X = check_array(X)
        check_positive_int("window", self.window, minimum=2)
        check_positive_int("min_queries", self.min_queries, minimum=2)
        if self.min_queries > self.window:
            raise ValueError(f"min_queries={self.min_queries} exceeds window={self.window}")
        self.n_features_in_ = X.shape[1]
        self.model_ = as_model(model)
        if y is not None:
            labels = np.asarray(y).reshape(-1).astype(int)
            if len(labels) != len(X):
                raise ValueError(f"y has {len(labels)} labels for {len(X)} queries")
        elif self.model_ is not None:
            labels = np.asarray(self.model_.predict_proba(X)).argmax(axis=1)
        else:
            raise ValueError("label_distribution.fit needs the labels of X: pass y= or model=")
        classes, counts = np.unique(labels, return_counts=True)
        self.reference_ = {int(c): float(n) / len(labels) for c, n in zip(classes, counts, strict=True)}
        self.floor_ = 0.5 / len(labels)
        self.reset()
        self.threshold_ = self._calibrate(X, labels)
        return self

    def _new_state(self) -> _LabelState:
        return _LabelState(labels=deque(maxlen=int(self.window)))

    def _reset_state(self, state: _LabelState) -> None:
        state.labels.clear()
        state.counts.clear()

    def _score_one(self, state: _LabelState, x: np.ndarray, prediction: Any, time: datetime) -> tuple[float, dict]:
        c = as_label(prediction, model=getattr(self, "model_", None), x=x)
        if len(state.labels) == state.labels.maxlen:
            old = state.labels[0]
            state.counts[old] -= 1
            if not state.counts[old]:
                del state.counts[old]
        state.labels.append(c)
        state.counts[c] = state.counts.get(c, 0) + 1
        n = len(state.labels)
        if n < self.min_queries:
            return float("nan"), {}
        g = 0.0
        for label, o in state.counts.items():
            g += o * np.log(o / (n * self.reference_.get(label, self.floor_)))
        g *= 2.0
        top = max(state.counts, key=state.counts.get)
        return float(g), {"g_statistic": round(float(g), 3), "labels_in_window": n, "distinct_labels": len(state.counts),
                          "top_label": int(top), "top_label_share": round(state.counts[top] / n, 3)}
