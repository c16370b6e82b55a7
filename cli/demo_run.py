"""The ``kizashi demo`` run: a day of traffic with three real attack campaigns, watched by kizashi's detectors,
correlated by the bundled Sigma pack, delivered in SOC formats, summarised in a report."""

from __future__ import annotations

import copy
import json
import time
import warnings
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from kizashi.scenarios import demo_day as sim
from kizashi.scenarios.art_setup import quiet_art

STREAM_DETECTORS = ("query_rate", "label_distribution", "stateful_knn", "blacklight", "prada")
EVASION_PAIR = ("gong_binary", "grosse_mmd")  # both must flag an input
TRIGGER_PAIR = ("strip", "misa")
#: the demo's own store in --out (its own name: ``--out .`` must not delete ./kizashi.db, the default store)
DEMO_DB_FILE = "demo-store.db"
INPUT_FPR = 0.005  # per detector, calibrated on held-out clean reference data
CAMPAIGNS = {
    "A": {"name": "extraction -> proxy -> transfer evasion", "account": "acct-A", "model": sim.CLEAN_MODEL,
          "techniques": ["AML.T0040", "AML.T0024.002", "AML.T0043.002", "AML.T0015"]},
    "B": {"name": "black-box HopSkipJump probing -> evasion", "account": "acct-B", "model": sim.CLEAN_MODEL,
          "techniques": ["AML.T0043.001", "AML.T0015"]},
    "C": {"name": "poisoned retraining (BadNets) -> backdoor triggers", "account": "acct-C",
          "model": sim.BACKDOORED_MODEL, "techniques": ["AML.T0020", "AML.T0043.004"]},
}
MODEL_VERSION = {sim.CLEAN_MODEL: "1", sim.BACKDOORED_MODEL: "2"}


def fgsm_on_own_model(model: Any, X: np.ndarray, y: np.ndarray, eps: float = 0.2) -> np.ndarray:
    """The defender's known adversarial examples (FGSM, Goodfellow et al. 2015) on its own model,
    used to train the supervised input detectors."""
    from kizashi.detectors.models import as_model

    g = as_model(model).loss_gradient(X, y)
    return np.clip(X + eps * np.sign(g), 0.0, 1.0)


class DemoRun:
    """One deterministic run: the scenario's day (kizashi.scenarios), detect, correlate, export, report."""

    def __init__(self, *, seed: int = 0, n_benign: int = 60, db: str | None = None, out: Path,
                 progress: Any = None):
        self.seed = seed
        self.n_benign = n_benign
        self.out = out
        self.db = db or f"sqlite:///{out / DEMO_DB_FILE}"
        self.progress = progress
        self.timings: dict[str, float] = {}
        self.detector_scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"benign": [], "attack": []})

    def step(self, name: str):
        run = self

        class _Step:
            def __enter__(self):
                self.t = time.perf_counter()
                # ART and some estimators draw from numpy's global generator: seed it per step
                np.random.seed((run.seed * 1_000_003 + len(run.timings)) % 2**32)
                if run.progress:
                    run.progress(name)

            def __exit__(self, *exc):
                run.timings[name] = round(time.perf_counter() - self.t, 2)

        return _Step()

    # -- simulate ------------------------------------------------------------------------------------
    def simulate(self) -> None:
        self.world, self.history, self.campaign = sim.run_day(self.seed, n_benign=self.n_benign, step=self.step)

    # -- detect ----------------------------------------------------------------------------------------
    def detect(self) -> list:
        from kizashi.detectors import create

        w = self.world
        events = []
        with self.step("training-data scan before deployment (spectre)"):
            scan = create("spectre")
            scan.set_context(model_id=sim.BACKDOORED_MODEL, model_version="2", endpoint="training-pipeline")
            report = scan.inspect(w.X_retrain, w.y_retrain, model=w.models[sim.BACKDOORED_MODEL])
            events += report.to_events(scan, time=sim.DAY + timedelta(minutes=30), dataset="retrain-2026-11-27")
            flagged = set(int(i) for i in report.flagged)
            poisoned = set(int(i) for i in w.poisoned_idx)
            self.scan_facts = {"flagged": len(flagged), "poisoned": len(poisoned),
                               "recall": len(flagged & poisoned) / max(1, len(poisoned)),
                               "false_flags": len(flagged - poisoned), "target_class": report.target_class}
        with self.step("model-registry scan of v2 before deployment (b3d)"):
            b3d = create("b3d")
            b3d.set_context(model_id=sim.BACKDOORED_MODEL, model_version="2", endpoint="model-registry")
            model_report = b3d.inspect_model(w.models[sim.BACKDOORED_MODEL], w.X_ref)
            events += model_report.to_events(b3d, time=sim.DAY + timedelta(minutes=45))
            self.scan_facts["model_scan"] = {"detector": "b3d", "suspicious": model_report.suspicious,
                                             "score": round(model_report.score, 3),
                                             "threshold": model_report.threshold,
                                             "target_class": model_report.target_class}
        with self.step("query-stream detectors on every query"):
            events += self._stream_events()
        with self.step("input detectors on every query"):
            events += self._input_events()
        events.sort(key=lambda e: (e.time, e.detector.name, e.subject.account or "", e.score))
        for n, e in enumerate(events):  # deterministic ids for a deterministic demo
            e.id = f"demo-{self.seed}-{n:06d}"
        return events

    def _stream_events(self) -> list:
        from kizashi.detectors import create

        w = self.world
        times = [t for _, t in self.history]
        accounts = [a for a, _ in self.history]
        base = {}
        for name in STREAM_DETECTORS:
            if name == "query_rate":
                base[name] = create(name, window=60.0, attack="evasion").fit(times, accounts)
            else:
                base[name] = create(name).fit(w.X_train, w.y_train, model=w.models[sim.CLEAN_MODEL])
        dets = {}
        for model in w.models:
            for name, d in base.items():
                dd = copy.deepcopy(d)
                dd.set_context(model_id=model, model_version=MODEL_VERSION[model], endpoint=sim.ENDPOINTS[model])
                dets[(model, name)] = dd
        out = []
        for q in w.log:
            for name in STREAM_DETECTORS:
                evs = dets[(q.model, name)].observe(q.x, account=q.account, time=q.time, prediction=q.label,
                                                    source_ip=q.source_ip)
                for e in evs:
                    e.evidence["query_kind"] = q.kind  # ground truth kept for the report only
                out += evs
        return out

    def _input_events(self) -> list:
        from kizashi.detectors import create

        w = self.world
        out = []
        for model_id, model in w.models.items():
            qs = [q for q in w.log if q.model == model_id]
            X = np.stack([q.x for q in qs])
            is_attack = np.array([q.campaign is not None and q.kind in ("adversarial", "trigger") for q in qs])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # fit on one half of the defender's clean reference, calibrate on the other: scores of
                # a supervised detector's own training data are optimistic and would set the
                # threshold too low (measured: 1-2% false positives instead of the target)
                h = len(w.X_ref) // 2
                X_fit, y_fit, X_cal = w.X_ref[:h], w.y_ref[:h], w.X_ref[h:]
                X_adv = fgsm_on_own_model(model, X_fit, y_fit)
                pairs = [EVASION_PAIR] + ([TRIGGER_PAIR] if model_id == sim.BACKDOORED_MODEL else [])
                for pair in pairs:
                    dets, flags, scores = [], [], []
                    for name in pair:
                        d = create(name, fpr=INPUT_FPR)
                        if name in EVASION_PAIR:
                            d.fit(X_fit, y_fit, model=model, X_adv=X_adv, X_calib=X_cal)
                        else:
                            d.fit(X_fit, y_fit, model=model, X_calib=X_cal)
                        d.set_context(model_id=model_id, model_version=MODEL_VERSION[model_id],
                                      endpoint=sim.ENDPOINTS[model_id])
                        s = d.score(X)
                        dets.append(d)
                        scores.append(s)
                        flags.append(s > d.threshold_)
                        # margin over the threshold in units of the benign spread (thresholds may be negative)
                        spread = float(np.std(s[~is_attack])) or 1.0
                        self.detector_scores[name]["benign"] += ((s[~is_attack] - d.threshold_) / spread).tolist()
                        self.detector_scores[name]["attack"] += ((s[is_attack] - d.threshold_) / spread).tolist()
                    both = np.logical_and(*flags)
                    for i in np.flatnonzero(both):
                        q = qs[i]
                        e = dets[0].make_event(float(scores[0][i]), account=q.account, time=q.time,
                                               source_ip=q.source_ip,
                                               evidence={"confirmed_by": pair[1],
                                                         f"{pair[1]}_score": round(float(scores[1][i]), 6),
                                                         f"{pair[1]}_threshold": round(float(dets[1].threshold_), 6),
                                                         "query_kind": q.kind})
                        out.append(e)
        return out

    # -- correlate and export -------------------------------------------------------------------------
    def correlate(self, events: list) -> list:
        from kizashi.engine.pipeline import Pipeline
        from kizashi.engine.store import Store

        with self.step("store + Sigma rule engine (bundled pack)"):
            self.store = Store(self.db)
            # simulated clock: an alert is raised when its last event arrives
            pipe = Pipeline(self.store, sinks=[sink for sink, *_ in self.OUTPUTS.values()], event_clock=True)
            pipe.ingest(events)
            ids = {e.id for e in events}
            # what the SOC is handed: each alert once, in its latest state (suppression updates it)
            self.alerts = [a for a in self.store.list_alerts() if set(a.event_ids) <= ids]
            self.observations = self.store.list_observations()
            self.ruleset = pipe.ruleset
        return self.alerts

    #: The SOC files of the demo: key -> (outbox sink, file, registered format, formatter options).
    OUTPUTS = {
        "alerts": ("alerts-file", "alerts.jsonl", "alerts", {}),
        "stix": ("stix-file", "stix-bundle.json", "stix", {}),
        "navigator": ("navigator-file", "navigator-layer.json", "navigator", {"layer_name": "kizashi demo"}),
        "cef": ("cef-file", "alerts.cef", "cef", {}),
    }

    def export(self, events: list) -> dict[str, Path]:
        """The event log as written by the detectors, and the alerts delivered the way a deployment
        delivers them: drained from the store's outbox through file sinks, one batch per file."""
        from kizashi.connectors.files import FileSink
        from kizashi.connectors.outbox import deliver

        files = {"events": self.out / "events.jsonl", "observations": self.out / "observations.jsonl"}
        with self.step("write SOC outputs"):
            # every event, not only those in alerts' chains: the outbox carries alerts
            files["events"].write_text("".join(e.to_json() + "\n" for e in events), encoding="utf-8")
            # the rule results that are not delivered (every detection match, the quiet correlations)
            files["observations"].write_text("".join(json.dumps(o, sort_keys=True) + "\n" for o in self.observations),
                                             encoding="utf-8")
            sinks = []
            for key, (sink, filename, fmt, options) in self.OUTPUTS.items():
                files[key] = self.out / filename
                sinks.append(FileSink(files[key], fmt, options={"ruleset": self.ruleset, **options},
                                      append=False, name=sink))
            report = deliver(self.store, sinks, batch_size=max(1, self.store.count_alerts()))
            if report.failed:
                raise RuntimeError(f"demo outputs not written: {report.errors}")
        return files

    # -- summary ---------------------------------------------------------------------------------------
    def summary(self, events: list) -> dict[str, Any]:
        w = self.world
        correlated = [a for a in self.alerts if a.rule.type == "correlation"]
        by_id = {e.id: e for e in events}
        out: dict[str, Any] = {"seed": self.seed, "day": sim.DAY.date().isoformat(),
                               "queries": len(w.log), "benign_accounts": self.n_benign,
                               "events": len(events), "alerts": len(self.alerts),
                               "correlated_alerts": len(correlated), "observations": len(self.observations),
                               "soc": {"delivered_alerts": len(self.alerts),
                                       "benign_accounts_in_delivered_alerts": len(
                                           {x for a in self.alerts for x in a.accounts if x.startswith("user-")}),
                                       "alert_updates": sum(a.occurrences - 1 for a in self.alerts)},
                               "facts": w.facts,
                               "training_data_scan": self.scan_facts, "campaigns": {}, "timings_s": self.timings}
        for key, spec in CAMPAIGNS.items():
            c = self.campaign[key]
            acct, model = spec["account"], spec["model"]
            mine = [a for a in correlated if acct in a.accounts or (key == "C" and model in a.group.values())]
            chain_ok = [a for a in mine if _is_campaign_chain(key, a, by_id)]
            first = min(chain_ok, key=lambda a: a.last_seen) if chain_ok else None
            acct_events = [e for e in events if e.subject.account == acct]
            pre = [e for e in events if (e.subject.account == acct and (e.stage == "precursor" or e.attack == "extraction"))
                   or (key == "C" and e.stage == "precursor" and e.target.model == model)]
            first_pre = min(pre, key=lambda e: e.time) if pre else None
            q_times = [q.time for q in w.log if q.account == acct]
            succeeded_before = 0
            if first is not None:
                succeeded_before = sum(1 for t, ok in zip(c["submit_times"], c["success_flags"], strict=True)
                                       if ok and t <= first.last_seen)
            techniques = sorted({t for a in chain_ok for t in a.atlas.techniques})
            delivered = [a for a in self.alerts if campaign_alert(key, acct, model, a)]
            first_delivered = min((a.created for a in delivered), default=None)  # event clock: when raised
            successes = [t for t, ok in zip(c["submit_times"], c["success_flags"], strict=True) if ok]
            first_success = min(successes, default=None)
            out["campaigns"][key] = {
                "name": spec["name"], "account": acct, "model": model,
                "detected": first is not None,
                "rules_fired": sorted({a.rule.name for a in mine} | {a.rule.name for a in self.alerts
                                                                      if acct in a.accounts}
                                      | {o["name"] for o in self.observations
                                         if o["entities"].get("account") == acct and o["name"]}),
                "delivered_alerts": len(delivered),
                "delivered_alert_rules": [a.rule.name or a.rule.id for a in sorted(delivered, key=lambda a: a.created)],
                "first_delivered_alert_time": first_delivered.isoformat() if first_delivered else None,
                "first_successful_attack_input_time": first_success.isoformat() if first_success else None,
                "first_delivered_alert_before_first_success": (
                    first_delivered is not None and (first_success is None or first_delivered < first_success)),
                "correlated_alert_ids": [a.id for a in chain_ok],
                "expected_techniques": spec["techniques"],
                "techniques_in_alert": techniques,
                "all_expected_techniques_tagged": set(spec["techniques"]) <= set(techniques),
                "first_precursor_time": first_pre.time.isoformat() if first_pre else None,
                "first_precursor_detector": first_pre.detector.name if first_pre else None,
                "first_precursor_query_count": (sum(1 for t in q_times if t <= first_pre.time) if first_pre else None),
                "correlated_alert_time": first.last_seen.isoformat() if first else None,
                "correlated_alert_query_count": (sum(1 for t in q_times if t <= first.last_seen) if first else None),
                "attack_inputs_submitted": len(c["success_flags"]),
                "attack_inputs_succeeded": int(sum(c["success_flags"])),
                "succeeded_before_correlated_alert": succeeded_before,
                "events_for_account": len(acct_events),
                "symptom_events_on_attack_inputs": sum(1 for e in acct_events if e.stage == "symptom"
                                             and e.evidence.get("query_kind") in ("adversarial", "trigger")),
                **{k: v for k, v in c.items() if k not in ("success_flags", "submit_times", "account", "model")},
            }
        benign_events = [e for e in events if (e.subject.account or "").startswith("user-")]
        out["benign"] = {
            "accounts_with_any_event": len({e.subject.account for e in benign_events}),
            "events": len(benign_events),
            "accounts_in_correlated_alerts": sorted({acc for a in correlated for acc in a.accounts
                                                      if acc.startswith("user-")}),
        }
        out["events_by_detector"] = dict(sorted(_count(e.detector.name for e in events).items()))
        out["alerts_by_rule"] = dict(sorted(_count(a.rule.name or a.rule.id for a in self.alerts).items()))
        return out


def campaign_alert(key: str, account: str, model: str, alert) -> bool:
    """Is a delivered alert about the campaign: it names the campaign's account, or (the poisoning
    campaign, found before any account used the model) it is about its model and names no account."""
    return account in alert.accounts or (key == "C" and not alert.accounts and model in alert.models)


def _is_campaign_chain(key: str, alert, events: dict) -> bool:
    """Does the alert's chain hold both the campaign's precursor and its symptom events?
    A: extraction (a precursor of the transfer attack, seed 2.2.3) then adversarial input;
    B: probing (precursor, evasion) then adversarial input; C: poisoning found, then trigger input."""
    chain = [events[i] for i in alert.event_ids if i in events]
    def has(stage, attack):
        return any(e.stage == stage and e.attack == attack for e in chain)
    if key == "A":
        return has("symptom", "extraction") and has("symptom", "evasion")
    if key == "B":
        return has("precursor", "evasion") and has("symptom", "evasion")
    return has("precursor", "poisoning") and has("symptom", "poisoning")


def _count(items) -> dict[str, int]:
    d: dict[str, int] = defaultdict(int)
    for i in items:
        d[i] += 1
    return d


def remove_demo_store(out: Path) -> None:
    """A fresh demo store each run: remove the demo's own SQLite file (never the default kizashi.db)."""
    for suffix in ("", "-wal", "-shm"):
        (out / f"{DEMO_DB_FILE}{suffix}").unlink(missing_ok=True)


def run_demo(out: Path, *, seed: int = 0, db: str | None = None, n_benign: int = 60, progress=None) -> dict[str, Any]:
    """Run the whole demo into ``out``; returns the summary (also written to summary.json)."""
    quiet_art()
    out.mkdir(parents=True, exist_ok=True)
    if db is None:
        remove_demo_store(out)
    t0 = time.perf_counter()
    run = DemoRun(seed=seed, n_benign=n_benign, db=db, out=out, progress=progress)
    run.simulate()
    events = run.detect()
    run.correlate(events)
    run.export(events)
    summary = run.summary(events)
    from .demo_report import write_report

    with run.step("report.html"):
        write_report(out / "report.html", run, events, summary)
    summary["timings_s"] = run.timings
    summary["wall_time_s"] = round(time.perf_counter() - t0, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return summary
