"""Credentials never reach a file servebench writes.

A run dir is shared (attached to issues, committed next to docs), so HF_TOKEN, AWS keys and
the like must not be in it, wherever they came from: the environment (a server may print its
env or argv into server.log), a launcher option (`--launcher-opt hf_token=...`) or a server
argument (`--server-arg --hf-token=...`). Two layers: structured data (run.json) drops values
by key and flag name; then every text file of the run dir is scrubbed of each known secret
value, whatever wrote it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

MASK = "<redacted>"
# TOKEN only as a word end: hf_token, AWS_SESSION_TOKEN, --hf-token; not max_tokens or tokenizer
_NAME = re.compile(r"TOKEN(?![A-Z])|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_KEY|CREDENTIAL|AUTHORIZATION|AUTH(?![A-Z])", re.I)
_MIN_LEN = 6  # shorter values ("1", "true") would scrub ordinary text
# the password of a URL's userinfo (http://user:PASSWORD@host), whatever its length
_URL_PASSWORD = re.compile(r"(?<=[a-zA-Z][a-zA-Z0-9+.-]://)([^/\s:@]*):([^/\s@]+)@")
_TEXT = {".json", ".log", ".txt", ".html", ".csv", ".yaml", ".yml", ".jsonl", ".md"}


def secret_name(name: str) -> bool:
    return bool(_NAME.search(name.replace("-", "_")))


def secret_values(options: dict[str, Any] | None = None, args: list[str] | None = None,
                  env: dict[str, str] | None = None) -> set[str]:
    """Every secret value known to this process: secret-named env vars, launcher options and
    the value of each secret-named server flag (`--hf-token X` or `--hf-token=X`)."""
    env = os.environ if env is None else env
    vals = {v for k, v in env.items() if secret_name(k)}
    vals |= {str(v) for k, v in (options or {}).items() if secret_name(k) and v is not None}
    args = list(args or [])
    for i, a in enumerate(args):
        flag, eq, value = a.partition("=")
        if flag.startswith("-") and secret_name(flag):
            if eq:
                vals.add(value)
            elif i + 1 < len(args):
                vals.add(args[i + 1])
    return {v for v in vals if len(v) >= _MIN_LEN}


def scrub(obj: Any, values: set[str], keys: bool = True) -> Any:
    """A copy of a JSON-like object with secret values removed from every string (argv lists
    included) and, with `keys`, the string under any secret-named key masked."""
    if isinstance(obj, dict):
        return {k: (MASK if keys and isinstance(k, str) and secret_name(k) and isinstance(v, str) and v
                    else scrub(v, values, keys)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub(v, values, keys) for v in obj]
    if isinstance(obj, str):
        return scrub_text(obj, values)
    return obj


def scrub_text(text: str, values: set[str]) -> str:
    for v in sorted(values, key=len, reverse=True):  # a value containing another goes first
        if v in text:
            text = text.replace(v, MASK)
    if "@" in text:
        text = _URL_PASSWORD.sub(rf"\1:{MASK}@", text)
    return text


def scrub_dir(run_dir: Path, values: set[str]) -> list[str]:
    """Rewrite every text file of the run dir that holds a secret value; returns their names."""
    needles = [v.encode() for v in sorted(values, key=len, reverse=True)]
    fixed = []
    for p in Path(run_dir).iterdir():
        if not p.is_file() or p.suffix not in _TEXT:
            continue
        try:
            data = p.read_bytes()
            if not any(n in data for n in needles) and not _URL_PASSWORD.search(data.decode("utf-8", "replace")):
                continue
            for n in needles:
                data = data.replace(n, MASK.encode())
            data = scrub_text(data.decode("utf-8", "surrogateescape"), set()).encode("utf-8", "surrogateescape")
            tmp = p.with_name(p.name + ".redact.tmp")
            tmp.write_bytes(data)
            tmp.replace(p)
            fixed.append(p.name)
        except OSError:
            continue
    return fixed
