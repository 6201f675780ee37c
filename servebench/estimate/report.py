"""The efficiency lines of `servebench report` (kept apart from report.py, which only calls in)."""

from __future__ import annotations

from pathlib import Path

from servebench.errors import described


def section(run_dir: Path, summary: dict | None = None) -> dict:
    """summary.json's `efficiency` block when the run stored one, else computed now."""
    if summary and isinstance(summary.get("efficiency"), dict):
        return summary["efficiency"]
    from servebench.estimate.efficiency import run_efficiency

    return run_efficiency(Path(run_dir))


def render_efficiency(run_dir: Path, console, summary: dict | None = None) -> None:
    try:
        e = section(run_dir, summary)
    except Exception as exc:  # never let the estimate break a report of measured data
        console.print(f"efficiency: unavailable ({described(exc)})")
        return
    if not e.get("available"):
        console.print(f"efficiency: unavailable ({e.get('reason')})")
        return
    f = e["floor"]
    console.print(f"efficiency vs the {e['hardware']['gpus']}x {e['hardware']['label']} floor: {e['headline'].split(' (')[0]}; "
                  f"decode floor {f['decode_step_ms']:.3g} ms/step ({f['decode_bound']}-bound, batch {e['load']['batch']:.3g}), "
                  f"prefill floor {f['prefill_ms']:.3g} ms")
