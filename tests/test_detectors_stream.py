"""Query-stream detectors (issue 5): registry, small cases, state save/restore, bounds, bad inputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from kizashi import detectors
from kizashi.detectors.base import NotFittedError
from kizashi.mappings import load_catalogue
from kizashi.scenarios.api import InferenceAPI
from kizashi.scenarios.digits import digits_task
from kizashi.scenarios.evasion import EVASION_ATTACKS, run_evasion
from kizashi.scenarios.extraction import EXTRACTION_ATTACKS, ood_natural_pool, run_extraction
from kizashi.scenarios.traffic import benign_traffic, replay

STREAM = ["query_rate", "label_distribution", "stateful_knn", "blacklight", "prada", "vardetect", "hoda", "atli"]
FAST = {"calibration_streams": 12, "calibration_length": 200}
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def task():
    return digits_task(seed=0, hidden=(32,), max_iter=200)


@pytest.fixture(scope="module")
def ref(task):
    """The defender's benign reference: held-out digits and the labels the model gives them."""
    X = task.X_benign[:300]
    return X, task.model.predict(X)


@pytest.fixture(scope="module")
def benign_stream(task):
    """Another benign account: held-out digits not in the reference set."""
    X = task.X_benign[300:450]
    return X, task.model.predict(X)


def _rnd_stream(task, n=150, lam=0.1, seed=0):
    """Synthetic queries: rounds of random-sign steps from a few natural seeds (T-RND style)."""
    rng = np.random.default_rng(seed)
    cur = task.X_attack[:10]
    out = []
    while sum(len(c) for c in out) < n:
        out.append(cur)
        cur = np.clip(cur + lam * np.sign(rng.normal(size=cur.shape)), 0, 1)
    X = np.vstack(out)[:n]
    return X, task.model.predict(X)


def _noise_stream(task, n=120, seed=1):
    X = np.random.default_rng(seed).uniform(0, 1, (n, 64))
    return X, task.model.predict(X)


def _fit(name, task, ref, **params):
    X, y = ref
    p = {**(FAST if name != "query_rate" else {}), **params}
    det = detectors.create(name, **p)
    if name == "query_rate":
        rng = np.random.default_rng(0)
        times = np.concatenate([np.cumsum(rng.exponential(20.0, 200)) for _ in range(10)])
        return det.fit(times, np.repeat(np.arange(10), 200))
    if name == "hoda":
        return det.fit(task.X_train, task.y_train, X_calib=X)
    if name in ("label_distribution", "prada"):
        return det.fit(X, y)
    return det.fit(X, model=task.model)


@pytest.fixture(scope="module")
def fitted(task, ref):
    return {name: _fit(name, task, ref) for name in STREAM}


def _feed(det, X, y=None, account="acct", start=0.0, gap=10.0):
    """Observe ``X`` as one account; returns (1-based index of the first alarm or None, events)."""
    det.reset(account)
    first, events = None, []
    for i, x in enumerate(X):
        ev = det.observe(x, account=account, time=T0 + timedelta(seconds=start + gap * i),
                         prediction=None if y is None else int(y[i]))
        if ev and first is None:
            first = i + 1
        events.extend(ev)
    return first, events


# -- registry and tags -----------------------------------------------------------------------


def test_registry_names_and_catalogue_entries():
    cat = load_catalogue()
    for name in STREAM:
        cls = detectors.get(name)
        assert issubclass(cls, detectors.StreamDetector)
        assert cat.get(cls.method).implemented_by == name


def test_create_rejects_unknown_parameters():
    with pytest.raises(ValueError, match="bad parameters for detector 'stateful_knn'"):
        detectors.create("stateful_knn", kk=3)


# -- small cases per detector -------------------------------------------------------------------


def test_stateful_knn_near_copies_alarm_after_k_and_reset(fitted, task, benign_stream):
    det = fitted["stateful_knn"]
    rng = np.random.default_rng(0)
    X = np.clip(task.X_attack[0] + rng.normal(0, 0.01, (60, 64)), 0, 1)
    first, events = _feed(det, X)
    assert first == det.k + 1  # needs k earlier queries, then the first near-copy alarms
    ev = events[0]
    assert ev.stage == "precursor" and ev.attack == "evasion" and ev.subject.account == "acct"
    assert {"AML.T0043.001", "AML.T0040"} <= set(ev.atlas.techniques)
    assert ev.evidence["k"] == det.k and ev.evidence["mean_knn_distance"] < det.threshold_
    assert ev.evidence["queries_seen"] == det.k + 1
    # buffer cleared after the alarm: the next alarm needs k fresh queries again
    assert len(events) == 60 // (det.k + 1)
    assert _feed(det, *benign_stream)[0] is None


def test_blacklight_fingerprint_ignores_sub_step_noise_and_matches(fitted, task, benign_stream):
    det = fitted["blacklight"]
    x = task.X_attack[3]
    fp = det.fingerprint(x)
    assert 0 < len(fp) <= det.top_n
    assert set(fp.tolist()) & set(det.fingerprint(np.clip(x + 1e-4, 0, 1)).tolist())
    assert not set(fp.tolist()) & set(det.common_.tolist())
    rng = np.random.default_rng(1)
    first, events = _feed(det, np.clip(x + rng.normal(0, 0.002, (10, 64)), 0, 1))
    assert first in (2, 3) and events[0].evidence["matches"] > det.threshold_  # noise may cross a bin edge
    assert 1 <= events[0].evidence["matched_query"] < first
    assert _feed(det, *benign_stream)[0] is None


def test_prada_catches_synthetic_queries_not_benign(fitted, task, benign_stream):
    det = fitted["prada"]
    first, events = _feed(det, *_rnd_stream(task))
    assert first is not None and first >= det.min_queries
    ev = events[0]
    assert ev.stage == "symptom" and ev.attack == "extraction"
    assert {"AML.T0024.002", "AML.T0040"} <= set(ev.atlas.techniques)
    assert ev.evidence["shapiro_w"] < det.threshold_
    assert _feed(det, *benign_stream)[0] is None


def test_label_distribution_skewed_labels(fitted, task, benign_stream):
    det = fitted["label_distribution"]
    X = task.X_attack[:60]
    first, events = _feed(det, X, np.where(np.arange(60) % 2, 3, 5))  # a boundary between 3 and 5
    assert first == det.min_queries
    assert events[0].evidence["distinct_labels"] == 2
    assert _feed(det, *benign_stream)[0] is None
    with pytest.raises(ValueError, match="needs the model's prediction"):
        det.observe(X[0], account="no-pred")


def test_query_rate_burst_and_attack_tagging(task, ref):
    det = _fit("query_rate", task, ref)
    assert det.baseline_median_ < det.threshold_ < 60
    x = task.X_attack[0]
    slow = [det.observe(x, account="human", time=T0 + timedelta(seconds=20 * i)) for i in range(100)]
    assert not any(slow)
    burst = [det.observe(x, account="bot", time=T0 + timedelta(seconds=0.2 * i)) for i in range(200)]
    alarms = [i for i, ev in enumerate(burst) if ev]
    assert alarms and alarms[0] + 1 == int(np.floor(det.threshold_)) + 1
    assert len(alarms) == 1  # 40 s of traffic, one window of cooldown: one event
    ev = burst[alarms[0]][0]
    assert ev.stage == "precursor" and ev.attack == "evasion"
    assert set(ev.atlas.techniques) == {"AML.T0034.000", "AML.T0040"}
    assert ev.evidence["queries_in_window"] > det.threshold_
    ext = _fit("query_rate", task, ref, attack="extraction")
    ev2 = [e for i in range(200) for e in ext.observe(x, account="bot", time=T0 + timedelta(seconds=0.2 * i))][0]
    assert ev2.stage == "symptom" and ev2.attack == "extraction"
    with pytest.raises(ValueError, match="attack must be one of"):
        detectors.create("query_rate", attack="poisoning").fit_counts([1, 2, 3])


@pytest.mark.parametrize("name", ["vardetect", "hoda", "atli"])
def test_distribution_detectors_catch_noise_queries_not_benign(name, fitted, task, benign_stream):
    det = fitted[name]
    first, events = _feed(det, *_noise_stream(task))
    assert first is not None
    assert events[0].attack == "extraction" and events[0].score > det.threshold_
    assert _feed(det, *benign_stream)[0] is None


def test_hoda_hardness_degrees(fitted, task):
    det = fitted["hoda"]
    h = det.hardness(task.X_benign[:50])
    assert h.min() >= 0 and h.max() <= det.n_checkpoints - 1
    assert abs(det.benign_histogram_.sum() - 1) < 1e-9
    # the fast stacked path agrees with each checkpoint's own predict_proba
    L = det.checkpoint_labels(task.X_benign[:20])
    slow = np.stack([c.predict_proba(task.X_benign[:20]).argmax(1) for c in det.checkpoints_], axis=1)
    assert np.array_equal(L, slow)


def test_atli_with_ood_examples_trains_a_classifier(task, ref):
    X, _ = ref
    det = detectors.create("atli", **FAST).fit(X, X_ood=ood_natural_pool(200, seed=3),
                                               X_calib=task.X_benign[300:])
    assert det.mode_ == "classifier"
    ood = ood_natural_pool(60, seed=9)
    assert _feed(det, ood)[0] is not None


def test_score_stream_matches_observe_statistic(fitted, task):
    det = fitted["stateful_knn"]
    X = task.X_benign[:40]
    s = det.score_stream(X)
    assert np.all(np.isnan(s[: det.k])) and np.all(np.isfinite(s[det.k:]))
    assert not hasattr(det, "decision_function")  # a statistic of the stream, not a score per sample


# -- state: save/restore and bounds --------------------------------------------------------------


def _attack_stream(name, task):
    if name == "query_rate":
        return task.X_attack[:80], None, 0.2
    if name in ("vardetect", "hoda", "atli"):
        X, y = _noise_stream(task)
        return X, y, 10.0
    if name == "label_distribution":
        return task.X_attack[:60], np.where(np.arange(60) % 2, 3, 5), 10.0
    X, y = _rnd_stream(task)
    if name in ("stateful_knn", "blacklight"):
        X = np.clip(task.X_attack[0] + np.random.default_rng(2).normal(0, 0.01, (60, 64)), 0, 1)
        y = task.model.predict(X)
    return X, y, 10.0


@pytest.mark.parametrize("name", STREAM)
def test_state_save_and_restore_continues_the_stream(name, fitted, task):
    det = fitted[name]
    X, y, gap = _attack_stream(name, task)
    first, _ = _feed(det, X, y, gap=gap)
    assert first is not None, f"{name} did not alarm on its attack stream"
    cut = max(1, first - 3)
    det.reset()
    _feed(det, X[:cut], None if y is None else y[:cut], gap=gap)
    other = det.observe(X[0], account="bystander", time=T0, prediction=None if y is None else int(y[0]))
    assert other == []
    blob = det.get_state()
    det.reset()
    assert "acct" not in det._states()
    det.set_state(blob)
    assert set(det._states().accounts()) == {"acct", "bystander"}
    assert det.state_bytes("acct") > 0
    resumed = None
    for i in range(cut, len(X)):
        ev = det.observe(X[i], account="acct", time=T0 + timedelta(seconds=gap * i),
                         prediction=None if y is None else int(y[i]))
        if ev:
            resumed = i + 1
            break
    assert resumed == first


def test_accounts_are_lru_bounded_and_history_bounded(task, ref):
    det = _fit("stateful_knn", task, ref, max_accounts=3, history=30)
    for a in range(5):
        for x in task.X_benign[:40]:
            det.observe(x, account=f"a{a}")
    states = det._states()
    assert states.accounts() == ["a2", "a3", "a4"] and states.evicted == 2
    assert len(states.peek("a4").buffer) == 30
    small = det.state_bytes("a4")
    for x in task.X_benign[40:140]:
        det.observe(x, account="a4")
    assert det.state_bytes("a4") == small  # history full: state stops growing


# -- bad inputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in STREAM if n != "query_rate"])
def test_bad_inputs_are_rejected_with_a_clear_error(name, fitted, task):
    det = fitted[name]
    with pytest.raises(ValueError, match="features"):
        det.observe(np.zeros(10), account="a", prediction=0)
    bad = task.X_benign[0].copy()
    bad[5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        det.observe(bad, account="a", prediction=0)
    with pytest.raises(ValueError, match="account"):
        det.observe(task.X_benign[0], account="", prediction=0)
    fresh = detectors.create(name)
    with pytest.raises(NotFittedError):
        fresh.observe(task.X_benign[0], account="a", prediction=0)
    with pytest.raises(ValueError, match="NaN"):
        fresh.fit(np.full((30, 64), np.nan), task.y_train[:30])
    with pytest.raises(ValueError, match="2-D"):
        fresh.fit(np.zeros(5), task.y_train[:5])


@pytest.mark.parametrize("params, message", [
    ({"k": 0}, "k must be an integer"),
    ({"features": "pixels"}, "feature space must be one of"),
    ({"fpr": 1.5}, "fpr must be in"),
])
def test_bad_parameters_are_rejected_at_fit(params, message, ref):
    with pytest.raises(ValueError, match=message):
        detectors.create("stateful_knn", **params).fit(ref[0])


def test_bad_prediction_and_bad_times_are_rejected(fitted, task, ref):
    with pytest.raises(ValueError, match="class index or a probability vector"):
        fitted["prada"].observe(task.X_benign[0], account="p", prediction="three")
    with pytest.raises(ValueError, match="finite query times"):
        detectors.create("query_rate").fit([1.0, np.nan])
    with pytest.raises(ValueError, match="needs the predicted classes"):
        detectors.create("prada").fit(ref[0])


# -- a small real ART attack through the simulated API --------------------------------------------


def test_real_hopskipjump_is_caught_by_stateful_detectors(task, fitted):
    api = InferenceAPI(task.model)
    users = benign_traffic(api, task.X_benign[300:], n_accounts=3, queries_per_account=60, seed=4)
    summary = run_evasion(api, "hopskipjump", task.X_attack[:1], account="mallory", max_queries=150,
                                    start=30.0)
    assert summary["queries"] >= 100  # the real attack ran through the API
    assert all(q.account in set(users) | {"mallory"} for q in api.log)
    for name in ("stateful_knn", "blacklight"):
        det = fitted[name]
        det.reset()
        result = replay(api.log, det)
        assert result.first_alarm.get("mallory", 10**9) <= 100, name
        assert not set(result.first_alarm) & set(users), name


def test_vardetect_incremental_mmd_equals_direct_computation(fitted, task):
    det = fitted["vardetect"]
    X = task.X_benign[:260]
    s = det.score_stream(X)
    Z = det.encoder_.transform(X)
    for t in (det.min_queries, det.window - 1, 150, 259):  # before, at and after the window wraps
        W = Z[max(0, t - det.window + 1): t + 1]
        kww = np.exp(-det.gamma_ * ((W[:, None] - W[None]) ** 2).sum(-1)).mean()
        kwr = np.exp(-det.gamma_ * ((W[:, None] - det.reference_[None]) ** 2).sum(-1)).mean()
        assert s[t] == pytest.approx(kww + det.k_rr_ - 2 * kwr, abs=1e-9)


@pytest.mark.parametrize("attack", EVASION_ATTACKS + EXTRACTION_ATTACKS)
def test_every_art_attack_driver_sends_its_queries_through_the_api(attack, task):
    api = InferenceAPI(task.model)
    if attack in EVASION_ATTACKS:
        s = run_evasion(api, attack, task.X_attack[:1], account="m", max_queries=40)
        assert s["queries"] <= 40 + 64  # the budget is checked per ART predict call (a batch)
    else:
        s = run_extraction(api, attack, task.X_attack, account="m", n_queries=40, X_test=task.X_benign[:50])
        assert s["queries"] == 40 and 0 <= s["agreement"] <= 1
    recs = api.queries("m")
    assert len(recs) == s["queries"] == api.count("m") > 0
    assert all(r.x.shape == (64,) and 0 <= r.label < 10 for r in recs)
    assert all(b.t > a.t for a, b in zip(recs, recs[1:], strict=False))  # the account's clock advances


@pytest.mark.parametrize("name", STREAM)
def test_pickled_detector_with_state_continues_in_a_new_process_image(name, fitted, task):
    """A fitted detector and its per-account state survive pickling (e.g. a restart of the monitor)."""
    import pickle

    det = fitted[name]
    X, y, gap = _attack_stream(name, task)
    first, _ = _feed(det, X, y, gap=gap)
    cut = max(1, first - 3)
    det.reset()
    _feed(det, X[:cut], None if y is None else y[:cut], gap=gap)
    clone = pickle.loads(pickle.dumps(det))
    for d in (det, clone):
        hit = next(i + 1 for i in range(cut, len(X))
                   if d.observe(X[i], account="acct", time=T0 + timedelta(seconds=gap * i),
                                prediction=None if y is None else int(y[i])))
        assert hit == first


@pytest.mark.parametrize("attack", ["knockoff-ood", "copycat-rnd"])
def test_extraction_drivers_send_28x28_queries_to_a_cnn_api(attack):
    """The 28x28 task of the query bench: a (seeded, untrained) CNN as a TorchModel behind the API;
    the out-of-distribution photo pool and the synthetic rounds come out 784 pixels in [0, 1]."""
    from kizashi.detectors.models import TorchModel
    from kizashi.scenarios.mnist import INPUT_SHAPE, small_cnn

    api = InferenceAPI(TorchModel(small_cnn(0), input_shape=INPUT_SHAPE, n_classes=10), input_shape=INPUT_SHAPE)
    X_natural = np.random.default_rng(0).uniform(0, 1, (30, 784))
    s = run_extraction(api, attack, X_natural, account="m", n_queries=24, seed=1)
    recs = api.queries("m")
    assert s["queries"] == len(recs) == 24
    assert all(r.x.shape == (784,) and 0 <= r.x.min() and r.x.max() <= 1 and 0 <= r.label < 10 for r in recs)
    if attack == "knockoff-ood":  # photo patches, not the natural pool the attacker was given
        assert not any(np.allclose(r.x, x) for r in recs for x in X_natural)


def test_extraction_against_a_one_label_answerer_steals_a_constant():
    """A CNN can answer uniform noise with one label; the logistic-regression thief cannot fit one
    class, so the driver reports a constant thief instead of losing the attack's traffic."""
    from sklearn.dummy import DummyClassifier

    X = np.random.default_rng(0).uniform(0, 1, (20, 64))
    api = InferenceAPI(DummyClassifier(strategy="constant", constant=3).fit(X, np.arange(20) % 10))
    s = run_extraction(api, "copycat-uniform", X, account="m", n_queries=16, X_test=X)
    assert s["queries"] == api.count("m") == 16
    assert s["agreement"] == 1.0 and s["stolen"].startswith("constant label 3")
