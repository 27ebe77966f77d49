"""The options of ``codefusion train`` checked together, before any data is read: each bad value or combination
fails with one line that names the option and what to do."""
from __future__ import annotations

from pathlib import Path

from ..checkpoint import CONFIG, TOKENIZER, WEIGHTS
from ..config import LANGS, get_preset
from ..errors import CodeFusionError
from ..validate import out_dir
from .data import parse_repeat, parse_split_brackets

TASKS = {"pretrain": ("generate", "cpd"), "finetune": ("finetune",), "encoder": ("finetune",)}  # → batch tasks


def check_options(cfg) -> tuple[dict[str, int], tuple[str, ...] | None, tuple[str, ...]]:
    """The parsed --repeat, --split-brackets (None: the checkpoint's spelling) and --rollout-snap of a TrainConfig."""
    if cfg.task not in (*TASKS, "length"):
        raise CodeFusionError(f"--task must be pretrain, finetune, encoder or length, got {cfg.task!r}")
    T = get_preset(cfg.preset).diffusion_steps  # an unknown name fails before any data is read
    if cfg.dtype not in ("auto", "bfloat16", "bf16", "float32", "fp32"):
        raise CodeFusionError(f"--dtype of train is auto, bfloat16 (autocast) or float32, got {cfg.dtype!r}")
    if cfg.t_sampling not in ("uniform", "high"):
        raise CodeFusionError(f"--t-sampling must be uniform or high, got {cfg.t_sampling!r}")
    if not 0.0 <= cfg.t_min < 1.0:
        raise CodeFusionError(f"--t-min is a fraction of T in [0, 1), got {cfg.t_min}")
    if not 0.0 <= cfg.t_min_share <= 1.0:
        raise CodeFusionError(f"--t-min-share is a probability in [0, 1], got {cfg.t_min_share}")
    if not 0.0 <= cfg.rollout_share <= 1.0:
        raise CodeFusionError(f"--rollout-share is a share of the batch in [0, 1], got {cfg.rollout_share}")
    if not 1 <= cfg.rollout_steps <= 1200:
        raise CodeFusionError(f"--rollout-steps counts sampler steps: an integer in 1..1200, got {cfg.rollout_steps}")
    if not 0.0 < cfg.rollout_t_max <= 1.0:
        raise CodeFusionError(f"--rollout-t-max is a fraction of T in (0, 1], got {cfg.rollout_t_max}")
    if cfg.rollout_t_max < 1.0 and not cfg.rollout_share:
        raise CodeFusionError("--rollout-t-max sets where the --rollout-share rows end: give --rollout-share too")
    snap = parse_snap(cfg.rollout_snap)
    if snap and not cfg.rollout_share:
        raise CodeFusionError("--rollout-snap changes the targets of the --rollout-share rows: give --rollout-share "
                              "too")
    if cfg.rollout_loop < 0:
        raise CodeFusionError(f"--rollout-loop counts the batches one stored loop serves: an integer ≥ 1 (0: off), "
                              f"got {cfg.rollout_loop}")
    if cfg.rollout_loop and (not cfg.rollout_share or cfg.task != "finetune"):
        raise CodeFusionError("--rollout-loop draws the --rollout-share rows of --task finetune from whole loops: "
                              "give --rollout-share and --task finetune")
    if cfg.rollout_loop and cfg.rollout_steps != type(cfg).__dataclass_fields__["rollout_steps"].default:
        raise CodeFusionError("--rollout-steps sets the short walk and --rollout-loop walks all T steps: drop one")
    if not 0.0 < cfg.rollout_snap_t_max <= 1.0:
        raise CodeFusionError(f"--rollout-snap-t-max is a fraction of T in (0, 1], got {cfg.rollout_snap_t_max}")
    if not 0.0 <= cfg.request_dropout < 1.0:
        raise CodeFusionError(f"--request-dropout is a probability in [0, 1), got {cfg.request_dropout}")
    if cfg.request_dropout and cfg.task != "finetune":
        raise CodeFusionError(f"--request-dropout deletes words of the requests of --task finetune; drop it for "
                              f"--task {cfg.task}")
    if not 0.0 <= cfg.upsize <= 1.0:
        raise CodeFusionError(f"--upsize is a probability in [0, 1], got {cfg.upsize}")
    if cfg.encoder_from and not cfg.init:
        raise CodeFusionError("--encoder-from replaces E in an --init model: give --init too")
    if cfg.aux_seq2seq and (cfg.task != "finetune" or cfg.freeze_encoder):
        raise CodeFusionError("--aux-seq2seq trains E beside the denoiser: it goes with --task finetune and "
                              "without --freeze-encoder")
    if cfg.embed_lr_scale is not None and not cfg.embed_lr_scale > 0:
        raise CodeFusionError(f"--embed-lr-scale multiplies --lr for the T5 token embeddings: a number > 0, got "
                              f"{cfg.embed_lr_scale}")
    if cfg.embed_lr_scale is not None and (cfg.task == "length" or cfg.freeze_encoder):
        raise CodeFusionError("--embed-lr-scale sets how fast the T5 token embeddings learn, and this run trains "
                              "none (--task length or --freeze-encoder): drop it")
    if cfg.seq2seq_decoder is not None and cfg.task != "encoder" and not cfg.aux_seq2seq:
        raise CodeFusionError("--seq2seq-decoder picks the decoder of --task encoder or --aux-seq2seq: drop it for "
                              f"--task {cfg.task}")
    if cfg.freeze_encoder and cfg.task in ("encoder", "length"):
        raise CodeFusionError(f"--freeze-encoder does not go with --task {cfg.task}: that task trains E (encoder) "
                              "or only the length head (length); drop the flag")
    if cfg.task != "length" and (cfg.length_targets != "reference" or cfg.length_steps is not None):
        raise CodeFusionError("--length-targets and --length-steps go with --task length: drop them")
    repeat = parse_repeat(cfg.repeat)
    split_brackets = None if cfg.split_brackets is None else parse_split_brackets(cfg.split_brackets)
    if split_brackets is not None and cfg.task == "length":
        raise CodeFusionError("--split-brackets does not go with --task length: the head counts tokens in the "
                              "--init checkpoint's own spelling; drop the flag")
    if repeat and cfg.task not in ("finetune", "encoder"):
        raise CodeFusionError(f"--repeat weights the supervised pairs of --task finetune or encoder; drop it "
                              f"for --task {cfg.task}")
    if cfg.task != "length" and cfg.max_steps is None and cfg.minutes is None:
        raise CodeFusionError("give the run a length: --max-steps N and/or --minutes M")
    bounds = (("--minutes", cfg.minutes, "> 0", cfg.minutes is None or cfg.minutes > 0),
              ("--max-steps", cfg.max_steps, "at least 1", cfg.max_steps is None or cfg.max_steps >= 1),
              ("--batch-size", cfg.batch_size, "at least 1", cfg.batch_size >= 1),
              ("--lr", cfg.lr, "> 0", cfg.lr > 0), ("--warmup", cfg.warmup, "≥ 0", cfg.warmup >= 0),
              ("--clip", cfg.clip, "> 0", cfg.clip > 0),
              ("--save-minutes", cfg.save_minutes, "> 0", cfg.save_minutes > 0),
              # the dev check samples with --dev-steps steps of the T-step schedule: a bad value failed only at
              # the first check, after training, and lost the run
              ("--dev-steps", cfg.dev_steps, f"an integer in 1..{T}", 1 <= cfg.dev_steps <= T),
              ("--dev-every", cfg.dev_every, "≥ 0 (0: no dev checks)", cfg.dev_every >= 0),
              ("--dev-rows", cfg.dev_rows, "≥ 0", cfg.dev_rows >= 0),
              ("--seed", cfg.seed, "in −2^63..2^63 − 1", -2 ** 63 <= cfg.seed < 2 ** 63))
    for flag, value, bound, ok in bounds:
        if not ok:
            raise CodeFusionError(f"{flag} must be {bound}, got {value}")
    out_dir(cfg.out, create=False)  # a file, or a place no folder can be made, fails before any data is read
    if (cfg.init or cfg.resume) and (cfg.tokenizer or cfg.codet5):  # they were silently ignored there
        flag = "--tokenizer" if cfg.tokenizer else "--codet5"
        raise CodeFusionError(f"{flag} starts a fresh model; with --init or --resume the checkpoint's own tokenizer "
                              f"and weights are used: drop {flag}")
    if cfg.task == "length" and cfg.minutes is not None:
        raise CodeFusionError("--task length fits the head for --max-steps epochs and takes no --minutes: drop it")
    if cfg.resume and cfg.task == "length":
        raise CodeFusionError("--task length fits the head in one go and has no --resume: drop it (and pass --init)")
    # (a lone train_log.jsonl is the log of a run that saved nothing: a fresh run starts it anew)
    held = [f for f in (CONFIG, WEIGHTS, TOKENIZER, "optimizer.safetensors", "trainer_state.json")
            if (Path(cfg.out) / f).exists()]
    if not cfg.resume and held:  # before any data is read; nothing there is overwritten
        if CONFIG in held:
            raise CodeFusionError(f"{cfg.out} already holds a checkpoint: pass --resume to continue it or choose "
                                  "another --out")
        raise CodeFusionError(f"{cfg.out} already holds {held[0]} (of an earlier run that saved no checkpoint): "
                              "remove it or choose another --out")
    return repeat, split_brackets, snap


def parse_snap(spec: str | None) -> tuple[str, ...]:
    """--rollout-snap "cf,bash" → ("cf", "bash"); the names are languages, as Examples are keyed."""
    if not spec:
        return ()
    langs = tuple(part.strip() for part in spec.split(",") if part.strip())
    if not langs or any(lang not in LANGS for lang in langs):
        raise CodeFusionError(f"--rollout-snap takes languages, e.g. cf or cf,bash ({', '.join(LANGS)}), got {spec!r}")
    return langs
