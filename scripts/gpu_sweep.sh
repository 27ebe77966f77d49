#!/usr/bin/env bash
# Several continuations of the student side by side on one lent GPU, each judged at 1200 steps, the best
# two brought back. The training loop is bound by the host building batches (13.6 steps/s at batch 256 on
# an H100, session 8), so one GPU carries three at once on its host's 16 cores.
#   bash scripts/gpu_sweep.sh OUT MINUTES NAME=T_SAMPLING,DATA_DIR,LR[,ROLLOUT_SHARE,ROLLOUT_STEPS[,INIT]] [NAME=… …]
# Each recipe is `scripts/gpu_student.sh` with its INIT (default: $INIT, else models) as init and, when given,
# --rollout-share/--rollout-steps (x_t from the model's own sampler for that share of each batch); REPEAT, BATCH, BASH_LIMIT,
# PY_LIMIT and CLAMPS apply to all; RANK_CLAMP (default none, the reference sampler) is the sampler the
# ranking reads (session 14 ranked on none; its best weights were the best with decode too). DEADLINE (seconds from the start, default 530) stops what is still evaluating, so
# the call ends inside the device tool's limit with what was measured. The device tool returns at most 8
# files: OUT/NAME/model.part.* of the two recipes best by the floor rule (languages at or over the
# autoregressive anchor's syntax validity, then the mean share of it reached), everything else in OUT/sweep.tgz.
set -uo pipefail
OUT=${1:?output folder}; MINUTES=${2:?minutes of training}; shift 2
INIT=${INIT:-models}; DEADLINE=${DEADLINE:-530}; start=$SECONDS
here=$(cd "$(dirname "$0")" && pwd); work=$(mktemp -d); mkdir -p "$OUT"
for recipe in "$@"; do
  name=${recipe%%=*}; IFS=, read -r t_sampling data lr share steps init <<< "${recipe#*=}"
  init=${init:-$INIT}
  mkdir -p "$work/$name/in"; ln -s "$(realpath "$init")" "$work/$name/in/init"; ln -s "$(realpath "$data")" "$work/$name/in/data"
  echo "$name: T_SAMPLING=$t_sampling LR=$lr data=$data ROLLOUT=${share:-0}x${steps:-} init=$init" > "$work/$name/recipe.txt"
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} T_SAMPLING=$t_sampling LR=$lr TRAJ=0 ROLLOUT_SHARE=$share ROLLOUT_STEPS=$steps \
    timeout $((DEADLINE - (SECONDS - start))) \
    bash "$here/gpu_student.sh" "$work/$name/in" "$work/$name/out" "$MINUTES" > "$work/$name/log.txt" 2>&1 &
done
wait
echo "recipes done after $((SECONDS - start)) s"
python3 - "$work" "$OUT" "${RANK_CLAMP:-none}" "$@" <<'PY'
import json, pathlib, shutil, sys
work, out, clamp = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
floor = {"bash": 0.823, "python": 0.353, "cf": 0.979}  # ANCHORS.md: the autoregressive anchor's syntax validity
rank = []
for name in (r.split("=", 1)[0] for r in sys.argv[4:]):
    got = {}
    for lang in floor:
        f = work / name / "out" / f"eval_{lang}_{clamp}.json"
        if f.exists() and f.stat().st_size:
            got[lang] = json.loads(f.read_text())["metrics"]["syntax_valid@1"]
    met = sum(got.get(l, 0) >= v for l, v in floor.items())
    share = sum(min(got.get(l, 0) / v, 1.0) for l, v in floor.items()) / len(floor)
    rank.append((met, share, name))
    print(f"{name}: syntax {got} -> at floor {met}/3, mean share {share:.3f}")
for met, share, name in sorted(rank, reverse=True)[:2]:
    parts = sorted((work / name / "out").glob("model.part.*"))
    if parts:
        (out / name).mkdir(parents=True, exist_ok=True)
        for p in parts:
            shutil.move(str(p), out / name / p.name)
        print(f"returned: {name}")
PY
tar czf "$OUT/sweep.tgz" -C "$work" --exclude='model.part.*' --exclude='in' .
echo "sweep done after $((SECONDS - start)) s"
