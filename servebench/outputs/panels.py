"""What a timeline is made of, apart from how it is drawn: panels of series on one time axis
(plots.py draws them; offered.py adds an open loop's offered load)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class Series:
    label: str
    x: np.ndarray  # seconds from t0
    y: np.ndarray
    step: bool = False  # piecewise constant from each x to the next
    dash: bool = False


@dataclass(slots=True)
class Panel:
    title: str
    unit: str
    series: list[Series] = field(default_factory=list)
    metric: str = ""  # what the y axis measures, beside its unit: "TTFT (ms)", not "ms"

    @property
    def axis_title(self) -> str:
        return f"{self.metric} ({self.unit})" if self.metric else self.unit


@dataclass(slots=True)
class Timeline:
    t0_ns: int
    window_s: tuple[float, float] | None
    panels: list[Panel]
