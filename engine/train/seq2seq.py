"""``codefusion train --task encoder``: pre-train E as the encoder of a request → code seq2seq model.

The paper starts E from CodeT5, whose encoder was pre-trained (among other tasks) on bimodal dual
generation, utterance → code. No model hub is reachable here, so this task trains that stand-in on
the fine-tuning pairs: a small T5 decoder (``transformers``), or a standard pre-LN one (``plain_decoder.py``,
``--seq2seq-decoder plain``), reads E_s and writes the program left to right with teacher forcing
(cross-entropy on the code tokens + </s>). A left-to-right decoder reads
its condition from the first token, so E must carry the program; the denoiser, trained from noise
alone, had left E nearly the same for every request (session 3: pooled E_s of different Bash
requests at cosine 0.74). The decoder is a training tool: only E is kept, in the CodeFusion
checkpoint; the decoder's weights sit beside it (``seq2seq.safetensors``) so that ``--resume`` works.

The dev check decodes greedily and reports the share of syntactically valid programs per language:
how well E carries the program, on the same scale as the autoregressive anchor (ANCHORS.md).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Literal, get_args

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import T5ForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput

from ..checkpoint import readable_by_all, replace_atomically
from ..errors import CheckpointError, CodeFusionError
from ..model import CodeFusionModel
from ..model.encoder import t5_config
from .data import read_jsonl
from .devcheck import token_f1
from .plain_decoder import PlainDecoder

SEQ2SEQ = "seq2seq.safetensors"
DecoderKind = Literal["t5", "plain"]
DECODER_KINDS: tuple[str, ...] = get_args(DecoderKind)


class Seq2SeqTask(nn.Module):
    """E (shared with the CodeFusion model, so training it trains the model's E) + a decoder: the T5 decoder of
    ``transformers`` (``kind="t5"``, the lineage's teachers) or a standard pre-LN one (``"plain"``, plain_decoder.py).

    The T5 wrapper's own encoder is never run (E_s is passed in as ``encoder_outputs``): it is left
    out of the optimizer and of the saved state."""

    def __init__(self, model: CodeFusionModel, decoder_layers: int | None = None, kind: DecoderKind = "t5"):
        super().__init__()
        if kind not in DECODER_KINDS:
            raise CodeFusionError(f"the seq2seq decoder is one of {', '.join(DECODER_KINDS)}, got {kind!r}")
        conf = t5_config(model.cfg)
        # generate()'s cache is sized by num_layers, so the unused encoder gets the decoder's depth
        conf.num_layers = conf.num_decoder_layers = decoder_layers or model.cfg.enc_layers
        conf.decoder_start_token_id, conf.use_cache = conf.pad_token_id, False
        self.kind, self.pad_id, self.eos_id = kind, conf.pad_token_id, conf.eos_token_id
        self.encoder = model.encoder
        self.encoder_len, self.target_len = model.cfg.max_source_len, model.cfg.max_target_len
        if kind == "plain":
            self.seq2seq = PlainDecoder(conf.vocab_size, conf.d_model, conf.num_heads, conf.d_ff, conf.num_layers,
                                        self.target_len, conf.dropout_rate, self.pad_id, self.eos_id)
            return
        self.seq2seq = T5ForConditionalGeneration(conf)
        # only the unused encoder's own layers are frozen: its token embedding is the decoder's
        # (shared, and tied to the output head), which must train
        self.seq2seq.encoder.block.requires_grad_(False)
        self.seq2seq.encoder.final_layer_norm.requires_grad_(False)

    @classmethod
    def of_run(cls, model: CodeFusionModel, run: Path) -> "Seq2SeqTask":
        """The task with the decoder an encoder run saved (its kind read from the file), weights loaded."""
        task = cls(model, kind=saved_kind(run) or "t5")
        task.load(run)
        return task

    def loss(self, src_ids: torch.Tensor, src_mask: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Teacher-forced cross-entropy of tgt (B, n: code + </s> + pads) given E(src)."""
        return self.loss_on(self.encoder(src_ids, src_mask), src_mask, tgt)

    def loss_on(self, mem: torch.Tensor, src_mask: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """The same cross-entropy from E_s already computed (by the denoiser's training step)."""
        if self.kind == "plain":
            return self.seq2seq.loss(mem, src_mask, tgt)
        labels = tgt.masked_fill(tgt == self.pad_id, -100)
        out = self.seq2seq(encoder_outputs=BaseModelOutput(last_hidden_state=mem), attention_mask=src_mask,
                           labels=labels)
        return out.loss

    @torch.no_grad()
    def greedy(self, src_ids: torch.Tensor, src_mask: torch.Tensor, max_len: int) -> torch.Tensor:
        """(B, ≤ max_len) token ids, greedy, stopping at </s>."""
        mem = self.encoder(src_ids, src_mask)
        if self.kind == "plain":
            return self.seq2seq.greedy(mem, src_mask, max_len)
        return self.seq2seq.generate(encoder_outputs=BaseModelOutput(last_hidden_state=mem),
                                     attention_mask=src_mask, max_new_tokens=max_len, do_sample=False, num_beams=1,
                                     decoder_start_token_id=self.pad_id, eos_token_id=self.eos_id,
                                     pad_token_id=self.pad_id, use_cache=True)[:, 1:]

    def write(self, tok, utterances: list[str], langs: list[str], batch: int = 64) -> list[str]:
        """Greedy programs for utterances, ``batch`` at a time."""
        return [text for text, _ in self.write_finished(tok, utterances, langs, batch)]

    def write_finished(self, tok, utterances: list[str], langs: list[str],
                       batch: int = 64) -> list[tuple[str, bool]]:
        """(greedy program, whether it ended with </s> within the target length) per utterance: an
        unfinished one was cut off, typically a loop repeating a token."""
        eos, out = self.eos_id, []
        for i in range(0, len(utterances), batch):
            src = tok.encode_source(utterances[i: i + batch], langs[i: i + batch], self.encoder_len)
            out += [(tok.decode(ids), eos in ids) for ids in self.greedy(src.ids, src.mask, self.target_len).tolist()]
        return out

    def decoder_state(self) -> dict[str, torch.Tensor]:
        """The decoder's tensors, each once (T5 ties its embedding, the decoder's input and lm_head)."""
        seen, out = set(), {}
        for k, v in self.seq2seq.state_dict().items():
            if not k.startswith("encoder.") and v.data_ptr() not in seen:
                seen.add(v.data_ptr())
                out[k] = v.detach().contiguous()
        return out

    def save(self, out: Path, stamp: dict[str, str] | None = None) -> None:
        """Atomically (a crash mid-write keeps the old file); ``stamp``: the save's id (training/state.py)."""
        def write(tmp: Path) -> None:
            save_file(self.decoder_state(), str(tmp), metadata={"decoder": self.kind, **(stamp or {})})
            readable_by_all(tmp)
        replace_atomically(out / SEQ2SEQ, write)

    def load(self, out: Path) -> None:
        path = out / SEQ2SEQ
        if not path.is_file():
            raise CheckpointError(f"{out} holds no {SEQ2SEQ}: it was not written by --task encoder; "
                                  "drop --resume or pick the encoder run's --out")
        if (kind := saved_kind(out)) != self.kind:
            raise CheckpointError(f"{path} holds a {kind} decoder and this run asks for a {self.kind} one: pass "
                                  f"--seq2seq-decoder {kind}, or start a fresh decoder without --resume")
        saved = self.decoder_state().keys()  # not the unused encoder, not the tied copies
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{path} is unreadable ({type(e).__name__}): drop --resume / --init of this run, "
                                  "or restore the file") from None
        missing, unexpected = self.seq2seq.load_state_dict(tensors, strict=False)
        missing = [k for k in missing if k in saved]
        if unexpected or missing:
            raise CheckpointError(f"{path} does not match this model's seq2seq decoder; "
                                  f"first mismatch: {(unexpected or missing)[0]}")


def saved_kind(run: str | Path | None) -> DecoderKind | None:
    """The kind of decoder an encoder run saved (files written before the plain decoder are T5), None if none."""
    path = Path(run) / SEQ2SEQ if run else None
    if path is None or not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get("decoder", "t5")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is unreadable ({type(e).__name__}): restore it, or start the decoder "
                              "afresh from another --out") from None


def seq2seq_dev_check(task: Seq2SeqTask, tok, dev) -> dict:
    """Greedy decoding of dev rows: syntax validity per language, exact match and token F1 overall."""
    from ..eval.metrics import exact_match, syntax_valid

    was_training = task.training
    task.eval()
    valid: dict[str, list[bool]] = defaultdict(list)
    exact, f1 = [], []
    for e, text in zip(dev, task.write(tok, [e.nl for e in dev], [e.lang for e in dev])):
        valid[e.lang].append(syntax_valid(text, e.lang))
        exact.append(exact_match(text, e.code, e.lang))
        f1.append(token_f1(text, e.code))
    task.train(was_training)
    out = {"n": len(exact), "exact": round(sum(exact) / len(exact), 4), "token_f1": round(sum(f1) / len(f1), 4)}
    out.update({f"syntax_{lang}": round(sum(v) / len(v), 4) for lang, v in sorted(valid.items())})
    return out


def score(task: Seq2SeqTask, tok, rows: list[dict], lang: str, predictions: str | Path | None = None) -> dict:
    """Greedy top-1 of the seq2seq model on eval rows, scored by ``codefusion eval``'s metrics:
    {"n", "metrics", "ci95", "counts"} (the figures of models/README.md, "Session 6"). ``predictions`` writes one
    JSONL row per example in ``codefusion eval --predictions``'s format, so ``codefusion bench compare`` pairs two
    teachers, or a teacher and a diffusion model, on the same rows."""
    from ..eval.evaluate import aggregate, prediction_rows, score_rows, write_predictions

    tops = [[text] for text in task.write(tok, [r["nl"] for r in rows], [lang] * len(rows))]
    scored = score_rows(rows, tops, tops, lang, [1])
    if predictions:
        write_predictions(predictions, prediction_rows(rows, tops, tops, scored))
    metrics, ci, counts = aggregate(scored)
    return {"n": len(rows), "metrics": metrics, "ci95": ci, "counts": counts}


def main(argv: list[str] | None = None) -> int:
    """python -m codefusion.train.seq2seq RUN --data FILE.jsonl --lang L [--limit N] [--predictions OUT.jsonl]: score
    an encoder run;
    python -m codefusion.train.seq2seq RUN --data DATA_DIR --distill OUT_DIR [--keep-wrong] [--drop-rejected]:
    write its distilled train set."""
    import argparse
    import json

    from ..checkpoint import load_checkpoint
    from ..validate import out_file
    from .distill import distill

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("run")
    p.add_argument("--data", required=True)
    p.add_argument("--lang", choices=["bash", "python", "cf"])
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--predictions", default=None,
                   help="with --lang: write one JSONL row per example, as `codefusion eval --predictions` does")
    p.add_argument("--distill", default=None, help="write a copy of the data folder --data with distilled train rows")
    p.add_argument("--keep-wrong", action="store_true",
                   help="with --distill: take the teacher's program even where it does not parse or (CF) computes "
                        "other labels than the reference; only unfinished ones keep the row's own (the shipped "
                        "lineage's phase 11)")
    p.add_argument("--drop-rejected", action="store_true",
                   help="with --distill: leave out the rows whose teacher program is refused, instead of keeping "
                        "their own programs, so every target is the teacher's")
    p.add_argument("--only", default=None,
                   help="with --distill: distil only these datasets (comma-separated, e.g. nl2bash,conala); the "
                        "others keep their own programs")
    a = p.parse_args(argv)
    if not a.distill and not a.lang:
        p.error("--lang is needed to score (or give --distill OUT_DIR)")
    if (a.keep_wrong or a.only or a.drop_rejected) and not a.distill:
        p.error("--keep-wrong, --drop-rejected and --only go with --distill OUT_DIR")
    if a.predictions and a.distill:
        p.error("--predictions goes with scoring (--lang), not with --distill")
    if a.predictions:
        try:
            out_file(a.predictions, flag="--predictions")  # the checks `codefusion eval --predictions` makes
        except CodeFusionError as e:
            p.error(str(e))
    if a.distill and Path(a.distill).resolve() == Path(a.data).resolve():
        p.error("--distill writes a copy of --data: give it another folder (the data is never overwritten)")
    if a.distill and any(Path(a.distill).glob("*/train.jsonl")):
        p.error(f"--distill {a.distill} already holds a data folder: choose another")
    model, tok, _ = load_checkpoint(a.run)
    task = Seq2SeqTask.of_run(model, Path(a.run)).eval()
    if a.distill:
        print(json.dumps(distill(task, tok, a.data, a.distill, checked=not a.keep_wrong, only=a.only,
                                 drop=a.drop_rejected)))
    else:
        print(json.dumps(score(task, tok, read_jsonl(Path(a.data))[: a.limit], a.lang, a.predictions)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
