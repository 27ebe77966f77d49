#!/usr/bin/env bash
# snapshot the running student's last checkpoint and score it at 20 steps (reference sampler, fp32): CF (47) and Python (173)
set -u
export OPENBLAS_NUM_THREADS=1
cd /work/main
step=$(python3 -c "import json; print(json.load(open('runs/s26/student/trainer_state.json'))['step'])" 2>/dev/null || echo x)
snap=runs/s26/snap_$step; mkdir -p $snap
cp runs/s26/student/{config.json,model.safetensors,tokenizer.json} $snap/
for spec in "cf cf" "python conala"; do set -- $spec
  /work/venv/bin/codefusion eval --model $snap --steps 20 --backend torch --dtype float32 --clamp none --json \
    --data ../shared/data/$2/dev.jsonl --lang $1 --seed 0 > $snap/$1_20.json 2>/dev/null
  python3 -c "import json; d=json.load(open('$snap/$1_20.json')); print('step $step $1 20 steps', {k: round(v,4) for k,v in d['metrics'].items() if k in ('syntax_valid@1','exec_match@1','bleu@1')})"
done
