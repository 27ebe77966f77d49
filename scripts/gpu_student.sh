#!/usr/bin/env bash
# Continue the distilled student (session 7's recipe) on a lent GPU: one call of the device tool.
#   IN/init  a checkpoint to continue (bf16 pack is fine: load_checkpoint upcasts)
#   IN/data  {cf,conala,nl2bash}/{train,dev}.jsonl  (the teacher-distilled programs)
# Packs the result in bf16 and splits it into pieces under 16 MB (the device tool's per-file limit) in OUT;
# join them with `cat OUT/model.part.* > model.safetensors`. Then fit the length head on the CPU.
set -euo pipefail
IN=${1:?input folder}; OUT=${2:?output folder}; MINUTES=${3:-6}; BATCH=${BATCH:-256}; LR=${LR:-8e-4}
DEVICE=${DEVICE:-cuda}; MAX_STEPS=${MAX_STEPS:-}
work=$(mktemp -d)
python3 -m codefusion.cli train --task finetune --init "$IN/init" --freeze-encoder --data "$IN/data" --out "$work/st" \
  --minutes "$MINUTES" ${MAX_STEPS:+--max-steps $MAX_STEPS} --batch-size "$BATCH" --lr "$LR" --warmup 100 \
  --t-sampling high --t-min 0.7 --t-min-share 0.8 --dev-every 100000 --dev-rows 0 --seed 12 --device "$DEVICE" \
  --save-minutes 2 2>&1 | tr '\r' '\n' | grep -v 'it/s\|s/it' | tail -15
python3 -m codefusion.cli pack --model "$work/st" --out "$work/pk" --dtype bfloat16
mkdir -p "$OUT"
split -b 15000000 "$work/pk/model.safetensors" "$OUT/model.part."
cp "$work/pk/config.json" "$work/st/train_log.jsonl" "$OUT/"
ls -la "$OUT"
