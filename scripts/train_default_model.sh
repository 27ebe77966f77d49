#!/usr/bin/env bash
# Reproduces the embedded default model (models/): one command, about 2 hours on a 2-core CPU.
#   bash scripts/train_default_model.sh DATA_DIR OUT_DIR [PRETRAIN_MIN] [FINETUNE_MIN] [HIGH_T_MIN]
# DATA_DIR is laid out like shared/data (<dataset>/{train,dev,pretrain}.jsonl).
# 1. a byte-level BPE tokenizer (8k) on every program and utterance of train + pretrain;
# 2. pre-training (CodeFusion §3.2: unsupervised generation alternating with CPD) on the distinct
#    programs of the three code-only corpora;
# 3. fine-tuning on the three train splits (NL → code), starting from the pre-trained weights,
#    timesteps uniform;
# 4. more fine-tuning with timesteps biased towards high noise (--t-sampling high), so the
#    denoiser learns to use the request (see models/README.md);
# 5. the length head p(n | E_s) fitted on the fine-tuned model (its other weights frozen);
# 6. the shipping copy: bf16 weights in OUT_DIR/default (copy its files into models/).
# Phases 2–4: bf16 autocast, batch 64, AdamW, warm-up then cosine to zero over each budget, half
# of the batches padded to a longer length bucket (--upsize 0.5). Budgets are wall-clock minutes,
# so the number of steps depends on the machine and its load (models/README.md gives the counts).
# Environment: DEVICE (cpu | cuda, default cpu), BATCH (default 64), TOKENIZER (an existing
# tokenizer.json to reuse instead of step 1, e.g. models/tokenizer.json).
set -euo pipefail
usage="usage: train_default_model.sh DATA_DIR OUT_DIR [PRETRAIN_MIN] [FINETUNE_MIN] [HIGH_T_MIN]"
data=${1:?$usage}
out=${2:?$usage}
pre_min=${3:-20}
fine_min=${4:-55}
high_min=${5:-33}
device=${DEVICE:-cpu}
batch=${BATCH:-64}
mkdir -p "$out"
if [[ -n "${TOKENIZER:-}" ]]; then
    cp "$TOKENIZER" "$out/tokenizer.json"
else
    codefusion tokenizer --data "$data" --splits train,pretrain --vocab-size 8192 --out "$out/tokenizer.json"
fi
common=(--data "$data" --device "$device" --batch-size "$batch")
codefusion train --preset small "${common[@]}" --task pretrain --tokenizer "$out/tokenizer.json" \
    --out "$out/pretrain" --minutes "$pre_min" --lr 1e-3 --warmup 300 --seed 0
codefusion train --preset small "${common[@]}" --task finetune --init "$out/pretrain" \
    --out "$out/finetune" --minutes "$fine_min" --lr 1e-3 --warmup 200 --seed 0
codefusion train --preset small "${common[@]}" --task finetune --init "$out/finetune" \
    --out "$out/finetune_high_t" --minutes "$high_min" --lr 5e-4 --warmup 50 --t-sampling high --seed 1
codefusion train --task length --init "$out/finetune_high_t" --data "$data" --out "$out/length" \
    --lr 1e-3 --seed 0
codefusion pack --model "$out/length" --out "$out/default" --dtype bfloat16
echo "default model: $out/default (copy config.json, model.safetensors, tokenizer.json into models/)"
