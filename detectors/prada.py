"""PRADA: detection of model-extraction query streams (Juuti et al. 2019).

M. Juuti, S. Szyller, S. Marchal, N. Asokan, "PRADA: Protecting against DNN Model Stealing
Attacks", IEEE EuroS&P 2019 (seed ref. 36).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from scipy.stats import shapiro

from ._stream_common import QueryStreamDetector, VectorBuffer, as_label, check_positive_int
from .base import check_array, register
from .models import as_model


@dataclass
class _ClassGrowth:
    buffer: VectorBuffer
    threshold: float = 0.0  # T_c
    added: list[float] = field(default_factory=list)  # d_min of the queries added to G_c


@dataclass
class _PradaState:
    classes: dict[int, _ClassGrowth] = field(default_factory=dict)
    distances: list[float] = field(default_factory=list)  # D
    seen: int = 0
    detections: int = 0


@register("prada")
class PRADA(QueryStreamDetector):
    """Per account, the minimum L2 distance of each query to the account's earlier queries of the
    same predicted class; alarm when the Shapiro-Wilk statistic W of those distances drops below δ.

    As in the paper: a growing set G_c per predicted class; a query joins G_c when its minimum
    distance to G_c exceeds T_c = max(T_c, mean - std of the distances that admitted earlier members);
    every minimum distance joins D; W(D) is tested once D holds ``min_queries`` distances (the paper
    tests from 100 queries on; natural benign streams give near-normal D, synthetic queries crafted
    by small steps from seeds do not). δ (``delta``) is calibrated on simulated benign accounts so
    about ``fpr`` of them would ever alarm unless it is given. Deviations: D keeps the most recent
    ``history`` distances (the paper keeps all); after an alarm the account's state is cleared so a
    long attack produces periodic events instead of one per query.
    """

    method = "juuti2019-prada"
    higher_is_suspicious = False

    def __init__(self, delta: float | None = None, min_queries: int = 50, history: int = 10_000,
                 fpr: float = 0.01, calibration_streams: int = 40, calibration_length: int = 300,
                 max_accounts: int = 10_000, random_state: int = 0):
        self.delta = delta
        self.min_queries = min_queries
        self.history = history
        self.fpr = fpr
        self.calibration_streams = calibration_streams
        self.calibration_length = calibration_length
        self.max_accounts = max_accounts
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None, *, model: Any = None) -> PRADA:
        """Calibrate δ on benign ``X``. Predicted classes come from ``model`` (or ``y``, the labels the
        protected model returned for ``X``); at run time from ``observe(..., prediction=)``."""
        X = check_array(X)
        check_positive_int("min_queries", self.min_queries, minimum=3)
        check_positive_int("history", self.history, minimum=self.min_queries)
        self.n_features_in_ = X.shape[1]
        self.model_ = as_model(model)
        if y is not None:
            labels = np.asarray(y).reshape(-1)
            if len(labels) != len(X):
                raise ValueError(f"y has {len(labels)} labels for {len(X)} queries")
        elif self.model_ is not None:
            labels = np.asarray(self.model_.predict_proba(X)).argmax(axis=1)
        else:
            raise ValueError("prada.fit needs the predicted classes of X: pass y= or model=")
        self.reset()
        if self.delta is not None:
            if not 0 < float(self.delta) <= 1:
                raise ValueError(f"delta must be in (0, 1]; got {self.delta}")
            self.threshold_ = float(self.delta)
        else:
            self.threshold_ = self._calibrate(X, labels.astype(int))
        return self

    def _new_state(self) -> _PradaState:
        return _PradaState()

    def _reset_state(self, state: _PradaState) -> None:
        state.classes.clear()
        state.distances.clear()

    def _score_one(self, state: _PradaState, x: np.ndarray, prediction: Any, time: datetime) -> tuple[float, dict]:
        c = as_label(prediction, model=getattr(self, "model_", None), x=x)
        g = state.classes.get(c)
        if g is None:  # the first query of a class starts G_c
            g = state.classes[c] = _ClassGrowth(VectorBuffer(len(x), self.history))
            g.buffer.append(x)
        else:
            d_min = float(g.buffer.distances(x).min())
            state.distances.append(d_min)
            if len(state.distances) > self.history:
                del state.distances[0]
            if d_min > g.threshold:
                g.buffer.append(x)
                g.added.append(d_min)
                if len(g.added) > self.history:
                    del g.added[0]
                a = np.asarray(g.added)
                g.threshold = max(g.threshold, float(a.mean() - a.std()))
        n = len(state.distances)
        if n < self.min_queries:
            return float("nan"), {"distances": n}
        D = np.asarray(state.distances)
        if np.ptp(D) == 0:  # identical distances (e.g. repeated queries): as non-normal as it gets
            w = 0.0
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                w = float(shapiro(D).statistic)
        return w, {"shapiro_w": round(w, 5), "distances": n, "classes": len(state.classes),
                   "mean_min_distance": round(float(D.mean()), 5)}
