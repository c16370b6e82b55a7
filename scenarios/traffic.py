"""Benign traffic through the inference API, and replaying recorded queries into a stream detector.

Two benign patterns: :func:`benign_traffic` (accounts querying steadily at human rates, for benches
and tests) and :func:`benign_sessions` (a day of sessions per account, for the demo day)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from .api import InferenceAPI, QueryRecord, spaced_times


def benign_traffic(api: InferenceAPI, X_pool: np.ndarray, *, n_accounts: int, queries_per_account: int | tuple[int, int],
                   seed: int = 0, rate_range: tuple[float, float] = (1 / 60, 1 / 5), prefix: str = "user",
                   start: float = 0.0) -> list[str]:
    """Benign accounts each replaying held-out digits (drawn without replacement per account) at a
    human-like rate (uniform in ``rate_range`` queries per second, Poisson arrivals)."""
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n_accounts):
        n = queries_per_account if isinstance(queries_per_account, int) else int(rng.integers(*queries_per_account))
        n = min(n, len(X_pool))
        idx = rng.choice(len(X_pool), size=n, replace=False)
        name = f"{prefix}-{i:03d}"
        client = api.client(name, rate=float(rng.uniform(*rate_range)), start=start + float(rng.uniform(0, 60)),
                            seed=int(rng.integers(2**31)))
        for j in idx:  # one request per query, as a person using an app would
            client.predict(X_pool[j:j + 1].reshape((1, *api.input_shape)))
        names.append(name)
    return names


def benign_sessions(api: InferenceAPI, X_pool: np.ndarray, *, n_accounts: int, rng: np.random.Generator,
                    day: datetime, model_of: Callable[[int], str], send: bool = True) -> list[tuple[str, datetime]]:
    """A day of benign accounts: 1-3 sessions each at human pace (one query every 5-60 s), replaying
    their own held-out digits; account ``a`` uses the model ``model_of(a)``. Returns (account, time)
    pairs; with ``send=False`` nothing is sent (a past day, for baselines)."""
    out = []
    for a in range(n_accounts):
        account = f"user-{a:03d}"
        ip = f"10.{20 + a // 200}.{a % 200}.{10 + a % 37}"
        mine = rng.permutation(len(X_pool))  # a user's images are their own, each sent once
        used = 0
        for _ in range(int(rng.integers(1, 4))):  # sessions
            start = day + timedelta(seconds=float(rng.uniform(0, 23 * 3600)))
            n = int(rng.integers(15, 60))
            rate = 1.0 / float(rng.uniform(5, 60))
            times = spaced_times(start, n, rate, rng)
            idx = mine[np.arange(used, used + n) % len(mine)]
            used += n
            if send:
                api.query(account, X_pool[idx], times, model=model_of(a), source_ip=ip)
            out.extend((account, t) for t in times)
    return out


@dataclass
class ReplayResult:
    events: list[Any] = field(default_factory=list)
    first_alarm: dict[str, int] = field(default_factory=dict)  # account -> 1-based query index of first alarm
    n_queries: dict[str, int] = field(default_factory=dict)
    alarmed_queries: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def replay(records: Iterable[QueryRecord], detector: Any, *, with_prediction: bool = True) -> ReplayResult:
    """Feed recorded queries in time order into ``detector.observe``; collect events and timing."""
    import time as _time

    out = ReplayResult()
    ordered = sorted(records, key=lambda r: r.time)
    t0 = _time.perf_counter()
    for rec in ordered:
        n = out.n_queries.get(rec.account, 0) + 1
        out.n_queries[rec.account] = n
        ev = detector.observe(rec.x, account=rec.account, time=rec.time,
                              prediction=rec.label if with_prediction else None)
        if ev:
            out.events.extend(ev)
            out.first_alarm.setdefault(rec.account, n)
            out.alarmed_queries[rec.account] = out.alarmed_queries.get(rec.account, 0) + 1
    out.seconds = _time.perf_counter() - t0
    return out
