"""The black-box inference API: models behind endpoints, every call recorded with its account, time,
model and source, per-account clients whose clock advances with each query, ART wrappers so a real
attack's every query goes through the API, and a query budget that stops an attack."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from .art_setup import quiet_art
from .digits import N_CLASSES

#: simulated time zero of clients started at a number of seconds (benches and tests)
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
ART_IMAGE_SHAPE = (1, 8, 8)  # digits channels first, as ART's image attacks (GeoDA, ZOO) expect
DEFAULT_MODEL = "victim"


@dataclass(frozen=True)
class QueryRecord:
    """One recorded inference call."""

    account: str
    time: datetime
    x: np.ndarray  # flattened input
    label: int  # predicted class returned to the caller
    model: str = DEFAULT_MODEL
    source_ip: str | None = None
    campaign: str | None = None  # ground truth, never shown to detectors
    kind: str = "benign"  # benign | probe | extraction | adversarial | trigger

    @property
    def t(self) -> float:
        """Seconds since :data:`EPOCH`."""
        return (self.time - EPOCH).total_seconds()


def _as_time(start: datetime | float) -> datetime:
    return start if isinstance(start, datetime) else EPOCH + timedelta(seconds=float(start))


class AccountClient:
    """One account's view of the API: ``predict(x)`` returns probabilities and advances its clock.

    ``rate`` is queries per second; inter-arrival times are exponential (Poisson traffic) drawn from
    ``rng`` (or a generator seeded with ``seed``) unless ``regular`` is set, then exactly ``1/rate``.
    """

    def __init__(self, api: InferenceAPI, account: str, *, rate: float, start: datetime | float = 0.0,
                 regular: bool = False, seed: int = 0, rng: np.random.Generator | None = None,
                 model: str | None = None, source_ip: str | None = None, campaign: str | None = None,
                 kind: str = "benign"):
        if rate <= 0:
            raise ValueError("rate must be > 0 queries per second")
        self.api, self.account, self.rate, self.regular = api, account, float(rate), regular
        self.clock = _as_time(start)
        self._rng = rng if rng is not None else np.random.default_rng(seed)
        self.model, self.source_ip, self.campaign, self.kind = model, source_ip, campaign, kind

    def _tick(self) -> datetime:
        gap = 1.0 / self.rate if self.regular else self._rng.exponential(1.0 / self.rate)
        self.clock += timedelta(seconds=float(gap))
        return self.clock

    def predict(self, x: Any, **_: Any) -> np.ndarray:
        flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        times = [self._tick() for _ in range(len(flat))]
        return self.api.query(self.account, flat, times, model=self.model, source_ip=self.source_ip,
                              campaign=self.campaign, kind=self.kind).astype(np.float32)

    @property
    def n_queries(self) -> int:
        return self.api.count(self.account)


class QueryBudgetExceeded(RuntimeError):
    """Raised inside an attack when its account reached the simulation's query budget."""


class InferenceAPI:
    """Models (one, or a mapping name -> model) behind a simulated endpoint that records every query."""

    def __init__(self, models: Any, *, input_shape: tuple[int, ...] = ART_IMAGE_SHAPE, n_classes: int = N_CLASSES,
                 listeners: Sequence[Callable[[QueryRecord], None]] = ()):
        self.models: dict[str, Any] = dict(models) if isinstance(models, Mapping) else {DEFAULT_MODEL: models}
        self.input_shape = tuple(input_shape)
        self.n_classes = int(n_classes)
        self.n_features = int(np.prod(self.input_shape))
        self.log: list[QueryRecord] = []
        self.listeners = list(listeners)
        self._counts: dict[str, int] = {}

    @property
    def model(self) -> Any:
        """The first (for a one-model API, the only) model."""
        return next(iter(self.models.values()))

    def query(self, account: str, X: np.ndarray, times: Sequence[datetime], *, model: str | None = None,
              source_ip: str | None = None, campaign: str | None = None, kind: str = "benign") -> np.ndarray:
        """Answer ``X`` (one row per query, sent at ``times``) with ``model``'s probabilities; record each."""
        flat = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
        if flat.shape[1] != self.n_features:
            raise ValueError(f"query has {flat.shape[1]} features; the API takes {self.n_features}")
        name = model or next(iter(self.models))
        proba = np.asarray(self.models[name].predict_proba(flat), dtype=np.float64)
        for row, t, p in zip(flat, times, proba, strict=True):
            rec = QueryRecord(account, t, row.copy(), int(p.argmax()), name, source_ip, campaign, kind)
            self.log.append(rec)
            for fn in self.listeners:
                fn(rec)
        self._counts[account] = self._counts.get(account, 0) + len(flat)
        return proba

    def count(self, account: str) -> int:
        return self._counts.get(account, 0)

    def accounts(self) -> list[str]:
        return list(self._counts)

    def queries(self, account: str | None = None) -> list[QueryRecord]:
        return [r for r in self.log if account is None or r.account == account]

    def client(self, account: str, *, rate: float, start: datetime | float = 0.0, regular: bool = False,
               seed: int = 0, **record: Any) -> AccountClient:
        """A client of ``account``; ``record`` (model, source_ip, campaign, kind, rng) goes to each query."""
        return AccountClient(self, account, rate=rate, start=start, regular=regular, seed=seed, **record)

    def art_classifier(self, account: str, *, rate: float = 2.0, start: datetime | float = 0.0, seed: int = 0,
                       flat: bool = False, **record: Any):
        """An ART black-box classifier whose every prediction is a recorded query of ``account``
        (image-shaped inputs, or flat vectors with ``flat=True``). Its client is ``.client``."""
        quiet_art()
        from art.estimators.classification import BlackBoxClassifier, BlackBoxClassifierNeuralNetwork

        client = self.client(account, rate=rate, start=start, regular=False, seed=seed, **record)
        if flat:
            clf = BlackBoxClassifier(client.predict, input_shape=(self.n_features,), nb_classes=self.n_classes,
                                     clip_values=(0.0, 1.0))
        else:
            clf = BlackBoxClassifierNeuralNetwork(client.predict, input_shape=self.input_shape,
                                                  nb_classes=self.n_classes, channels_first=True,
                                                  clip_values=(0.0, 1.0))
        clf.client = client
        return clf

    def limit(self, clf: Any, account: str, max_queries: int) -> None:
        """Budget guard: ``clf`` (from :meth:`art_classifier`) raises :class:`QueryBudgetExceeded` once
        ``account`` has sent ``max_queries`` more queries."""
        base = self.count(account)
        inner = clf._predict_fn

        def guarded(z: np.ndarray, **kw: Any) -> np.ndarray:
            if self.count(account) - base >= max_queries:
                raise QueryBudgetExceeded(account)
            return inner(z, **kw)

        clf._predict_fn = guarded


def spaced_times(start: datetime, n: int, rate: float, rng: np.random.Generator) -> list[datetime]:
    """``n`` Poisson arrival times after ``start`` at ``rate`` per second."""
    gaps = rng.exponential(1.0 / rate, size=n)
    return [start + timedelta(seconds=float(s)) for s in np.cumsum(gaps)]
