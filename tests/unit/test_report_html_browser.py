"""The HTML report in a real browser: headless Chromium (Debian's `chromium`, installed by
scripts/setup_browser.sh, which scripts/setup.sh calls) loads the file with no network, and the
DOM after load must show every plot drawn and no script error. A deliberately broken copy proves
the check can fail."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SWEEP = ROOT / "tests/fixtures/decide/sweep"
EMU = ROOT / "results/reference/emulator-sweep"
CPU_REF = ROOT / "results/reference/cpu-reference"  # real vLLM, transformers serve, llama.cpp


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
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={tmp_path / 'chrome-profile'}", "--proxy-server=127.0.0.1:9",  # any fetch would fail
           "--virtual-time-budget=15000", "--dump-dom", html.as_uri()]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    dom = p.stdout
    assert "<body" in dom, p.stderr[-2000:]
    status = re.search(r'id="sb-status" data-plots="(\d*)" data-drawn="(\d*)"', dom)
    errors = re.search(r'<div id="sb-errors" data-count="(\d+)">(.*?)</div>', dom, re.S)
    expected = re.search(r"data-expected-plots=\"(\d+)\"", dom)
    assert status and errors and expected, "page status markers missing"
    return {"plots": int(status.group(1) or 0), "drawn": int(status.group(2) or 0), "expected": int(expected.group(1)),
            "errors": int(errors.group(1)), "error_text": errors.group(2),
            "containers": dom.count('class="plot-container plotly"'), "dom": dom}


def test_fixture_sweep_report_draws_every_plot(tmp_path):
    html = report_html(tmp_path, SWEEP, "--slo", "ttft_p95<=300ms", "--target-rps", "10", "--goodput", "ttft:500", "tpot:50")
    r = load_in_browser(html, tmp_path)
    assert r["errors"] == 0, r["error_text"]
    # curves, CDFs, cost bars, cost-vs-latency, GPU timelines: all five, each with its SVG.
    assert r["expected"] == r["plots"] == r["drawn"] == r["containers"] == 5
    assert r["dom"].count('class="main-svg"') >= 2 * 5
    for key in ("cost", "latency", "throughput", "cost_slo", "pareto_cost", "pareto_throughput", "capacity", "goodput", "runs", "metadata"):
        assert f'data-key="{key}"' in r["dom"], key


def test_real_emulator_sweep_report_draws_every_plot(tmp_path):
    html = report_html(tmp_path, EMU, "--price", "cpu=0.10")
    r = load_in_browser(html, tmp_path)
    assert r["errors"] == 0, r["error_text"]
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
    assert r["drawn"] == r["plots"] - 1


def test_committed_real_cpu_sweep_report_draws_every_plot(tmp_path):
    html = report_html(tmp_path, CPU_REF, "--price", "cpu=0.10", "--slo", "ttft_p95<=200ms")
    r = load_in_browser(html, tmp_path)
    assert r["errors"] == 0, r["error_text"]
    assert r["expected"] == r["plots"] == r["drawn"] == r["containers"] == 4
    for engine in ("vllm/tiny/cpu", "transformers/tiny/cpu", "llamacpp/tiny/q8_0/cpu"):
        assert engine in r["dom"], engine
