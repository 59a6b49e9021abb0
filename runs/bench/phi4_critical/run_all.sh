#!/usr/bin/env bash
# φ⁴ near criticality (issue 16, part 3): m² = −4, λ = 5.276, 4.807, 4.572 at L = 12, 20, 32 (ξ ≈ L/4).
# For each L: (1) the HMC scan over the trajectory length τ ∈ {0.5, 1, 2, 4} (step sizes in the cards,
# acceptance ≈ 0.8–0.9), compared with `latflow compare --clock cpu`; (2) the τ with the lowest CPU cost per
# independent |M| sample is kept and compared, as the reference (first) card, with local Metropolis, the
# Wolff cluster baseline and the trained flow; (3) agreement.py checks that all samplers agree on ⟨|M|⟩/V and
# ⟨M²⟩/V within 4σ. Ensembles and tables in runs/out/bench/phi4_critical/L$L*/, one-line JSON summaries in
# runs/out/bench/phi4_critical/L$L{_hmc_scan,}.json. Complete ensembles and finished flows are reused.
#   LS="12" runs a subset; NOFLOW=1 leaves the flow out; PYTHON=... picks the interpreter.
# Run it with one thread per process, e.g.  OMP_NUM_THREADS=1 nice bash runs/bench/phi4_critical/run_all.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
py=${PYTHON:-.venv/bin/python}
cards=runs/bench/phi4_critical
out=runs/out/bench/phi4_critical
mkdir -p "$out"
for L in ${LS:-12 20 32}; do
  "$py" -m mcmc.cli compare $cards/hmc_tau{0.5,1,2,4}_L$L.yaml --out $out/L${L}_hmc_scan --resume --clock cpu \
    --json --quiet | tail -n 1 > $out/L${L}_hmc_scan.json
  best=$("$py" -c 'import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
print(min(rows, key=lambda r: r["cost_per_indep_s"]["absmag"])["card"])' $out/L${L}_hmc_scan.json)
  others="$cards/local_L$L.yaml $cards/cluster_L$L.yaml"
  [ -n "${NOFLOW:-}" ] || others="$others $cards/flow_L$L.yaml"
  "$py" -m mcmc.cli compare "$best" $others --out $out/L$L --resume --clock cpu --json --quiet \
    | tail -n 1 > $out/L$L.json
  "$py" $cards/agreement.py $out/L$L.json | tee $out/L${L}_agreement.txt
done
