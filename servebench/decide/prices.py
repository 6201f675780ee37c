"""Prices: the shipped catalog (servebench/data/prices.yaml), user overrides, on-prem cost.

A price resolves per run to ($/h, where it came from). Lookup order: a user override of the
run's instance type, then the catalog's instance; a user override of its hardware (GPU type),
then the catalog's per-GPU-hour price, times the GPUs the run used; an on-prem model when
one is given. Nothing found -> no price, and the caller says so.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from servebench.errors import first_line

HOURS_PER_YEAR = 8760.0
HOURS_PER_MONTH = 730.0  # 8760 / 12, the cloud providers' convention


class PriceError(ValueError):
    """A price option or file is unusable (message is one line)."""


class Instance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    usd_per_hour: float = Field(ge=0)
    gpu: str | None = None
    gpu_count: int | None = Field(default=None, ge=0)
    source: str = "user"
    as_of: str | None = None
    indicative: bool = False


class Gpu(BaseModel):
    model_config = ConfigDict(extra="forbid")
    usd_per_gpu_hour: float = Field(ge=0)
    source: str = "user"
    as_of: str | None = None
    indicative: bool = False


class OnPrem(BaseModel):
    """Owned hardware: capital amortised over the hours it is in use, plus the power it draws.

    $/h = gpus x purchase_usd_per_gpu / (years x 8760 x utilisation) + mean W x PUE / 1000 x $/kWh,
    where mean W = NVML energy over the measured window / its duration. Without measured
    energy the power part is left out and said so."""

    model_config = ConfigDict(extra="forbid")
    purchase_usd_per_gpu: float = Field(default=0.0, ge=0)
    amortisation_years: float = Field(default=3.0, gt=0)
    utilisation: float = Field(default=1.0, gt=0, le=1)
    usd_per_kwh: float = Field(default=0.0, ge=0)
    pue: float = Field(default=1.0, ge=1)
    source: str = "user (on-prem)"


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: int = 1
    currency: str = "USD"
    instances: dict[str, Instance] = {}
    gpus: dict[str, Gpu] = {}
    aliases: dict[str, list[str]] = {}
    onprem: OnPrem | None = None


def _norm(name: str) -> str:
    return re.sub(r"\s+", " ", str(name).strip().lower())


def default_catalog() -> Catalog:
    text = resources.files("servebench.data").joinpath("prices.yaml").read_text()
    return Catalog(**yaml.safe_load(text))


@dataclass(slots=True)
class Price:
    usd_per_hour: float
    source: str
    indicative: bool = False
    note: str | None = None  # e.g. "power not included: no NVML energy"


@dataclass
class PriceBook:
    catalog: Catalog
    user_instances: dict[str, Instance] = field(default_factory=dict)
    user_gpus: dict[str, Gpu] = field(default_factory=dict)
    onprem: OnPrem | None = None

    def gpu_key(self, name: str | None) -> str | None:
        """Catalog key of a hardware label or NVML device name (a10g, 'NVIDIA A10G' -> a10g)."""
        if not name:
            return None
        n = _norm(name)
        if n in self.user_gpus or n in self.catalog.gpus:
            return n
        for key, names in self.catalog.aliases.items():
            if n in (_norm(a) for a in names):
                return key
        return None

    def instance(self, name: str | None) -> Instance | None:
        if not name:
            return None
        n = _norm(name)
        return self.user_instances.get(n) or self.catalog.instances.get(n)

    def overridden(self, instance_type: str | None, hardware: str | None) -> bool:
        """The user priced this run's instance or GPU (--price, --onprem)."""
        if self.onprem is not None and hardware:
            return True
        if instance_type and _norm(instance_type) in self.user_instances:
            return True
        return bool(hardware) and any(k and k in self.user_gpus for k in (_norm(hardware), self.gpu_key(hardware)))

    def lookup(self, *, instance_type: str | None, hardware: str | None, gpu_count: int | None,
               energy_j: float | None = None, duration_s: float | None = None, stated: Price | None = None) -> Price | None:
        """stated: the price an imported run's source gives; the user's own prices beat it,
        the catalog does not."""
        if stated is not None and not self.overridden(instance_type, hardware):
            return stated
        inst = self.instance(instance_type)
        if inst is not None:
            return Price(inst.usd_per_hour, f"{instance_type}: {inst.source}", inst.indicative)
        n = _norm(hardware) if hardware else None
        devices = gpu_count if gpu_count else 1  # a CPU host or unknown count prices as one device
        key = self.gpu_key(hardware)
        user = next((self.user_gpus[k] for k in (n, key) if k and k in self.user_gpus), None)
        if user is not None:
            return Price(user.usd_per_gpu_hour * devices, f"{hardware} x{devices} at ${user.usd_per_gpu_hour}/GPU-h: {user.source}")
        if self.onprem is not None and hardware:
            return onprem_price(self.onprem, gpus=devices, energy_j=energy_j, duration_s=duration_s)
        if key and key in self.catalog.gpus:
            g = self.catalog.gpus[key]
            src = f"{key} x{devices} at ${g.usd_per_gpu_hour}/GPU-h: {g.source}"
            return Price(g.usd_per_gpu_hour * devices, src, g.indicative)
        return None


def onprem_price(m: OnPrem, *, gpus: int, energy_j: float | None, duration_s: float | None) -> Price:
    capex = gpus * m.purchase_usd_per_gpu / (m.amortisation_years * HOURS_PER_YEAR * m.utilisation)
    note = None
    power = 0.0
    # The source text says what the price holds: "+ measured power" only where power was added.
    power_text = "; power not priced (no $/kWh)"
    if m.usd_per_kwh > 0:
        if energy_j is not None and duration_s and duration_s > 0:
            power = energy_j / duration_s * m.pue / 1000.0 * m.usd_per_kwh
            power_text = f" + measured power x PUE {m.pue:g} at ${m.usd_per_kwh:g}/kWh"
        else:
            note = "power not included: the run has no NVML energy"
            power_text = f"; power not included (no NVML energy; would be at ${m.usd_per_kwh:g}/kWh)"
    src = (f"on-prem: {gpus} GPU(s) x ${m.purchase_usd_per_gpu:g} over {m.amortisation_years:g} y at "
           f"{m.utilisation:.0%} use{power_text}")
    return Price(capex + power, src, False, note)


def load_price_file(path: Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise PriceError(f"cannot read price file {path}: {first_line(e)}") from None
    except UnicodeDecodeError as e:
        raise PriceError(f"price file {path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
    if not isinstance(data, dict):
        raise PriceError(f"price file {path}: expected a mapping with instances/gpus/onprem")
    return data


def price_book(overrides: list[str] | tuple[str, ...] = (), onprem: dict | None = None,
               catalog: Catalog | None = None) -> PriceBook:
    """Build the price book from the catalog and `--price` values: NAME=USD_PER_HOUR (an
    instance type when the catalog knows it or the name contains a dot, else a GPU type,
    per GPU-hour) or a YAML file shaped like the catalog (instances/gpus/onprem)."""
    book = PriceBook(catalog or default_catalog())
    try:
        if onprem:
            book.onprem = OnPrem(**onprem)
        for item in overrides:
            name, sep, value = item.partition("=")
            if not sep:
                data = load_price_file(Path(item))
                for k, v in (data.get("instances") or {}).items():
                    book.user_instances[_norm(k)] = Instance(**{"source": f"user file {item}", **v})
                for k, v in (data.get("gpus") or {}).items():
                    book.user_gpus[_norm(k)] = Gpu(**{"source": f"user file {item}", **v})
                if data.get("onprem"):
                    book.onprem = OnPrem(**{"source": f"user file {item}", **data["onprem"]})
                continue
            try:
                usd = float(value)
            except ValueError:
                raise PriceError(f"--price {item!r}: expected NAME=USD_PER_HOUR") from None
            if not math.isfinite(usd) or usd < 0:
                raise PriceError(f"--price {item!r}: price must be a finite number >= 0")
            n = _norm(name)
            if not n:
                raise PriceError(f"--price {item!r}: empty name")
            if "." in n or n in book.catalog.instances:
                base = book.catalog.instances.get(n)
                book.user_instances[n] = Instance(usd_per_hour=usd, gpu=base.gpu if base else None,
                                                  gpu_count=base.gpu_count if base else None, source="user (--price)")
            else:
                book.user_gpus[book.gpu_key(n) or n] = Gpu(usd_per_gpu_hour=usd, source="user (--price, per GPU-hour)")
    except ValidationError as e:
        err = e.errors()[0]
        raise PriceError(f"invalid price {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    return book
