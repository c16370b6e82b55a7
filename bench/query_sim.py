"""A simulated inference API and query traffic for the query-stream detectors (bench, tests, demo).

Pieces, each usable on its own:

* :func:`digits_task` - scikit-learn's bundled ``load_digits`` scaled to [0, 1], split into the
  victim's training set, a held-out pool replayed by benign users, and an attacker pool; plus the
  victim model (an MLP) trained on it. Nothing is downloaded.
* :class:`InferenceAPI` - the victim model behind an endpoint that records every query with its
  account, simulated time, input and predicted label (:class:`QueryRecord`).
  ``api.client(account, rate=...)`` gives a per-account client whose ``predict(x)`` advances that
  account's clock; ``api.art_classifier(account, ...)`` wraps the client in an ART
  ``BlackBoxClassifierNeuralNetwork`` so every query an ART attack sends goes through the API and is
  recorded.
* :func:`benign_traffic` - benign accounts replaying held-out digits at human-like rates.
* ``run_*`` drivers - real adversarial-robustness-toolbox 1.20 attacks (HopSkipJump, BoundaryAttack,
  SignOPT, GeoDA, ZOO; CopycatCNN, KnockoffNets, a Jacobian-augmentation loop) sending their queries
  through the API as one attacker account each.
* :func:`replay` - feed recorded queries (time order) into a stream detector; returns the events.

Example (what the demo does)::

    task = digits_task(seed=0)
    api = InferenceAPI(task.model)
    benign_traffic(api, task.X_benign, n_accounts=20, queries_per_account=150, seed=1)
    run_evasion(api, "hopskipjump", task.X_attack[:1], account="mallory", max_queries=300)
    events = replay(api.log, detector)          # detector fitted on task.X_train
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

IMAGE_SHAPE = (1, 8, 8)  # channels first, as ART's image attacks (GeoDA, ZOO) expect
N_CLASSES = 10
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)

EVASION_ATTACKS = ("hopskipjump", "boundary", "signopt", "geoda", "zoo")
EXTRACTION_ATTACKS = ("copycat-natural", "knockoff-natural", "knockoff-ood", "copycat-uniform", "copycat-rnd",
                      "jbda")
#: extraction attacks whose queries are synthetic (not natural images)
SYNTHETIC_EXTRACTION = ("copycat-uniform", "copycat-rnd", "jbda")


def _quiet_art() -> None:
    warnings.filterwarnings("ignore", message=".*PyTorch not found.*")
    for name in ("art", "art.attacks", "art.estimators"):
        logging.getLogger(name).setLevel(logging.ERROR)


# -- the task -----------------------------------------------------------------------------------


@dataclass
class DigitsTask:
    """Digits split three ways and the victim model trained on the first part."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_benign: np.ndarray  # held out: replayed by benign accounts
    y_benign: np.ndarray
    X_attack: np.ndarray  # held out: the attacker's own natural data and evasion targets
    y_attack: np.ndarray
    model: Any  # fitted scikit-learn MLPClassifier


def digits_task(seed: int = 0, *, hidden: tuple[int, ...] = (64,), max_iter: int = 300) -> DigitsTask:
    """Split ``load_digits`` (scaled to [0, 1]) 50/30/20 and train the victim MLP on the first half."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    X_tr, X_rest, y_tr, y_rest = train_test_split(X, y, train_size=0.5, random_state=seed, stratify=y)
    X_b, X_a, y_b, y_a = train_test_split(X_rest, y_rest, train_size=0.6, random_state=seed, stratify=y_rest)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MLPClassifier(hidden_layer_sizes=hidden, max_iter=max_iter, random_state=seed).fit(X_tr, y_tr)
    return DigitsTask(X_tr, y_tr, X_b, y_b, X_a, y_a, model)


# -- the API ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryRecord:
    """One recorded inference call."""

    account: str
    t: float  # seconds since :data:`EPOCH`
    x: np.ndarray  # flattened input
    label: int  # predicted class returned to the caller

    @property
    def time(self) -> datetime:
        return EPOCH + timedelta(seconds=self.t)


class AccountClient:
    """One account's view of the API: ``predict(x)`` returns probabilities and advances its clock.

    ``rate`` is queries per second; inter-arrival times are exponential (Poisson traffic) unless
    ``regular`` is set, then exactly ``1/rate`` apart.
    """

    def __init__(self, api: InferenceAPI, account: str, *, rate: float, start: float = 0.0,
                 regular: bool = False, seed: int = 0):
        if rate <= 0:
            raise ValueError("rate must be > 0 queries per second")
        self.api, self.account, self.rate, self.regular = api, account, float(rate), regular
        self.clock = float(start)
        self._rng = np.random.default_rng(seed)

    def _tick(self) -> float:
        gap = 1.0 / self.rate if self.regular else self._rng.exponential(1.0 / self.rate)
        self.clock += gap
        return self.clock

    def predict(self, x: Any, **_: Any) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        flat = x.reshape(len(x), -1)
        times = [self._tick() for _ in range(len(flat))]
        return self.api._answer(self.account, flat, times)

    @property
    def n_queries(self) -> int:
        return self.api.count(self.account)


class InferenceAPI:
    """The victim model behind a simulated endpoint that records every query per account."""

    def __init__(self, model: Any, *, input_shape: tuple[int, ...] = IMAGE_SHAPE, n_classes: int = N_CLASSES,
                 listeners: Sequence[Callable[[QueryRecord], None]] = ()):
        self.model = model
        self.input_shape = tuple(input_shape)
        self.n_classes = int(n_classes)
        self.n_features = int(np.prod(self.input_shape))
        self.log: list[QueryRecord] = []
        self.listeners = list(listeners)
        self._counts: dict[str, int] = {}

    def _answer(self, account: str, flat: np.ndarray, times: Sequence[float]) -> np.ndarray:
        if flat.shape[1] != self.n_features:
            raise ValueError(f"query has {flat.shape[1]} features; the API takes {self.n_features}")
        proba = np.asarray(self.model.predict_proba(flat), dtype=np.float64)
        labels = proba.argmax(axis=1)
        for row, t, lab in zip(flat, times, labels, strict=True):
            rec = QueryRecord(account, float(t), row.copy(), int(lab))
            self.log.append(rec)
            for fn in self.listeners:
                fn(rec)
        self._counts[account] = self._counts.get(account, 0) + len(flat)
        return proba.astype(np.float32)

    def count(self, account: str) -> int:
        return self._counts.get(account, 0)

    def accounts(self) -> list[str]:
        return list(self._counts)

    def queries(self, account: str | None = None) -> list[QueryRecord]:
        return [r for r in self.log if account is None or r.account == account]

    def client(self, account: str, *, rate: float, start: float = 0.0, regular: bool = False,
               seed: int = 0) -> AccountClient:
        return AccountClient(self, account, rate=rate, start=start, regular=regular, seed=seed)

    def art_classifier(self, account: str, *, rate: float = 2.0, start: float = 0.0, seed: int = 0,
                       flat: bool = False):
        """An ART black-box classifier whose every prediction is a recorded query of ``account``
        (image-shaped inputs, or flat vectors with ``flat=True``)."""
        _quiet_art()
        from art.estimators.classification import BlackBoxClassifier, BlackBoxClassifierNeuralNetwork

        client = self.client(account, rate=rate, start=start, regular=False, seed=seed)
        if flat:
            return BlackBoxClassifier(client.predict, input_shape=(self.n_features,), nb_classes=self.n_classes,
                                      clip_values=(0.0, 1.0))
        return BlackBoxClassifierNeuralNetwork(client.predict, input_shape=self.input_shape,
                                               nb_classes=self.n_classes, channels_first=True,
                                               clip_values=(0.0, 1.0))


# -- benign traffic ------------------------------------------------------------------------------


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


# -- attack drivers (real ART attacks) ---------------------------------------------------------


def _evasion_attack(name: str, clf: Any, max_queries: int):
    from art.attacks.evasion import BoundaryAttack, GeoDA, HopSkipJump, SignOPTAttack, ZooAttack

    if name == "hopskipjump":
        return HopSkipJump(clf, targeted=False, max_iter=10, max_eval=100, init_eval=10, verbose=False)
    if name == "boundary":
        return BoundaryAttack(clf, targeted=False, max_iter=max(10, max_queries // 10), num_trial=5,
                              sample_size=5, init_size=50, verbose=False)
    if name == "signopt":
        return SignOPTAttack(clf, targeted=False, max_iter=20, query_limit=max_queries, k=20, verbose=False)
    if name == "geoda":
        # GeoDA splits max_iter into per-iteration query counts and fails on small values; the
        # driver's budget guard stops it at max_queries anyway
        return GeoDA(clf, norm=2, sub_dim=4, max_iter=max(1000, max_queries), bin_search_tol=0.01, verbose=False)
    if name == "zoo":
        return ZooAttack(clf, confidence=0.0, targeted=False, learning_rate=0.1, max_iter=50,
                         binary_search_steps=1, initial_const=10.0, abort_early=False, use_resize=False,
                         use_importance=False, nb_parallel=8, batch_size=1, verbose=False)
    raise ValueError(f"unknown evasion attack {name!r}; known: {', '.join(EVASION_ATTACKS)}")


def _random_misclassified_start(clf: Any, x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
                                tries: int = 100) -> np.ndarray:
    """Uniform random images, queried through ``clf``, until one per input has another label
    (BoundaryAttack's own initialisation, with a seeded generator)."""
    out = np.empty_like(x)
    for i in range(len(x)):
        for _ in range(tries):
            cand = rng.uniform(0.0, 1.0, size=x[i:i + 1].shape).astype(x.dtype)
            if int(np.argmax(clf.predict(cand))) != int(y[i]):
                out[i] = cand[0]
                break
        else:
            raise RuntimeError("no misclassified random start found for BoundaryAttack")
    return out


class QueryBudgetExceeded(RuntimeError):
    """Raised inside an attack when its account reached the simulation's query budget."""


def run_evasion(api: InferenceAPI, attack: str, x: np.ndarray, *, account: str, max_queries: int = 500,
                rate: float = 2.0, start: float = 0.0, seed: int = 0) -> dict[str, Any]:
    """Run one ART black-box evasion attack on the images ``x`` through the API as ``account``.

    Stops the attack once the account has sent ``max_queries`` queries (the budget of the simulation).
    Returns a summary: queries sent, whether the final images are misclassified, and the L2 perturbation.
    """
    _quiet_art()
    np.random.seed(seed)  # ART's attacks draw from numpy's global generator
    clf = api.art_classifier(account, rate=rate, start=start, seed=seed)
    base = api.count(account)
    inner = clf._predict_fn

    def guarded(z: np.ndarray) -> np.ndarray:
        if api.count(account) - base >= max_queries:
            raise QueryBudgetExceeded(account)
        return inner(z)

    clf._predict_fn = guarded
    x = np.asarray(x, dtype=np.float32).reshape((-1, *api.input_shape))
    y_true = api.model.predict(x.reshape(len(x), -1))
    adv, finished = None, True
    shim = attack == "geoda" and "mat" not in np.__dict__
    if shim:  # ART 1.20's GeoDA calls np.mat, removed in NumPy 2; np.asmatrix is the same function
        np.mat = np.asmatrix
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kwargs = {}
            if attack == "boundary":  # ART draws its start from an unseeded RandomState: do the same draw, seeded
                kwargs["x_adv_init"] = _random_misclassified_start(clf, x, y_true, np.random.default_rng(seed))
            adv = _evasion_attack(attack, clf, max_queries).generate(x=x, **kwargs)
    except QueryBudgetExceeded:
        finished = False
    finally:
        if shim:
            del np.mat
    out: dict[str, Any] = {"attack": attack, "account": account, "queries": api.count(account) - base,
                           "finished": finished}
    if adv is not None:
        pred = api.model.predict(adv.reshape(len(adv), -1))
        out["success_rate"] = float(np.mean(pred != y_true))
        out["l2"] = float(np.mean(np.linalg.norm((adv - x).reshape(len(x), -1), axis=1)))
    return out


def _thief(seed: int):
    """The thieved model: a scikit-learn logistic regression wrapped for ART (has class gradients)."""
    from art.estimators.classification.scikitlearn import ScikitlearnLogisticRegression
    from sklearn.linear_model import LogisticRegression

    class ThiefLogisticRegression(LogisticRegression):
        """ART's extraction attacks pass neural-net fit options; a logistic regression ignores them."""

        def fit(self, X, y, sample_weight=None, **_nn_options):
            return super().fit(X, y, sample_weight=sample_weight)

    return ScikitlearnLogisticRegression(ThiefLogisticRegression(max_iter=500, random_state=seed),
                                         clip_values=(0.0, 1.0))


def ood_natural_pool(n: int, *, seed: int = 0) -> np.ndarray:
    """Natural images that are not digits: 8x8 grey patches of scikit-learn's bundled sample photos,
    inverted and scaled to [0, 1] (the "natural out-of-distribution" pool of Knockoff Nets)."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = [img.mean(axis=2) / 255.0 for img in load_sample_images().images]
    out = np.empty((n, 64))
    for i in range(n):
        p = photos[i % len(photos)]
        r, c = rng.integers(0, p.shape[0] - 32), rng.integers(0, p.shape[1] - 32)
        patch = p[r:r + 32, c:c + 32].reshape(8, 4, 8, 4).mean(axis=(1, 3))  # 32x32 -> 8x8
        out[i] = 1.0 - patch.ravel()
    return out


def run_extraction(api: InferenceAPI, attack: str, X_natural: np.ndarray, *, account: str, n_queries: int = 300,
                   rate: float = 2.0, start: float = 0.0, seed: int = 0, X_test: np.ndarray | None = None,
                   y_test: np.ndarray | None = None) -> dict[str, Any]:
    """Run one ART model-extraction attack through the API as ``account`` with ``n_queries`` queries.

    * ``copycat-natural``: CopycatCNN on the attacker's own natural digits (``X_natural``).
    * ``knockoff-natural``: KnockoffNets (random strategy) on the same natural digits.
    * ``knockoff-ood``: KnockoffNets on natural non-digit photos (:func:`ood_natural_pool`).
    * ``copycat-uniform``: CopycatCNN on uniform noise images (synthetic queries).
    * ``copycat-rnd``: a small natural seed set, then rounds of ``x + lambda * random sign``
      (Juuti et al.'s T-RND-style random synthetic queries), each round queried through CopycatCNN.
    * ``jbda``: Papernot et al.'s Jacobian-based dataset augmentation: the same rounds with
      ``x + lambda * sign(grad)`` of the thieved model (ART ``class_gradient``); with ``copycat-rnd``
      the synthetic-query setting PRADA targets.

    Returns the queries sent and the thieved model's agreement with the victim on ``X_test``.
    """
    _quiet_art()
    from art.attacks.extraction import CopycatCNN, KnockoffNets

    np.random.seed(seed)
    rng = np.random.default_rng(seed)
    clf = api.art_classifier(account, rate=rate, start=start, seed=seed, flat=True)
    base = api.count(account)
    thief = _thief(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if attack in ("copycat-natural", "copycat-uniform"):
            pool = (X_natural if attack == "copycat-natural" else rng.uniform(0, 1, (n_queries, api.n_features)))
            n = min(n_queries, len(pool))
            stolen = CopycatCNN(clf, nb_stolen=n, nb_epochs=1, batch_size_query=16).extract(
                pool.astype(np.float32), thieved_classifier=thief)
        elif attack in ("knockoff-natural", "knockoff-ood"):
            pool = X_natural if attack == "knockoff-natural" else ood_natural_pool(max(n_queries, 64), seed=seed)
            n = min(n_queries, len(pool))
            stolen = KnockoffNets(clf, nb_stolen=n, nb_epochs=1, batch_size_query=16, sampling_strategy="random",
                                  verbose=False).extract(pool.astype(np.float32), thieved_classifier=thief)
        elif attack in ("jbda", "copycat-rnd"):
            stolen = _augmentation_rounds(api, clf, thief, X_natural, n_queries=n_queries, rng=rng,
                                          jacobian=attack == "jbda")
        else:
            raise ValueError(f"unknown extraction attack {attack!r}; known: {', '.join(EXTRACTION_ATTACKS)}")
    out: dict[str, Any] = {"attack": attack, "account": account, "queries": api.count(account) - base}
    if X_test is not None:
        classes = np.asarray(stolen.model.classes_)  # the thief may have seen fewer than all classes
        mine = classes[np.asarray(stolen.predict(X_test.astype(np.float32))).argmax(axis=1)]
        out["agreement"] = float(np.mean(mine == api.model.predict(X_test)))
    return out


def _augmentation_rounds(api: InferenceAPI, clf: Any, thief: Any, X_natural: np.ndarray, *, n_queries: int,
                         rng: np.random.Generator, jacobian: bool, n_seed: int = 20, lam: float = 0.1) -> Any:
    from art.attacks.extraction import CopycatCNN

    seed_idx = rng.choice(len(X_natural), size=min(n_seed, len(X_natural), n_queries), replace=False)
    new = X_natural[seed_idx].astype(np.float32)
    X_all, y_all = np.empty((0, api.n_features), np.float32), np.empty((0, api.n_classes), np.float32)
    sent = 0
    while True:
        new = new[: n_queries - sent]
        if len(new) == 0:
            break
        before = len(api.log)
        # ART CopycatCNN sends the round's queries through the API and fits the thief on them
        CopycatCNN(clf, nb_stolen=len(new), nb_epochs=1, batch_size_query=16).extract(
            new, thieved_classifier=_thief(0))
        recs = api.log[before:]
        sent += len(recs)
        X_round = np.stack([r.x for r in recs]).astype(np.float32)
        y_round = np.eye(api.n_classes, dtype=np.float32)[[r.label for r in recs]]
        X_all, y_all = np.vstack([X_all, X_round]), np.vstack([y_all, y_round])
        if not jacobian or len(np.unique(y_all.argmax(1))) < 2:  # random step (or too few classes to fit)
            new = np.clip(X_round + lam * np.sign(rng.normal(size=X_round.shape)), 0, 1).astype(np.float32)
            continue
        thief.fit(X_all, y_all)
        labels = np.searchsorted(thief.model.classes_, y_round.argmax(1))  # ART wants the thief's class index
        grad = thief.class_gradient(X_round, label=labels).reshape(len(X_round), -1)
        new = np.clip(X_round + lam * np.sign(grad), 0.0, 1.0).astype(np.float32)
    if len(np.unique(y_all.argmax(1))) >= 2:
        thief.fit(X_all, y_all)
    return thief


# -- replay into detectors ------------------------------------------------------------------


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
    ordered = sorted(records, key=lambda r: r.t)
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
