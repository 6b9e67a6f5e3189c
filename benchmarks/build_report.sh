#!/usr/bin/env bash
# The merged CIFAR-10 report from the committed results: the test-split tables and the
# convergence checks (the validation pieces' tables are in benchmarks/results/*.md; their image
# grids would add ~20 MB) into
# benchmarks/report/{report.md,report.html}, and a screenshot of its top for the README (headless
# Chromium, when installed). From the repository root:
#   bash benchmarks/build_report.sh
set -euo pipefail
runs=$(ls -d benchmarks/results/cifar10_ipc*/ benchmarks/results/cifar10_val_ipc10_epochs*/ 2>/dev/null | sed 's#/$##')
geodistill report $runs --out benchmarks/report --overwrite --title "geodistill on CIFAR-10 (ConvNet-3 teacher, 2-core CPU)"
if command -v chromium >/dev/null; then
  chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,1500 \
    --screenshot=benchmarks/report/screenshot.png "file://$(pwd)/benchmarks/report/report.html" 2>/dev/null
fi
echo "report: benchmarks/report/report.html"
