"""``sensor.yaml``: which models the sensor guards, each model's detectors and their fitted state,
who the account is, and what enforcement does. Validated at load (unknown keys are errors).

Minimal form (issue 13)::

    mode: monitor                  # or enforce
    account_header: X-Api-Key
    models:
      digits:
        detectors:
          - name: blacklight
            fitted: fitted/blacklight

Relative ``fitted`` and ``state_dir`` paths are read relative to the YAML file.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = ["DetectorRef", "LoggerConfig", "ModelConfig", "SensorConfig", "SensorConfigError", "load_config"]


class SensorConfigError(ValueError):
    """sensor.yaml cannot be used; the message names the key and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DetectorRef(_Strict):
    name: str = Field(min_length=1, description="registry name, e.g. blacklight")
    fitted: str | None = Field(default=None, description="folder written by `kizashi detectors fit`")
    blocking: bool = Field(default=False, description="in enforce mode, a flag blocks the account")


class ModelConfig(_Strict):
    detectors: list[DetectorRef] = Field(default_factory=list)
    input: str | None = Field(default=None, description="input tensor the detectors read (default: the first)")
    output: str | None = Field(default=None, description="output tensor with class probabilities or labels "
                                                         "(default: the first)")


class LoggerConfig(_Strict):
    """KServe inference-logger receiver (POST /v1/logger/events, CloudEvents binary mode)."""

    enabled: bool = True
    account_header: str = Field(default="ce-metadata", description="CloudEvents header holding the account: "
                                "KServe's `metadata` extension (JSON map of logged request headers) or a plain one")
    pending_max: int = Field(default=10_000, ge=1, description="unpaired request/response halves kept")
    pending_seconds: float = Field(default=60.0, gt=0)


class SensorConfig(_Strict):
    mode: Literal["monitor", "enforce"] = "monitor"
    account_header: str = Field(default="X-Api-Key", min_length=1,
                                description="header naming the account (API key, or Authorization: Bearer ...)")
    account_key_env: str = Field(default="KIZASHI_SENSOR_KEY",
                                 description="environment variable with the key that hashes account ids "
                                             "(default: a random key kept in state_dir/account.key)")
    trusted_proxies: list[str] = Field(default_factory=list, description="CIDRs whose X-Forwarded-For is trusted")
    allow: list[str] = Field(default_factory=list, description="account ids (as in events) never blocked")
    block_level: Literal["low", "medium", "high", "critical"] = "high"
    block_on: Literal["correlation", "any"] = Field(default="correlation",
                                                    description="which alerts block: correlated ones, or any")
    block_seconds: float = Field(default=86400.0, gt=0, description="how long an alert or flag keeps blocking")
    state_dir: str = Field(default="kizashi-sensor-state", description="snapshots, spill files, account key")
    snapshot_seconds: float = Field(default=10.0, gt=0, description="how often changed accounts' state is "
                                    "written (a crash loses at most this much per-account history)")
    queue_size: int = Field(default=10_000, ge=1, description="events held in memory before spilling to disk")
    upstream_timeout: float = Field(default=30.0, gt=0)
    upstream_connect_timeout: float = Field(default=5.0, gt=0)
    max_upstream_body: int = Field(default=64 * 1024 * 1024, ge=1)
    max_body: int = Field(default=16 * 1024 * 1024, ge=1)
    header_timeout: float = Field(default=10.0, gt=0)
    body_timeout: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=1000, ge=1)
    models: dict[str, ModelConfig] = Field(min_length=1)
    logger: LoggerConfig = Field(default_factory=LoggerConfig)

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        for c in v:
            try:
                ipaddress.ip_network(c, strict=False)
            except ValueError:
                raise ValueError(f"not an IP network: {c!r}") from None
        return v

    def resolve(self, base: Path) -> SensorConfig:
        """Paths relative to ``base`` (the YAML file's folder) made absolute."""
        out = self.model_copy(deep=True)
        if not Path(out.state_dir).is_absolute():
            out.state_dir = str(base / out.state_dir)
        for m in out.models.values():
            for d in m.detectors:
                if d.fitted and not Path(d.fitted).is_absolute():
                    d.fitted = str(base / d.fitted)
        return out


def load_config(path: str | Path) -> SensorConfig:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SensorConfigError(f"{p}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise SensorConfigError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SensorConfigError(f"{p}: expected a mapping with at least `models:`")
    try:
        cfg = SensorConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors())
        raise SensorConfigError(f"{p}: {problems}") from None
    return cfg.resolve(p.resolve().parent)
