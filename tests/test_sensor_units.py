"""The sensor's parts without servers: the tensor decoder under hostile input (hypothesis), fitted
artefacts and state blobs without pickle, account identification, the event queue's durable spill."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kizashi.detectors.artefacts import (
    ArtefactError,
    load_fitted,
    save_fitted,
    state_from_bytes,
    state_to_bytes,
)
from kizashi.engine.events import DetectionEvent
from kizashi.sensor.accounts import AccountIdentifier
from kizashi.sensor.event_queue import EventQueue
from kizashi.sensor.tensors import (
    DATATYPES,
    TensorError,
    decode_request,
    decode_response,
    encode_tensor,
    parse_json,
    split_body,
)

# -- tensor decoder ---------------------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=5))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=6),
                                                                  st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                           max_leaves=30)
dtypes = st.one_of(st.sampled_from([*DATATYPES, "BYTES"]), st.text(max_size=6), json_scalars)
shapes = st.one_of(st.lists(st.integers(min_value=-3, max_value=70), max_size=5), json_values)


@st.composite
def hostile_tensor(draw):
    t = {}
    if draw(st.booleans()):
        t["name"] = draw(st.one_of(st.text(max_size=8), json_scalars))
    if draw(st.booleans()):
        t["datatype"] = draw(dtypes)
    if draw(st.booleans()):
        t["shape"] = draw(shapes)
    if draw(st.booleans()):
        t["data"] = draw(json_values)
    return t


@st.composite
def plausible_tensor(draw):
    """Well-formed more often than not, with one field bent: what a fuzzer aiming at the codec sends."""
    shape = draw(st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=3))
    n = int(np.prod(shape))
    dt = draw(st.sampled_from(list(DATATYPES)))
    if dt == "BOOL":
        data = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    elif DATATYPES[dt].kind in "iu":
        data = draw(st.lists(st.integers(min_value=-300, max_value=70000), min_size=n, max_size=n))
    else:
        data = draw(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=n, max_size=n))
    t = {"name": "x", "datatype": dt, "shape": shape, "data": data}
    bend = draw(st.integers(min_value=0, max_value=5))
    if bend == 1 and data:
        t["data"] = data[:-1]
    elif bend == 2:
        t["data"] = np.asarray(data, dtype=object).reshape(shape).tolist() if n else data
    elif bend == 3:
        t["data"] = [draw(json_values)] + data[1:]
    elif bend == 4:
        t["shape"] = [*shape, draw(st.integers(min_value=-1, max_value=3))]
    return t


def _decode_or_400(body: bytes) -> None:
    try:
        req = decode_request(parse_json(body))
    except TensorError as exc:
        assert str(exc)  # a message for {"error": ...}
        return
    for t in req.inputs:  # decoded: typed, shaped, finite; BYTES as bytes objects, never read as numbers
        if t.datatype == "BYTES":
            assert t.array.shape == t.shape and all(isinstance(b, bytes) for b in t.array.reshape(-1))
            with pytest.raises(TensorError, match="BYTES"):
                t.rows()
            continue
        assert t.array.shape == t.shape and t.array.dtype == DATATYPES[t.datatype]
        assert np.all(np.isfinite(t.rows()))


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(hostile_tensor(), plausible_tensor()), st.booleans(), json_values)
def test_tensor_decoder_fuzz_each_input_decoded_or_400_never_a_crash(tensor, wrap, extra):
    body = {"inputs": [tensor]} if wrap else {"inputs": tensor, "outputs": extra}
    _decode_or_400(json.dumps(body).encode())


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_tensor_decoder_fuzz_raw_bytes_decoded_or_400(raw):
    _decode_or_400(raw)


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(list(DATATYPES)), st.lists(st.integers(0, 6), max_size=3),
       st.one_of(st.integers(-3, 300), st.just(True), st.text(max_size=3)), st.binary(max_size=300),
       st.one_of(st.none(), st.integers(-5, 400).map(str), st.text(max_size=5)))
def test_binary_extension_fuzz_decoded_or_400_never_a_crash(datatype, shape, size, tail, header_length):
    head = json.dumps({"inputs": [{"name": "x", "datatype": datatype, "shape": shape,
                                   "parameters": {"binary_data_size": size}}]}).encode()
    body = head + tail
    length = str(len(head)) if header_length is None else header_length
    try:
        req = decode_request(*split_body(body, length))
    except TensorError:
        return
    assert req.inputs[0].array.shape == tuple(shape) and req.inputs[0].array.dtype == DATATYPES[datatype]


def test_tensor_decoder_hostile_cases_answered_with_reasons():
    deep = b"[" * 100_000 + b"]" * 100_000
    cases = {
        deep: "JSON object|not valid JSON",  # which one depends on the parser's depth limit
        b'{"inputs": ' + deep + b'}': "must be a JSON object|not valid JSON",
        b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [NaN]}]}': "not valid JSON",
        orjson.dumps({"inputs": [{"name": "x", "shape": [2**40, 2**40], "datatype": "FP32", "data": []}]}): "more than",
        orjson.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [True]}]}): "numbers only",
        orjson.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP16", "data": [1e6]}]}): "range of FP16",
        orjson.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [1.5]}]}): "integers only",
        orjson.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": [1]}]}): "strings only",
        orjson.dumps({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [[1, 2], [3]]}]}): "shape",
        orjson.dumps({"inputs": [{"name": "x", "shape": [True], "datatype": "FP64", "data": [1]}]}): "non-negative",
        orjson.dumps({"inputs": []}): "non-empty list",
    }
    for body, reason in cases.items():
        with pytest.raises(TensorError, match=reason):
            decode_request(parse_json(body))


def test_binary_tensor_extension_from_tritons_own_client_decodes_exactly():
    """Triton's HTTP client sends inputs as binary tensors by default: the body its encoder writes
    (JSON header, then raw little-endian tensors) decodes to the arrays it was given."""
    import tritonclient.http as triton

    x = np.random.default_rng(0).random((3, 64), dtype=np.float32)
    ids = np.array([[7], [8], [9]], dtype=np.int64)
    inputs = [triton.InferInput("x", list(x.shape), "FP32"), triton.InferInput("ids", list(ids.shape), "INT64")]
    inputs[0].set_data_from_numpy(x, binary_data=True)
    inputs[1].set_data_from_numpy(ids, binary_data=False)  # one JSON, one binary: both in one body
    body, header_length = triton.InferenceServerClient.generate_request_body(
        inputs, outputs=[triton.InferRequestedOutput("predict_proba", binary_data=True)], request_id="r1")
    assert header_length is not None and header_length < len(body)
    req = decode_request(*split_body(body, str(header_length)))
    assert req.id == "r1" and req.outputs == ["predict_proba"]
    np.testing.assert_array_equal(req.input("x").array, x)
    np.testing.assert_array_equal(req.input("ids").array, ids)
    head = body[:header_length]
    for tail, message in [(body[header_length:-4], "runs past the end"),  # truncated
                          (body[header_length:] + b"\0\0", "bytes after the last binary tensor"),
                          (np.full(x.size, np.nan, np.float32).tobytes(), "NaN or infinity")]:
        with pytest.raises(TensorError, match=message):
            decode_request(*split_body(head + tail, str(header_length)))
    for bad in ("-1", "x", str(len(body) + 1)):
        with pytest.raises(TensorError, match="Inference-Header-Content-Length"):
            split_body(body, bad)
    with pytest.raises(TensorError, match="without Inference-Header-Content-Length"):
        decode_request(parse_json(head))


def test_bytes_tensors_beside_the_numeric_input_are_read_not_refused():
    """A model with a BYTES side input (request metadata, an encoded original) and a BYTES output
    (class names): JSON or binary, the request decodes, the numeric input is what detectors read, the
    BYTES tensors are bytes, and a BYTES tensor asked for as detector input is a clear 400 reason."""
    import tritonclient.http as triton

    x = np.random.default_rng(2).random((2, 64), dtype=np.float32)
    meta = np.array([b"origin=app", "café".encode()], dtype=object).reshape(2, 1)
    inputs = [triton.InferInput("meta", [2, 1], "BYTES"), triton.InferInput("x", [2, 64], "FP32")]
    for binary in (False, True):
        inputs[0].set_data_from_numpy(meta, binary_data=binary)
        inputs[1].set_data_from_numpy(x, binary_data=binary)
        body, header_length = triton.InferenceServerClient.generate_request_body(inputs)
        req = decode_request(*split_body(body, None if header_length is None else str(header_length)))
        np.testing.assert_array_equal(req.input("x").rows(), x.astype(np.float64))
        assert req.input("meta").array.reshape(-1).tolist() == [b"origin=app", "café".encode()]
        with pytest.raises(TensorError, match="is BYTES: the sensor's detectors read numeric tensors"):
            req.input("meta").rows()
    p = np.full((2, 3), 1 / 3, dtype=np.float32)
    names = np.array([b"seven", b"one"], dtype=object)
    raw_names = b"".join(len(b).to_bytes(4, "little") + b for b in names)
    head = json.dumps({"outputs": [
        {"name": "label", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(raw_names)}},
        {"name": "predict_proba", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": p.nbytes}},
    ]}).encode()
    body = head + raw_names + p.tobytes()
    resp = decode_response(*split_body(body, str(len(head))))
    theirs = triton.InferResult.from_response_body(body, header_length=len(head))
    assert resp.output("label").array.tolist() == theirs.as_numpy("label").tolist() == [b"seven", b"one"]
    np.testing.assert_array_equal(resp.output(None).array, p)  # the first numeric output
    for bad, reason in [(raw_names[:-1], "runs past"), (raw_names[:3], "inside an element's length"),
                        (raw_names + b"\0", "after the last BYTES element")]:
        head = json.dumps({"outputs": [{"name": "label", "datatype": "BYTES", "shape": [2],
                                        "parameters": {"binary_data_size": len(bad)}}]}).encode()
        with pytest.raises(TensorError, match=reason):
            decode_response(*split_body(head + bad, str(len(head))))


def test_binary_response_decodes_as_tritons_client_reads_it():
    """A binary answer (as Triton sends when outputs ask for binary_data): what the sensor decodes is
    what Triton's client library reads from the same bytes."""
    import tritonclient.http as triton

    p = np.random.default_rng(1).dirichlet(np.ones(10), size=4).astype(np.float32)
    head = json.dumps({"model_name": "digits", "outputs": [
        {"name": "predict_proba", "datatype": "FP32", "shape": list(p.shape),
         "parameters": {"binary_data_size": p.nbytes}}]}).encode()
    body = head + p.tobytes()
    ours = decode_response(*split_body(body, str(len(head)))).output("predict_proba").array
    theirs = triton.InferResult.from_response_body(body, header_length=len(head)).as_numpy("predict_proba")
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(ours, p)


def test_tensor_round_trip_nested_and_flat_agree():
    X = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    flat = encode_tensor("x", X)
    nested = {**flat, "data": X.tolist()}
    a = decode_request({"inputs": [flat]}).input("x")
    b = decode_request({"inputs": [nested]}).input("x")
    assert a.datatype == "FP32" and np.array_equal(a.array, X) and np.array_equal(b.array, X)
    assert a.rows().shape == (3, 4)
    resp = decode_response({"model_name": "m", "outputs": [encode_tensor("p", np.eye(3)[:2])]})
    assert resp.model_name == "m" and resp.output("p").array.shape == (2, 3)


# -- fitted artefacts and state blobs -----------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X[:600] / 16.0, y[:600]


def test_fitted_artefact_is_json_and_npz_without_pickle_and_reloads_equal(tmp_path, digits):
    from kizashi.detectors import create

    X, y = digits
    det = create("stateful_knn", k=5, features="pca", n_components=8, calibration_streams=5,
                 calibration_length=200).fit(X)
    out = save_fitted(det, tmp_path / "knn")
    doc = json.loads((out / "detector.json").read_text())
    assert doc["format"] == "kizashi.fitted/1" and doc["params"]["k"] == 5
    with np.load(out / "arrays.npz", allow_pickle=False) as z:  # raises on object arrays
        assert all(z[k].dtype.kind in "biufc" for k in z.files)
    assert b"\x80\x04" not in (out / "arrays.npz").read_bytes()[:2]
    again = load_fitted(out)
    assert again.threshold_ == det.threshold_
    assert np.allclose(again.score_stream(X[:60]), det.score_stream(X[:60]), equal_nan=True)


def test_fitted_artefact_naming_code_is_refused(tmp_path, digits):
    from kizashi.detectors import create

    X, _ = digits
    out = save_fitted(create("blacklight", calibration_streams=3, calibration_length=100).fit(X), tmp_path / "bl")
    doc = json.loads((out / "detector.json").read_text())
    doc["fitted"]["evil_"] = {"$object": "os:system", "state": "touch /tmp/pwned"}
    (out / "detector.json").write_text(json.dumps(doc))
    with pytest.raises(ArtefactError, match="allow-list"):
        load_fitted(out)
    with pytest.raises(ArtefactError, match="allow-list"):
        state_from_bytes(_blob_with_object("subprocess:Popen"))


def _blob_with_object(path: str) -> bytes:
    tree = json.dumps({"format": "kizashi.state/1", "state": {"$object": path, "state": ["id"]}}).encode()
    return b"KZSTATE1" + len(tree).to_bytes(8, "big") + tree


def test_state_blob_round_trips_per_account_state(digits):
    from kizashi.detectors import create

    X, y = digits
    det = create("prada", min_queries=20, calibration_streams=3, calibration_length=100).fit(X, y)
    for i in range(40):
        det.observe(X[i], account=f"a{i % 2}", prediction=int(y[i]))
    blob = state_to_bytes(det._states().dump())
    fresh = create("prada", delta=det.threshold_, min_queries=20).fit(X, y)
    fresh._states().load(state_from_bytes(blob))
    assert fresh._states().accounts() == det._states().accounts()
    a = det.observe(X[50], account="a0", prediction=int(y[50]))
    b = fresh.observe(X[50], account="a0", prediction=int(y[50]))
    assert [e.score for e in a] == [e.score for e in b]
    assert det._states().peek("a0").distances.size == fresh._states().peek("a0").distances.size


# -- accounts -------------------------------------------------------------------------------------------


def test_account_is_a_keyed_hash_and_forwarded_for_trusted_only_from_proxies():
    ids = AccountIdentifier("Authorization", b"k1", ["10.0.0.0/8"])
    h = [(b"authorization", b"bEaReR s3cr\xc3\xa9t"), (b"x-forwarded-for", b"203.0.113.9, 10.1.1.1")]
    acc, ip = ids.identify("10.2.2.2", h)
    assert acc.startswith("acct-") and "s3cr" not in acc and acc == ids.account_id("s3cr\u00e9t")
    assert ip == "203.0.113.9"
    assert ids.identify("198.51.100.7", h)[1] == "198.51.100.7"  # untrusted peer: header ignored
    assert AccountIdentifier("Authorization", b"k2").account_id("s3crét") != acc  # keyed
    assert ids.identify("127.0.0.1", [(b"authorization", b"Basic abc")])[0] == "addr-127.0.0.1"


# -- event queue ------------------------------------------------------------------------------------------


def _event(i: int) -> DetectionEvent:
    return DetectionEvent(id=f"e{i}", detector={"id": "t", "name": "t"}, stage="precursor", attack="evasion",
                          score=float(i))


def test_event_queue_spills_durably_when_full_and_loses_nothing(tmp_path):
    gate = threading.Event()
    got: list[str] = []

    def slow(events):
        gate.wait(10)
        got.extend(e.id for e in events)

    q = EventQueue(slow, tmp_path / "spill", maxsize=3, batch=2).start()
    q.put([_event(i) for i in range(20)])
    assert q.counts["spilled"] >= 15 and any((tmp_path / "spill").iterdir())
    gate.set()
    deadline = time.monotonic() + 15
    while len(got) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    q.stop()
    assert sorted(got, key=lambda s: int(s[1:])) == [f"e{i}" for i in range(20)]
    assert not list((tmp_path / "spill").glob("spill-*"))


def test_event_queue_replays_spill_left_by_a_crash(tmp_path):
    spill = tmp_path / "spill"
    spill.mkdir()
    (spill / "spill-1.jsonl.part").write_text("".join(_event(i).to_json() + "\n" for i in range(4)) + '{"torn')
    got: list[str] = []
    q = EventQueue(lambda evs: got.extend(e.id for e in evs), spill).start()
    deadline = time.monotonic() + 10
    while len(got) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    q.stop()
    assert got == ["e0", "e1", "e2", "e3"] and q.counts["spill_replayed"] == 4


KILLED_SENSOR = """
import sys, threading, time
from kizashi.engine.events import DetectionEvent
from kizashi.sensor.event_queue import EventQueue
stuck = threading.Event()  # the store hangs: nothing the queue holds is stored before the kill
q = EventQueue(lambda events: stuck.wait(), sys.argv[1], maxsize=40, batch=10).start()
q.SEGMENT_EVENTS = 64  # several journal segments
for i in range(0, 300, 30):
    q.put([DetectionEvent(id=f"e{j}", detector={"id": "t", "name": "t"}, stage="precursor",
                          attack="evasion", score=float(j)) for j in range(i, i + 30)])
print("accepted", flush=True)
time.sleep(120)
"""


def test_event_queue_loses_nothing_when_the_process_is_killed(tmp_path):
    """A real ``kill -9`` of a process whose store hangs, with 300 accepted events: some spilled (the
    queue holds 40), the rest only in memory and the journal. The next start delivers every one."""
    import signal
    import subprocess
    import sys

    spill = tmp_path / "spill"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SENSOR, str(spill)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "accepted"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert list(spill.glob("journal-*.jsonl")), "the journal was not on disk"
    got: list[str] = []
    q = EventQueue(lambda evs: got.extend(e.id for e in evs), spill).start()
    deadline = time.monotonic() + 15
    while len(set(got)) < 300 and time.monotonic() < deadline:
        time.sleep(0.05)
    q.stop()
    assert set(got) == {f"e{i}" for i in range(300)}  # a journalled and spilled event may come twice
    assert q.counts["journal_replayed_files"] >= 2
    assert not list(spill.glob("journal-*")) and not list(spill.glob("spill-*"))


def test_event_queue_deletes_journal_segments_once_stored(tmp_path):
    got: list[str] = []
    q = EventQueue(lambda evs: got.extend(e.id for e in evs), tmp_path / "spill", batch=7).start()
    q.SEGMENT_EVENTS = 10
    for i in range(0, 95, 5):
        q.put([_event(j) for j in range(i, i + 5)])
    assert q.flush()
    assert len(list((tmp_path / "spill").glob("journal-*"))) <= 1  # only the open segment
    q.stop()
    assert got == [f"e{i}" for i in range(95)] and not list((tmp_path / "spill").glob("journal-*"))


# -- the upstream client ------------------------------------------------------------------------------


def test_upstream_client_reads_chunked_and_survives_a_server_closing_idle_connections():
    import asyncio

    from kizashi.sensor.upstream import Upstream, UpstreamError

    served = []

    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        served.append(1)
        body = b'{"ok": %d}' % len(served)
        if len(served) % 2:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()  # like a keep-alive timeout: the pooled connection is now stale

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        up = Upstream(f"http://127.0.0.1:{port}", timeout=5, max_body=100)
        answers = [await up.request("POST", "/v2/models/m/infer", [], b"{}") for _ in range(4)]
        server.close()
        await server.wait_closed()
        with pytest.raises(UpstreamError) as err:
            await Upstream(f"http://127.0.0.1:{port}", timeout=5).request("GET", "/", [], None)
        await up.aclose()
        return answers, err.value.status

    answers, status = asyncio.run(main())
    assert [a[2] for a in answers] == [b'{"ok": 1}', b'{"ok": 2}', b'{"ok": 3}', b'{"ok": 4}']
    assert all(a[0] == 200 for a in answers) and status == 502
