"""Query-rate monitor: queries per account per time window against a robust benign baseline.

The seed's simple monitor (sections 2.1.1 and 2.2.3): black-box adversarial-example crafting and
model extraction both need many queries, so an account querying far above the usual rate is a
precursor of evasion or a symptom of extraction.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from .base import Need, Needs, StreamDetector, check_positive_int, register

_GOALS = {"evasion": "precursor", "extraction": "symptom"}


@dataclass
class _RateState:
    times: deque = field(default_factory=deque)
    last_alarm: float = float("-inf")
    seen: int = 0
    detections: int = 0


def _seconds(t: Any) -> float:
    if isinstance(t, datetime):
        return t.timestamp()
    return float(t)


@register("query_rate")
class QueryRate(StreamDetector):
    """Alarm when an account sends more than ``median + n_mads * 1.4826 * MAD`` queries within
    ``window`` seconds, the median and MAD taken over benign accounts' per-window counts (and never
    fewer than ``min_count``). One event per account at most every ``cooldown`` seconds.

    ``attack`` says what the alarms evidence: ``"evasion"`` (precursor: crafting adversarial
    examples) or ``"extraction"`` (symptom: model-extraction queries); both carry AML.T0034.000
    (excessive queries) and AML.T0040 (inference API access). ``fit(X, y)`` takes benign query
    times (``X``: seconds or datetimes) and their accounts (``y``); :meth:`fit_counts` takes
    per-account per-window counts directly.
    """

    method = "monitor-query-rate"
    needs = Needs(trusted_data=Need.REQUIRED, query_times=Need.REQUIRED)

    def __init__(self, window: float = 60.0, attack: str = "evasion", n_mads: float = 6.0, min_count: int = 10,
                 cooldown: float | None = None, history: int = 10_000, max_accounts: int = 10_000):
        self.window = window
        self.attack = attack
        self.n_mads = n_mads
        self.min_count = min_count
        self.cooldown = cooldown
        self.history = history
        self.max_accounts = max_accounts

    @property
    def stage(self) -> str:  # type: ignore[override]
        return _GOALS.get(self.attack, "precursor")

    def _check_params(self) -> None:
        if self.attack not in _GOALS:
            raise ValueError(f"attack must be one of {sorted(_GOALS)}; got {self.attack!r}")
        if not float(self.window) > 0:
            raise ValueError(f"window must be > 0 seconds; got {self.window}")
        check_positive_int("min_count", self.min_count)
        check_positive_int("history", self.history)

    def fit(self, X: Any, y: Any = None, *, model: Any = None) -> QueryRate:
        """Baseline from benign query times ``X`` (seconds or datetimes) of accounts ``y``."""
        self._check_params()
        times = np.asarray([_seconds(t) for t in np.asarray(X, dtype=object).reshape(-1)], dtype=np.float64)
        if times.size == 0 or not np.all(np.isfinite(times)):
            raise ValueError("X must be a non-empty list of finite query times")
        accounts = np.zeros(len(times), dtype=int) if y is None else np.asarray(y).reshape(-1)
        if len(accounts) != len(times):
            raise ValueError(f"y has {len(accounts)} accounts for {len(times)} query times")
        counts = []
        w = float(self.window)
        for acc in np.unique(accounts):
            t = np.sort(times[accounts == acc])
            # queries in the window ending at each query (what observe() counts), per account
            counts.append(np.arange(1, len(t) + 1) - np.searchsorted(t, t - w, side="right"))
        return self.fit_counts(np.concatenate(counts))

    def fit_counts(self, counts: Any) -> QueryRate:
        """Baseline from benign per-window query counts."""
        self._check_params()
        c = np.asarray(counts, dtype=np.float64).reshape(-1)
        if c.size == 0 or not np.all(np.isfinite(c)) or np.any(c < 0):
            raise ValueError("counts must be a non-empty list of finite non-negative numbers")
        self.baseline_median_ = float(np.median(c))
        self.baseline_mad_ = float(np.median(np.abs(c - self.baseline_median_)))
        spread = max(1.4826 * self.baseline_mad_, 1.0)
        self.threshold_ = float(max(self.min_count, self.baseline_median_ + float(self.n_mads) * spread))
        self.reset()
        return self

    def _new_state(self) -> _RateState:
        return _RateState(times=deque(maxlen=int(self.history)))

    def _score_one(self, state: _RateState, x: np.ndarray, prediction: Any, time: datetime) -> tuple[float, dict]:
        t = _seconds(time)
        q = state.times
        q.append(t)
        while q and q[0] <= t - float(self.window):
            q.popleft()
        n = len(q)
        cooldown = float(self.window if self.cooldown is None else self.cooldown)
        if n > self.threshold_ and t - state.last_alarm < cooldown:
            return float("nan"), {}  # already reported within the cooldown
        if n > self.threshold_:
            state.last_alarm = t
        return float(n), {"queries_in_window": n, "window_seconds": float(self.window),
                          "baseline_median": self.baseline_median_, "baseline_mad": self.baseline_mad_}
