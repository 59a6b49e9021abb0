#!/usr/bin/env bash
# t0/a^2 of 4D SU(3) at beta = 6.0: generate the ensemble, then flow every stored configuration.
#   runs/bench/t0/t0.sh [L]      (L = 8, 10 or 12; default 8; the card runs/bench/t0/su3_b6_L<L>_hmc.yaml)
# On a shared machine: OMP_NUM_THREADS=1 nice -n 10 runs/bench/t0/t0.sh 8
set -euo pipefail
L=${1:-8}
card=runs/bench/t0/su3_b6_L${L}_hmc.yaml
latflow sample "$card" --quiet --resume || latflow sample "$card" --quiet
latflow measure "runs/out/bench/t0/su3_b6_L${L}/su3_b6_L${L}.r0.h5" --obs gradient_flow \
    --set gradient_flow.t_max=3.4 --set gradient_flow.dt=0.2 --set gradient_flow.report_every=5 \
    --set gradient_flow.q_every=4 --set gradient_flow.tol=1e-4 --json
