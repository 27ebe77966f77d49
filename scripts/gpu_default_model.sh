#!/usr/bin/env bash
# The default model's recipe on one GPU, then its dev evaluation and the engine's GPU latency rows,
# in one call of the lent machine (its time is scarce: every phase has a wall-clock budget).
# Written for session 3's four-phase recipe. Since session 8 the recipe has fourteen phases, most with
# step counts (≈ 25 minutes of an H100 in all): more than one lease; the recipe skips the phases whose
# checkpoints exist, so it can be spread over several calls that carry OUT_DIR's run folder.
#   bash scripts/gpu_default_model.sh DATA_DIR OUT_DIR [PRETRAIN_MIN] [FINETUNE_MIN] [HIGH_T_MIN]
# OUT_DIR receives: model.tar.part-* (the packed bf16 model, split under 15 MiB per file),
# results.tar.gz (train logs, eval JSON + predictions, bench JSON/Markdown) and log.txt.
# Unpack here with: cat OUT_DIR/model.tar.part-* | tar -x -C DEST
set -uo pipefail
usage="usage: gpu_default_model.sh DATA_DIR OUT_DIR [PRETRAIN_MIN] [FINETUNE_MIN] [HIGH_T_MIN]"
data=${1:?$usage}
out=${2:?$usage}
work=${WORK:-/tmp/cf_gpu}
device=${DEVICE:-cuda}
mkdir -p "$out" "$work/eval"
exec > >(tee -a "$out/log.txt") 2>&1
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=5
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"

DEVICE=$device BATCH=${BATCH:-128} TOKENIZER=models/tokenizer.json \
    bash scripts/train_default_model.sh "$data" "$work/run" "${3:-2}" "${4:-2.6}" "${5:-1}" || echo "RECIPE FAILED"
if [[ -f "$work/run/default/model.safetensors" ]]; then
    tar -c -C "$work/run" default pretrain/train_log.jsonl finetune/train_log.jsonl finetune_high_t/train_log.jsonl \
        | split -b 15M - "$out/model.tar.part-"
fi

evaluate() {  # lang dataset extra-args...
    local lang=$1 ds=$2
    shift 2
    timeout 150 codefusion eval --model "$work/run/default" --data "$data/$ds/dev.jsonl" --lang "$lang" \
        --steps 1200 --backend torch --device "$device" --dtype bfloat16 --json \
        --batch-size "${EVAL_BATCH:-1000}" --predictions "$work/eval/$lang.jsonl" "$@" > "$work/eval/$lang.json" || echo "EVAL $lang FAILED"
    cat "$work/eval/$lang.json"
}
if [[ -f "$work/run/default/model.safetensors" ]]; then
    evaluate bash nl2bash --limit 200 --num-samples 5
    evaluate python conala
    evaluate cf cf
fi
timeout 60 codefusion bench latency --preset paper --backend reference,torch --dtype float32,bfloat16 \
    --batch 1,8,64 --steps 20 --repeats 5 --device "$device" --out "$work/bench" --json || echo "BENCH FAILED"
tar -czf "$out/results.tar.gz" -C "$work" $(cd "$work" && ls -d eval bench run/*/train_log.jsonl run/*/config.json 2>/dev/null)
echo "done"
