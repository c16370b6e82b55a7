"""Real servers for the sensor tests and bench: Seldon MLServer (its own venv, made by
``scripts/mlserver-venv.sh``) serving a digits model, and ``kizashi sensor`` as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MLSERVER_VENV = Path(os.environ.get("KIZASHI_MLSERVER_VENV", ROOT / ".venv-mlserver"))
KIZASHI = [sys.executable, "-m", "kizashi.cli.main"]
MODEL = "digits"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_mlserver_venv() -> Path:
    """The MLServer venv (created by the provisioning script; made here if a machine lacks it)."""
    exe = MLSERVER_VENV / "bin" / "mlserver"
    if not exe.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "mlserver-venv.sh"), sys.executable, str(MLSERVER_VENV)],
                       check=True, capture_output=True, text=True, timeout=900)
    return exe


def digits_task(seed: int = 0):
    """Digits scaled to [0, 1], a seeded split, and a logistic-regression model trained on it."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, random_state=seed, stratify=y)
    model = LogisticRegression(max_iter=1000, random_state=seed).fit(X_tr, y_tr)
    return model, X_tr, y_tr, X_te, y_te


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode}: {_tail(proc)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (OSError, urllib.error.HTTPError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout} s")


def _tail(proc: subprocess.Popen) -> str:
    log = getattr(proc, "log_path", None)
    if log and Path(log).exists():
        return Path(log).read_text(errors="replace")[-3000:]
    return ""


class MLServer:
    """``mlserver start`` on 127.0.0.1 with one sklearn model (a joblib file kizashi's tests wrote)."""

    def __init__(self, model, workdir: Path, name: str = MODEL):
        self.exe = ensure_mlserver_venv()
        self.dir = Path(workdir)
        (self.dir / name).mkdir(parents=True, exist_ok=True)
        import joblib

        joblib.dump(model, self.dir / name / "model.joblib")
        (self.dir / name / "model-settings.json").write_text(json.dumps({
            "name": name, "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib", "version": "v1"}}))
        self.port = free_port()
        (self.dir / "settings.json").write_text(json.dumps({
            "host": "127.0.0.1", "http_port": self.port, "grpc_port": free_port(), "metrics_port": free_port(),
            "metrics_endpoint": None, "parallel_workers": 0, "load_models_at_startup": True}))
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> MLServer:
        log = open(self.dir / "mlserver.log", "w")
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        self.proc = subprocess.Popen([str(self.exe), "start", str(self.dir)], stdout=log, stderr=subprocess.STDOUT,
                                     env=env, cwd=self.dir, start_new_session=True)
        self.proc.log_path = self.dir / "mlserver.log"  # type: ignore[attr-defined]
        wait_http(f"{self.url}/v2/models/{MODEL}/ready", timeout=120, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


SENSOR_KEY = "kizashi-test-account-key"


class SensorProcess:
    """``kizashi sensor`` as a real subprocess (stderr to a log file)."""

    def __init__(self, upstream: str, config: Path, db: str, workdir: Path, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = KIZASHI + ["sensor", "--upstream", upstream, "--config", str(config), "--db", db,
                               "--port", str(self.port)]
        self.workdir = Path(workdir)
        self.proc: subprocess.Popen | None = None

    def start(self) -> SensorProcess:
        self.log_path = self.workdir / f"sensor-{self.port}-{time.time_ns()}.log"
        log = open(self.log_path, "w")
        env = {**os.environ, "KIZASHI_SENSOR_KEY": SENSOR_KEY, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir)
        self.proc.log_path = self.log_path  # type: ignore[attr-defined]
        wait_http(f"{self.url}/kizashi/status", timeout=90, proc=self.proc)
        return self

    def status(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/kizashi/status", timeout=10) as r:
            return json.loads(r.read())

    def settle(self, timeout: float = 30.0) -> dict:
        """Wait until the sensor's event queue is drained into the store."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            st = self.status()
            q = st["queue"]
            key = (q["queued"] + q["spill_replayed"], q["events_handled"])
            if q["in_memory"] == 0 and q["events_handled"] >= q["queued"] + q["spill_replayed"] and key == last:
                return st
            last = key
            time.sleep(0.3)
        raise TimeoutError("sensor queue did not drain")

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def account_id(key: str) -> str:
    """The id the sensor gives the credential ``key`` (same HMAC as kizashi.sensor.accounts)."""
    from kizashi.sensor.accounts import AccountIdentifier

    return AccountIdentifier("X-Api-Key", SENSOR_KEY.encode()).account_id(key)


def infer_body(X: np.ndarray, *, outputs=("predict_proba",), request_id: str | None = None,
               datatype: str = "FP64") -> bytes:
    X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    body: dict = {"inputs": [{"name": "input-0", "shape": list(X.shape), "datatype": datatype,
                              "data": X.reshape(-1).tolist()}]}
    if outputs:
        body["outputs"] = [{"name": o} for o in outputs]
    if request_id:
        body["id"] = request_id
    return json.dumps(body).encode()


def post(url: str, body: bytes, headers: dict | None = None, timeout: float = 30.0) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def get(url: str, timeout: float = 30.0) -> tuple[int, dict | None]:
    """(status, parsed JSON body or None when the body is empty)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            data = r.read()
            return r.status, json.loads(data) if data else None
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def probabilities(answer: dict) -> np.ndarray:
    out = next(o for o in answer["outputs"] if o["name"] == "predict_proba")
    return np.asarray(out["data"], dtype=np.float64).reshape(out["shape"])
