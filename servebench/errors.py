"""How an exception reads in one line. A leaf every stage may import: it imports nothing."""

from __future__ import annotations


def first_line(e: BaseException) -> str:
    """The first line of the message (tracebacks and YAML/pydantic detail follow it), or the
    exception's type when it has no message."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def described(e: BaseException) -> str:
    """`Type: first line`, or the type alone: for messages that say which library failed."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__
