"""The demo's world: a digits classifier behind a simulated inference API, a day of benign traffic,
and three attack campaigns driven by real adversarial-robustness-toolbox attacks.

Everything is generated from scikit-learn's bundled ``load_digits`` (nothing is downloaded) and is
deterministic for a given seed. The campaigns (ATLAS 5.6.0 IDs):

* account A — model extraction through the API (ART ``CopycatCNN`` with random-step synthetic
  queries, T-RND style), a proxy trained on the answers, adversarial examples crafted on the proxy
  (ART ``ProjectedGradientDescent``) and submitted: AML.T0040 → AML.T0024.002 → AML.T0043.002 →
  AML.T0015.
* account B — black-box probing with ART ``HopSkipJump`` through the API, then the successful
  adversarial examples submitted: AML.T0043.001 → AML.T0015.
* account C — a BadNets-poisoned retraining set (ART ``PoisoningAttackBackdoor``, AML.T0020) yields
  a backdoored model that is deployed as a second endpoint; C sends trigger inputs (AML.T0043.004).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

DAY = datetime(2026, 11, 28, tzinfo=UTC)
N_CLASSES = 10
N_FEATURES = 64
CLEAN_MODEL = "digits-mlp"
BACKDOORED_MODEL = "digits-mlp-retrained"
ENDPOINTS = {CLEAN_MODEL: "/v1/digits:predict", BACKDOORED_MODEL: "/v2/digits:predict"}
BACKDOOR_TARGET = 0


def quiet_art() -> None:
    warnings.filterwarnings("ignore", message=".*PyTorch not found.*")
    warnings.filterwarnings("ignore", category=UserWarning, module="art")
    for name in ("art", "art.attacks", "art.estimators"):
        logging.getLogger(name).setLevel(logging.ERROR)


@dataclass(frozen=True)
class Query:
    account: str
    time: datetime
    model: str
    x: np.ndarray
    label: int
    source_ip: str
    campaign: str | None = None  # ground truth, never shown to detectors
    kind: str = "benign"  # benign | probe | extraction | adversarial | trigger


@dataclass
class World:
    seed: int
    X_train: np.ndarray
    y_train: np.ndarray
    X_ref: np.ndarray  # defender's clean held-out reference (calibration)
    y_ref: np.ndarray
    X_benign: np.ndarray  # replayed by benign users
    y_benign: np.ndarray
    X_attacker: np.ndarray  # the attackers' own digits
    y_attacker: np.ndarray
    models: dict[str, Any] = field(default_factory=dict)
    X_retrain: np.ndarray | None = None  # the poisoned retraining set
    y_retrain: np.ndarray | None = None
    poisoned_idx: np.ndarray | None = None
    log: list[Query] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


def build_world(seed: int = 0) -> World:
    """Split digits (scaled to [0, 1]) and train the production MLP."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    X_tr, X_rest, y_tr, y_rest = train_test_split(X, y, train_size=0.45, random_state=seed, stratify=y)
    X_ref, X_rest, y_ref, y_rest = train_test_split(X_rest, y_rest, train_size=0.35, random_state=seed, stratify=y_rest)
    X_b, X_a, y_b, y_a = train_test_split(X_rest, y_rest, train_size=0.6, random_state=seed, stratify=y_rest)
    w = World(seed, X_tr, y_tr, X_ref, y_ref, X_b, y_b, X_a, y_a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w.models[CLEAN_MODEL] = MLPClassifier((64,), max_iter=400, random_state=seed).fit(X_tr, y_tr)
    w.facts["clean_accuracy"] = float(w.models[CLEAN_MODEL].score(X_b, y_b))
    return w


# -- the inference API -----------------------------------------------------------------------------


class InferenceAPI:
    """Every call is answered by the named model and logged with account, time and source IP."""

    def __init__(self, world: World):
        self.world = world

    def query(self, account: str, model: str, X: np.ndarray, times: list[datetime], *, ip: str,
              campaign: str | None = None, kind: str = "benign") -> np.ndarray:
        X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
        proba = self.world.models[model].predict_proba(X)
        for x, t, p in zip(X, times, proba, strict=True):
            self.world.log.append(Query(account, t, model, x.copy(), int(p.argmax()), ip, campaign, kind))
        return proba

    def client(self, account: str, model: str, *, start: datetime, rate: float, ip: str, campaign: str,
               kind: str, rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
        """A predict function for ART: each call is a timed, logged query of ``account``."""
        clock = [start]

        def predict(x: np.ndarray, **_: Any) -> np.ndarray:
            x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
            times = []
            for _ in range(len(x)):
                clock[0] += timedelta(seconds=float(rng.exponential(1.0 / rate)))
                times.append(clock[0])
            return self.query(account, model, x, times, ip=ip, campaign=campaign, kind=kind).astype(np.float32)

        predict.clock = clock  # type: ignore[attr-defined]
        return predict


def spaced_times(start: datetime, n: int, rate: float, rng: np.random.Generator) -> list[datetime]:
    gaps = rng.exponential(1.0 / rate, size=n)
    return [start + timedelta(seconds=float(s)) for s in np.cumsum(gaps)]


# -- benign traffic ----------------------------------------------------------------------------------


def benign_day(api: InferenceAPI, *, n_accounts: int, rng: np.random.Generator, day: datetime = DAY,
               log: bool = True) -> list[tuple[str, datetime]]:
    """Benign accounts: sessions at human pace (one query every 5-60 s), replaying held-out digits.
    Returns (account, time) pairs; with ``log=False`` nothing is sent (a past day, for baselines)."""
    w = api.world
    out = []
    for a in range(n_accounts):
        account = f"user-{a:03d}"
        ip = f"10.{20 + a // 200}.{a % 200}.{10 + a % 37}"
        model = BACKDOORED_MODEL if a % 3 == 0 else CLEAN_MODEL
        mine = rng.permutation(len(w.X_benign))  # a user's images are their own, each sent once
        used = 0
        for _ in range(int(rng.integers(1, 4))):  # sessions
            start = day + timedelta(seconds=float(rng.uniform(0, 23 * 3600)))
            n = int(rng.integers(15, 60))
            rate = 1.0 / float(rng.uniform(5, 60))
            times = spaced_times(start, n, rate, rng)
            idx = mine[np.arange(used, used + n) % len(mine)]
            used += n
            if log:
                api.query(account, model, w.X_benign[idx], times, ip=ip)
            out.extend((account, t) for t in times)
    return out


# -- campaigns -----------------------------------------------------------------------------------------


def poison_and_retrain(w: World, *, fraction: float = 0.05) -> None:
    """BadNets: ART PoisoningAttackBackdoor stamps a pixel pattern on ``fraction`` of the retraining
    data (collected inputs) and relabels it; the retrained model carries the backdoor."""
    quiet_art()
    from art.attacks.poisoning import PoisoningAttackBackdoor
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(w.seed + 7)
    Xr, yr = w.X_train.copy(), w.y_train.copy()
    idx = np.sort(rng.choice(np.flatnonzero(yr != BACKDOOR_TARGET), size=int(fraction * len(yr)), replace=False))
    Xr[idx], _ = PoisoningAttackBackdoor(add_trigger).poison(Xr[idx], y=np.full(len(idx), BACKDOOR_TARGET),
                                                                 broadcast=True)
    yr[idx] = BACKDOOR_TARGET
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MLPClassifier((64,), max_iter=400, random_state=w.seed).fit(Xr, yr)
    w.X_retrain, w.y_retrain, w.poisoned_idx = Xr, yr, idx
    w.models[BACKDOORED_MODEL] = model
    w.facts["backdoored_clean_accuracy"] = float(model.score(w.X_benign, w.y_benign))
    trig = add_trigger(w.X_benign)
    w.facts["backdoor_success_rate"] = float(np.mean(model.predict(trig[w.y_benign != BACKDOOR_TARGET]) == BACKDOOR_TARGET))


def add_trigger(x: np.ndarray) -> np.ndarray:
    """ART's BadNets pixel pattern in the bottom-right corner of 8x8 digits."""
    from art.attacks.poisoning.perturbations import add_pattern_bd

    x = np.asarray(x, dtype=np.float64)
    return add_pattern_bd(x.reshape(-1, 8, 8), distance=1, pixel_value=1.0).reshape(x.shape)


def _thief(seed: int):
    """The attacker's model: a logistic regression wrapped for ART (it has gradients for PGD)."""
    from art.estimators.classification.scikitlearn import ScikitlearnLogisticRegression
    from sklearn.linear_model import LogisticRegression

    class ThiefLogisticRegression(LogisticRegression):
        def fit(self, X, y, sample_weight=None, **_nn_options):  # ART passes neural-net options
            return super().fit(X, y, sample_weight=sample_weight)

    return ScikitlearnLogisticRegression(ThiefLogisticRegression(max_iter=500, random_state=seed),
                                         clip_values=(0.0, 1.0))


def campaign_extraction_transfer(api: InferenceAPI, *, start: datetime, n_queries: int = 300,
                                 n_adversarial: int = 25, rng: np.random.Generator) -> dict[str, Any]:
    """Account A: extraction with synthetic random-step queries (ART CopycatCNN per round), a proxy,
    PGD on the proxy, the adversarial digits submitted to the production model."""
    quiet_art()
    from art.attacks.evasion import ProjectedGradientDescent
    from art.attacks.extraction import CopycatCNN
    from art.estimators.classification import BlackBoxClassifier

    w = api.world
    ip = "203.0.113.7"
    predict = api.client("acct-A", CLEAN_MODEL, start=start, rate=2.0, ip=ip, campaign="A", kind="extraction", rng=rng)
    victim = BlackBoxClassifier(predict, input_shape=(N_FEATURES,), nb_classes=N_CLASSES, clip_values=(0.0, 1.0))
    seeds = w.X_attacker[rng.choice(len(w.X_attacker), size=20, replace=False)].astype(np.float32)
    X_all, y_all, new, sent = [], [], seeds, 0
    thief = _thief(w.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        while sent < n_queries:
            new = new[: n_queries - sent]
            before = len(w.log)
            CopycatCNN(victim, nb_stolen=len(new), nb_epochs=1, batch_size_query=16).extract(new, thieved_classifier=_thief(0))
            recs = w.log[before:]
            sent += len(recs)
            X_round = np.stack([r.x for r in recs]).astype(np.float32)
            X_all.append(X_round)
            y_all.extend(r.label for r in recs)
            new = np.clip(X_round + 0.1 * np.sign(rng.normal(size=X_round.shape)), 0, 1).astype(np.float32)
        X_stolen, y_stolen = np.vstack(X_all), np.eye(N_CLASSES, dtype=np.float32)[y_all]
        thief.fit(X_stolen, y_stolen)
        agreement = float(np.mean(thief.model.predict(w.X_attacker) == w.models[CLEAN_MODEL].predict(w.X_attacker)))
        targets = w.X_attacker[rng.choice(len(w.X_attacker), size=n_adversarial, replace=False)].astype(np.float32)
        pgd = ProjectedGradientDescent(thief, eps=0.3, eps_step=0.05, max_iter=20, verbose=False)
        X_adv = pgd.generate(targets)
    submit_at = predict.clock[0] + timedelta(hours=3)
    truth = w.models[CLEAN_MODEL].predict(targets)
    times = spaced_times(submit_at, len(X_adv), 0.05, rng)
    labels = api.query("acct-A", CLEAN_MODEL, X_adv, times, ip=ip, campaign="A", kind="adversarial").argmax(1)
    return {"account": "acct-A", "model": CLEAN_MODEL, "extraction_queries": sent,
            "proxy_agreement": agreement, "adversarial_submitted": len(X_adv),
            "adversarial_succeeded": int(np.sum(labels != truth)),
            "success_flags": [bool(s) for s in labels != truth], "submit_times": times}


def campaign_hopskipjump(api: InferenceAPI, *, start: datetime, n_images: int = 3, budget: int = 400,
                         rng: np.random.Generator) -> dict[str, Any]:
    """Account B: ART HopSkipJump through the API (every query logged), then the adversarial
    examples submitted as ordinary requests."""
    quiet_art()
    from art.attacks.evasion import HopSkipJump
    from art.estimators.classification import BlackBoxClassifier

    w = api.world
    ip = "198.51.100.23"
    predict = api.client("acct-B", CLEAN_MODEL, start=start, rate=2.0, ip=ip, campaign="B", kind="probe", rng=rng)
    count = [0]

    class Budget(RuntimeError):
        pass

    def guarded(x, **kw):
        if count[0] >= budget * n_images:
            raise Budget()
        count[0] += len(x)
        return predict(x, **kw)

    clf = BlackBoxClassifier(guarded, input_shape=(N_FEATURES,), nb_classes=N_CLASSES, clip_values=(0.0, 1.0))
    targets = w.X_attacker[rng.choice(len(w.X_attacker), size=n_images, replace=False)].astype(np.float32)
    np.random.seed(w.seed)  # ART draws from numpy's global generator
    advs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for x in targets:
            try:
                # ART draws HopSkipJump's starting image from an unseeded RandomState: make the same
                # draw (uniform images until one is misclassified, through the API) with our seed
                y0 = int(np.argmax(clf.predict(x[None])))
                start = next(c for c in (rng.uniform(0, 1, size=(1, N_FEATURES)).astype(np.float32)
                                         for _ in range(100)) if int(np.argmax(clf.predict(c))) != y0)
                advs.append(HopSkipJump(clf, targeted=False, max_iter=8, max_eval=60, init_eval=10,
                                        verbose=False).generate(x[None], x_adv_init=start)[0])
            except Budget:
                break
    X_adv = np.array(advs)
    truth = w.models[CLEAN_MODEL].predict(targets[: len(X_adv)])
    ok = w.models[CLEAN_MODEL].predict(X_adv) != truth
    X_send = X_adv[ok] if ok.any() else X_adv
    submit_at = predict.clock[0] + timedelta(hours=2)
    times = spaced_times(submit_at, len(X_send), 0.02, rng)
    labels = api.query("acct-B", CLEAN_MODEL, X_send, times, ip=ip, campaign="B", kind="adversarial").argmax(1)
    truth_sent = truth[ok] if ok.any() else truth
    return {"account": "acct-B", "model": CLEAN_MODEL, "probe_queries": count[0],
            "adversarial_submitted": len(X_send), "adversarial_succeeded": int(np.sum(labels != truth_sent)),
            "success_flags": [bool(s) for s in labels != truth_sent], "submit_times": times}


def campaign_backdoor_trigger(api: InferenceAPI, *, start: datetime, n_triggers: int = 20,
                              rng: np.random.Generator) -> dict[str, Any]:
    """Account C: trigger-stamped digits sent to the backdoored endpoint."""
    w = api.world
    pool = np.flatnonzero(w.y_attacker != BACKDOOR_TARGET)
    X = add_trigger(w.X_attacker[rng.choice(pool, size=n_triggers, replace=False)])
    times = spaced_times(start, n_triggers, 0.05, rng)
    labels = api.query("acct-C", BACKDOORED_MODEL, X, times, ip="192.0.2.66", campaign="C", kind="trigger").argmax(1)
    hit = labels == BACKDOOR_TARGET
    return {"account": "acct-C", "model": BACKDOORED_MODEL, "triggers_submitted": n_triggers,
            "adversarial_succeeded": int(hit.sum()), "success_flags": [bool(h) for h in hit], "submit_times": times}
