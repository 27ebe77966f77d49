#!/usr/bin/env bash
# Phase 18's recipe at its scale on the CPU, over several sessions: the shipped weights on the plain teacher's checked
# programs (runs/s24/distilled4), E frozen, clipped t, rollout 0.5 x 8 steps, repeat conala=2,cf=4;
# batch 64 (phase 18: 256) at lr 2e-4 (phase 18: 4e-4, sqrt-scaled), 7400 steps = phase 18's 1852 x 256 rows.
# First session: bash runs/s26/student.sh ; later sessions: RESUME=1 bash runs/s26/student.sh
set -u
export OPENBLAS_NUM_THREADS=1
cd /work/main
/work/venv/bin/codefusion train --data runs/s24/distilled4 --batch-size 64 --task finetune --init models --freeze-encoder \
  --repeat conala=2,cf=4 --max-steps 7400 --lr 2e-4 --warmup 100 --t-sampling high --t-min 0.7 --t-min-share 0.8 \
  --rollout-share 0.5 --rollout-steps 8 --seed 26 --dtype float32 --dev-every 0 --save-minutes 5 \
  ${RESUME:+--resume} --out runs/s26/student >> runs/s26/student.log 2>&1
date +%T >> runs/s26/STUDENT_STOPPED
