"""The demo's day: a digits classifier behind the inference API, a day of benign sessions, and three
attack campaigns driven by real adversarial-robustness-toolbox attacks (ATLAS 5.6.0 IDs):

* account A — model extraction through the API (ART ``CopycatCNN`` with random-step synthetic
  queries, T-RND style), a proxy trained on the answers, adversarial examples crafted on the proxy
  (ART ``ProjectedGradientDescent``) and submitted: AML.T0040 → AML.T0024.002 → AML.T0043.002 →
  AML.T0015.
* account B — black-box probing with ART ``HopSkipJump`` through the API, then the successful
  adversarial examples submitted: AML.T0043.001 → AML.T0015.
* account C — a BadNets-poisoned retraining set (ART ``PoisoningAttackBackdoor``, AML.T0020) yields
  a backdoored model that is deployed as a second endpoint; C sends trigger inputs (AML.T0043.004).

Deterministic for a given seed. Detection is not part of the day: ``kizashi demo`` (cli/) watches it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from .api import InferenceAPI, QueryBudgetExceeded, QueryRecord, spaced_times
from .art_setup import quiet_art
from .digits import N_FEATURES, DigitsTask, digits_task, train_mlp
from .evasion import hopskipjump, random_misclassified_start
from .extraction import query_rounds, thief
from .poisoning import add_trigger, badnets
from .traffic import benign_sessions

DAY = datetime(2026, 11, 28, tzinfo=UTC)
CLEAN_MODEL = "digits-mlp"
BACKDOORED_MODEL = "digits-mlp-retrained"
ENDPOINTS = {CLEAN_MODEL: "/v1/digits:predict", BACKDOORED_MODEL: "/v2/digits:predict"}
BACKDOOR_TARGET = 0
TRIGGER_DISTANCE = 1  # ART's 4-pixel pattern in the very corner of the 8x8 digit


@dataclass
class World:
    """The day's data, models and query log (``log`` and ``models`` are the API's)."""

    seed: int
    task: DigitsTask
    api: InferenceAPI
    X_retrain: np.ndarray | None = None  # the poisoned retraining set
    y_retrain: np.ndarray | None = None
    poisoned_idx: np.ndarray | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    X_train = property(lambda self: self.task.X_train)
    y_train = property(lambda self: self.task.y_train)
    X_ref = property(lambda self: self.task.X_ref)  # defender's clean held-out reference (calibration)
    y_ref = property(lambda self: self.task.y_ref)
    X_benign = property(lambda self: self.task.X_benign)  # replayed by benign users
    y_benign = property(lambda self: self.task.y_benign)
    X_attacker = property(lambda self: self.task.X_attack)  # the attackers' own digits
    y_attacker = property(lambda self: self.task.y_attack)

    @property
    def models(self) -> dict[str, Any]:
        return self.api.models

    @property
    def log(self) -> list[QueryRecord]:
        return self.api.log


def build_world(seed: int = 0) -> World:
    """Split digits (scaled to [0, 1]) 45% training, then 35% of the rest as the defender's reference,
    then 60/40 benign/attacker; train the production MLP and put it behind the API."""
    task = digits_task(seed, train_size=0.45, reference_size=0.35, max_iter=400)
    w = World(seed, task, InferenceAPI({CLEAN_MODEL: task.model}, input_shape=(N_FEATURES,)))
    w.facts["clean_accuracy"] = float(task.model.score(task.X_benign, task.y_benign))
    return w


def poison_and_retrain(w: World, *, fraction: float = 0.05) -> None:
    """BadNets on ``fraction`` of the retraining data (the training inputs collected again); the
    retrained model carries the backdoor and is deployed as the second endpoint."""
    Xr, yr, idx = badnets(w.X_train, w.y_train, fraction, target=BACKDOOR_TARGET, seed=w.seed + 7,
                          distance=TRIGGER_DISTANCE)
    model = train_mlp(Xr, yr, seed=w.seed)
    w.X_retrain, w.y_retrain, w.poisoned_idx = Xr, yr, idx
    w.models[BACKDOORED_MODEL] = model
    w.facts["backdoored_clean_accuracy"] = float(model.score(w.X_benign, w.y_benign))
    trig = trigger(w.X_benign)
    w.facts["backdoor_success_rate"] = float(np.mean(model.predict(trig[w.y_benign != BACKDOOR_TARGET]) == BACKDOOR_TARGET))


def trigger(X: np.ndarray) -> np.ndarray:
    """The day's BadNets trigger stamped on ``X``."""
    return add_trigger(X, distance=TRIGGER_DISTANCE)


def benign_day(w: World, *, n_accounts: int, rng: np.random.Generator, day: datetime = DAY,
               send: bool = True) -> list[tuple[str, datetime]]:
    """Benign sessions on the day; every third account uses the retrained endpoint."""
    return benign_sessions(w.api, w.X_benign, n_accounts=n_accounts, rng=rng, day=day, send=send,
                           model_of=lambda a: BACKDOORED_MODEL if a % 3 == 0 else CLEAN_MODEL)


def campaign_extraction_transfer(w: World, *, start: datetime, n_queries: int = 300,
                                 n_adversarial: int = 25, rng: np.random.Generator) -> dict[str, Any]:
    """Account A: extraction with synthetic random-step queries (ART CopycatCNN per round), a proxy,
    PGD on the proxy, the adversarial digits submitted to the production model."""
    quiet_art()
    from art.attacks.evasion import ProjectedGradientDescent

    api, ip = w.api, "203.0.113.7"
    victim = api.art_classifier("acct-A", rate=2.0, start=start, flat=True, rng=rng, model=CLEAN_MODEL,
                                source_ip=ip, campaign="A", kind="extraction")
    proxy = thief(w.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sent = query_rounds(api, victim, proxy, w.X_attacker, n_queries=n_queries, rng=rng, jacobian=False)
        agreement = float(np.mean(proxy.model.predict(w.X_attacker) == w.models[CLEAN_MODEL].predict(w.X_attacker)))
        targets = w.X_attacker[rng.choice(len(w.X_attacker), size=n_adversarial, replace=False)].astype(np.float32)
        pgd = ProjectedGradientDescent(proxy, eps=0.3, eps_step=0.05, max_iter=20, verbose=False)
        X_adv = pgd.generate(targets)
    submit_at = victim.client.clock + timedelta(hours=3)
    truth = w.models[CLEAN_MODEL].predict(targets)
    times = spaced_times(submit_at, len(X_adv), 0.05, rng)
    labels = api.query("acct-A", X_adv, times, model=CLEAN_MODEL, source_ip=ip, campaign="A",
                       kind="adversarial").argmax(1)
    return {"account": "acct-A", "model": CLEAN_MODEL, "extraction_queries": sent,
            "proxy_agreement": agreement, "adversarial_submitted": len(X_adv),
            "adversarial_succeeded": int(np.sum(labels != truth)),
            "success_flags": [bool(s) for s in labels != truth], "submit_times": times}


def campaign_hopskipjump(w: World, *, start: datetime, n_images: int = 3, budget: int = 400,
                         rng: np.random.Generator) -> dict[str, Any]:
    """Account B: ART HopSkipJump through the API (every query logged, ``budget`` queries per image),
    then the adversarial examples submitted as ordinary requests."""
    quiet_art()
    api, ip = w.api, "198.51.100.23"
    clf = api.art_classifier("acct-B", rate=2.0, start=start, flat=True, rng=rng, model=CLEAN_MODEL,
                             source_ip=ip, campaign="B", kind="probe")
    api.limit(clf, "acct-B", budget * n_images)
    targets = w.X_attacker[rng.choice(len(w.X_attacker), size=n_images, replace=False)].astype(np.float32)
    np.random.seed(w.seed)  # ART draws from numpy's global generator
    advs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for x in targets:
            try:
                y0 = int(np.argmax(clf.predict(x[None])))
                x0 = random_misclassified_start(clf, x[None], [y0], rng)
                advs.append(hopskipjump(clf, max_iter=8, max_eval=60, init_eval=10).generate(x[None], x_adv_init=x0)[0])
            except QueryBudgetExceeded:
                break
    X_adv = np.array(advs)
    truth = w.models[CLEAN_MODEL].predict(targets[: len(X_adv)])
    ok = w.models[CLEAN_MODEL].predict(X_adv) != truth
    X_send = X_adv[ok] if ok.any() else X_adv
    probes = api.count("acct-B")
    submit_at = clf.client.clock + timedelta(hours=2)
    times = spaced_times(submit_at, len(X_send), 0.02, rng)
    labels = api.query("acct-B", X_send, times, model=CLEAN_MODEL, source_ip=ip, campaign="B",
                       kind="adversarial").argmax(1)
    truth_sent = truth[ok] if ok.any() else truth
    return {"account": "acct-B", "model": CLEAN_MODEL, "probe_queries": probes,
            "adversarial_submitted": len(X_send), "adversarial_succeeded": int(np.sum(labels != truth_sent)),
            "success_flags": [bool(s) for s in labels != truth_sent], "submit_times": times}


def campaign_backdoor_trigger(w: World, *, start: datetime, n_triggers: int = 20,
                              rng: np.random.Generator) -> dict[str, Any]:
    """Account C: trigger-stamped digits sent to the backdoored endpoint."""
    pool = np.flatnonzero(w.y_attacker != BACKDOOR_TARGET)
    X = trigger(w.X_attacker[rng.choice(pool, size=n_triggers, replace=False)])
    times = spaced_times(start, n_triggers, 0.05, rng)
    labels = w.api.query("acct-C", X, times, model=BACKDOORED_MODEL, source_ip="192.0.2.66", campaign="C",
                         kind="trigger").argmax(1)
    hit = labels == BACKDOOR_TARGET
    return {"account": "acct-C", "model": BACKDOORED_MODEL, "triggers_submitted": n_triggers,
            "adversarial_succeeded": int(hit.sum()), "success_flags": [bool(h) for h in hit], "submit_times": times}


def run_day(seed: int = 0, *, n_benign: int = 60, step: Any = None) -> tuple[World, list, dict[str, dict]]:
    """The whole day: world, yesterday's benign history (for baselines), today's benign sessions and
    campaigns A, B, C; the log sorted by time. ``step(name)`` is a context manager around each phase
    (timing, progress). Returns (world, history of (account, time), campaign results by key)."""
    from contextlib import nullcontext

    step = step or (lambda name: nullcontext())
    with step("train the production model and poison the retraining set"):
        w = build_world(seed)
        poison_and_retrain(w)
    with step("a day of benign traffic"):
        history = benign_day(w, n_accounts=n_benign, rng=np.random.default_rng(seed + 1),
                             day=DAY - timedelta(days=1), send=False)
        benign_day(w, n_accounts=n_benign, rng=np.random.default_rng(seed))
    with step("campaign A: extraction, proxy, transfer (ART CopycatCNN + PGD)"):
        campaign = {"A": campaign_extraction_transfer(w, start=DAY + timedelta(hours=2),
                                                      rng=np.random.default_rng(seed + 2))}
    with step("campaign B: black-box probing (ART HopSkipJump)"):
        campaign["B"] = campaign_hopskipjump(w, start=DAY + timedelta(hours=6), rng=np.random.default_rng(seed + 3))
    with step("campaign C: backdoor trigger inputs"):
        campaign["C"] = campaign_backdoor_trigger(w, start=DAY + timedelta(hours=15),
                                                  rng=np.random.default_rng(seed + 4))
    w.log.sort(key=lambda q: (q.time, q.account))
    return w, history, campaign
