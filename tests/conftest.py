"""Shared fixtures. ``../shared`` (reference data: ATLAS 5.6.0, the seed) sits beside the project."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KIZASHI_SHARED", ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"reference data folder {SHARED} missing (set KIZASHI_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def atlas_yaml(shared_dir: Path) -> Path:
    return shared_dir / "atlas" / "ATLAS.yaml"


@pytest.fixture(scope="session")
def seed_text(shared_dir: Path) -> str:
    return (shared_dir / "seed" / "ml-security-guideline-appendix-detection.ja.md").read_text(encoding="utf-8")
