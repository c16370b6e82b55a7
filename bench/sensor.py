"""The sensor's cost: requests/s and latency (p50, p99) of Open Inference Protocol infer calls through
``kizashi sensor`` against direct calls to the same real MLServer, in one run, at 1, 8 and 32
concurrent keep-alive clients, with the default detector set (query_rate, label_distribution,
blacklight, stateful_knn, prada, softmax_baseline); and the memory of per-account detector state
for 10k tracked accounts. Prints JSON.

    .venv/bin/python bench/sensor.py [--seconds 6] [--rounds 3] [--accounts 2000] [--memory-accounts 10000]

Needs the MLServer venv (``scripts/mlserver-venv.sh``, run by ``make test``). Client, sensor and MLServer share the machine's
cores, so the numbers include contention between them (said in docs/sensor.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("KIZASHI_MLSERVER_VENV", ROOT / ".venv-mlserver"))
DEFAULT_SET = ("query_rate", "label_distribution", "blacklight", "stateful_knn", "prada", "softmax_baseline")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"{url} not ready")


def task():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, _ = train_test_split(X / 16.0, y, test_size=0.3, random_state=0, stratify=y)
    return LogisticRegression(max_iter=1000, random_state=0).fit(X_tr, y_tr), X_tr, X_te


def fit_default_set(model, X_tr, out: Path) -> None:
    from kizashi.cli.sensor_cmd import fit_detector
    from kizashi.detectors.artefacts import save_fitted

    labels = model.predict(X_tr)
    rng = np.random.default_rng(0)  # benign query times: 200 accounts at about one query per 20 s
    times = np.sort(rng.uniform(0, 3600, 200 * 180))
    data = {"X": X_tr, "y": labels, "times": times, "accounts": rng.integers(0, 200, len(times))}
    for name in DEFAULT_SET:
        det = fit_detector(name, data, model if name == "softmax_baseline" else None,
                           {"fpr": 0.002} if name == "softmax_baseline" else {})
        save_fitted(det, out / name)


def start_mlserver(model, d: Path) -> tuple[subprocess.Popen, str]:
    import joblib

    (d / "digits").mkdir(parents=True)
    joblib.dump(model, d / "digits" / "model.joblib")
    (d / "digits" / "model-settings.json").write_text(json.dumps({
        "name": "digits", "implementation": "mlserver_sklearn.SKLearnModel", "parameters": {"uri": "./model.joblib"}}))
    port = _port()
    (d / "settings.json").write_text(json.dumps({"host": "127.0.0.1", "http_port": port, "grpc_port": _port(),
                                                 "metrics_port": _port(), "metrics_endpoint": None,
                                                 "parallel_workers": 0}))
    proc = subprocess.Popen([str(VENV / "bin" / "mlserver"), "start", str(d)], cwd=d, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    _ready(url + "/v2/models/digits/ready", proc)
    return proc, url


def start_sensor(upstream: str, d: Path) -> tuple[subprocess.Popen, str]:
    dets = "".join(f"      - name: {n}\n        fitted: fitted/{n}\n" for n in DEFAULT_SET)
    (d / "sensor.yaml").write_text(f"mode: monitor\naccount_header: X-Api-Key\nmodels:\n  digits:\n"
                                   f"    detectors:\n{dets}")
    port = _port()
    proc = subprocess.Popen([sys.executable, "-m", "kizashi.cli.main", "sensor", "--upstream", upstream,
                             "--config", str(d / "sensor.yaml"), "--db", f"sqlite:///{d / 'bench.db'}",
                             "--port", str(port)], cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "KIZASHI_SENSOR_KEY": "bench", "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    _ready(url + "/kizashi/status", proc)
    return proc, url


# -- a small keep-alive HTTP/1.1 load generator (asyncio streams: cheap per request) ---------------


async def _client(host: str, port: int, bodies: list[bytes], accounts: list[str], stop_at: float,
                  lat: list[float], errors: list[int], c: int, clients: int) -> None:
    """One keep-alive client; request i of client c is the (i * clients + c)-th of one global benign
    stream (account k sends image k, k + n_accounts, ...: no account repeats an image)."""
    reader, writer = await asyncio.open_connection(host, port)
    i = 0
    try:
        while time.perf_counter() < stop_at:
            k = i * clients + c
            body = bodies[(k // len(accounts) * 7 + k) % len(bodies)]
            head = (f"POST /v2/models/digits/infer HTTP/1.1\r\nHost: {host}:{port}\r\n"
                    f"Content-Type: application/json\r\nX-Api-Key: {accounts[k % len(accounts)]}\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()
            t0 = time.perf_counter()
            writer.write(head + body)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v)
            await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            if not status_line.startswith(b"HTTP/1.1 200"):
                errors.append(1)
            i += 1
    finally:
        writer.close()


def load(url: str, clients: int, seconds: float, bodies: list[bytes], accounts: list[str],
         lat_out: list[float] | None = None) -> dict:
    """One load phase; each phase has its own accounts (a phase must not replay an earlier one's
    queries to the same account: Blacklight rightly flags exact repeats)."""
    global _PHASE
    _PHASE += 1
    accounts = [f"p{_PHASE}-{a}" for a in accounts]
    host, port = url.split("//")[1].split(":")
    lat: list[float] = []
    errors: list[int] = []

    async def main():
        stop_at = time.perf_counter() + seconds
        await asyncio.gather(*[_client(host, int(port), bodies, accounts, stop_at, lat, errors, c, clients)
                               for c in range(clients)])

    t0 = time.perf_counter()
    asyncio.run(main())
    wall = time.perf_counter() - t0
    if lat_out is not None:
        lat_out.extend(lat)
    return summary(lat, len(errors), wall)


def summary(lat: list[float], errors: int, wall: float) -> dict:
    a = np.asarray(lat) * 1000
    return {"requests": len(lat), "errors": errors, "req_per_s": round(len(lat) / wall, 1),
            "p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def side_by_side(direct: str, via: str, clients: int, seconds: float, rounds: int, bodies, accounts,
                 pids: dict[str, int] | None = None) -> dict:
    """Alternate direct and sensor rounds (the machine's load drifts; alternation spreads it over both)."""
    lat: dict[str, list[float]] = {"direct": [], "sensor": []}
    wall = {"direct": 0.0, "sensor": 0.0}
    errors = {"direct": 0, "sensor": 0}
    cpu = {"sensor": 0.0, "mlserver": 0.0}
    for _ in range(rounds):
        for side, url in (("direct", direct), ("sensor", via)):
            before = {k: cpu_seconds(p) for k, p in (pids or {}).items()} if side == "sensor" else {}
            t0 = time.perf_counter()
            r = load(url, clients, seconds / rounds, bodies, accounts, lat[side])
            wall[side] += time.perf_counter() - t0
            errors[side] += r["errors"]
            for k, v in before.items():
                cpu[k] += cpu_seconds(pids[k]) - v
    dr, sv = (summary(lat[k], errors[k], wall[k]) for k in ("direct", "sensor"))
    n = max(1, sv["requests"])
    # CPU per request through the sensor: the sensor process vs the model server (load-independent-ish)
    sv["cpu_ms_per_request"] = {k: round(v * 1000 / n, 3) for k, v in cpu.items()} if pids else None
    return {"clients": clients, "direct": dr, "sensor": sv, "added_p50_ms": round(sv["p50_ms"] - dr["p50_ms"], 3),
            "added_p99_ms": round(sv["p99_ms"] - dr["p99_ms"], 3),
            "throughput_ratio": round(sv["req_per_s"] / dr["req_per_s"], 3)}


_PHASE = 0


def memory_per_accounts(fitted: Path, X: np.ndarray, model, n_accounts: int, queries: int) -> dict:
    """Bytes of per-account state (tracemalloc) after ``queries`` queries from each of n accounts."""
    from datetime import UTC, datetime, timedelta

    from kizashi.cli.sensor_cmd import online_detector
    from kizashi.detectors.artefacts import load_fitted
    from kizashi.sensor.core import Outputs

    dets = [online_detector(load_fitted(fitted / n)) for n in DEFAULT_SET]
    probs = model.predict_proba(X)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    k = 0
    for q in range(queries):
        for a in range(n_accounts):
            i = k % len(X)
            out = Outputs(probabilities=probs[i:i + 1])
            for d in dets:
                d.inspect(X[i:i + 1], out, account=f"acct-{a}", source_ip=None,
                          time=t0 + timedelta(seconds=60 * q + a * 1e-3))
            k += 1
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return {"accounts": n_accounts, "queries_per_account": queries, "bytes_total": int(used),
            "bytes_per_10k_accounts": int(used * 10_000 / n_accounts),
            "inspect_us_per_query": round((time.perf_counter() - start) / k * 1e6, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=6.0, help="per side and concurrency, split into rounds")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--accounts", type=int, default=2000)
    ap.add_argument("--memory-accounts", type=int, default=10_000)
    ap.add_argument("--memory-queries", type=int, default=3)
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    model, X_tr, X_te = task()
    bodies = [json.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP64", "data": x.tolist()}],
                          "outputs": [{"name": "predict_proba"}]}).encode() for x in X_te]
    accounts = [f"bench-{i}" for i in range(args.accounts)]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        fit_default_set(model, X_tr, d / "fitted")
        ml, direct = start_mlserver(model, d / "mlserver")
        sensor, via = start_sensor(direct, d)
        rows = []
        try:
            load(direct, 4, 1.0, bodies, accounts)  # warm both paths
            load(via, 4, 1.0, bodies, accounts)
            for c in [int(x) for x in args.clients.split(",")]:
                rows.append(side_by_side(direct, via, c, args.seconds, args.rounds, bodies, accounts,
                                         {"sensor": sensor.pid, "mlserver": ml.pid}))
            with urllib.request.urlopen(via + "/kizashi/status") as r:
                status = json.loads(r.read())
        finally:
            sensor.send_signal(signal.SIGINT)
            sensor.wait(timeout=30)
            ml.terminate()
            ml.wait(timeout=30)
        from collections import Counter

        from kizashi.engine.store import Store

        by_detector = Counter(e.detector.name for e in Store(f"sqlite:///{d / 'bench.db'}").iter_events())
        mem = memory_per_accounts(d / "fitted", X_te, model, args.memory_accounts, args.memory_queries)
    print(json.dumps({"bench": "sensor", "model_server": "mlserver 1.7.1 (mlserver-sklearn, LogisticRegression "
                      "on 8x8 digits)", "detectors": list(DEFAULT_SET), "seconds_per_point": args.seconds,
                      "rounds": args.rounds, "load_average": os.getloadavg(),
                      "cores": os.cpu_count(), "load": rows, "sensor_counts": status["counts"],
                      "events_by_detector": dict(by_detector),
                      "memory": mem}, indent=1))


if __name__ == "__main__":
    main()
