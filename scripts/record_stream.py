"""Record one real engine response as a test fixture: NAME.sse (the de-chunked body, byte-exact)
+ NAME.json (adapter, status, the real read boundaries, where it came from).

It sends the request through servebench's own HTTP transport, so the bytes and the read splits
are exactly what a run receives. Usage (a server must be up on loopback):

    python scripts/record_stream.py --url http://127.0.0.1:PORT --adapter openai-completions \
        --model NAME --tokens 4 --name transformers_completions --source "transformers 5.19.0 serve" \
        [--extra '{"ignore_eos": null}'] [--path /completion --body '{...}']
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from servebench.adapters import ADAPTERS
from servebench.adapters.base import Request
from servebench.records import RequestRecord
from servebench.transport import HttpTransport

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "streams"


async def record(url: str, req: Request) -> RequestRecord:
    tr = HttpTransport(url, timeout_s=120)
    rec = RequestRecord(index=0)
    try:
        await tr.send(tr.encode(req), rec)
    finally:
        await tr.close()
    return rec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--adapter", required=True, help="adapter that decodes it (key in ADAPTERS)")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--prompt", default="Hello there, how")
    ap.add_argument("--tokens", type=int, default=4)
    ap.add_argument("--extra", default=None, help="JSON merged into the adapter's body")
    ap.add_argument("--path", default=None, help="send --body to this path instead of the adapter's request")
    ap.add_argument("--body", default=None)
    ap.add_argument("--name", required=True)
    ap.add_argument("--source", required=True)
    a = ap.parse_args()
    if a.path:
        req = Request("POST", a.path, a.body.encode())
    else:
        extra = json.loads(a.extra) if a.extra else None
        req = ADAPTERS[a.adapter].build(a.prompt, a.tokens, model=a.model, extra=extra)
    rec = asyncio.run(record(a.url, req))
    body = b"".join(c for _, c in rec.chunks)
    splits, at = [], 0
    for _, c in rec.chunks[:-1]:
        at += len(c)
        splits.append(at)
    (OUT / f"{a.name}.sse").write_bytes(body)
    meta = {"adapter": a.adapter, "status": rec.status, "splits": splits, "source": a.source,
            "request": json.loads(req.body)}
    (OUT / f"{a.name}.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    print(f"{a.name}: HTTP {rec.status}, {len(body)} bytes in {len(rec.chunks)} reads, error={rec.error}")


if __name__ == "__main__":
    main()
