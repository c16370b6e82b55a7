"""ATLAS Navigator layers (layer format 4.3, domain ``atlas-atlas``) and a PNG heatmap of the same.

A layer scores each ATLAS technique by the number of alerts whose chain evidences it, one entry per
(technique, tactic) pair — the Navigator places a technique under each of its tactics — with a
comment naming the rules that fired. Tactic shortnames, technique names and the technique set come
from each alert's :class:`~kizashi.connectors.alertview.AlertView` (the shipped ATLAS data, never a
hard-coded list).

Layer format: MITRE ATT&CK Navigator layer file format v4.3 (``versions.layer = "4.3"``), as used by
the ATLAS Navigator (``domain: atlas-atlas``).
"""

from __future__ import annotations

import io
import json
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from kizashi.engine.events import Alert, DetectionEvent
from kizashi.mappings import AtlasCatalog, load_atlas

from .alertview import TechniqueInfo, technique_info, views

LAYER_FORMAT = "4.3"
NAVIGATOR_VERSION = "4.9.1"
DOMAIN = "atlas-atlas"
GRADIENT = ["#ffffff", "#ffb266", "#e6261f"]


def technique_counts(alerts: Sequence[Alert], events: Mapping[str, DetectionEvent] | None = None,
                     atlas: AtlasCatalog | None = None) -> tuple[Counter, dict[str, set[str]], dict[str, TechniqueInfo]]:
    """Alerts per ATLAS technique (each alert counts once per technique), the rule titles behind
    each, and the techniques named."""
    counts: Counter = Counter()
    rules: dict[str, set[str]] = defaultdict(set)
    named: dict[str, TechniqueInfo] = {}
    for v in views(alerts, events or {}, atlas):
        for t in v.techniques:
            counts[t.id] += 1
            rules[t.id].add(v.title)
            named[t.id] = t
    return counts, rules, named


class NavigatorFormatter:
    """Renders alerts as an ATLAS Navigator layer (JSON)."""

    name = "navigator"
    document = True

    def __init__(self, *, layer_name: str = "kizashi alerts", description: str | None = None,
                 atlas: AtlasCatalog | None = None):
        self.layer_name = layer_name
        self.description = description
        self.atlas = atlas

    def layer(self, alerts: Sequence[Alert], events: Mapping[str, DetectionEvent] | None = None) -> dict[str, Any]:
        atlas = self.atlas or load_atlas()
        counts, rules, named = technique_counts(alerts, events, atlas)
        techniques = []
        for tid in sorted(counts):
            t = named[tid]
            comment = f"{counts[tid]} alert(s); rules: " + ", ".join(sorted(rules[tid]))
            for tac in t.tactics:
                techniques.append({
                    "techniqueID": tid,
                    "tactic": tac.shortname,
                    "score": counts[tid],
                    "color": "",
                    "comment": comment,
                    "enabled": True,
                    "metadata": [{"name": "name", "value": t.name}],
                    "showSubtechniques": False,
                })
        # parents of scored sub-techniques are expanded so the sub-technique is visible
        parents = {t.parent for t in named.values() if t.parent}
        for e in techniques:
            if e["techniqueID"] in parents:
                e["showSubtechniques"] = True
        for pid in sorted(parents - set(counts)):
            for tac in technique_info(pid, atlas).tactics:
                techniques.append({"techniqueID": pid, "tactic": tac.shortname,
                                   "showSubtechniques": True, "enabled": True})
        top = max(counts.values(), default=1)
        return {
            "name": self.layer_name,
            "versions": {"layer": LAYER_FORMAT, "navigator": NAVIGATOR_VERSION, "attack": atlas.version},
            "domain": DOMAIN,
            "description": self.description or f"{len(alerts)} kizashi alert(s); score = alerts per technique",
            "sorting": 0,
            "layout": {"layout": "side", "showID": True, "showName": True},
            "hideDisabled": False,
            "techniques": techniques,
            "gradient": {"colors": GRADIENT, "minValue": 0, "maxValue": max(top, 1)},
            "legendItems": [],
            "metadata": [{"name": "atlas_data_version", "value": atlas.version},
                         {"name": "generator", "value": "kizashi"}],
            "showTacticRowBackground": True,
            "tacticRowBackground": "#205b8f",
            "selectTechniquesAcrossTactics": True,
            "selectSubtechniquesWithParent": False,
        }

    def render(self, alerts: Sequence[Alert], events: Mapping[str, DetectionEvent] | None = None) -> str:
        return json.dumps(self.layer(alerts, events), indent=2, ensure_ascii=False)


def heatmap_figure(alerts: Sequence[Alert], *, atlas: AtlasCatalog | None = None, title: str | None = None):
    """A matplotlib figure: ATLAS tactics as columns (kill-chain order), the scored techniques under
    each, coloured by alert count. Returns the Figure (Agg backend; no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.colors import LinearSegmentedColormap

    atlas = atlas or load_atlas()
    counts, _, named = technique_counts(alerts, atlas=atlas)
    columns = []
    for tac in atlas.tactics.values():
        cells = sorted((tid for tid in counts if tac.id in {x.id for x in named[tid].tactics}),
                       key=lambda t: (-counts[t], t))
        columns.append((tac, cells))
    rows = max([len(c) for _, c in columns] + [1])
    ncol = len(columns)
    fig, ax = plt.subplots(figsize=(max(12, ncol * 1.25), 1.2 + rows * 0.75), dpi=110)
    cmap = LinearSegmentedColormap.from_list("kizashi", GRADIENT)
    top = max(counts.values(), default=1)
    for ci, (tac, cells) in enumerate(columns):
        ax.add_patch(plt.Rectangle((ci, -1), 0.96, 0.9, color="#205b8f"))
        ax.text(ci + 0.48, -0.55, tac.name, ha="center", va="center", fontsize=6.5, color="white", wrap=True)
        for ri in range(rows):
            if ri < len(cells):
                tid = cells[ri]
                colour = cmap(counts[tid] / top)
                label = f"{tid}\n{named[tid].short_name[:22]}\n({counts[tid]})"
            else:
                colour, label = "#f2f2f2", ""
            ax.add_patch(plt.Rectangle((ci, ri), 0.96, 0.9, color=colour, ec="#cccccc", lw=0.4))
            if label:
                ax.text(ci + 0.48, ri + 0.45, label, ha="center", va="center", fontsize=5.5)
    ax.set_xlim(-0.05, ncol)
    ax.set_ylim(rows, -1.05)
    ax.axis("off")
    ax.set_title(title or f"MITRE ATLAS {atlas.version}: techniques in kizashi alerts (count)", fontsize=9)
    fig.tight_layout()
    return fig


def render_heatmap_png(alerts: Sequence[Alert], path: str | None = None, *, atlas: AtlasCatalog | None = None,
                       title: str | None = None) -> bytes:
    """PNG bytes of :func:`heatmap_figure`; also written to ``path`` when given."""
    import matplotlib.pyplot as plt

    fig = heatmap_figure(alerts, atlas=atlas, title=title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    data = buf.getvalue()
    if path is not None:
        with open(path, "wb") as fh:
            fh.write(data)
    return data
