#!/usr/bin/env bash
# fp32 reference sampler, 1200 steps, K samples ranked: M=model dir, O=out dir, then "lang:seed[:limit]" items
set -u
export OPENBLAS_NUM_THREADS=1
K=${K:-5}
M=$1; O=$2; shift 2; mkdir -p $O
declare -A DS=([cf]=cf [bash]=nl2bash [python]=conala)
for item in "$@"; do
  IFS=: read lang seed limit <<< "$item"
  lim=${limit:+--limit $limit}
  name=${lang}_s${seed}${limit:+_l$limit}_k$K
  /work/venv/bin/codefusion eval --model $M --steps 1200 --backend torch --dtype float32 --clamp ${CLAMP:-none} --json \
    --num-samples $K --data ../shared/data/${DS[$lang]}/dev.jsonl --lang $lang --seed $seed $lim --predictions $O/$name.jsonl --force \
    > $O/$name.json 2> $O/$name.err
  python3 -c "import json; d=json.load(open('$O/$name.json')); print('$name', d['n'], {k: round(v,4) for k,v in d['metrics'].items()})"
done
