"""``kizashi sensor`` and ``kizashi detectors fit``: the wiring between fitted detectors, the
sensor and the store/rule pipeline.

The sensor room imports no detector code: this module adapts each detector kind to the sensor's
:class:`~kizashi.sensor.core.OnlineDetector` (stream detectors observe each row per account; input
detectors score the rows with the model server's own answers standing in for the model).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from kizashi.cli.errors import fail
from kizashi.cli.tuning import tune_gc

from .detect_cmd import AllowPickleOpt, ArchitectureOpt, InputShapeOpt, TrustTypeOpt

if TYPE_CHECKING:
    import numpy as np



# -- adapters: detector kinds -> the sensor's OnlineDetector ----------------------------------------


class RecordedAnswers:
    """A "model" whose answers are the ones the model server gave for the rows being inspected."""

    def __init__(self, X: np.ndarray, probabilities: np.ndarray):
        self.X, self.p = X, probabilities

    def predict_proba(self, X: Any) -> np.ndarray:
        if len(X) != len(self.p):
            raise ValueError("recorded answers do not match the inputs")
        return self.p


class StreamOnline:
    """A stream detector: every row of a request is one query of the account."""

    stateful = True

    def __init__(self, detector: Any, blocking: bool = False):
        self.detector, self.blocking, self.name = detector, blocking, detector.name

    def inspect(self, X, outputs, *, account: str, source_ip: str | None, time: datetime) -> list:
        events = []
        for i in range(len(X)):
            events.extend(self.detector.observe(X[i], account=account, time=time, prediction=outputs.prediction(i),
                                                source_ip=source_ip))
        return events

    def accounts(self) -> list[str]:
        return self.detector._states().accounts()

    def encode_account(self, account: str) -> bytes | None:
        from kizashi.detectors.artefacts import state_to_bytes

        state = self.detector._states().peek(account)
        return None if state is None else state_to_bytes(state)

    def restore_account(self, account: str, blob: bytes) -> None:
        from kizashi.detectors.artefacts import state_from_bytes

        self.detector._states().put(account, state_from_bytes(blob))


class InputOnline:
    """An input/output detector: scores the request's rows; the answer stands in for the model."""

    stateful = False

    def __init__(self, detector: Any, blocking: bool = False):
        from kizashi.detectors import Need

        self.detector, self.blocking, self.name = detector, blocking, detector.name
        self.needs_output = detector.needs.probabilities is Need.REQUIRED

    def inspect(self, X, outputs, *, account: str, source_ip: str | None, time: datetime) -> list:
        model = None
        if outputs.probabilities is not None:
            model = RecordedAnswers(X, outputs.probabilities)
        elif self.needs_output:
            return []  # the answer held no class probabilities: nothing to score
        return self.detector.detect(X, account=account, time=time, model=model, source_ip=source_ip)



#: what the sensor can give a detector: the inputs, the model server's answers, the query times
UNAVAILABLE_IN_SENSOR = ("logits", "activations", "gradients", "labels", "adversarial_examples")


def online_detector(detector: Any, *, blocking: bool = False):
    """The sensor-side adapter for a fitted detector, chosen by its declared kind; detectors whose
    declared needs the sensor cannot meet at run time are refused with the reason."""
    from kizashi.detectors import Need

    if detector.kind not in ("stream", "input"):
        raise ValueError(f"{detector.name} is a {detector.kind} detector: it inspects datasets or models before "
                         "deployment (scan-data / scan-model), not traffic")
    missing = [n for n in UNAVAILABLE_IN_SENSOR if getattr(detector.needs, n) is Need.REQUIRED]
    if detector.kind == "input" and missing:
        raise ValueError(f"{detector.name} needs the model's {', '.join(missing)} at run time; the sensor has only "
                         "the model server's answers")
    return StreamOnline(detector, blocking) if detector.kind == "stream" else InputOnline(detector, blocking)


def build_detectors(cfg, endpoint: str | None = None) -> dict[str, list]:
    """Each configured model's detectors, loaded from their fitted artefacts."""
    from kizashi.detectors.artefacts import load_fitted

    out: dict[str, list] = {}
    for model, mcfg in cfg.models.items():
        dets = []
        for ref in mcfg.detectors:
            if not ref.fitted:
                raise ValueError(f"models.{model}: detector {ref.name} has no `fitted:` folder "
                                 "(write one with `kizashi detectors fit`)")
            det = load_fitted(ref.fitted)
            if det.name != ref.name:
                raise ValueError(f"models.{model}: {ref.fitted} holds a fitted {det.name}, not {ref.name}")
            det.set_context(model_id=model, endpoint=endpoint)
            dets.append(online_detector(det, blocking=ref.blocking))
        out[model] = dets
    return out


# -- kizashi detectors fit -------------------------------------------------------------------------


def parse_params(pairs: list[str]) -> dict[str, Any]:
    import yaml

    params: dict[str, Any] = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--param {p!r}: expected key=value")
        try:
            params[key.strip()] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            params[key.strip()] = value
    return params


def fit_detector(name: str, data: dict[str, np.ndarray], model: Any, params: dict[str, Any]):
    """Fit detector ``name`` on ``data``: X and optional y; a detector that needs query times (its
    declared ``needs``: query_rate) fits on ``times`` and ``accounts``, or per-window ``counts``."""
    from kizashi import detectors

    det = detectors.create(name, **params)
    if det.needs.query_times is detectors.Need.REQUIRED:
        if "times" in data:
            return det.fit(data["times"], data.get("accounts"))
        import numpy as np

        return det.fit_counts(data.get("counts", np.zeros(1)))
    if det.kind not in ("stream", "input"):
        raise ValueError(f"{name} is a {det.kind} detector: it inspects datasets or models (scan-data / "
                         "scan-model); there is nothing to fit for the sensor")
    y = data.get("y")
    return det.fit(data["X"], y, model=model)


def detectors_fit(
    name: Annotated[str, typer.Argument(help="detector registry name (kizashi detectors list)")],
    data: Annotated[str, typer.Option("--data", help=".npz with X (benign reference inputs) and optionally y")],
    out: Annotated[str, typer.Option("--out", help="folder to write detector.json + arrays.npz")],
    model: Annotated[str | None, typer.Option("--model", help="the protected model, for detectors that need it "
                                               "(.onnx, .safetensors/.pt + --architecture, .skops)")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="constructor parameter key=value (repeatable)")] = None,
    architecture: ArchitectureOpt = None,
    input_shape: InputShapeOpt = None,
    trust_type: TrustTypeOpt = None,
    allow_pickle: AllowPickleOpt = False,
) -> None:
    """Fit a detector and write its fitted parameters (JSON + .npz, no pickle) for the sensor."""
    from kizashi import detectors
    from kizashi.detectors.artefacts import ArtefactError, save_fitted

    from .detect_cmd import _load_model

    try:
        detectors.get(name)
    except KeyError as exc:
        fail(str(exc).strip("'\""))
    import numpy as np

    try:
        with np.load(data, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        fail(f"cannot read {data}: {exc}")
    if "X" not in arrays and not {"times", "counts"} & set(arrays):
        fail(f"{data} has no array 'X'")
    try:
        params = parse_params(param or [])
        det = fit_detector(name, arrays, _load_model(model, architecture, input_shape, trust_type, allow_pickle),
                           params)
        path = save_fitted(det, out)
    except (ValueError, ArtefactError) as exc:
        fail(str(exc))
    typer.echo(json.dumps({"detector": name, "out": str(path), "threshold": getattr(det, "threshold_", None)}))


# -- kizashi sensor ---------------------------------------------------------------------------------


def sensor(
    upstream: Annotated[str, typer.Option("--upstream", help="model server base URL (Open Inference Protocol v2)")],
    config: Annotated[str, typer.Option("--config", help="sensor.yaml")],
    db: Annotated[str | None, typer.Option("--db", help="database URL (default $KIZASHI_DB or sqlite:///kizashi.db)")] = None,
    host: Annotated[str, typer.Option("--host", help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port")] = 8081,
    rules: Annotated[list[str] | None, typer.Option("--rules", help="Sigma rule files/folders (default: bundled)")] = None,
) -> None:
    """Reverse proxy in front of a model server: detectors online, events to the store and rules."""
    from urllib.parse import urlsplit

    from kizashi.engine.pipeline import Pipeline
    from kizashi.engine.sigma import RuleSet
    from kizashi.engine.store import Store, default_db_url
    from kizashi.sensor.accounts import AccountIdentifier, load_or_create_key
    from kizashi.sensor.app import SensorApp
    from kizashi.sensor.asgi import Limits, bind, run
    from kizashi.sensor.config import SensorConfigError, load_config
    from kizashi.sensor.core import Sensor

    u = urlsplit(upstream)
    if u.scheme not in ("http", "https") or not u.netloc:
        fail(f"--upstream {upstream!r}: expected http(s)://host:port")
    if not 0 < port < 65536:
        fail(f"--port {port} is out of range")
    try:
        cfg = load_config(config)
        dets = build_detectors(cfg, endpoint=upstream)
    except (SensorConfigError, ValueError, OSError) as exc:
        fail(str(exc))
    try:
        store = Store(db or default_db_url())
        # no --rules: the bundled pack with its SOC alerting defaults (rules/alerting.toml)
        pipe = Pipeline(store, RuleSet.from_paths(rules)) if rules else Pipeline(store)
    except Exception as exc:  # noqa: BLE001 - any store/rules problem is one error line
        fail(f"cannot open the store or rules: {exc}")
    try:
        sock = bind(host, port)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    core = Sensor(cfg, dets, lambda evs: pipe.ingest(evs).alerts,
                  recent_alerts=lambda since: store.list_alerts(since=since), endpoint=upstream)
    core.start()
    accounts = AccountIdentifier(cfg.account_header, load_or_create_key(cfg.account_key_env, Path(cfg.state_dir)),
                                 cfg.trusted_proxies)
    app = SensorApp(core, upstream, accounts)
    limits = Limits(header_timeout=cfg.header_timeout, body_timeout=cfg.body_timeout,
                    request_timeout=cfg.upstream_timeout + cfg.body_timeout + 5, max_body=cfg.max_body,
                    max_connections=cfg.max_connections)
    h, p = sock.getsockname()[:2]
    typer.echo(json.dumps({"listening": f"http://{h}:{p}", "upstream": upstream, "mode": cfg.mode,
                           "models": {m: [d.name for d in v] for m, v in dets.items()}}), err=True)
    sys.stderr.flush()
    restore_gc = tune_gc()
    try:
        run(app, sock, limits)
    finally:
        restore_gc()


def register(app: typer.Typer) -> None:
    from .detect_cmd import detectors_app

    detectors_app.command("fit")(detectors_fit)
    app.command("sensor")(sensor)
