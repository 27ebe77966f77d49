"""The model, tokenizer and meta a training run starts from: --resume's checkpoint, --init's, or a fresh preset
(its tokenizer trained on the data, or CodeT5's with its encoder weights); extended with N's pooled condition and
--encoder-from's E where asked. Also which seq2seq decoder kind the run trains."""
from __future__ import annotations

import dataclasses

from tqdm import tqdm

from ..checkpoint import load_checkpoint
from ..config import get_preset
from ..errors import CodeFusionError
from ..model import CodeFusionModel
from ..model.encoder import Encoder
from ..tokenizer import CodeTokenizer
from .config import TrainConfig
from .data import Example, tokenizer_texts
from .seq2seq import saved_kind


def seq2seq_kind(cfg: TrainConfig) -> str:
    """--seq2seq-decoder, else the kind --resume's or --init's run saved, else "t5" (the lineage's)."""
    saved = saved_kind(cfg.out) if cfg.resume else None
    return cfg.seq2seq_decoder or saved or saved_kind(cfg.init) or "t5"


def build_model(cfg: TrainConfig, train: list[Example],
                split_brackets: tuple[str, ...] | None) -> tuple[CodeFusionModel, CodeTokenizer, dict]:
    model, tok, meta = _load_or_create(cfg, train)
    if split_brackets is not None:  # None: the checkpoint's spelling stays
        tok.split_brackets = split_brackets
    if cfg.pooled_condition and not model.cfg.pooled_condition:
        model = with_pooled_condition(model)
    if cfg.encoder_from and not cfg.resume:
        take_encoder(model, tok, cfg.encoder_from)
        meta = {**meta, "encoder_from": str(cfg.encoder_from)}
    return model, tok, meta


def take_encoder(model: CodeFusionModel, tok: CodeTokenizer, path: str) -> None:
    """E's weights from the checkpoint at ``path`` (typically a later --task encoder run of the same
    lineage), so a denoiser trained on an earlier E continues on the new one."""
    donor, donor_tok, _ = load_checkpoint(path)
    keys = ("vocab_size", "enc_d_model", "enc_layers", "enc_heads", "enc_d_ff", "max_source_len")
    differ = [k for k in keys if getattr(donor.cfg, k) != getattr(model.cfg, k)]
    if differ or donor_tok.vocab_size != tok.vocab_size:
        raise CodeFusionError(f"--encoder-from {path} has another encoder or tokenizer than --init "
                              f"({(differ or ['tokenizer'])[0]} differs); pass a checkpoint of the same lineage")
    model.encoder.load_state_dict(donor.encoder.state_dict())


def with_pooled_condition(model: CodeFusionModel) -> CodeFusionModel:
    """The same model with N's pooled-condition input added; its last layer starts at zero, so the
    extended model computes exactly what ``model`` did until training moves it."""
    extended = CodeFusionModel(dataclasses.replace(model.cfg, pooled_condition=True))
    missing, unexpected = extended.load_state_dict(model.state_dict(), strict=False)
    new = [k for k in missing if not k.startswith("denoiser.cond.")]
    if new or unexpected:
        raise CodeFusionError("cannot extend the model with a pooled condition: unexpected keys "
                              f"{(new + unexpected)[:3]}")
    return extended


def _load_or_create(cfg: TrainConfig, train: list[Example]) -> tuple[CodeFusionModel, CodeTokenizer, dict]:
    if cfg.resume:
        model, tok, config = load_checkpoint(cfg.out)
        return model, tok, config.get("meta", {})
    if cfg.init:
        model, tok, config = load_checkpoint(cfg.init)
        if model.cfg.name != cfg.preset:
            tqdm.write(f"note: --init {cfg.init} is a {model.cfg.name!r} model; its preset and tokenizer are used")
        return model, tok, {"init": str(cfg.init), "history": config.get("meta", {}).get("history", [])}
    preset = get_preset(cfg.preset)
    if cfg.codet5 or cfg.tokenizer:
        tok = CodeTokenizer.load(cfg.codet5 or cfg.tokenizer)
    else:
        tok = CodeTokenizer.train(tokenizer_texts(train), preset.vocab_size)
    # CodeT5's embedding has rows beyond its BPE vocabulary (<extra_id_*>): keep them all
    vocab = max(tok.vocab_size, Encoder.codet5_vocab_size(cfg.codet5)) if cfg.codet5 else tok.vocab_size
    model = CodeFusionModel(dataclasses.replace(preset, vocab_size=vocab))
    if cfg.codet5:
        model.encoder.load_codet5(cfg.codet5, vocab)
    return model, tok, {"history": [], **({"encoder_init": str(cfg.codet5)} if cfg.codet5 else {})}
