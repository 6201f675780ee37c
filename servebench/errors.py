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


def folded(text: object, width: int = 300) -> str:
    """All of a message on one line (a server's multi-line error body, a cloud API's message),
    cut at `width`: for errors whose later lines say something too."""
    return " ".join(str(text).split())[:width]
