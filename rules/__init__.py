"""The bundled Sigma rule pack (``logsource: product: kizashi``)."""

from importlib import resources
from pathlib import Path


def bundled_rules_path() -> Path:
    """Directory holding the bundled rule YAML files."""
    return Path(str(resources.files("kizashi.rules")))


def bundled_alerting_path() -> Path:
    """The bundled pack's alerting defaults (which rules alert, entity risk, suppression)."""
    return bundled_rules_path() / "alerting.toml"
