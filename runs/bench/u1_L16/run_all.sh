#!/usr/bin/env bash
# Topological freezing, 2D U(1) at L = 16 (issues #5 and #8; Kanwar et al., PRL 125 (2020) 121601):
# for each β, HMC, the heatbath+overrelaxation local sampler and the flow side by side with
# `latflow compare` (τ_int(Q) and τ_int(plaquette) with errors, cost per independent sample in CPU
# seconds, training time and break-even). The flow is the Wilson-started sweep flow (flow_b<β>.yaml), which
# needs no training. Results in runs/out/bench/u1_L16/b<β>/ and the JSON rows in b<β>.json;
# then the table and the cost-against-β figure:
#   .venv/bin/python runs/bench/scan_report.py --param beta --obs Q runs/out/bench/u1_L16/b*.json
# BETAS="6" runs a subset (β = 6 is the `latflow compare` run of issue #8).
set -euo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p runs/out/bench/u1_L16
for b in ${BETAS:-1 2 3 4 5 6 7}; do
  .venv/bin/latflow compare runs/bench/u1_L16/{hmc,local,flow}_b$b.yaml \
    --out runs/out/bench/u1_L16/b$b --resume --clock cpu --json --quiet | tail -n 1 > runs/out/bench/u1_L16/b$b.json
done
