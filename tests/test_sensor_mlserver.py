"""`kizashi sensor` in front of a real Seldon MLServer (Open Inference Protocol v2) serving a digits
model: protocol round trips, an ART HopSkipJump attack through the sensor (precursor, correlated
alert, enforcement), the KServe logger receiver, and per-account state across a real ``kill -9``."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from helpers_mlserver import (
    MODEL,
    MLServer,
    SensorProcess,
    account_id,
    digits_task,
    get,
    infer_body,
    post,
    probabilities,
)
from kizashi.cli.sensor_cmd import fit_detector
from kizashi.detectors.artefacts import save_fitted
from kizashi.engine.store import Store

DETECTORS = {  # name -> (constructor params, needs the model to fit)
    "blacklight": ({}, False),
    "stateful_knn": ({}, False),
    "softmax_baseline": ({"fpr": 0.002}, True),
}


@dataclass
class World:
    dir: Path
    mlserver: MLServer
    X_te: np.ndarray
    model: object
    runs: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("sensor")
    model, X_tr, _y_tr, X_te, _y_te = digits_task()
    ml = MLServer(model, d / "mlserver").start()
    labels = model.predict(X_tr)
    for name, (params, needs_model) in DETECTORS.items():
        det = fit_detector(name, {"X": X_tr, "y": labels}, model if needs_model else None, params)
        save_fitted(det, d / "fitted" / name)
    try:
        yield World(d, ml, X_te, model)
    finally:
        ml.stop()


def write_config(world: World, name: str, mode: str = "monitor", extra: str = "") -> Path:
    path = world.dir / f"{name}.yaml"
    dets = "\n".join(f"          - name: {n}\n            fitted: fitted/{n}" for n in DETECTORS)
    path.write_text(f"mode: {mode}\naccount_header: X-Api-Key\nstate_dir: state-{name}\n{extra}"
                    f"models:\n  {MODEL}:\n    detectors:\n{dets}\n")
    return path


def start_sensor(world: World, name: str, mode: str = "monitor", extra: str = "", upstream: str | None = None):
    cfg = write_config(world, name, mode, extra)
    db = f"sqlite:///{world.dir / (name + '.db')}"
    return SensorProcess(upstream or world.mlserver.url, cfg, db, world.dir).start(), db


def _without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


def test_protocol_round_trips_through_sensor_equal_direct_calls(world):
    sensor, _ = start_sensor(world, "roundtrip")
    direct, via = world.mlserver.url, sensor.url
    try:
        for path in ("/v2/health/ready", f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/ready"):
            assert get(direct + path) == get(via + path), path
        X = world.X_te[:5]
        nested = json.dumps({"id": "nested", "inputs": [{"name": "x", "shape": [2, 64], "datatype": "FP32",
                                                          "data": X[:2].astype(np.float32).tolist()}]}).encode()
        bodies = [infer_body(X, request_id="a"), infer_body(X[:1], outputs=(), request_id="b"), nested,
                  infer_body(X[:3], outputs=("predict", "predict_proba"), request_id="c")]
        for path in (f"/v2/models/{MODEL}/infer", f"/v2/models/{MODEL}/versions/v1/infer"):
            for body in bodies:
                code_d, ans_d = post(direct + path, body)
                code_v, ans_v = post(via + path, body, {"X-Api-Key": "round-trip"})
                assert code_d == code_v == 200
                assert ans_v == ans_d
        # what the sensor itself refuses, in the protocol's error form
        code, ans = post(via + f"/v2/models/{MODEL}/infer", b'{"inputs": [{"name": "x", "shape": [1, 2], '
                         b'"datatype": "FP32", "data": [1, NaN]}]}')
        assert code == 400 and "not valid JSON" in ans["error"]
        code, ans = post(via + f"/v2/models/{MODEL}/infer", json.dumps(
            {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "UINT8", "data": [300] * 64}]}).encode())
        assert code == 400 and "range of UINT8" in ans["error"]
        code, ans = post(via + "/v2/models/other/infer", infer_body(X[:1]))
        assert code == 404 and "not served through this sensor" in ans["error"]
        st = sensor.settle()
        assert st["counts"]["bad_requests"] == 2 and st["counts"]["infer"] == 8 + 2
    finally:
        sensor.stop()


def test_upstream_failures_are_502_and_504_protocol_errors(world):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
    mute = socket.socket()  # accepts connections (backlog) but never answers
    mute.bind(("127.0.0.1", 0))
    mute.listen(16)
    try:
        s1, _ = start_sensor(world, "dead", upstream=f"http://127.0.0.1:{dead_port}")
        s2, _ = start_sensor(world, "mute", extra="upstream_timeout: 1\n",
                             upstream=f"http://127.0.0.1:{mute.getsockname()[1]}")
    except Exception:
        mute.close()
        raise
    try:
        code, ans = post(s1.url + f"/v2/models/{MODEL}/infer", infer_body(world.X_te[:1]))
        assert code == 502 and "unreachable" in ans["error"]
        code, ans = get(s1.url + "/v2/health/ready")
        assert code == 502
        t0 = time.monotonic()
        code, ans = post(s2.url + f"/v2/models/{MODEL}/infer", infer_body(world.X_te[:1]))
        assert code == 504 and "timed out" in ans["error"] and time.monotonic() - t0 < 10
    finally:
        s1.stop()
        s2.stop()
        mute.close()


class Blocked(Exception):
    pass


def _replay_benign(url: str, X: np.ndarray, accounts: list[str], record: list, refused: list) -> None:
    for i, x in enumerate(X):
        acc = accounts[i % len(accounts)]
        body = infer_body(x[None, :])
        code, ans = post(url, body, {"X-Api-Key": acc})
        if code == 403:
            refused.append(acc)
        else:
            assert code == 200, ans
            record.append((acc, body, ans))


@pytest.fixture(scope="module")
def attack_run(world):
    """HopSkipJump (ART, black-box) through the sensor in enforce mode, benign accounts around it."""
    from art.attacks.evasion import HopSkipJump
    from art.estimators.classification import BlackBoxClassifier

    sensor, db = start_sensor(world, "enforce", mode="enforce")
    url = f"{sensor.url}/v2/models/{MODEL}/infer"
    benign = [f"benign-{i}" for i in range(3)]
    record: list = []  # (account key, request body, answer) of every forwarded request, in order
    refused_benign: list = []
    attacker_refusals: list[float] = []

    def predict(x):
        body = infer_body(np.asarray(x).reshape(len(x), -1))
        code, ans = post(url, body, {"X-Api-Key": "mallory"})
        if code == 403:
            attacker_refusals.append(time.time())
            raise Blocked(ans["error"])
        assert code == 200, ans
        record.append(("mallory", body, ans))
        return probabilities(ans)

    try:
        _replay_benign(url, world.X_te[:150], benign, record, refused_benign)
        classifier = BlackBoxClassifier(predict, input_shape=(64,), nb_classes=10, clip_values=(0.0, 1.0))
        attack = HopSkipJump(classifier, targeted=False, max_iter=4, max_eval=150, init_eval=20, init_size=20,
                             verbose=False)
        deadline = time.monotonic() + 90
        i = 0
        while not attacker_refusals and time.monotonic() < deadline:
            try:
                attack.generate(x=world.X_te[150 + i: 151 + i].astype(np.float32))
            except Blocked:
                break
            i += 1
        try:  # the attacker keeps querying after the alert
            for _ in range(3):
                predict(world.X_te[200:201])
        except Blocked:
            pass
        _replay_benign(url, world.X_te[300:450], benign, record, refused_benign)
        status = sensor.settle()
    finally:
        sensor.stop()
    return {"db": db, "record": record, "refused_benign": refused_benign, "refusals": attacker_refusals,
            "status": status, "benign": benign}


def _detector_events(db: str) -> list:
    return [e for e in Store(db).iter_events() if e.detector.name != "sensor_enforcement"]


def test_hopskipjump_through_sensor_precursor_then_correlated_alert_then_403(attack_run):
    store = Store(attack_run["db"])
    mallory = account_id("mallory")
    events = list(store.iter_events())
    mine = [e for e in events if e.subject.account == mallory]
    precursors = [e for e in mine if e.stage == "precursor" and e.attack == "evasion"]
    assert precursors, "no precursor event for the attacker"
    correlated = [a for a in store.list_alerts() if a.rule.type == "correlation" and mallory in a.accounts]
    assert correlated, "no correlated alert for the attacker"
    first = min(correlated, key=lambda a: a.created)
    assert min(e.time for e in precursors) <= first.last_seen
    assert "AML.T0043.001" in first.atlas.techniques or "AML.T0015" in first.atlas.techniques
    # enforce: refused after the alert, and every refusal is itself an event
    assert attack_run["refusals"], "the attacker was never refused"
    assert min(attack_run["refusals"]) >= first.created.timestamp() - 1.0
    decisions = [e for e in mine if e.detector.name == "sensor_enforcement"]
    assert decisions and decisions[0].evidence["decision"] == "refuse"
    assert decisions[0].evidence["alert_id"] in {a.id for a in correlated}
    # ... and the SOC gets it in its formats, ATLAS-tagged
    r = subprocess.run([sys.executable, "-m", "kizashi.cli.main", "export", "cef", "--db", attack_run["db"]],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    # the alert that got the attacker refused: the probing campaign, or (bundled alerting, issue 18)
    # the account's risk alert, which the probing observations raise before HopSkipJump is done
    refused_for = decisions[0].evidence["alert_id"]
    line = next(x for x in r.stdout.splitlines() if f"externalId={refused_for}" in x)
    assert mallory in line and "AML.T0043.001" in line
    assert any(n in line for n in ("kizashi_campaign_probing_then_evasion", "kizashi_risk_account_score")), line


def test_benign_accounts_raise_no_precursor_no_correlation_and_are_never_blocked(attack_run):
    store = Store(attack_run["db"])
    benign_ids = {account_id(a) for a in attack_run["benign"]}
    assert not attack_run["refused_benign"]
    assert not [e for e in store.iter_events() if e.subject.account in benign_ids and e.stage == "precursor"]
    assert not [a for a in store.list_alerts() if a.rule.type == "correlation" and benign_ids & set(a.accounts)]
    assert len([e for e in store.iter_events() if e.subject.account in benign_ids]) <= 3  # input FPR 0.2%
    assert sum(1 for acc, _, _ in attack_run["record"] if acc != "mallory") == 300


def test_logger_receiver_raises_the_same_events_as_the_proxy(world, attack_run):
    sensor, db = start_sensor(world, "logger")  # monitor mode; same detectors, fresh state
    try:
        for n, (acc, body, answer) in enumerate(attack_run["record"]):
            ce = str(uuid.uuid4())
            common = {"ce-id": ce, "ce-specversion": "1.0", "ce-source": "http://localhost:9081/",
                      "ce-inferenceservicename": MODEL, "ce-namespace": "default", "ce-component": "predictor",
                      "ce-metadata": json.dumps({"X-Api-Key": [acc]})}
            req = (body, {**common, "ce-type": "org.kubeflow.serving.inference.request"})
            resp = (json.dumps(answer).encode(), {**common, "ce-type": "org.kubeflow.serving.inference.response"})
            first, second = (req, resp) if n % 2 else (resp, req)  # either half may arrive first
            code, ans = post(sensor.url + "/kizashi/logger", first[0], first[1])
            assert code == 202 and ans["status"] == "pending"
            code, ans = post(sensor.url + "/kizashi/logger", second[0], second[1])
            assert code == 200 and ans["status"] == "inspected", ans
        sensor.settle()
    finally:
        sensor.stop()

    def key(e):
        return (e.subject.account, e.detector.name, e.stage, round(e.score, 9))

    proxy = sorted(key(e) for e in _detector_events(attack_run["db"]))
    logged = sorted(key(e) for e in _detector_events(db))
    assert proxy and logged == proxy


def test_account_state_survives_kill_9(world):
    sensor, db = start_sensor(world, "kill9", extra="snapshot_seconds: 0.3\n")
    url = f"{sensor.url}/v2/models/{MODEL}/infer"
    rng = np.random.default_rng(0)
    base = world.X_te[7]

    def send(acc: str, n: int) -> None:
        for _ in range(n):
            x = np.clip(base + rng.normal(0, 0.002, base.shape), 0, 1)
            assert post(url, infer_body(x[None, :]), {"X-Api-Key": acc})[0] == 200

    try:
        send("persistent", 15)  # stateful_knn (k=20) scores nothing before 20 queries
        sensor.settle()
        deadline = time.monotonic() + 10
        while sensor.status()["snapshot_pending"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not sensor.status()["snapshot_pending"] and sensor.status()["counts"]["snapshots"] > 0
        knn_before = [e for e in Store(db).iter_events() if e.detector.name == "stateful_knn"]
        assert not knn_before
        sensor.kill9()
        sensor.start()  # same config, same store, same state folder
        send("persistent", 8)
        send("fresh", 8)
        sensor.settle()
    finally:
        sensor.stop()
    knn = [e for e in Store(db).iter_events() if e.detector.name == "stateful_knn"]
    accounts = {e.subject.account for e in knn}
    assert account_id("persistent") in accounts  # 15 remembered + 8 new > k
    assert account_id("fresh") not in accounts  # 8 alone < k


def test_triton_client_with_binary_tensors_through_the_sensor(world):
    """Triton's HTTP client (binary inputs, binary outputs requested) through the sensor to a model
    server that answers binary: the client reads the model's probabilities, and the sensor decoded
    both directions (no bad request, no undecoded answer) and ran its detectors on them."""
    import tritonclient.http as triton
    from helpers_binary_upstream import BinaryUpstream

    with BinaryUpstream(world.mlserver.url) as upstream:
        sensor, _ = start_sensor(world, "binary", upstream=upstream.url)
        try:
            X = world.X_te[:6].astype(np.float32)
            want = world.model.predict_proba(X)
            for url in (upstream.url, sensor.url):
                client = triton.InferenceServerClient(url=url.removeprefix("http://"))
                x = triton.InferInput("x", list(X.shape), "FP32")
                x.set_data_from_numpy(X, binary_data=True)
                out = triton.InferRequestedOutput("predict_proba", binary_data=True)
                result = client.infer(MODEL, [x], outputs=[out], headers={"X-Api-Key": "triton-client"})
                np.testing.assert_allclose(result.as_numpy("predict_proba"), want, rtol=1e-6, atol=1e-7)
                client.close()
            st = sensor.settle()
            assert upstream.binary_requests == 2
            assert st["counts"]["infer"] == 1 and st["counts"]["bad_requests"] == 0
            assert st["counts"]["undecoded_responses"] == 0 and st["counts"]["detector_errors"] == 0
            assert st["counts"]["rows"] == len(X)  # the detectors saw every row of the binary input
        finally:
            sensor.stop()
