"""A run's outcome, decided once from its summary, so that summary.json, run.json, the
one-line error and the exit code all say the same thing.

Exit codes (docs/faults.md): 0 complete; 1 the run failed (too many requests failed, the
server died, nothing measured, an unexpected error); 2 bad input (options, prompts file, spec);
3 measured, but the results could not all be written (disk full); 130 / 143 stopped by Ctrl-C
(SIGINT) / SIGTERM, the shell's 128 + signal number.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_RESULTS = 3


def failure(summary: dict, max_error_rate: float, server_exit: str | None = None) -> str | None:
    """The one-line reason a finished load counts as failed, or None. Every request that was
    due counts: one that could not even connect (server gone) is a failed request."""
    failed, measured = summary["failed"], summary["failed"] + summary["completed"]
    gone = f"the server {server_exit} during the load; " if server_exit else ""
    if measured == 0:
        return gone + "no request was measured"
    if failed == measured:  # nothing measured: no --max-error-rate (1.0 included) makes that a result
        top = next(iter(summary.get("errors") or {}), "unknown error")
        return f"{gone}{failed} of {measured} requests failed, nothing was measured (most common: {top})"
    if failed and failed / measured > max_error_rate:
        top = next(iter(summary.get("errors") or {}), "unknown error")
        return f"{gone}{failed} of {measured} requests failed (most common: {top})"
    if server_exit:
        return f"the server {server_exit} during the load"
    return None
