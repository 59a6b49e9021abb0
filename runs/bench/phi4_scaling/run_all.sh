#!/usr/bin/env bash
# The φ⁴ scaling table: for each L, HMC and the flow side by side with `latflow compare` (ESS,
# acceptance, τ_int(absmag), cost per independent sample, training time and break-even).
# About 12 minutes per L on 2 cores (600 s of training); results in runs/out/bench/phi4_scaling/L*/.
set -euo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p runs/out/bench/phi4_scaling
for L in ${LS:-6 8 10 12 14}; do
  .venv/bin/latflow compare runs/bench/phi4_scaling/hmc_L$L.yaml runs/bench/phi4_scaling/flow_L$L.yaml \
    --out runs/out/bench/phi4_scaling/L$L --resume --json --quiet | tail -n 1 > runs/out/bench/phi4_scaling/L$L.json
done
