"""BatchEvaluator: a whole input at once, with the same results as the stream evaluator (sorted).

Each detection rule is one vectorised mask over a DataFrame (:meth:`.conditions.CompiledDetection.mask`:
each value test runs once per distinct column value); the matched rows then go to the correlation
driver in the stream evaluator's order (time, event id, input order), so correlations agree too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .conditions import FrameView
from .correlations import Correlator
from .normalise import content_id, event_timestamp, normalise_event
from .results import RuleResult, correlation_results, match_result

if TYPE_CHECKING:
    from .collection import RuleSet


class BatchEvaluator:
    """Whole-input evaluation: one vectorised mask per detection rule over a DataFrame, then the
    correlations over the matched rows in time order."""

    def __init__(self, ruleset: RuleSet, *, id_field: str, time_field: str):
        self.ruleset = ruleset
        self.id_field = id_field
        self.time_field = time_field

    def frame(self, events: Iterable[Any] | pd.DataFrame) -> pd.DataFrame:
        if isinstance(events, pd.DataFrame):
            return events.reset_index(drop=True)
        rows = [normalise_event(e) for e in events]
        return pd.DataFrame(rows, dtype=object) if rows else pd.DataFrame()

    def run(self, events: Iterable[Any] | pd.DataFrame) -> list[RuleResult]:
        frame = self.frame(events)
        n = len(frame)
        if n == 0:
            return []
        view = FrameView(frame)
        ids = self._ids(frame)
        ts = self._times(frame)
        info = self.ruleset.info
        results: list[RuleResult] = []
        masks: dict[str, np.ndarray] = {}
        for key, det in self.ruleset.detections.items():
            mask = det.mask(view)
            masks[key] = mask
            if info[key].emits:
                for row in np.flatnonzero(mask):
                    t = ts[row]
                    results.append(match_result(info[key], ids[row], None if np.isnan(t) else float(t)))
        correlated = [k for k in masks if k in self.ruleset.correlated_keys]
        if correlated:
            results.extend(self._correlate(frame, ids, ts, {k: masks[k] for k in correlated}))
        results.sort(key=RuleResult.sort_key)
        return results

    def _ids(self, frame: pd.DataFrame) -> list[str]:
        if self.id_field in frame.columns:
            raw = frame[self.id_field].tolist()
        else:
            raw = [None] * len(frame)
        out = []
        for i, v in enumerate(raw):
            if v is None or v == "" or (isinstance(v, float) and np.isnan(v)):
                flat = {k: val for k, val in frame.iloc[i].items() if not _isna(val)}
                out.append(content_id(flat))
            else:
                out.append(str(v))
        return out

    def _times(self, frame: pd.DataFrame) -> np.ndarray:
        if self.time_field not in frame.columns:
            return np.full(len(frame), np.nan)
        col = frame[self.time_field]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            return np.round(col.to_numpy(dtype=float), 6)
        if pd.api.types.is_datetime64_any_dtype(col):
            c = col.dt.tz_localize("UTC") if col.dt.tz is None else col.dt.tz_convert("UTC")
            out = c.astype("int64").to_numpy() / 1e9
            out[c.isna().to_numpy()] = np.nan
            return np.round(out, 6)
        codes, uniques = pd.factorize(col.astype(object).to_numpy(), use_na_sentinel=True)
        parsed = np.array([np.nan if (t := event_timestamp(u)) is None else t for u in uniques] + [np.nan])
        return parsed[codes]

    def _correlate(self, frame, ids, ts, masks: dict[str, np.ndarray]) -> list[RuleResult]:
        correlator = Correlator(self.ruleset.compile_correlations())
        keys = list(masks)
        # which rules matched each row, as a bit pattern (one small tuple per distinct pattern)
        pattern = np.zeros(len(ts), dtype=np.int64)
        for i, k in enumerate(keys):
            pattern |= masks[k].astype(np.int64) << i
        rows = np.flatnonzero((pattern != 0) & ~np.isnan(ts))
        if rows.size == 0:
            return []
        id_keys = np.array([ids[r] for r in rows.tolist()], dtype=str)
        rows = rows[np.lexsort((rows, id_keys, ts[rows]))]  # time, then event id, then input order
        matched_of = {
            int(p): tuple(k for i, k in enumerate(keys) if int(p) >> i & 1) for p in np.unique(pattern[rows])
        }
        columns = {}
        for f in correlator.needed_fields:
            if f in frame.columns:
                columns[f] = [_plain(v) for v in frame[f].to_numpy(dtype=object)[rows].tolist()]
            else:
                columns[f] = [None] * len(rows)
        names = list(columns)
        col_lists = [columns[f] for f in names]
        results: list[RuleResult] = []
        batch: list[tuple] = []
        current: float | None = None
        for j, (row, t, p) in enumerate(zip(rows.tolist(), ts[rows].tolist(), pattern[rows].tolist(), strict=True)):
            if current is not None and t != current:
                results.extend(correlation_results(self.ruleset.info, correlator.release(current, batch)))
                batch = []
            current = t
            values = {f: col[j] for f, col in zip(names, col_lists, strict=True)}
            batch.append((t, ids[row], row, matched_of[p], values))
        if batch:
            results.extend(correlation_results(self.ruleset.info, correlator.release(current, batch)))
        return results


def _isna(value: Any) -> bool:
    if isinstance(value, list | tuple | dict):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _plain(value: Any) -> Any:
    if value is None or (type(value) is float and value != value):
        return None
    if isinstance(value, np.generic):
        value = value.item()
        return None if isinstance(value, float) and value != value else value
    if value is pd.NaT or value is pd.NA:
        return None
    return value
