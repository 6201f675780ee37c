"""The HTML report in a real browser: headless Chromium (Debian's `chromium`, installed by
scripts/setup_browser.sh, which scripts/setup.sh calls) loads the file with no network, and the
DOM after load must show every plot drawn, no script error and nothing on the console. What a
buyer reads is checked in the drawn page: one colour per configuration in every plot and
table, load levels on the points, units in the axis titles, interval bars drawn when the run
table has intervals (and "no intervals" said when not). A deliberately broken copy proves the
check can fail. The README screenshot (docs/img/report.png) is taken here:
SERVEBENCH_UPDATE_SCREENSHOT=1 writes it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.unit.test_decide_sweepinfo import ASSUMED, searched_sweep
from tests.unit.test_report_html import build, with_intervals

ROOT = Path(__file__).resolve().parents[2]
SWEEP = ROOT / "tests/fixtures/decide/sweep"
EMU = ROOT / "results/reference/emulator-sweep"
CPU_REF = ROOT / "results/reference/cpu-reference"  # real vLLM, transformers serve, llama.cpp
SHOT = (1280, 1395)  # the README picture: down to the load curves and their interval caption


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    subprocess.run(["bash", str(ROOT / "scripts/setup_browser.sh")], check=False, timeout=900)
    path = shutil.which("chromium")
    assert path, "headless Chromium is required: scripts/setup_browser.sh could not install it"
    return path


def report_html(tmp_path: Path, *args) -> Path:
    out = tmp_path / "report.html"
    p = subprocess.run([sys.executable, "-m", "servebench.cli", "report", *map(str, args), "--format", "html", "-o", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr
    return out


def load_in_browser(html: Path, tmp_path: Path) -> dict:
    """Open the file offline in headless Chromium; read back what the page recorded."""
    p = subprocess.run(browser(tmp_path, "--enable-logging=stderr", "--v=0", "--dump-dom", html.as_uri()),
                       capture_output=True, text=True, timeout=240)
    dom = p.stdout
    assert "<body" in dom, p.stderr[-2000:]
    status = re.search(r'id="sb-status" data-plots="(\d*)" data-drawn="(\d*)" data-errorbars="(\d*)"', dom)
    colours = re.search(r'<div id="sb-colors">(.*?)</div>', dom, re.S)
    errors = re.search(r'<div id="sb-errors" data-count="(\d+)">(.*?)</div>', dom, re.S)
    expected = re.search(r"data-expected-plots=\"(\d+)\"", dom)
    assert status and errors and expected and colours, "page status markers missing"
    return {"plots": int(status.group(1) or 0), "drawn": int(status.group(2) or 0), "expected": int(expected.group(1)),
            "errors": int(errors.group(1)), "error_text": errors.group(2), "errorbars": int(status.group(3) or 0),
            "traces": json.loads(colours.group(1) or "[]"),
            "console": [ln for ln in p.stderr.splitlines() if ":CONSOLE" in ln],  # console.log/warn/error alike
            "containers": dom.count('class="plot-container plotly"'), "dom": dom}


def browser(tmp_path: Path, *args: str) -> list[str]:
    return [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
            f"--user-data-dir={tmp_path / 'chrome-profile'}", "--proxy-server=127.0.0.1:9",  # any fetch would fail
            "--virtual-time-budget=15000", "--hide-scrollbars", *args]


def rgb(hex_colour: str) -> str:
    return "rgb({}, {}, {})".format(*(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)))


def assert_one_colour_per_configuration(r: dict) -> dict[str, str]:
    """Every trace of every plot, and every table swatch, gives a configuration one colour; no
    two configurations share one. Returns configuration -> colour."""
    seen: dict[str, set[str]] = {}
    for t in r["traces"]:
        if t["meta"] and not str(t["meta"]).startswith("front:"):
            seen.setdefault(t["meta"], set()).add(t["colour"])
    assert seen and all(len(c) == 1 for c in seen.values()), seen
    colours = {k: next(iter(v)) for k, v in seen.items()}
    assert len(set(colours.values())) == len(colours)
    swatches = re.findall(r'data-config="([^"]+)" data-colour="([^"]+)"', r["dom"])
    assert swatches and all(colours.get(cfg, c) == c for cfg, c in swatches), swatches
    assert {cfg for cfg, _ in swatches} >= set(colours)  # every plotted configuration shows in a table
    return colours


def test_fixture_sweep_report_draws_every_plot(tmp_path):
    """The fixture sweep as a limit search with study assumptions left it (test_decide_sweepinfo)."""
    sweep = searched_sweep(tmp_path / "sweep")
    html = report_html(tmp_path, sweep, "--slo", "ttft_p95<=300ms", "--target-rps", "10", "--goodput", "ttft:500", "tpot:50")
    r = load_in_browser(html, tmp_path)
    assert r["errors"] == 0 and r["console"] == [], (r["error_text"], r["console"])
    # curves, CDFs, cost bars, cost-vs-latency, GPU timelines: all five, each with its SVG.
    assert r["expected"] == r["plots"] == r["drawn"] == r["containers"] == 5
    assert r["dom"].count('class="main-svg"') >= 2 * 5
    for key in ("cost", "latency", "throughput", "cost_slo", "pareto_cost", "pareto_throughput", "capacity", "goodput",
                "limits", "assumptions", "runs", "metadata"):
        assert f'data-key="{key}"' in r["dom"], key
    limits = re.search(r'data-key="limits">(.*?)</table>', r["dom"], re.S).group(1)
    assert "<td>5-20 (95 %; first missing: 21)</td>" in limits  # a range, as the search answered it
    assumed = re.search(r'data-key="assumptions">(.*?)</table>', r["dom"], re.S).group(1)
    assert "assumed (not stated by the study)" in assumed and all(f"<td>{a}</td>" in assumed for a in ASSUMED)
    assert r["dom"].index('data-key="throughput"') < r["dom"].index('id="sb-assumptions"') < r["dom"].index('id="sb-plot-0"')


def test_real_emulator_sweep_report_draws_every_plot(tmp_path):
    html = report_html(tmp_path, EMU, "--price", "cpu=0.10")
    r = load_in_browser(html, tmp_path)
    assert r["errors"] == 0 and r["console"] == [], (r["error_text"], r["console"])
    # No GPU telemetry on a CPU host: four plots, and the page says the fifth has no data.
    assert r["expected"] == r["plots"] == r["drawn"] == r["containers"] == 4
    assert "GPU telemetry: no data to plot" in r["dom"]


def test_the_check_catches_a_script_error_and_an_undrawn_plot(tmp_path):
    html = report_html(tmp_path, EMU, "--price", "cpu=0.10")
    text = html.read_text()
    text = text.replace("Plotly.newPlot(", "Plotly.noSuchFunction(", 1)
    broken = tmp_path / "broken.html"
    broken.write_text(text)
    r = load_in_browser(broken, tmp_path)
    assert r["errors"] >= 1 and "noSuchFunction" in r["error_text"]
    assert any("noSuchFunction" in ln for ln in r["console"])  # the console check sees it too
    assert r["drawn"] == r["plots"] - 1


def test_committed_real_cpu_sweep_report_draws_every_plot(tmp_path):
    html = report_html(tmp_path, CPU_REF, "--price", "cpu=0.10", "--slo", "ttft_p95<=200ms")
    r = load_in_browser(html, tmp_path)
    assert r["errors"] == 0 and r["console"] == [], (r["error_text"], r["console"])
    assert r["expected"] == r["plots"] == r["drawn"] == r["containers"] == 4
    for engine in ("vllm/tiny/cpu", "transformers/tiny/cpu", "llamacpp/tiny/q8_0/cpu"):
        assert engine in r["dom"], engine


def _texts(dom: str, cls: str) -> list[tuple[str, str]]:
    """(fill colour, text) of the SVG texts of one plotly class (textpoint: labelled points)."""
    return re.findall(r'class="' + cls + r'"[^>]*><text[^>]*style="[^"]*fill: (rgb\([^)]*\))[^"]*"[^>]*>([^<]*)<', dom)


def test_committed_results_read_at_a_glance(tmp_path):
    """results/reference as a buyer opens it: seven configurations (a burst run, two sweeps),
    costs 188x apart, latencies 45x apart, and no intervals in the committed summaries."""
    html = report_html(tmp_path, ROOT / "results/reference", "--price", "cpu=0.10")
    r = load_in_browser(html, tmp_path)
    assert r["errors"] == 0 and r["console"] == [], (r["error_text"], r["console"])
    colours = assert_one_colour_per_configuration(r)
    assert len(colours) == 6  # vllm/tiny/cpu standalone and in the sweep: one configuration, one colour
    dom = r["dom"]
    points = [(fill, t) for fill, t in _texts(dom, "textpoint") if t]
    assert ("rgb(34, 34, 34)", "front: tiny") in points  # the front named where it ends
    points = [(fill, t) for fill, t in points if not t.startswith("front: ")]
    assert {"c=1", "c=4", "c=16", "burst 1000"} <= {t for _, t in points}
    assert {fill for fill, _ in points} <= {rgb(c) for c in colours.values()}  # each label in its line's colour
    titles = re.findall(r'<text class="[xy]\d*title"[^>]*>([^<]*)<', dom)
    for t in ("latency (ms/token, median), log scale", "TTFT p99 (ms), log scale", "output throughput (tokens/s), log scale",
              "$ per 1M output tokens, log scale", "TTFT (ms), log scale"):
        assert t in titles, (t, titles)
    ticks = set(re.findall(r'class="ytick"[^>]*><text[^>]*>([^<]*)<', dom))
    assert {"2", "5", "10", "20", "50", "$0.005", "$0.01", "$0.1", "$0.5"} <= ticks, ticks  # plain 1-2-5 numbers
    bar_labels = re.findall(r'class="bartext[^"]*"[^>]*>(?:<[^>]*>)*([^<]*)<', dom)
    assert "$0.0042" in bar_labels and "$0.79" in bar_labels  # the cheap bar and the dear one, both labelled
    assert re.search(r'class="legendtext"[^>]*>Pareto front: tiny<', dom)
    assert r["errorbars"] == 0 and dom.count("no intervals: the runs carry no 95 % confidence intervals") == 3
    assert dom.index('id="sb-buy"') < dom.index('data-key="cost"') < dom.index('id="sb-plot-0"')
    assert re.search(r'<footer id="sb-footer">this file: [\d.]+ MB \([\d,]+ bytes\)', dom)


def test_intervals_drawn_in_the_browser(tmp_path):
    """The same page when the run table has <column>_ci_low/high: bars drawn, captions say so."""
    from servebench.decide import html as report

    df, tables, meta = build([CPU_REF], prices=("cpu=0.10",))
    out = tmp_path / "ci.html"
    out.write_text(report.render(with_intervals(df), tables, meta, title="intervals", inputs=[str(CPU_REF)]))
    r = load_in_browser(out, tmp_path)
    assert r["errors"] == 0 and r["console"] == [], (r["error_text"], r["console"])
    assert r["errorbars"] >= 30, r["errorbars"]
    assert r["dom"].count("bars: 95 % confidence intervals") == 3 and "no intervals:" not in r["dom"]
    assert_one_colour_per_configuration(r)


def test_readme_screenshot_of_the_report(tmp_path):
    """The README's picture: the top of the real CPU sweep's report (what to buy, the three
    tables, the load curves). SERVEBENCH_UPDATE_SCREENSHOT=1 writes it to docs/img/report.png."""
    from PIL import Image

    html = report_html(tmp_path, CPU_REF.relative_to(ROOT), "--price", "cpu=0.10")  # no host path in the picture
    r = load_in_browser(html, tmp_path)
    colours = assert_one_colour_per_configuration(r)
    png = tmp_path / "report.png"
    p = subprocess.run(browser(tmp_path, f"--window-size={SHOT[0]},{SHOT[1]}", f"--screenshot={png}", html.as_uri()),
                       capture_output=True, text=True, timeout=240)
    assert png.is_file(), p.stderr[-2000:]
    im = Image.open(png).convert("RGB")
    assert im.size == SHOT
    counts = {c: n for n, c in im.getcolors(SHOT[0] * SHOT[1])}
    for cfg, c in colours.items():  # each configuration's colour is on screen (swatches, lines, markers)
        assert counts.get(tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)), 0) >= 100, cfg
    if os.environ.get("SERVEBENCH_UPDATE_SCREENSHOT") == "1":
        shutil.copy(png, ROOT / "docs/img/report.png")
