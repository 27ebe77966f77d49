"""TrainConfig: the options of one ``codefusion train`` run (declared for the CLI in arguments.py, checked in
options.py before any data is read)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LengthTargets = Literal["reference", "self"]  # --task length: the references' lengths, or the model's own programs'


@dataclass(frozen=True)
class TrainConfig:
    preset: str
    data: str
    out: str
    task: str = "finetune"
    datasets: str | None = None
    repeat: str | None = None  # "conala=2,cf=4": each row of these datasets seen that many times as often
    init: str | None = None
    tokenizer: str | None = None
    codet5: str | None = None  # local CodeT5 directory: its tokenizer and encoder weights start E
    resume: bool = False
    minutes: float | None = None
    max_steps: int | None = None  # at least one of max_steps / minutes
    batch_size: int = 64
    upsize: float = 0.5  # share of batches padded to a random longer length bucket (see batches.py)
    t_sampling: str = "uniform"  # "high": t/T = 1 − (1−u)², 71% of draws in the noisier half (see sample_t)
    t_min: float = 0.0  # noise clipping (DINOISER): draws of t start at t_min·T for a t_min_share of the rows
    t_min_share: float = 1.0
    pooled_condition: bool = False  # switch on N's pooled-E_s input (a model without it is extended, start.py)
    freeze_encoder: bool = False  # keep E as --init left it (after --task encoder: the denoiser must learn to read it)
    encoder_from: str | None = None  # E's weights from this checkpoint, the rest from --init
    rollout_share: float = 0.0  # share of each batch whose x_t the model's own sampler draws (see rollout.py)
    rollout_steps: int = 8  # respaced DDPM steps of that sampling, from T−1 down to the rows' t
    rollout_t_max: float = 1.0  # < 1: those rows' t is drawn from [0, rollout_t_max · T), the loop's end
    rollout_snap: str | None = None  # "cf,bash": those languages' rollout rows learn the nearest program (snap.py)
    rollout_snap_t_max: float = 0.5  # ... where their t is at most this fraction of T
    rollout_loop: int = 0  # > 0: rollout rows from whole stored loops, each serving this many batches (loopwalk.py)
    request_dropout: float = 0.0  # finetune: each request token deleted with this probability (request_dropout.py)
    # "cf,python": those languages' targets spell every bracket as its own token (tokenizer.py); None keeps the
    # --init/--resume checkpoint's spelling, "none" clears it
    split_brackets: str | None = None
    aux_seq2seq: float = 0.0  # finetune: + this weight × the seq2seq decoder's CE on the same E_s (E keeps the program)
    # the T5 token embeddings (E's, and the seq2seq decoder's, tied to its output head) learn at this multiple of lr;
    # None: 10 for --task encoder, 1 otherwise (optim.t5_embedding_scale)
    embed_lr_scale: float | None = None
    # the seq2seq decoder of --task encoder / --aux-seq2seq: "t5" or "plain" (seq2seq.DECODER_KINDS); None: the kind
    # that --resume's or --init's run saved, else "t5"
    seq2seq_decoder: str | None = None
    length_targets: LengthTargets = "reference"  # length task: what the head is fitted to (see LengthTargets)
    length_steps: int | None = None  # length task, self targets: DDPM steps of the sampling (None: 20)
    lr: float = 5e-4
    warmup: int = 500
    clip: float = 1.0
    dtype: str = "auto"  # bf16 autocast where the hardware has bf16, fp32 elsewhere (validate.resolve_dtype)
    device: str = "cpu"
    seed: int = 0
    on_bad_line: str = "stop"
    save_minutes: float = 5.0
    dev_every: int = 500
    dev_rows: int = 100
    dev_steps: int = 20
    log_every: int = 10
