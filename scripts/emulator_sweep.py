"""A small REAL measured sweep for the decide/report pipeline, without a GPU or an engine:
two built-in emulator configurations x 3 concurrency levels, each an ordinary
`servebench run --backend openai --endpoint ...`, arranged as a sweep directory
(index.json + runs/<cell>/, docs/decide.md) like the sweep command writes.

    python scripts/emulator_sweep.py OUT_DIR
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from servebench.engines.presets import resolve_model

EMULATORS = {  # group id -> (label, emulator args)
    "g00": ("emulator-steady", ["--ttft-ms", "25", "--itl-ms", "6", "--batch-slowdown", "0.02", "--jitter", "2"]),
    "g01": ("emulator-batchy", ["--ttft-ms", "15", "--itl-ms", "4", "--batch-slowdown", "0.15", "--jitter", "2",
                                "--max-running", "8"]),
}
LEVELS = (1, 4, 16)
IN_TOK, OUT_TOK = 64, 32


def sb(*args: str) -> list[str]:
    return [sys.executable, "-m", "servebench.cli", *args]


def main(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    (out / "runs").mkdir(parents=True)
    tmp = out / "_tmp"
    tok = str(resolve_model("tiny"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    groups, cells = [], []
    for gid, (label, args) in EMULATORS.items():
        emu = subprocess.Popen(sb("emulate", "--port", "0", "--model", "tiny", "--tokenizer", tok, *args),
                               stdout=subprocess.PIPE, text=True, env=env)
        try:
            info = json.loads(emu.stdout.readline())
            url = info.get("url") or f"http://127.0.0.1:{info['port']}"
            server = {"engine": label, "model": "tiny", "quantization": None, "hardware": "cpu", "instance_type": None,
                      "gpu_count": 0, "gpus": None, "launcher": "external", "engine_args": args, "label": None}
            groups.append({"id": gid, "server": server, "status": "done", "error": None, "launch_s": None, "teardown_s": None})
            for c in LEVELS:
                cid = f"{gid}-c{c:03d}-r0"
                n = 4 * c + 16
                load = {"mode": "concurrency", "concurrency": c, "rate": None, "requests": n, "duration_s": None,
                        "input_tokens": IN_TOK, "output_tokens": OUT_TOK, "repeat": 0, "seed": 0}
                t = time.time()
                p = subprocess.run(sb("run", "--backend", "openai", "--endpoint", url, "--model", "tiny", "--tokenizer", tok,
                                      "--requests", str(n), "--concurrency", str(c), "--input-tokens", str(IN_TOK),
                                      "--output-tokens", str(OUT_TOK), "--no-self-check", "--no-plots",
                                      "--results-dir", str(tmp), "--name", cid),
                                   capture_output=True, text=True, env=env)
                run_dir = Path(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else None
                cell = {"id": cid, "group": gid, "load": load, "status": "done" if p.returncode == 0 else "failed",
                        "error": None if p.returncode == 0 else (p.stderr.strip().splitlines() or ["failed"])[-1],
                        "run_dir": None, "attempts": 1, "node": os.uname().nodename, "headline": None}
                if run_dir and run_dir.is_dir():
                    dest = out / "runs" / cid
                    shutil.move(str(run_dir), dest)
                    cell["run_dir"] = f"runs/{cid}"
                    run = json.loads((dest / "run.json").read_text())
                    run["cell"] = {"sweep": out.name, "id": cid, "group": gid, "server": server, "load": load}
                    (dest / "run.json").write_text(json.dumps(run, indent=2) + "\n")
                    s = json.loads((dest / "summary.json").read_text())
                    cell["headline"] = {k: s.get(k) for k in ("request_throughput", "output_token_throughput", "completed", "failed", "error_rate")}
                cells.append(cell)
                print(f"{cid}: rc={p.returncode} {time.time() - t:.1f}s", file=sys.stderr)
        finally:
            emu.terminate()
            emu.wait(10)
    shutil.rmtree(tmp, ignore_errors=True)
    index = {"schema_version": 1, "kind": "sweep", "name": out.name, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             "groups": groups, "cells": cells, "timing": None}
    (out / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    (out / "sweep.yaml").write_text("# made by scripts/emulator_sweep.py\n" + json.dumps({"groups": EMULATORS, "levels": LEVELS}) + "\n")
    print(out)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "results/emulator-sweep"))
