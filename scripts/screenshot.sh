#!/usr/bin/env bash
# Screenshot an imgprof HTML report (default: the demo's) in headless Chromium, one PNG per page height.
#   bash scripts/screenshot.sh [REPORT.html] [OUT.png] [HEIGHT]
# Needs chromium (Debian/Ubuntu: apt-get install -y chromium). Runs the demo first when no report is given
# and imgprof-demo/report.html does not exist yet.
set -euo pipefail
here="$PWD"
cd "$(dirname "$0")/.."
report="${1:-imgprof-demo/report.html}"
out="${2:-report.png}"
[[ "$report" = /* || -f "$report" ]] || report="$here/$report"
[[ "$out" = /* ]] || out="$here/$out"
height="${3:-9000}"
if [[ ! -f "$report" ]]; then
  if [[ $# -ge 1 ]]; then echo "error: $report not found" >&2; exit 2; fi
  imgprof demo --out imgprof-demo --no-progress
fi
browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
if [[ -z "$browser" ]]; then
  echo "error: no chromium found; install it (apt-get install -y chromium)" >&2; exit 2
fi
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --screenshot="$out" \
  --window-size=1400,"$height" "file://$(realpath "$report")" 2>/dev/null
echo "screenshot: $out"
