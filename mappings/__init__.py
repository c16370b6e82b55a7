"""Data kizashi ships: the MITRE ATLAS taxonomy and the seed's Table 1 detection-method catalogue."""

from .atlas import (
    RETIRED_TECHNIQUES,
    AtlasCatalog,
    AtlasTactic,
    AtlasTechnique,
    atlas_from_yaml,
    load_atlas,
)
from .catalogue import DATA_SOURCES, Catalogue, Method, load_catalogue

__all__ = [
    "RETIRED_TECHNIQUES",
    "AtlasCatalog",
    "AtlasTactic",
    "AtlasTechnique",
    "atlas_from_yaml",
    "load_atlas",
    "DATA_SOURCES",
    "Catalogue",
    "Method",
    "load_catalogue",
]
