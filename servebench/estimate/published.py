"""Published measurements (data/published.json) as Observations, for validating the estimator."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from servebench.estimate import catalog, models
from servebench.estimate.efficiency import Observation
from servebench.estimate.roofline import SCHEDULES


@lru_cache(maxsize=1)
def _data() -> dict:
    return json.loads(resources.files("servebench.estimate").joinpath("data/published.json").read_text())["sets"]


def set_names() -> list[str]:
    return sorted(_data())


def observations(set_name: str) -> list[Observation]:
    s = _data()[set_name]
    out = []
    for i, r in enumerate(s["rows"]):
        if "instance" in r:
            hw, tp = catalog.instance(r["instance"])
        else:
            hw, tp = catalog.lookup(r["gpu"]), int(r["tp"])
        if "model_config" in s:
            shape = models.shape(s["model_config"], "test-13b", r.get("quant"))
        else:
            shape = models.load(r["model"], quant=r.get("quant"), kv_dtype=s.get("kv_dtype"))
        measured = {k: r[k] for k in ("ttft_ms", "tpot_ms", "ms_per_token", "output_tok_s") if k in r}
        users = float(r["users"])
        label = f"{set_name}#{i} {shape.name.split('/')[-1]} {r.get('quant') or 'none'} {r.get('instance') or r['gpu']} " \
                f"tp{tp} c{r['users']}"
        # Offline batches (TensorRT-LLM) are sized to fit; the published batch is the batch.
        cap = users if set_name == "trtllm-h200" else None
        out.append(Observation(label=label, model=shape, hw=hw, tp=tp, concurrency=users,
                               n_in=float(r.get("input_tokens", s.get("input_tokens", 0))),
                               n_out=float(r.get("output_tokens", s.get("output_tokens", 0))),
                               measured=measured, batch_cap=cap, mode="concurrency",
                               lockstep=set_name == "trtllm-h200",  # offline static batches
                               schedule=SCHEDULES.get(s["engine"], "separate"),
                               engine=s["engine"].split("-")[0] if s["engine"] != "separate-static" else "fastertransformer", meta={"set": set_name, **r}))
    return out
