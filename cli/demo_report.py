"""The demo's self-contained ``report.html``: pictures are inline PNGs (matplotlib, Agg); no script,
no external resource, so it opens offline."""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

STAGE_COLOUR = {"precursor": "#f39c12", "symptom": "#c0392b"}


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _hours(t: datetime, day: datetime) -> float:
    return (t - day).total_seconds() / 3600.0


def timeline_figure(run, events, summary) -> str:
    """Per-account timeline: queries (grey), precursor (orange) and symptom (red) events, and the
    moment each correlated alert was raised (star)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from kizashi.scenarios import demo_day as sim

    day = sim.DAY
    campaign_accounts = [c["account"] for c in summary["campaigns"].values()]
    benign_alarmed = sorted({e.subject.account for e in events if (e.subject.account or "").startswith("user-")})[:3]
    rows = campaign_accounts + benign_alarmed + ["user-001", "user-002"]
    rows = list(dict.fromkeys(rows))
    fig, ax = plt.subplots(figsize=(11, 0.55 * len(rows) + 1.6))
    for i, acct in enumerate(rows):
        qt = [_hours(q.time, day) for q in run.world.log if q.account == acct]
        ax.scatter(qt, [i] * len(qt), marker="|", s=40, color="#bbbbbb", lw=0.6, zorder=1)
        for stage in ("precursor", "symptom"):
            et = [_hours(e.time, day) for e in events if e.subject.account == acct and e.stage == stage]
            ax.scatter(et, [i + (0.18 if stage == "precursor" else -0.18)] * len(et), s=22,
                       color=STAGE_COLOUR[stage], zorder=3, label=f"{stage} event" if i == 0 else None)
    scan = [e for e in events if e.subject.account is None and e.stage == "precursor"]
    if scan:
        rows.append("training pipeline")
        ax.scatter([_hours(e.time, day) for e in scan], [len(rows) - 1] * len(scan), s=40, marker="D",
                   color=STAGE_COLOUR["precursor"], zorder=3)
    for a in run.alerts:
        if a.rule.type != "correlation":
            continue
        targets = [rows.index(acc) for acc in a.accounts if acc in rows] or (
            [rows.index("training pipeline")] if "training pipeline" in rows else [])
        for y in set(targets):
            ax.scatter([_hours(a.last_seen, day)], [y], marker="*", s=260, color="#8e44ad", zorder=4,
                       edgecolor="white", label="correlated alert")
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=False))
    ax.legend(uniq.values(), uniq.keys(), loc="upper right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlim(0, 24)
    ax.set_xlabel(f"hours since {day.isoformat()}")
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Per-account timeline: queries, precursor and symptom events, correlated alerts")
    return _png(fig)


def scores_figure(run) -> str:
    """Each input detector's margin over its threshold, benign queries vs attack inputs."""
    import matplotlib.pyplot as plt

    names = list(run.detector_scores)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.8), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        d = run.detector_scores[name]
        b = np.asarray(d["benign"], dtype=float)
        a = np.asarray(d["attack"], dtype=float)
        allv = np.concatenate([b, a]) if len(a) else b
        lo, hi = np.percentile(allv, 0.5), np.percentile(allv, 99.5)
        bins = np.linspace(lo, hi, 40)
        ax.hist(np.clip(b, lo, hi), bins=bins, alpha=0.6, density=True, color="#3498db", label=f"benign ({len(b)})")
        if len(a):
            ax.hist(np.clip(a, lo, hi), bins=bins, alpha=0.6, density=True, color="#c0392b", label=f"attack ({len(a)})")
        ax.axvline(0.0, color="black", lw=1, ls="--")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("(score - threshold) / benign std", fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle("Detector score distributions (dashed: threshold)", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def heatmap_src(alerts) -> str:
    from kizashi.connectors.navigator import render_heatmap_png

    return "data:image/png;base64," + base64.b64encode(render_heatmap_png(alerts)).decode()


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(path: Path, run, events, summary: dict[str, Any]) -> None:
    camp_rows = []
    for key, c in summary["campaigns"].items():
        camp_rows.append([key, c["name"], c["account"], "yes" if c["detected"] else "NO",
                          f"{c['first_precursor_time'] or '-'} ({c['first_precursor_detector'] or '-'})",
                          c["correlated_alert_time"] or "-", c["correlated_alert_query_count"] or "-",
                          f"{c['succeeded_before_correlated_alert']} of {c['attack_inputs_succeeded']}",
                          c["delivered_alerts"], c["first_delivered_alert_time"] or "-",
                          c["first_successful_attack_input_time"] or "-",
                          " → ".join(c["expected_techniques"]), ", ".join(c["rules_fired"])])
    alert_rows = [[a.created.isoformat(), a.last_seen.isoformat(), a.level, a.rule.title or a.rule.name,
                   ", ".join(a.accounts) or "-", ", ".join(a.models), a.count, a.occurrences,
                   " ".join(a.atlas.techniques)]
                  for a in sorted(run.alerts, key=lambda a: a.created)]
    soc = summary["soc"]
    b = summary["benign"]
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>kizashi demo report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
h1 {{ margin-bottom: 0; }} .sub {{ color: #666; margin-top: 0.2em; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }}
th {{ background: #205b8f; color: white; }}
img {{ max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }}
.kpi {{ display: inline-block; margin-right: 2em; font-size: 1.1em; }}
</style></head><body>
<h1>kizashi — demo report</h1>
<p class="sub">Simulated day {html.escape(summary['day'])}, seed {summary['seed']}: {summary['queries']} queries,
{summary['events']} detection events, {summary['alerts']} alerts ({summary['correlated_alerts']} correlated).
Attacks are real adversarial-robustness-toolbox attacks on scikit-learn MLPs trained on the bundled digits.</p>
<p><span class="kpi" id="kpi-campaigns">campaigns detected: {sum(c['detected'] for c in summary['campaigns'].values())}
of {len(summary['campaigns'])}</span>
<span class="kpi" id="kpi-benign">benign accounts in correlated alerts: {len(b['accounts_in_correlated_alerts'])}
of {summary['benign_accounts']}</span>
<span class="kpi" id="kpi-delivered">alerts delivered to the SOC: {soc['delivered_alerts']}</span>
<span class="kpi" id="kpi-benign-delivered">benign accounts in delivered alerts:
{soc['benign_accounts_in_delivered_alerts']}</span>
<span class="kpi" id="kpi-observations">risk observations kept: {summary['observations']}</span></p>
<p class="sub">Per-event detection matches are risk observations (observations.jsonl, <code>kizashi alerts list
--observations</code>); the SOC is handed campaign correlations, risk alerts and pre-deployment findings, each
alert once in its latest state (later matches of the same rule and group update it).</p>
<h2>Campaigns</h2>
{_table(['', 'campaign', 'account', 'detected', 'first precursor', 'correlated alert', 'queries by then',
         'successful attack inputs before the alert', 'delivered alerts', 'first delivered alert',
         'first successful attack input', 'ATLAS chain', 'rules fired'], camp_rows)}
<h2>Timeline</h2>
<img id="timeline" alt="per-account timeline of precursor and symptom events leading to each alert" src="{timeline_figure(run, events, summary)}">
<h2>MITRE ATLAS heatmap of the alerts</h2>
<img id="heatmap" alt="ATLAS heatmap" src="{heatmap_src(run.alerts)}">
<h2>Detector scores: benign vs attack</h2>
<img id="scores" alt="detector score distributions" src="{scores_figure(run)}">
<h2>Alerts delivered to the SOC</h2>
{_table(['raised', 'last seen', 'level', 'rule', 'accounts', 'models', 'events', 'occurrences',
         'ATLAS techniques'], alert_rows)}
<h2>Training-data scan</h2>
<p>spectre on the retraining set: {run.scan_facts['flagged']} samples flagged,
{run.scan_facts['recall']:.0%} of the {run.scan_facts['poisoned']} poisoned samples caught,
{run.scan_facts['false_flags']} clean samples flagged, target class {run.scan_facts['target_class']}.</p>
<p>b3d on the retrained model v2: score {run.scan_facts['model_scan']['score']} against threshold
{run.scan_facts['model_scan']['threshold']}, {'backdoor suspected' if run.scan_facts['model_scan']['suspicious']
else 'no backdoor found'}, target class {run.scan_facts['model_scan']['target_class']}.</p>
<p class="sub">Files: events.jsonl, alerts.jsonl, stix-bundle.json, navigator-layer.json, alerts.cef,
observations.jsonl, summary.json.</p>
</body></html>
"""
    path.write_text(doc, encoding="utf-8")
