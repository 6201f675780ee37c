#!/usr/bin/env bash
# Headless Chromium for the report test (tests/unit/test_report_html_browser.py renders the HTML report
# in a real browser). Idempotent: does nothing when a chromium binary is already on PATH.
set -euo pipefail

for b in chromium chromium-browser google-chrome; do
  if command -v "$b" >/dev/null; then
    echo "setup_browser.sh: $b present ($(command -v "$b"))"
    exit 0
  fi
done
command -v apt-get >/dev/null || { echo "setup_browser.sh: no chromium and no apt-get; install Chromium by hand" >&2; exit 1; }
SUDO=""
[[ "$(id -u)" == 0 ]] || SUDO="sudo"
echo "setup_browser.sh: installing chromium (apt-get)"
$SUDO apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
command -v chromium >/dev/null || { echo "setup_browser.sh: chromium still missing after apt-get" >&2; exit 1; }
echo "setup_browser.sh: installed $(chromium --version 2>/dev/null || echo chromium)"
