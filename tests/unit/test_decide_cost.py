"""Cost arithmetic against the study's published rows, computed from tok/s and $/h (never copied)."""

from __future__ import annotations

import pytest

from servebench.decide import cost
from servebench.decide.prices import PriceBook, PriceError, default_catalog, price_book

# (model, quant, instance, users, ms/token, tok/s, published min/1M, published $/1M) -- studies.md.
STUDY_ROWS = [
    ("7B", "GPTQ", "ml.g5.2xlarge", 5, 34.25, 120.09, 138.78, 3.50),
    ("13B", "GPTQ", "ml.g5.2xlarge", 5, 56.24, 71.71, 232.43, 5.87),
    ("70B", "GPTQ", "ml.g5.12xlarge", 5, 138.35, 33.33, 499.99, 59.08),
    ("7B", None, "ml.g5.12xlarge", 1, 16.81, 61.46, 271.19, 32.05),
    ("13B", None, "ml.g5.12xlarge", 1, 21.00, 47.16, 353.43, 41.76),
    ("70B", None, "ml.p4d.24xlarge", 1, 41.35, 24.51, 679.88, 427.05),
    ("7B", None, "ml.g5.12xlarge", 20, 43.99, 449.94, 33.59, 3.97),
    ("13B", None, "ml.p4d.24xlarge", 20, 67.40, 668.02, 24.95, 15.67),
    ("70B", None, "ml.p4d.24xlarge", 20, 59.80, 321.54, 51.83, 32.56),
]
# The one row whose minutes do not follow from its own tok/s (studies.md): 1e6/449.94/60.
INCONSISTENT = {("7B", "ml.g5.12xlarge", 20)}


def catalog_price(instance: str) -> float:
    p = price_book().lookup(instance_type=instance, hardware=None, gpu_count=None)
    assert p is not None and "2023" not in p.source  # the source names the study, the date is separate
    return p.usd_per_hour


# The study prints tok/s and $/h rounded to 2 decimals and computed its columns from the unrounded
# values, so a published figure "follows" when it lies in the range the formula gives over the
# rounding interval of its inputs (+-0.005), widened by its own display rounding (+-0.005).
HALF = 0.005


def minutes_range(tps: float) -> tuple[float, float]:
    return cost.minutes_per_million(tps + HALF) - HALF, cost.minutes_per_million(tps - HALF) + HALF


def usd_range(usd_h: float, tps: float) -> tuple[float, float]:
    return cost.usd_per_million(usd_h - HALF, tps + HALF) - HALF, cost.usd_per_million(usd_h + HALF, tps - HALF) + HALF


@pytest.mark.parametrize("row", STUDY_ROWS, ids=lambda r: f"{r[0]}-{r[1]}-{r[2]}-{r[3]}")
def test_study_rows_follow_from_the_formula(row):
    model, _, inst, users, _, tps, pub_min, pub_usd = row
    usd_h = catalog_price(inst)
    minutes = cost.minutes_per_million(tps)
    usd = cost.usd_per_million(usd_h, tps)
    # The study's own second formula, $/h x minutes / 60, is the same number.
    assert usd == pytest.approx(usd_h * minutes / 60, rel=1e-12)
    lo_m, hi_m = minutes_range(tps)
    lo_u, hi_u = usd_range(usd_h, tps)
    if (model, inst, users) in INCONSISTENT:
        # Computed: 1e6 / 449.94 / 60 = 37.04 min and $4.38 per 1M, not the published 33.59 / 3.97.
        assert round(minutes, 2) == 37.04 and round(usd, 2) == 4.38
        assert not lo_m <= pub_min <= hi_m and not lo_u <= pub_usd <= hi_u
        # The published $3.97 follows from the published (wrong) minutes instead.
        assert usd_h * pub_min / 60 == pytest.approx(pub_usd, abs=HALF)
        return
    assert lo_m <= pub_min <= hi_m, (minutes, pub_min)
    assert lo_u <= pub_usd <= hi_u, (usd, pub_usd)
    assert minutes == pytest.approx(pub_min, rel=2e-4) and usd == pytest.approx(pub_usd, rel=5e-3)


def test_70b_gptq_headline_example():
    # From the rounded inputs: 500.05 min and $59.09; the published 499.99 / 59.08 come from the
    # unrounded throughput (33.334 tok/s), which rounds to the printed 33.33.
    assert round(cost.minutes_per_million(33.33), 2) == 500.05
    assert round(cost.usd_per_million(7.09, 33.33), 2) == 59.09
    assert round(cost.minutes_per_million(33.3340), 2) == 499.99 and round(33.3340, 2) == 33.33
    assert round(cost.usd_per_million(7.09, 33.3340), 2) == 59.08


def test_quoted_13b_g5_12xlarge_text_figure_does_not_follow():
    # The study's text: 13B on ml.g5.12xlarge at 296 tok/s for $2.21 per 1M; the formula says ~$6.65.
    assert cost.usd_per_million(7.09, 296) == pytest.approx(6.65, abs=0.01)


def test_no_throughput_or_price_gives_none():
    assert cost.usd_per_million(None, 100) is None
    assert cost.usd_per_million(1.0, 0) is None
    assert cost.minutes_per_million(0) is None
    assert cost.joules_per_token(None, 10) is None
    assert cost.joules_per_token(500.0, 1000) == 0.5


def test_servers_needed_rounds_up_and_exact_fits():
    assert cost.servers_needed(10, 3) == 4
    assert cost.servers_needed(9, 3) == 3
    assert cost.servers_needed(0.5, 3) == 1
    assert cost.servers_needed(1, None) is None


def test_every_catalog_price_names_source_and_date():
    cat = default_catalog()
    assert {"ml.g5.2xlarge", "ml.g5.12xlarge", "ml.g5.48xlarge", "ml.p4d.24xlarge"} <= set(cat.instances)
    for want in ("a10g", "l4", "l40s", "a100-40gb", "a800-80gb", "h100-80gb", "h200-141gb", "rtx4090", "rtx3090"):
        assert want in cat.gpus
    for item in [*cat.instances.values(), *cat.gpus.values()]:
        assert item.source and item.as_of
    assert cat.instances["ml.g5.12xlarge"].gpu_count == 4 and cat.instances["ml.p4d.24xlarge"].gpu == "a100-40gb"
    assert all(g.indicative for g in cat.gpus.values())


def test_overrides_beat_the_catalog(tmp_path):
    book = price_book(["ml.g5.2xlarge=1.41", "a100=2.0"])
    assert book.lookup(instance_type="ml.g5.2xlarge", hardware=None, gpu_count=None).usd_per_hour == 1.41
    # GPU names resolve through aliases, and a per-GPU price is multiplied by the GPUs used.
    p = book.lookup(instance_type=None, hardware="NVIDIA A100-SXM4-40GB", gpu_count=4)
    assert p.usd_per_hour == 8.0 and "user" in p.source
    f = tmp_path / "p.yaml"
    f.write_text("instances:\n  my.box:\n    usd_per_hour: 3.5\ngpus:\n  cpu:\n    usd_per_gpu_hour: 0.1\n")
    book = price_book([str(f)])
    assert book.lookup(instance_type="my.box", hardware=None, gpu_count=None).usd_per_hour == 3.5
    assert book.lookup(instance_type=None, hardware="cpu", gpu_count=0).usd_per_hour == pytest.approx(0.1)
    assert book.lookup(instance_type=None, hardware="cpu", gpu_count=0) is not None
    assert PriceBook(default_catalog()).lookup(instance_type=None, hardware="cpu", gpu_count=0) is None


@pytest.mark.parametrize("bad", ["ml.g5.2xlarge=abc", "x=-1", "=3", "/no/such/file.yaml"])
def test_bad_price_options_are_one_line_errors(bad):
    with pytest.raises(PriceError) as e:
        price_book([bad])
    assert "\n" not in str(e.value)


def test_onprem_capex_plus_measured_power():
    book = price_book(onprem={"purchase_usd_per_gpu": 26280, "amortisation_years": 3, "utilisation": 0.5,
                              "usd_per_kwh": 0.2, "pue": 1.5})
    # capex: 2 x 26280 / (3 x 8760 x 0.5) = 4.0 $/h; power: 3.6 MJ over 3600 s = 1000 W -> 1.5 kW x 0.2 = 0.3 $/h
    p = book.lookup(instance_type=None, hardware="h100", gpu_count=2, energy_j=3.6e6, duration_s=3600)
    assert p.usd_per_hour == pytest.approx(4.3)
    nop = book.lookup(instance_type=None, hardware="h100", gpu_count=2, energy_j=None, duration_s=3600)
    assert nop.usd_per_hour == pytest.approx(4.0) and "power not included" in nop.note
