"""The options of `codefusion train`, kept apart from their checks (options.py) so that building the CLI's parser
imports no torch: `codefusion --help` and the commands that never train stay fast to start."""
from __future__ import annotations

import argparse


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
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
    parser.add_argument("--seq2seq-decoder", default=None, choices=["t5", "plain"],
                        help="the decoder E writes through in --task encoder (and --aux-seq2seq): t5 (the lineage's "
                             "teachers) or plain (a standard pre-LN decoder, which learned faster in a controlled "
                             "comparison); default: the kind --resume's or --init's run saved, else t5")
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
