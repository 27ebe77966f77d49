"""The options of ``codefusion train`` checked together, before any data is read: each bad value or combination
fails with one line that names the option and what to do."""
from __future__ import annotations

from pathlib import Path

from ..checkpoint import CONFIG
from ..config import LANGS, get_preset
from ..errors import CodeFusionError
from .data import parse_repeat, parse_split_brackets

TASKS = {"pretrain": ("generate", "cpd"), "finetune": ("finetune",), "encoder": ("finetune",)}  # → batch tasks


def check_options(cfg) -> tuple[dict[str, int], tuple[str, ...] | None, tuple[str, ...]]:
    """The parsed --repeat, --split-brackets (None: the checkpoint's spelling) and --rollout-snap of a TrainConfig."""
    if cfg.task not in (*TASKS, "length"):
        raise CodeFusionError(f"--task must be pretrain, finetune, encoder or length, got {cfg.task!r}")
    get_preset(cfg.preset)  # an unknown name fails before any data is read
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
    if cfg.task != "length" and not cfg.max_steps and not cfg.minutes:
        raise CodeFusionError("give the run a length: --max-steps N and/or --minutes M")
    if not cfg.resume and (Path(cfg.out) / CONFIG).exists():  # before any data is read
        raise CodeFusionError(f"{cfg.out} already holds a checkpoint: pass --resume to continue it or choose another --out")
    return repeat, split_brackets, snap


def parse_snap(spec: str | None) -> tuple[str, ...]:
    """--rollout-snap "cf,bash" → ("cf", "bash"); the names are languages, as Examples are keyed."""
    if not spec:
        return ()
    langs = tuple(part.strip() for part in spec.split(",") if part.strip())
    if not langs or any(lang not in LANGS for lang in langs):
        raise CodeFusionError(f"--rollout-snap takes languages, e.g. cf or cf,bash ({', '.join(LANGS)}), got {spec!r}")
    return langs


def add_train_arguments(parser) -> None:
    """The options of `codefusion train` (the fields of TrainConfig it sets; None: the config's default)."""
    parser.add_argument("--preset", default="small")
    parser.add_argument("--data", required=True)
    parser.add_argument("--datasets", default=None, help="comma-separated: nl2bash,conala,cf (default: all present)")
    parser.add_argument("--repeat", default=None,
                        help="see the rows of these datasets TIMES as often, e.g. conala=2,cf=4 (languages that "
                             "the larger datasets would otherwise crowd out of most batches)")
    parser.add_argument("--task", default="finetune", choices=["pretrain", "finetune", "encoder", "length"],
                        help="encoder: pre-train E as the encoder of a request → code seq2seq model (a stand-in for "
                             "CodeT5); length: fit the length head of the --init model (its other weights frozen)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--init", default=None, help="start from this checkpoint (fine-tuning after pre-training)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer.json (default: train one on the data)")
    parser.add_argument("--codet5", default=None, help="local CodeT5 directory: start E and the tokenizer from it")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--minutes", type=float, default=None, help="wall-clock budget")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--t-sampling", default=None, choices=["uniform", "high"],
                        help="training timesteps: uniform (default) or biased towards high noise")
    parser.add_argument("--t-min", type=float, default=None,
                        help="noise clipping: t starts at this fraction of T (default 0) for --t-min-share of the rows")
    parser.add_argument("--t-min-share", type=float, default=None,
                        help="share of rows whose t is clipped by --t-min (default 1; the rest draw from the whole "
                             "range)")
    parser.add_argument("--rollout-share", type=float, default=None,
                        help="share of each batch (default 0) whose x_t comes from the model's own sampler, from pure "
                             "noise down to the row's t, instead of from noising the target: it learns the way back "
                             "from where its own 1200-step loop drifts")
    parser.add_argument("--rollout-steps", type=int, default=None,
                        help="respaced DDPM steps of that sampling (default 8; each costs one forward of the rows)")
    parser.add_argument("--rollout-t-max", type=float, default=None,
                        help="those rows end at a t drawn from [0, F·T) (default 1: the batch's own t), the end of the "
                             "loop where it settles tokens")
    parser.add_argument("--rollout-loop", type=int, default=None,
                        help="R: take those rows from whole T-step loops of the model instead (each row at its own t "
                             "below --rollout-t-max), one loop run and stored per R batches of a length bucket; a loop "
                             "costs T forwards of a batch (default 0: the short walk)")
    parser.add_argument("--rollout-snap", default=None,
                        help="these languages' rollout rows (e.g. cf or cf,bash) learn the training program nearest to "
                             "where the model's own sampler heads, not the row's own, so an undecided state is taught "
                             "to finish one whole program rather than a blend (default: none)")
    parser.add_argument("--rollout-snap-t-max", type=float, default=None,
                        help="snap only rollout rows whose t is at most F·T (default 0.5), where the state has chosen")
    parser.add_argument("--request-dropout", type=float, default=None,
                        help="finetune: delete each request token with this probability (default 0; the language tag "
                             "and </s> stay), so the denoiser learns to write the program from the words that remain, "
                             "as it must on requests unlike the training ones")
    parser.add_argument("--split-brackets", default=None,
                        help="these languages' programs (e.g. cf or cf,python) spell every ( and ) as its own token, "
                             "so a program has one spelling (no '()' or '%%)' merges); none clears it; default: the "
                             "--init checkpoint's. Kept in config.json: generation is unchanged")
    parser.add_argument("--pooled-condition", action="store_true", default=None,
                        help="give the denoiser MLP(mean E_s) at every position (extends an --init model without it)")
    parser.add_argument("--freeze-encoder", action="store_true", default=None,
                        help="keep E as --init left it (fine-tuning after --task encoder)")
    parser.add_argument("--encoder-from", default=None,
                        help="E's weights from this checkpoint (a --task encoder run), the rest from --init")
    parser.add_argument("--aux-seq2seq", type=float, default=None,
                        help="finetune: add this weight x the CE of a seq2seq decoder on the same E_s, so E keeps "
                             "carrying the program (the decoder continues an --init encoder run's)")
    parser.add_argument("--embed-lr-scale", type=float, default=None,
                        help="the T5 token embeddings (E's, and the seq2seq decoder's, tied to its output head) learn "
                             "at this multiple of --lr (default 10 for --task encoder, 1 otherwise): T5 starts them at "
                             "RMS 1, made for Adafactor, and under AdamW they would learn about 1/16 as fast as the "
                             "rest")
    parser.add_argument("--length-targets", default=None, choices=["reference", "self"],
                        help="--task length: fit the reference programs' lengths (default) or the lengths of the "
                             "programs the --init model writes itself (sampled at the longest bucket)")
    parser.add_argument("--length-steps", type=int, default=None,
                        help="--task length --length-targets self: DDPM steps of that sampling (default 20)")
    parser.add_argument("--upsize", type=float, default=None,
                        help="share of batches padded to a random longer length bucket (default 0.5)")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--dtype", default=None, help="auto (default: bf16 autocast where the hardware has bf16, else "
                                                      "fp32) | bfloat16 | float32; with --length-targets self also the "
                                                      "dtype of that sampling")
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--save-minutes", type=float, default=None)
    parser.add_argument("--dev-every", type=int, default=None)
    parser.add_argument("--dev-rows", type=int, default=None)
    parser.add_argument("--dev-steps", type=int, default=None,
                        help="respaced DDPM steps of the in-training dev check (default 20; cheap, but a model can "
                             "parse at 20 steps and fail at 1200: give 1200 to check what the reference sampler "
                             "writes)")
    parser.add_argument("--on-bad-line", default="stop", choices=["stop", "skip"])
