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

from ._stream_parts import VectorBuffer, as_label
from .base import Need, Needs, StreamDetector, check_array, check_positive_int, register
from .models import as_model

#: scipy's array-API / NaN-policy wrapper costs ~100 µs per call; the statistic underneath is the
#: same (our D is finite and 1-D), so call it directly when scipy exposes it
_shapiro = getattr(shapiro, "__wrapped__", shapiro)


class _Ring:
    """The last ``capacity`` numbers (order not kept: W and mean/std do not need it), grown by
    doubling, with running sum and sum of squares."""

    __slots__ = ("capacity", "values", "size", "head", "total", "total_sq")

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self.values = np.empty(min(8, self.capacity))
        self.size = self.head = 0
        self.total = self.total_sq = 0.0

    def __getstate__(self):
        return (self.capacity, self.values[: self.size].copy(), self.size, self.head, self.total, self.total_sq)

    def __setstate__(self, st):
        self.capacity, vals, self.size, self.head, self.total, self.total_sq = st
        self.values = np.empty(max(8, len(vals)) if len(vals) < self.capacity else self.capacity)
        self.values[: self.size] = vals

    def append(self, v: float) -> None:
        if self.size < self.capacity:
            if self.size == len(self.values):
                self.values = np.resize(self.values, min(self.capacity, 2 * len(self.values)))
            i = self.size
            self.size += 1
        else:
            i = self.head
            self.head = (self.head + 1) % self.capacity
            old = float(self.values[i])
            self.total -= old
            self.total_sq -= old * old
        self.values[i] = v
        self.total += v
        self.total_sq += v * v

    def view(self) -> np.ndarray:
        return self.values[: self.size]

    def mean_minus_std(self) -> float:
        m = self.total / self.size
        return m - float(np.sqrt(max(self.total_sq / self.size - m * m, 0.0)))


@dataclass
class _ClassGrowth:
    buffer: VectorBuffer
    added: _Ring  # d_min of the queries added to G_c
    threshold: float = 0.0  # T_c


@dataclass
class _PradaState:
    distances: _Ring  # D
    classes: dict[int, _ClassGrowth] = field(default_factory=dict)
    seen: int = 0
    detections: int = 0


@register("prada")
class PRADA(StreamDetector):
    """Per account, the minimum L2 distance of each query to the account's earlier queries of the
    same predicted class; alarm when the Shapiro-Wilk statistic W of those distances drops below δ.

    As in the paper: a growing set G_c per predicted class; a query joins G_c when its minimum
    distance to G_c exceeds T_c = max(T_c, mean - std of the distances that admitted earlier members);
    every minimum distance joins D; W(D) is tested at every query once D holds ``min_queries``
    distances (natural benign streams give near-normal D; synthetic queries crafted by small steps
    from seeds do not). δ (``delta``) is calibrated on simulated benign accounts so about ``fpr`` of
    them would ever alarm unless it is given (the paper tunes δ per dataset the same way: the
    largest value without false positives on benign data). Deviations: D keeps the most recent
    ``history`` distances (the paper keeps all); after an alarm the account's state is cleared so a
    long attack produces periodic events instead of one per query.
    """

    method = "juuti2019-prada"
    needs = Needs(trusted_data=Need.REQUIRED, predictions=Need.REQUIRED, model=Need.OPTIONAL,
                  probabilities=Need.OPTIONAL)
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
        return _PradaState(distances=_Ring(self.history))

    def _reset_state(self, state: _PradaState) -> None:
        state.classes.clear()
        state.distances = _Ring(self.history)

    def _score_one(self, state: _PradaState, x: np.ndarray, prediction: Any, time: datetime) -> tuple[float, dict]:
        c = as_label(prediction, model=getattr(self, "model_", None), x=x)
        g = state.classes.get(c)
        if g is None:  # the first query of a class starts G_c
            g = state.classes[c] = _ClassGrowth(VectorBuffer(len(x), self.history), _Ring(self.history))
            g.buffer.append(x)
        else:
            d_min = float(g.buffer.distances(x).min())
            state.distances.append(d_min)
            if d_min > g.threshold:
                g.buffer.append(x)
                g.added.append(d_min)
                g.threshold = max(g.threshold, g.added.mean_minus_std())
        n = state.distances.size
        if n < self.min_queries:
            return float("nan"), {"distances": n}
        D = state.distances.view()
        if np.ptp(D) == 0:  # identical distances (e.g. repeated queries): as non-normal as it gets
            w = 0.0
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                w = float(_shapiro(D)[0])
        return w, {"shapiro_w": round(w, 5), "distances": n, "classes": len(state.classes),
                   "mean_min_distance": round(float(D.mean()), 5)}
