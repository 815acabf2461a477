"""What a result rests on, in words: undefined findings, thin splits, CIs that could not be computed.

A macro AUROC of 0.48 means little when two of five findings had no positive case and the split
held three patients. The evaluation functions record *over what* every mean was taken and *why*
something is missing (``metrics.json``: ``left_out``, ``notes``, ``macro.over``), and
:func:`macro_line` turns that into the one console line every command prints, so that a number
never appears without what it stands on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# Fewer patients than this in an evaluated split: means and CIs are flagged as resting on very few.
MIN_PATIENTS = 5
# A CI resting on fewer than this fraction of the requested resamples is flagged as thin.
THIN_CI_FRACTION = 0.5


def undefined_reason(labels: np.ndarray, unit: str = "scan") -> str | None:
    """Why a binary finding's AUROC is undefined on these 0/1 ``labels`` (None when it is defined)."""
    y = np.asarray(labels).astype(bool)
    n, n_pos = len(y), int(y.sum())
    if n == 0:
        return f"no {unit}s"
    if n_pos == 0:
        return f"no positive case among {n} {unit}s"
    if n_pos == n:
        return f"no negative case among {n} {unit}s"
    return None


def ci_note(name: str, ci: Mapping[str, Any], n_requested: int, why_missing: str) -> str | None:
    """A sentence when the CI ``ci`` (:func:`radlens.metrics.findings.percentile_ci`) of ``name`` is
    missing or rests on few resamples; None when it is sound."""
    used = int(ci.get("n") or 0)
    if n_requested <= 0:
        return None
    if used == 0:
        return f"no CI for {name}: {why_missing}"
    if used < THIN_CI_FRACTION * n_requested:
        return f"the CI for {name} rests on {used} of {n_requested} resamples ({why_missing} in the others)"
    return None


def split_notes(n_patients: int, unit_count: int, unit: str = "scan") -> list[str]:
    """Notes on the evaluated split's size (fewer than :data:`MIN_PATIENTS` patients)."""
    if n_patients < MIN_PATIENTS:
        return [f"only {n_patients} patient(s) ({unit_count} {unit}s) in the evaluated split, fewer than "
                f"{MIN_PATIENTS}: the means and CIs rest on very few cases"]
    return []


def left_out_note(left_out: Mapping[str, str], n_total: int, what: str = "findings") -> str | None:
    """``macro means are over 3 of 5 findings; left out: A (reason), B (reason)`` (None when nothing was left out)."""
    if not left_out:
        return None
    kept = n_total - len(left_out)
    reasons = "; ".join(f"{name} ({why})" for name, why in left_out.items())
    return f"macro means are over {kept} of {n_total} {what}; left out: {reasons}"


def _value(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"


def macro_line(
    metrics: Mapping[str, Any], shown: Sequence[tuple[str, str]] = (("auroc", "AUROC"),), what: str = "findings",
    unit: str = "scans",
) -> str:
    """One console line: the macro means of ``shown`` (``(metric, label)`` pairs) with their CIs, over
    how many ``what``, which were left out and why, and the split's size (with a warning below
    :data:`MIN_PATIENTS` patients).

    ``metrics`` is :func:`radlens.metrics.findings.evaluate_findings`' result (or one shaped like it:
    ``macro`` with ``ci`` and ``over``, ``left_out``, ``bootstrap.n_patients``, ``n_cases``).
    """
    macro = metrics.get("macro") or {}
    parts = []
    for metric, label in shown:
        ci = (macro.get("ci") or {}).get(metric) or {}
        text = f"{label} {_value(macro.get(metric))}"
        if ci.get("low") is not None:
            text += f" (95% CI {ci['low']:.3f}-{ci['high']:.3f})"
        elif macro.get(metric) is not None:
            text += " (no CI)"
        parts.append(text)
    text = "macro " + ", ".join(parts)
    over, left_out = macro.get("over"), metrics.get("left_out") or {}
    if over is not None:
        total = len(over) + len(left_out)
        text += f" over {len(over)} of {total} {what}" if left_out else f" over {len(over)} {what}"
    if left_out:
        text += "; left out: " + ", ".join(f"{name} ({why})" for name, why in left_out.items())
    boot = metrics.get("bootstrap") or {}
    if "n_patients" in boot:
        n_patients = int(boot["n_patients"])
        text += f"; {metrics.get('n_cases', '?')} {unit} from {n_patients} patient(s)"
        if n_patients < MIN_PATIENTS:
            text += f" (fewer than {MIN_PATIENTS}: not reliable)"
    return text


def join_notes(*groups: Sequence[str | None]) -> list[str]:
    """The non-empty notes of ``groups``, in order, without repeats."""
    return list(dict.fromkeys(n for group in groups for n in group if n))
