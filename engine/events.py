"""kizashi's event model: :class:`DetectionEvent` (one detector finding) and :class:`Alert` (a rule hit).

Data is typed and validated at the boundary (pydantic) and plain inside. Both models serialise to
JSON and to a *flat dotted form* (``stage``, ``attack``, ``atlas.technique``, ``account.id``,
``detector.name``, ``score`` ...) that Sigma rules match. ``docs/fields.md`` documents every field.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from ipaddress import ip_address
from operator import attrgetter
from typing import Annotated, Any, Literal, NamedTuple

from kizashi.mappings import load_atlas
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .ids import deterministic_alert_id
from .jsontext import loads_checked

SCHEMA_VERSION = "1.0"

Stage = Literal["precursor", "symptom"]
Attack = Literal["evasion", "poisoning", "extraction"]
Severity = Literal["informational", "low", "medium", "high", "critical"]
DataMark = Literal["target", "needed"]

SEVERITIES: tuple[str, ...] = ("informational", "low", "medium", "high", "critical")
STAGES: tuple[str, ...] = ("precursor", "symptom")
ATTACKS: tuple[str, ...] = ("evasion", "poisoning", "extraction")

#: Limit on the serialised size of ``evidence``: events are telemetry, not payload stores.
MAX_EVIDENCE_BYTES = 8192
MAX_ID_LENGTH = 200
MAX_TEXT = 1024
#: Limit on the nesting depth of ``evidence`` (a deeper document cannot be serialised back).
MAX_EVIDENCE_DEPTH = 32
#: Hard bounds of an event time, whatever the pipeline's policy: outside them date arithmetic
#: (windows, lateness, recovery spans) would overflow. The pipeline's own bounds are tighter.
MIN_EVENT_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_EVENT_TIME = datetime(9000, 1, 1, tzinfo=UTC)

ShortText = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]


class EventValidationError(ValueError):
    """An event or alert failed validation. ``str()`` names each field and problem."""

    def __init__(self, errors: list[dict[str, Any]], kind: str = "event"):
        self.errors = errors
        self.kind = kind
        parts = []
        for e in errors:
            loc = ".".join(str(x) for x in e.get("loc", ())) or "(root)"
            parts.append(f"{loc}: {e.get('msg', 'invalid')}")
        super().__init__(f"invalid {kind}: " + "; ".join(parts))


def _utc(value: datetime) -> datetime:
    try:
        value = value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"time {value.isoformat()} is outside the supported range") from None
    if not MIN_EVENT_TIME <= value < MAX_EVENT_TIME:
        raise ValueError(f"time {value.isoformat()} is outside {MIN_EVENT_TIME.year}..{MAX_EVENT_TIME.year}")
    return value


def _check_plain_text(value: Any) -> Any:
    """Strings must be Unicode text: no lone UTF-16 surrogate (no UTF-8 encoder, hence no database
    and no output format, accepts one)."""
    for s in value if isinstance(value, list) else (value,):
        if isinstance(s, str) and not s.isascii():
            try:
                s.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("contains a lone UTF-16 surrogate (not valid Unicode text)") from None
    return value


def utcnow() -> datetime:
    return datetime.now(UTC)


def _trusted(info: ValidationInfo) -> bool:
    """Validation context ``{"trusted": True}``: data the store wrote, checked when it came in. Types
    are still validated; the boundary checks (text, evidence size, ATLAS ids) are skipped."""
    return bool(info.context) and info.context.get("trusted", False)


def _unicode_checked(info: ValidationInfo) -> bool:
    """Validation context ``{"unicode_checked": True}`` (or trusted data): the input was read from JSON
    text by orjson, which refuses a lone surrogate anywhere in it, so no text needs checking again."""
    return bool(info.context) and (info.context.get("unicode_checked", False) or info.context.get("trusted", False))


def _atlas(info: ValidationInfo):
    """The ATLAS catalogue for this validation: ``parse`` looks it up once per event, not per field."""
    found = info.context.get("atlas") if info.context else None
    return found if found is not None else load_atlas()


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _plain_text(cls, data: Any, info: ValidationInfo) -> Any:
        """Every text value (and text in a list) of this model is Unicode text: one pass over the
        input per model, not a validator call per field."""
        if isinstance(data, dict) and not _unicode_checked(info):
            for v in data.values():
                if type(v) is str:
                    if not v.isascii():
                        _check_plain_text(v)
                elif type(v) is list:
                    _check_plain_text(v)
        return data


class DetectorInfo(_Model):
    """Which detector produced the event and which catalogue method it implements."""

    id: ShortText = Field(description="Stable id of this detector instance or product, e.g. kizashi.prada")
    name: ShortText = Field(description="Detector (registry) name, e.g. prada")
    version: str = Field(default="0", max_length=64, description="Detector version")
    method: str | None = Field(
        default=None, max_length=128, description="Catalogue method id it implements (mappings/methods.yaml)"
    )


class AtlasTags(_Model):
    """MITRE ATLAS tactic and technique IDs. Tactics are derived from techniques when omitted."""

    tactics: list[str] = Field(default_factory=list)
    techniques: list[str] = Field(default_factory=list)

    @field_validator("techniques")
    @classmethod
    def _known_techniques(cls, v: list[str], info: ValidationInfo) -> list[str]:
        return v if _trusted(info) else list(_resolved_techniques(_atlas(info), tuple(v)))

    @field_validator("tactics")
    @classmethod
    def _known_tactics(cls, v: list[str], info: ValidationInfo) -> list[str]:
        return v if _trusted(info) else list(_known_tactic_ids(_atlas(info), tuple(v)))

    @model_validator(mode="after")
    def _derive_tactics(self, info: ValidationInfo) -> AtlasTags:
        if not _trusted(info):
            self.tactics = list(_tactics_with_derived(_atlas(info), tuple(self.tactics), tuple(self.techniques)))
        return self


class _PerCatalogue:
    """A function of (ATLAS catalogue, ids...) remembered per distinct arguments: events of one detector
    repeat the same few ids. Bounded (cleared when full); an error (unknown id) is never remembered.
    The catalogue is held with its answers, so its ``id`` cannot be reused while they are kept."""

    LIMIT = 4096

    def __init__(self, compute: Any):
        self.compute = compute
        self.answers: dict[tuple, tuple[Any, Any]] = {}

    def __call__(self, atlas: Any, *ids: tuple[str, ...]) -> Any:
        key = (id(atlas), *ids)
        found = self.answers.get(key)
        if found is None or found[0] is not atlas:
            if len(self.answers) >= self.LIMIT:
                self.answers.clear()
            found = self.answers[key] = (atlas, self.compute(atlas, *ids))
        return found[1]


@_PerCatalogue
def _resolved_techniques(atlas: Any, ids: tuple[str, ...]) -> tuple[str, ...]:
    out: list[str] = []
    for tid in ids:
        if not atlas.has_technique(tid):
            raise ValueError(f"unknown ATLAS technique ID {tid!r} (ATLAS {atlas.version})")
        rid = atlas.resolve(tid)
        if rid not in out:
            out.append(rid)
    return tuple(out)


@_PerCatalogue
def _known_tactic_ids(atlas: Any, ids: tuple[str, ...]) -> tuple[str, ...]:
    for tid in ids:
        if not atlas.has_tactic(tid):
            raise ValueError(f"unknown ATLAS tactic ID {tid!r} (ATLAS {atlas.version})")
    return tuple(dict.fromkeys(ids))


@_PerCatalogue
def _tactics_with_derived(atlas: Any, tactics: tuple[str, ...], techniques: tuple[str, ...]) -> tuple[str, ...]:
    """The given tactics and those of the techniques, in the catalogue's order."""
    merged = set(tactics) | set(atlas.tactics_for(techniques))
    return tuple(t for t in atlas.tactics if t in merged)


class Subject(_Model):
    """Who sent the traffic: whichever of account, source IP and session are known."""

    account: str | None = Field(default=None, max_length=MAX_ID_LENGTH)
    source_ip: str | None = Field(default=None, max_length=64)
    session: str | None = Field(default=None, max_length=MAX_ID_LENGTH)

    @field_validator("source_ip")
    @classmethod
    def _ip(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            return str(ip_address(v))
        except ValueError:
            raise ValueError(f"not an IPv4 or IPv6 address: {v!r}") from None


class Target(_Model):
    """The protected model and where it is served."""

    model: str | None = Field(default=None, max_length=MAX_ID_LENGTH)
    model_version: str | None = Field(default=None, max_length=64)
    endpoint: str | None = Field(default=None, max_length=MAX_TEXT)


class DataUsed(_Model):
    """Table 1's marks: ``target`` (● analysed for traces of attack), ``needed`` (□), or absent."""

    training_data: DataMark | None = None
    model: DataMark | None = None
    input: DataMark | None = None
    output: DataMark | None = None


def _json_depth(value: Any) -> int:
    depth, level = 0, [value]
    while level:
        depth += 1
        level = [c for v in level if isinstance(v, dict | list) for c in (v.values() if isinstance(v, dict) else v)]
    return depth


def _check_json_small(value: dict[str, Any], name: str, *, copy: bool = True) -> dict[str, Any]:
    """``value`` if it is small, shallow and plain JSON; as its JSON round trip (``copy``: numpy values
    become numbers) or as it is (read from JSON text by orjson: plain already)."""
    if _json_depth(value) > MAX_EVIDENCE_DEPTH:
        raise ValueError(f"{name} is nested deeper than {MAX_EVIDENCE_DEPTH} levels")
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"), default=_reject)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be JSON-serialisable without NaN/Infinity: {exc}") from None
    try:
        size = len(text.encode())
    except UnicodeEncodeError:
        raise ValueError(f"{name} contains a lone UTF-16 surrogate (not valid Unicode text)") from None
    if size > MAX_EVIDENCE_BYTES:
        raise ValueError(f"{name} is {size} bytes serialised; at most {MAX_EVIDENCE_BYTES}")
    return json.loads(text) if copy else value


def _reject(obj: Any) -> Any:
    # numpy scalars and arrays are common in detector output: accept them as plain numbers/lists.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


class DetectionEvent(_Model):
    """One detector finding, normalised: who, what model, which stage and attack, which ATLAS
    techniques, which data was analysed, how suspicious."""

    schema_version: str = Field(default=SCHEMA_VERSION, description="kizashi event schema version")
    id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=MAX_ID_LENGTH)
    time: AwareDatetime = Field(default_factory=utcnow, description="When the observed activity happened (UTC)")
    detector: DetectorInfo
    stage: Stage
    attack: Attack
    atlas: AtlasTags = Field(default_factory=AtlasTags)
    subject: Subject = Field(default_factory=Subject)
    target: Target = Field(default_factory=Target)
    data_used: DataUsed = Field(default_factory=DataUsed)
    score: float
    threshold: float | None = None
    severity: Severity = "medium"
    evidence: dict[str, Any] = Field(default_factory=dict)

    @field_validator("time")
    @classmethod
    def _to_utc(cls, v: datetime) -> datetime:
        return _utc(v)

    @field_validator("id")
    @classmethod
    def _id_without_nul(cls, v: str) -> str:
        if "\x00" in v:  # the id is a key in the store; PostgreSQL text cannot hold NUL
            raise ValueError("contains a NUL character")
        return v

    @field_validator("score", "threshold")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number (not NaN or infinity)")
        return v

    @field_validator("evidence")
    @classmethod
    def _evidence(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if not v or _trusted(info):
            return v
        return _check_json_small(v, "evidence", copy=not _unicode_checked(info))

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def parse(cls, data: Mapping[str, Any] | str | bytes, *, unicode_checked: bool = False) -> DetectionEvent:
        """Validate a JSON object (nested or flat dotted form); raises :class:`EventValidationError`.
        ``unicode_checked``: ``data`` came from :func:`.jsontext.loads_checked` saying so (text is
        read that way here too), so its strings need no lone-surrogate check."""
        try:
            checked = unicode_checked
            if isinstance(data, str | bytes):
                data, checked = loads_checked(data)
            if not isinstance(data, Mapping):
                raise EventValidationError(
                    [{"loc": (), "msg": f"expected a JSON object, got {type(data).__name__}"}]
                )
            if any("." in k for k in data):
                data = unflatten_event(data)
            return cls.model_validate(data, context={"atlas": load_atlas(), "unicode_checked": checked})
        except ValidationError as exc:
            raise EventValidationError(exc.errors(include_url=False)) from None
        except json.JSONDecodeError as exc:
            raise EventValidationError([{"loc": (), "msg": f"not valid JSON: {exc}"}]) from None
        except RecursionError:
            raise EventValidationError([{"loc": (), "msg": "JSON nested too deeply"}]) from None

    @classmethod
    def from_stored(cls, body: str | bytes) -> DetectionEvent:
        """An event the store wrote (its :meth:`to_json`, validated by :meth:`parse` on the way in):
        types checked by pydantic's JSON parser, the boundary checks not run again. Anything else
        (an older or edited row) goes through :meth:`parse`."""
        try:
            return cls.model_validate_json(body, context={"trusted": True})
        except ValidationError:
            return cls.parse(body)

    # -- serialisation ----------------------------------------------------------------------
    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=False)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def flat(self) -> dict[str, Any]:
        """The flat dotted form Sigma rules match (see docs/fields.md)."""
        return flatten_event(self)


class RuleRef(_Model):
    id: str = Field(min_length=1, max_length=MAX_TEXT)
    name: str | None = Field(default=None, max_length=MAX_TEXT)
    title: str | None = Field(default=None, max_length=MAX_TEXT)
    type: Literal["detection", "correlation"] = "detection"
    correlation_type: str | None = None


class EventSummary:
    """What :meth:`Alert.from_events` reads of an event in a chain (id, time, stage, attack, ATLAS ids,
    account, model), read off a body the store wrote without building a :class:`DetectionEvent`: a
    risk alert's chain can hold every observation of an account's day, and validating each event
    again cost as much as validating it the first time."""

    __slots__ = ("id", "time", "stage", "attack", "atlas", "subject", "target")

    def __init__(self, body: Mapping[str, Any]):
        self.id = body["id"]
        self.time = _utc(datetime.fromisoformat(body["time"]))
        self.stage, self.attack = body["stage"], body["attack"]
        atlas, subject, target = body["atlas"], body["subject"], body["target"]
        self.atlas = _SummaryTags(list(atlas["tactics"]), list(atlas["techniques"]))
        self.subject = _SummarySubject(subject["account"])
        self.target = _SummaryTarget(target["model"])


class _SummaryTags(NamedTuple):
    tactics: list[str]
    techniques: list[str]


class _SummarySubject(NamedTuple):
    account: str | None


class _SummaryTarget(NamedTuple):
    model: str | None


class Alert(_Model):
    """A rule hit: a detection rule on one event, or a correlation over a chain of events."""

    schema_version: str = Field(default=SCHEMA_VERSION)
    id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    rule: RuleRef
    level: Severity = "medium"
    group: dict[str, Any] = Field(default_factory=dict, description="Group-by key of a correlation")
    event_ids: list[str] = Field(min_length=1, description="Ordered chain of event ids (by time)")
    first_seen: AwareDatetime
    last_seen: AwareDatetime
    created: AwareDatetime = Field(default_factory=utcnow)
    atlas: AtlasTags = Field(default_factory=AtlasTags)
    stages: list[Stage] = Field(default_factory=list)
    attacks: list[Attack] = Field(default_factory=list)
    accounts: list[str] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)
    value: float | None = None
    count: int = 0
    tags: list[str] = Field(default_factory=list)
    occurrences: int = Field(default=1, ge=1, description="Rule results merged into this alert (suppression)")
    updated: AwareDatetime | None = Field(default=None, description="When a later result last updated it")

    @field_validator("first_seen", "last_seen", "created")
    @classmethod
    def _to_utc(cls, v: datetime) -> datetime:
        return _utc(v)

    @field_validator("updated")
    @classmethod
    def _updated_utc(cls, v: datetime | None) -> datetime | None:
        return None if v is None else _utc(v)

    @model_validator(mode="after")
    def _order(self) -> Alert:
        if self.last_seen < self.first_seen:
            raise ValueError("last_seen is earlier than first_seen")
        if not self.count:
            self.count = len(self.event_ids)
        return self

    @classmethod
    def parse(cls, data: Mapping[str, Any] | str | bytes) -> Alert:
        try:
            if isinstance(data, str | bytes):
                data = json.loads(data)
            return cls.model_validate(data)
        except ValidationError as exc:
            raise EventValidationError(exc.errors(include_url=False), kind="alert") from None

    @classmethod
    def from_events(
        cls,
        *,
        rule: RuleRef,
        events: Iterable[DetectionEvent | EventSummary],
        level: str = "medium",
        group: Mapping[str, Any] | None = None,
        value: float | None = None,
        alert_id: str | None = None,
        tags: Iterable[str] = (),
    ) -> Alert:
        """Build an alert carrying the whole chain: events ordered by time, unions of ATLAS tags,
        stages, attacks, accounts and models. The id is deterministic (rule, group, chain)."""
        evs = sorted(events, key=lambda e: (e.time, e.id))
        if not evs:
            raise ValueError("an alert needs at least one event")
        atlas = load_atlas()
        techniques: list[str] = []
        for e in evs:
            for t in e.atlas.techniques:
                if t not in techniques:
                    techniques.append(t)
        tactics_set = {t for e in evs for t in e.atlas.tactics}
        tactics = [t for t in atlas.tactics if t in tactics_set]
        ids = [e.id for e in evs]
        group = dict(group or {})
        return cls(
            id=alert_id or deterministic_alert_id(rule.id, group, ids),
            rule=rule,
            level=level,
            group=group,
            event_ids=ids,
            first_seen=evs[0].time,
            last_seen=evs[-1].time,
            atlas=AtlasTags(tactics=tactics, techniques=techniques),
            stages=[s for s in STAGES if any(e.stage == s for e in evs)],
            attacks=[a for a in ATTACKS if any(e.attack == a for e in evs)],
            accounts=sorted({e.subject.account for e in evs if e.subject.account}),
            models=sorted({e.target.model for e in evs if e.target.model}),
            value=value,
            count=len(ids),
            tags=list(tags),
        )

    def to_json(self) -> str:
        return self.model_dump_json()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def flat(self) -> dict[str, Any]:
        return flatten_alert(self)


# -- the flat dotted form ---------------------------------------------------------------------

#: flat key -> (path in the nested model). Lists stay lists (a Sigma value matches any element).
EVENT_FIELD_MAP: dict[str, tuple[str, ...]] = {
    "schema_version": ("schema_version",),
    "id": ("id",),
    "time": ("time",),
    "detector.id": ("detector", "id"),
    "detector.name": ("detector", "name"),
    "detector.version": ("detector", "version"),
    "detector.method": ("detector", "method"),
    "stage": ("stage",),
    "attack": ("attack",),
    "atlas.tactic": ("atlas", "tactics"),
    "atlas.technique": ("atlas", "techniques"),
    "account.id": ("subject", "account"),
    "source.ip": ("subject", "source_ip"),
    "session.id": ("subject", "session"),
    "model.id": ("target", "model"),
    "model.version": ("target", "model_version"),
    "model.endpoint": ("target", "endpoint"),
    "data.training_data": ("data_used", "training_data"),
    "data.model": ("data_used", "model"),
    "data.input": ("data_used", "input"),
    "data.output": ("data_used", "output"),
    "score": ("score",),
    "threshold": ("threshold",),
    "severity": ("severity",),
}


def _flatten_evidence(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten_evidence(f"{prefix}.{k}", v, out)
    else:
        out[prefix] = value


def flatten_event(event: DetectionEvent | Mapping[str, Any]) -> dict[str, Any]:
    """Nested event -> flat dotted dict. ``time`` is ISO 8601 with ``Z``; evidence becomes
    ``evidence.<key>`` (nested keys dotted)."""
    if isinstance(event, DetectionEvent):
        return _flatten_model(event)
    d = dict(event)
    out: dict[str, Any] = {}
    for flat_key, path in EVENT_FIELD_MAP.items():
        cur: Any = d
        for p in path:
            cur = cur.get(p) if isinstance(cur, Mapping) else None
        if flat_key == "time" and isinstance(cur, datetime):
            cur = cur.isoformat()
        if isinstance(cur, str) and flat_key == "time":
            cur = cur.replace("+00:00", "Z")
        out[flat_key] = cur
    _flatten_evidence("evidence", d.get("evidence") or {}, out)
    if out.get("evidence") == {}:
        out.pop("evidence", None)
    return out


#: EVENT_FIELD_MAP as attribute getters on a validated event (C-level dotted lookups)
_EVENT_GETTERS = [(flat_key, attrgetter(".".join(path))) for flat_key, path in EVENT_FIELD_MAP.items()]


def _flatten_model(e: DetectionEvent) -> dict[str, Any]:
    """:func:`flatten_event` of a validated event, read off its attributes (no JSON dump first; the
    ingest hot path flattens every event). Same keys, order and values."""
    out: dict[str, Any] = {}
    for flat_key, get in _EVENT_GETTERS:
        value = get(e)
        out[flat_key] = list(value) if type(value) is list else value
    out["time"] = e.time.isoformat().replace("+00:00", "Z")
    if e.evidence:
        _flatten_evidence("evidence", json.loads(json.dumps(e.evidence, default=str)), out)
    return out


def unflatten_event(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Flat dotted dict -> nested dict accepted by :class:`DetectionEvent` (unknown keys are kept
    so that validation names them)."""
    reverse = {k: v for k, v in EVENT_FIELD_MAP.items()}
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if key in reverse:
            path = reverse[key]
        elif key.startswith("evidence."):
            path = ("evidence", *key.split(".")[1:])
        else:
            path = tuple(key.split("."))
        cur = out
        for p in path[:-1]:
            nxt = cur.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise EventValidationError([{"loc": (key,), "msg": "conflicts with another field"}])
            cur = nxt
        cur[path[-1]] = value
    return out


def flatten_alert(alert: Alert) -> dict[str, Any]:
    d = alert.to_dict()
    out: dict[str, Any] = {
        "schema_version": d["schema_version"],
        "alert.id": d["id"],
        "rule.id": d["rule"]["id"],
        "rule.name": d["rule"]["name"],
        "rule.title": d["rule"]["title"],
        "rule.type": d["rule"]["type"],
        "rule.correlation_type": d["rule"]["correlation_type"],
        "level": d["level"],
        "event_ids": d["event_ids"],
        "first_seen": d["first_seen"].replace("+00:00", "Z"),
        "last_seen": d["last_seen"].replace("+00:00", "Z"),
        "created": d["created"].replace("+00:00", "Z"),
        "atlas.tactic": d["atlas"]["tactics"],
        "atlas.technique": d["atlas"]["techniques"],
        "stage": d["stages"],
        "attack": d["attacks"],
        "account.id": d["accounts"],
        "model.id": d["models"],
        "value": d["value"],
        "count": d["count"],
        "tags": d["tags"],
        "occurrences": d["occurrences"],
        "updated": d["updated"].replace("+00:00", "Z") if d["updated"] else None,
    }
    for k, v in d["group"].items():
        out[f"group.{k}"] = v
    return out


def event_json_schema() -> dict[str, Any]:
    return DetectionEvent.model_json_schema()


def alert_json_schema() -> dict[str, Any]:
    return Alert.model_json_schema()
