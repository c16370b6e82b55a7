"""``kizashi detectors list``, ``kizashi scan-data``, ``kizashi scan-model``: run training-data and model
detectors in a training pipeline and emit precursor events to a file, stdout or the store."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from kizashi.cli.errors import fail

if TYPE_CHECKING:
    import numpy as np



detectors_app = typer.Typer(help="The detector registry.", no_args_is_help=True)


def _needs_text(needs: dict[str, str]) -> str:
    """``labels, model, activations?``: required needs, then optional ones marked ``?``."""
    return ", ".join([k for k, v in needs.items() if v == "required"] + [f"{k}?" for k, v in needs.items()
                                                                         if v == "optional"]) or "-"


@detectors_app.command("list")
def detectors_list(format: Annotated[str, typer.Option("--format", help="table | json")] = "table") -> None:
    """Registered detectors: kind, what each needs (``?`` = optional) and the catalogue method it implements."""
    from kizashi import detectors
    rows = []
    for name in detectors.available():
        cls = detectors.get(name)
        m = cls.catalogue_entry()
        rows.append({"name": name, "kind": cls.kind, "needs": cls.needs.as_dict(), "method": cls.method,
                     "ref": m.ref if m else None, "stage": m.stage if m else None,
                     "attack": m.attack if m else None, "atlas": list(m.atlas) if m else []})
    if format == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        ref = f"[{r['ref']}]" if r["ref"] else "-"
        typer.echo(f"{r['name']:<22} {r['kind']:<8} {ref:<5} {r['stage'] or '':<10} {r['attack'] or '':<11} "
                   f"{r['method']:<32} needs: {_needs_text(r['needs'])}")


def _load_npz(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    import numpy as np

    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        fail(f"cannot read {path}: {exc}")
    if "X" not in data:
        fail(f"{path} has no array 'X' (expected arrays X and y)")
    return data["X"], (data["y"] if "y" in data else None)


ArchitectureOpt = Annotated[str | None, typer.Option(
    "--architecture", help="for .safetensors/.pt weights: package.module:factory returning the torch.nn.Module")]
InputShapeOpt = Annotated[str | None, typer.Option(
    "--input-shape", help="shape of one input, e.g. 1,28,28 (flat rows are reshaped to it)")]
TrustTypeOpt = Annotated[list[str] | None, typer.Option(
    "--trust-type", help="a type a .skops model may contain beyond kizashi's trusted scikit-learn list (repeat)")]
AllowPickleOpt = Annotated[bool, typer.Option(
    "--allow-pickle", help="load a pickle/joblib model you TRUST (unpickling runs code); it is scanned first")]


def _load_model(path: str | None, architecture: str | None = None, input_shape: str | None = None,
                trust_type: list[str] | None = None, allow_pickle: bool = False):
    """The model in ``path`` through the safe loader (:mod:`kizashi.detectors.loading`)."""
    if path is None:
        return None
    from kizashi.detectors.loading import load_model

    try:
        shape = tuple(int(v) for v in input_shape.split(",")) if input_shape else None
    except ValueError:
        fail(f"--input-shape must be comma-separated integers, got {input_shape!r}")
    try:
        return load_model(path, architecture=architecture, input_shape=shape, trusted_types=trust_type or (),
                          allow_pickle=allow_pickle)
    except Exception as exc:  # noqa: BLE001 - any loading problem is reported, never a traceback
        fail(f"cannot load model {path}: {exc}")


def _artifact_events(path: str, model_id: str | None, endpoint: str) -> list:
    """Events of the static ``artifact_scan`` of a model file (run before it is loaded)."""
    from kizashi import detectors

    if not Path(path).is_file():
        fail(f"no such model file: {path}")
    det = detectors.create("artifact_scan")
    det.set_context(model_id=model_id or Path(path).stem, endpoint=endpoint)
    return det.inspect_model(path).to_events(det)


def _emit(events, out: str | None, db: str | None) -> None:
    lines = "".join(e.to_json() + "\n" for e in events)
    if out:
        Path(out).write_text(lines, encoding="utf-8")
    elif not db:
        sys.stdout.write(lines)
    if db:
        from kizashi.engine.pipeline import Pipeline
        from kizashi.engine.store import Store

        res = Pipeline(Store(db)).ingest(events)
        typer.echo(json.dumps({"stored": res.stored, "alerts": len(res.alerts)}), err=True)


def _detector_names(spec: str, kind: str) -> list[str]:
    """The comma list ``spec`` of registered detectors, each of ``kind``."""
    from kizashi import detectors
    names = [n.strip() for n in spec.split(",") if n.strip()]
    for n in names:
        try:
            cls = detectors.get(n)
        except KeyError as exc:
            fail(str(exc).strip("'\""))
        if cls.kind != kind:
            fail(f"{n} is a {cls.kind} detector, not a {kind} detector (see `kizashi detectors list`)")
    return names


def scan_data(
    data: Annotated[str, typer.Argument(help=".npz with arrays X (samples) and y (labels)")],
    detector: Annotated[str, typer.Option("--detector", help="comma list of data detectors")] = "spectral_signature",
    model: Annotated[str | None, typer.Option(
        help="trained model for representations (.onnx, .safetensors/.pt + --architecture, .skops)")] = None,
    model_id: Annotated[str | None, typer.Option(help="model id the events refer to")] = None,
    trusted: Annotated[str | None, typer.Option(
        help=".npz (X, y) of trusted clean data, for detectors that learn from it (depois)")] = None,
    out: Annotated[str | None, typer.Option("--out", help="JSON-lines output (default stdout)")] = None,
    db: Annotated[str | None, typer.Option("--db", help="also ingest the events into this store")] = None,
    architecture: ArchitectureOpt = None,
    input_shape: InputShapeOpt = None,
    trust_type: TrustTypeOpt = None,
    allow_pickle: AllowPickleOpt = False,
) -> None:
    """Inspect a training set for poisoning and backdoor samples before training on it."""
    from kizashi import detectors

    names = _detector_names(detector, "dataset")
    X, y = _load_npz(data)
    if y is None:
        fail(f"{data} has no array 'y': data detectors need the labels")
    Xt, yt = _load_npz(trusted) if trusted else (None, None)
    if trusted and yt is None:
        fail(f"{trusted} has no array 'y': trusted data needs its labels")
    events, summary = [], []
    if model:
        events += _artifact_events(model, model_id, "training-pipeline")
        try:
            mdl = _load_model(model, architecture, input_shape, trust_type, allow_pickle)
        except typer.Exit:
            _emit(events, out, db)
            raise
    else:
        mdl = None
    for name in names:
        det = detectors.create(name)
        det.set_context(model_id=model_id, endpoint="training-pipeline")
        needs = det.needs
        if needs.trusted_data is detectors.Need.REQUIRED and Xt is None:
            fail(f"{name} learns from trusted clean data: pass --trusted TRUSTED.npz (arrays X, y)")
        if needs.model is detectors.Need.REQUIRED and mdl is None:
            fail(f"{name} needs the model trained on the data: pass --model MODEL (.onnx, .safetensors, .skops)")
        try:
            if needs.trusted_data is detectors.Need.REQUIRED:
                det.fit(Xt, yt, model=mdl)
            rep = det.inspect(X, y, model=mdl)
        except (ValueError, TypeError) as exc:
            fail(f"{name}: {exc}")
        events += rep.to_events(det, dataset=Path(data).name)
        summary.append({"detector": name, "suspicious": rep.suspicious, "flagged": int(len(rep.flagged)),
                        "target_class": rep.target_class})
    typer.echo(json.dumps(summary), err=True)
    _emit(events, out, db)


def scan_model(
    model: Annotated[str, typer.Argument(
        help="the model file: .onnx, .safetensors/.pt (+ --architecture), .skops; pickle/joblib only with --allow-pickle")],
    clean: Annotated[str | None, typer.Option("--clean", help=".npz with a few clean samples X (y optional)")] = None,
    detector: Annotated[str, typer.Option("--detector", help="comma list of model detectors")] = "b3d",
    model_id: Annotated[str | None, typer.Option(help="model id the events refer to")] = None,
    out: Annotated[str | None, typer.Option("--out")] = None,
    db: Annotated[str | None, typer.Option("--db")] = None,
    architecture: ArchitectureOpt = None,
    input_shape: InputShapeOpt = None,
    trust_type: TrustTypeOpt = None,
    allow_pickle: AllowPickleOpt = False,
) -> None:
    """Inspect a trained (outsourced, downloaded) model: first the file itself, statically
    (``artifact_scan``: code that would run on load), then, loaded safely, for a backdoor."""
    from kizashi import detectors

    events = _artifact_events(model, model_id, "model-registry")
    names = [n for n in _detector_names(detector, "model") if n != "artifact_scan"]
    if names and clean is None:
        _emit(events, out, db)
        fail(f"{', '.join(names)} probe the model with clean samples: pass --clean CLEAN.npz")
    try:
        mdl = _load_model(model, architecture, input_shape, trust_type, allow_pickle) if names else None
    except typer.Exit:
        _emit(events, out, db)  # the scan's findings are reported even when the model is refused
        raise
    X = _load_npz(clean)[0] if names else None
    for name in names:
        det = detectors.create(name)
        det.set_context(model_id=model_id or Path(model).stem, endpoint="model-registry")
        try:
            rep = det.inspect_model(mdl, X)
        except (ValueError, TypeError) as exc:
            fail(f"{name}: {exc}")
        events += rep.to_events(det)
    _emit(events, out, db)


def register(app: typer.Typer) -> None:
    app.add_typer(detectors_app, name="detectors")
    app.command("scan-data")(scan_data)
    app.command("scan-model")(scan_model)
