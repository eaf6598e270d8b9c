"""How long, said to a person: the CLI's, doctor's and watch's durations in one place."""

from __future__ import annotations


def short(secs: float) -> str:
    """One unit, rounded: 45s, 20m, 2.5h, 1.2d (ages and waits in tables and diagnoses)."""
    secs = max(0.0, secs)
    if secs < 60:
        return f"{secs:.0f}s"
    if secs < 3600:
        return f"{secs / 60:.0f}m"
    if secs < 86400:
        return f"{secs / 3600:.1f}h"
    return f"{secs / 86400:.1f}d"


def span(secs: float) -> str:
    """Two units, for a countdown or an ETA: 4.2s, 45s, 3m20s, 2h05m, 1d4h."""
    secs = max(0.0, secs)
    if secs < 10:
        return f"{secs:.1f}s"
    if secs < 60:
        return f"{secs:.0f}s"
    if secs < 3600:
        return f"{int(secs // 60)}m{int(secs % 60):02d}s"
    if secs < 86400:
        return f"{int(secs // 3600)}h{int(secs % 3600 // 60):02d}m"
    return f"{int(secs // 86400)}d{int(secs % 86400 // 3600)}h"
