#!/usr/bin/env bash
# The φ⁴ scaling table (issues #4 and #8): for each L, HMC, the flow and the numba local Metropolis side by
# side with `latflow compare` (ESS, acceptance, τ_int(absmag), cost per independent sample, training time
# and break-even). At most 600 s of training per L; results in runs/out/bench/phi4_scaling/L*/ and the
# one-line JSON summaries in runs/out/bench/phi4_scaling/L*.json; costs in CPU seconds (--clock cpu), which
# other jobs on the machine do not inflate. LS="8 10" runs a subset.
set -euo pipefail
cd "$(dirname "$0")/../../.."
mkdir -p runs/out/bench/phi4_scaling
for L in ${LS:-6 8 10 12 14}; do
  .venv/bin/latflow compare runs/bench/phi4_scaling/{hmc,flow,local}_L$L.yaml \
    --out runs/out/bench/phi4_scaling/L$L --resume --clock cpu --json --quiet | tail -n 1 > runs/out/bench/phi4_scaling/L$L.json
done
