#!/usr/bin/env bash
# t0/a^2 of 4D SU(3) at beta = 6.0: generate the ensemble, then flow every stored configuration.
#   runs/bench/t0/t0.sh [CARD]   (CARD = a card name under runs/bench/t0/ without .yaml;
#                                 default su3_b6_L12_hbor: 12^4, heatbath + overrelaxation)
# On a shared machine: OMP_NUM_THREADS=1 nice -n 10 runs/bench/t0/t0.sh su3_b6_L12_hbor
# Both steps resume after a kill (sample --resume; measure reuses what it already measured).
set -euo pipefail
name=${1:-su3_b6_L12_hbor}
card=runs/bench/t0/${name}.yaml
latflow sample "$card" --quiet --resume || latflow sample "$card" --quiet
latflow measure "runs/out/bench/t0/${name}/${name}.r0.h5" --obs gradient_flow \
    --set gradient_flow.t_max=4.0 --set gradient_flow.dt=0.2 --set gradient_flow.report_every=5 \
    --set gradient_flow.q_every=4 --set gradient_flow.tol=1e-3 --json
