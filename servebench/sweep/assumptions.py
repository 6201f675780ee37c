"""A study config's assumptions: the values its source does not state (an output length, a
number of repeats) marked as servebench's own choice, so a reader of the plan or the results
can tell what was reproduced from what was filled in. Each names the config field it is about;
a name that is not a field of the config is refused, so a renamed field cannot leave a stale
assumption behind."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Assumption(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: str | None = None  # a dotted path in the config: load.output_tokens, defaults.gpus, matrix.model
    why: str = Field(min_length=1)


_MISSING = object()


def lookup(data: Any, path: str) -> Any:
    """The value at a dotted path of the config's data (mappings, and list indices), or _MISSING."""
    node = data
    for key in path.split("."):
        if isinstance(node, BaseModel):
            node = node.model_dump(mode="json")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return _MISSING
    return node


class StaleAssumption(ValueError):
    """An assumption names a field the config does not have; `loc` is where it is in the YAML."""

    def __init__(self, msg: str, index: int) -> None:
        super().__init__(msg)
        self.loc = [index, "field"]


def check(assumptions: list[Assumption], data: dict[str, Any]) -> list[Assumption]:
    """The assumptions, or a ValueError naming the first whose field the config does not have."""
    for i, a in enumerate(assumptions):
        if a.field is not None and lookup(data, a.field) is _MISSING:
            raise StaleAssumption(f"{a.field!r} is not a field of this config "
                                  "(a dotted path such as load.output_tokens or defaults.gpus)", i)
    return assumptions


def _shown(value: Any, width: int = 70) -> str:
    text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def lines(assumptions: list[Assumption], data: dict[str, Any]) -> list[str]:
    """One line each: `load.output_tokens = 128: why`."""
    out = []
    for a in assumptions:
        if a.field is None:
            out.append(a.why)
        else:
            out.append(f"{a.field} = {_shown(lookup(data, a.field))}: {a.why}")
    return out
