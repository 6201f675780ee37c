"""Engine wire formats. `ADAPTERS[name]` is the adapter a run uses to build and parse requests."""

from __future__ import annotations

from servebench.adapters.base import Adapter, Request
from servebench.adapters.lightllm import LightLLM
from servebench.adapters.openai import OpenAIChat, OpenAICompletions
from servebench.adapters.sglang import SGLang
from servebench.adapters.tgi import TGI

ADAPTERS: dict[str, Adapter] = {
    a.name: a for a in (OpenAICompletions(), OpenAIChat(), TGI(), LightLLM(), SGLang())
}


def get_adapter(name: str) -> Adapter:
    """The adapter called `name`, or a one-line ValueError listing the known ones."""
    try:
        return ADAPTERS[name]
    except KeyError:
        raise ValueError(f"unknown api {name!r}; choose one of: {', '.join(ADAPTERS)}") from None


__all__ = ["ADAPTERS", "Adapter", "Request", "get_adapter"]
