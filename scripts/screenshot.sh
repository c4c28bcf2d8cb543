#!/usr/bin/env bash
# Screenshot the docs' tutorial pages (and an HTML report) in headless Chromium, to look at them.
#
#   bash scripts/screenshot.sh [OUT_DIR] [REPORT_HTML]
#
# Builds the MkDocs site into $SITE_DIR (default: site/) when it is not built yet, then writes
#   OUT_DIR/docs_tutorial.png            the rendered, executed tutorial 6 (UMAP and sc.pl)
#   OUT_DIR/docs_tutorial_cellprofiler.png  tutorial 1
#   OUT_DIR/docs_tutorials.png           the tutorials overview page
#   OUT_DIR/report.png                   REPORT_HTML (default: imgprof-demo/report.html when present)
# Needs Chromium: apt-get update && apt-get install -y chromium
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-screenshots}
REPORT=${2:-imgprof-demo/report.html}
SITE=${SITE_DIR:-site}
mkdir -p "$OUT"
BROWSER=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$BROWSER" ]; then
  echo "No Chromium found: apt-get update && apt-get install -y chromium" >&2
  exit 1
fi
if [ ! -f "$SITE/notebooks/06_umap_scanpy/index.html" ]; then
  python -m mkdocs build --site-dir "$SITE"
fi
shot() {  # shot PAGE PNG [HEIGHT]
  "$BROWSER" --headless --no-sandbox --disable-gpu --hide-scrollbars --virtual-time-budget=5000 \
    --window-size=1280,"${3:-2400}" --screenshot="$2" "file://$(realpath "$1")" 2>/dev/null
  echo "wrote $2"
}
shot "$SITE/notebooks/06_umap_scanpy/index.html" "$OUT/docs_tutorial.png" 3200
shot "$SITE/notebooks/01_cellprofiler_to_profiles/index.html" "$OUT/docs_tutorial_cellprofiler.png" 2400
shot "$SITE/tutorials/index.html" "$OUT/docs_tutorials.png" 1400
if [ -f "$REPORT" ]; then
  shot "$REPORT" "$OUT/report.png" 3000
else
  echo "no report at $REPORT (run: imgprof demo --out imgprof-demo), skipped"
fi
