#!/usr/bin/env bash
# Reproduces the embedded default model (models/) in one command: every phase of its lineage, in order.
#   bash scripts/train_default_model.sh DATA_DIR OUT_DIR [PRETRAIN_MIN] [FINETUNE_MIN] [HIGH_T_MIN]
# DATA_DIR is laid out like shared/data (<dataset>/{train,dev,pretrain}.jsonl). A finished phase is skipped
# and one cut short is resumed from its last periodic save, so an interrupted run continues where it stopped.
#
# Phases, numbered as in the recipe table of models/README.md (which gives each one's steps, wall time
# and what it changed); first a byte-level BPE tokenizer (8k), unless TOKENIZER names one:
#   1 pretrain         pre-training (CodeFusion §3.2: generation alternating with CPD), code-only corpora
#   2 finetune         fine-tuning on the three train splits (NL → code), timesteps uniform
#   3 finetune_high_t  fine-tuning, timesteps biased towards high noise
#   4 length           the length head (session 2's model ends here)
#   5 clip             noise clipping: 80% of the rows draw t from [0.7 T, T) (session 4)
#   6 pool             + a pooled condition MLP(mean E_s) at every denoiser position (session 5)
#   7 pool_long        the same, longer
#   8 encoder          E trained as the encoder of a request → code seq2seq model (session 6)
#   9 frozen_e         the denoiser fine-tuned on that frozen E
#  10 teacher          the seq2seq model trained on (session 7)
#  11 distilled        its greedy programs for every training request, as a data folder (--keep-wrong: the
#                      lineage predates the checked distillation, which refuses programs that do not parse)
#  12 student          phase 9's denoiser with phase 10's E (frozen), on the distilled pairs
#  13 student_b256     the student continued at batch 256 (session 8: 6 minutes on one H100)
#  14 length_final     the length head again, fitted to the lengths of the programs the student itself writes
#                      (session 11: it was fitted to the references' lengths, which are twice as long)
#  15 teacher2         a fresh seq2seq decoder on phase 14's E, E training too (session 12), then
#  16 teacher2b        the same, continued at a lower rate
#  17 distilled2       its greedy programs, checked: a row keeps its own program where the teacher's did not end,
#                      does not parse or (CF) computes other labels
#  18 student_r        phase 14 continued on them, E (and so the length head's input) frozen, clipped t, Python
#                      rows twice and CF rows four times as often, batch 256, half of each batch's x_t drawn by the
#                      model's own 8-step sampler (--rollout-share 0.5, session 15: 5 minutes on one H200); its
#                      bf16 copy, student_r_bf16, is session 15's shipped model
#  19 snap             phase 18 continued at batch 64, t uniform, with the rollout rows of CF and Bash taught the
#                      training program nearest to the model's own x̂0 where t ≤ 0.5 T (--rollout-snap, session 19)
#  20 snap_cf          the same with CF alone snapped, where t ≤ 0.25 T
#  21 default          the shipping copy, bf16: 0.5 · phase 18 + 0.3 · phase 19 + 0.2 · phase 20, a weighted mean
#                      of the weights (pack --blend, session 20), whose requests round x̂0 to the decoder's tokens at
#                      every step unless they name another clamp (config.json generation.clamp)
# Phases 1–3 have wall-clock budgets (the arguments, in minutes: their step counts depend on the
# machine); phases 5–13 have the step counts the shipped lineage recorded (--max-steps), so their
# learning-rate schedules span exactly those steps. Every phase: bf16 autocast (train's --dtype auto: fp32 on a
# CPU without AMX or AVX512-BF16, where bf16 is emulated and tens of times slower), AdamW, warm-up then
# cosine to zero, half of the batches padded to a longer length bucket.
# On the 2-core Xeon (AMX) that trained it, phases 1–12 take about 7 hours, phases 13 and 18 several more and phases 19–20 about 40 minutes
# each; on a GPU, about 40 minutes in all.
# Environment: DEVICE (cpu | cuda, default cpu), BATCH (phases 1–12 and 15–16, default 64; 13 and 18 use 256, 19–20 64),
# TOKENIZER (an existing tokenizer.json to reuse, e.g. models/tokenizer.json).
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

# a phase is done when it finished (.done), or wrote its checkpoint in one go with no state to resume (length)
done_() { [[ -e "$out/$1/.done" ]] || { [[ -e "$out/$1/config.json" ]] && [[ ! -e "$out/$1/trainer_state.json" ]]; }; }
train() {  # train OUT_NAME ARGS…: one phase; skipped when done, resumed when it was cut short
    local name=$1 again=()
    shift
    done_ "$name" && return 0
    [[ -e "$out/$name/trainer_state.json" ]] && again=(--resume)  # a periodic save of an interrupted phase
    codefusion train --device "$device" --out "$out/$name" ${again[@]+"${again[@]}"} "$@"
    touch "$out/$name/.done"
}
clip=(--t-sampling high --t-min 0.7 --t-min-share 0.8)

if [[ ! -e "$out/tokenizer.json" ]]; then
    if [[ -n "${TOKENIZER:-}" ]]; then
        cp "$TOKENIZER" "$out/tokenizer.json"
    else
        codefusion tokenizer --data "$data" --splits train,pretrain --vocab-size 8192 --out "$out/tokenizer.json"
    fi
fi
common=(--data "$data" --batch-size "$batch")
train pretrain --preset small "${common[@]}" --task pretrain --tokenizer "$out/tokenizer.json" \
    --minutes "$pre_min" --lr 1e-3 --warmup 300 --seed 0
train finetune --preset small "${common[@]}" --task finetune --init "$out/pretrain" \
    --minutes "$fine_min" --lr 1e-3 --warmup 200 --seed 0
train finetune_high_t --preset small "${common[@]}" --task finetune --init "$out/finetune" \
    --minutes "$high_min" --lr 5e-4 --warmup 50 --t-sampling high --seed 1
train length --task length --init "$out/finetune_high_t" --data "$data" --lr 1e-3 --seed 0

train clip "${common[@]}" --task finetune --init "$out/length" --max-steps 972 --lr 7e-4 --warmup 100 \
    "${clip[@]}" --seed 2
train pool "${common[@]}" --task finetune --init "$out/clip" --pooled-condition --max-steps 659 --lr 7e-4 \
    --warmup 50 "${clip[@]}" --seed 3
train pool_long "${common[@]}" --task finetune --init "$out/pool" --max-steps 1643 --lr 5e-4 --warmup 50 \
    "${clip[@]}" --seed 5
# the shipped lineage's seq2seq phases (encoder, teacher, teacher2, teacher2b) stepped the T5 token embeddings at the
# same lr as the rest; --task encoder now steps them at 10 × lr by default (models/README.md, "Session 22"), so
# reproducing the lineage keeps --embed-lr-scale 1
s2s_lr=(--embed-lr-scale 1)
train encoder "${common[@]}" --task encoder --init "$out/pool_long" --max-steps 2463 --lr 1e-3 --warmup 200 \
    "${s2s_lr[@]}" --seed 6
train frozen_e "${common[@]}" --task finetune --init "$out/encoder" --freeze-encoder --max-steps 2562 --lr 7e-4 \
    --warmup 100 "${clip[@]}" --seed 7
train teacher "${common[@]}" --task encoder --init "$out/encoder" --max-steps 2015 --lr 1e-3 --warmup 100 \
    "${s2s_lr[@]}" --seed 10
[[ -e "$out/distilled/cf/train.jsonl" ]] ||
    python -m codefusion.train.seq2seq "$out/teacher" --data "$data" --distill "$out/distilled" --keep-wrong
train student --data "$out/distilled" --batch-size "$batch" --task finetune --init "$out/frozen_e" \
    --encoder-from "$out/teacher" --freeze-encoder --max-steps 3450 --lr 7e-4 --warmup 100 "${clip[@]}" --seed 11
train student_b256 --data "$out/distilled" --batch-size 256 --task finetune --init "$out/student" \
    --freeze-encoder --max-steps 4882 --lr 8e-4 --warmup 100 "${clip[@]}" --seed 12
train length_final --task length --init "$out/student_b256" --data "$data" --length-targets self --length-steps 20 \
    --lr 1e-3 --seed 0
train teacher2 "${common[@]}" --task encoder --init "$out/length_final" --max-steps 1776 --lr 1e-3 --warmup 100 \
    "${s2s_lr[@]}" --seed 20
train teacher2b "${common[@]}" --task encoder --init "$out/teacher2" --max-steps 1296 --lr 5e-4 --warmup 50 \
    "${s2s_lr[@]}" --seed 21
[[ -e "$out/distilled2/cf/train.jsonl" ]] ||
    python -m codefusion.train.seq2seq "$out/teacher2b" --data "$data" --distill "$out/distilled2"
train student_r --data "$out/distilled2" --batch-size 256 --task finetune --init "$out/length_final" \
    --freeze-encoder --repeat conala=2,cf=4 --max-steps 1852 --lr 4e-4 --warmup 100 "${clip[@]}" \
    --rollout-share 0.5 --rollout-steps 8 --seed 12
done_ student_r_bf16 || codefusion pack --model "$out/student_r" --out "$out/student_r_bf16" --dtype bfloat16 --force
snap=(--data "$out/distilled2" --batch-size 64 --task finetune --init "$out/student_r_bf16" --freeze-encoder
      --repeat conala=2,cf=4 --max-steps 1370 --lr 2e-4 --warmup 50 --t-sampling uniform --rollout-share 0.5
      --rollout-steps 8 --seed 31)
train snap "${snap[@]}" --rollout-snap cf,bash
train snap_cf "${snap[@]}" --rollout-snap cf --rollout-snap-t-max 0.25
done_ default || codefusion pack --model "$out/student_r_bf16" --blend "$out/snap=0.3" --blend "$out/snap_cf=0.2" \
    --out "$out/default" --dtype bfloat16 --default-clamp decode --force
echo "default model: $out/default (copy config.json, model.safetensors, tokenizer.json into models/)"
