"""``codefusion train --task encoder``: pre-train E as the encoder of a request → code seq2seq model.

The paper starts E from CodeT5, whose encoder was pre-trained (among other tasks) on bimodal dual
generation, utterance → code. No model hub is reachable here, so this task trains that stand-in on
the fine-tuning pairs: a small T5 decoder (``transformers``) reads E_s and writes the program left to
right with teacher forcing (cross-entropy on the code tokens + </s>). A left-to-right decoder reads
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

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import T5ForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput

from ..errors import CheckpointError, DataError
from ..model import CodeFusionModel
from ..model.encoder import t5_config
from .data import DATASET_LANG, read_jsonl
from .devcheck import token_f1

SEQ2SEQ = "seq2seq.safetensors"


class Seq2SeqTask(nn.Module):
    """E (shared with the CodeFusion model, so training it trains the model's E) + a T5 decoder.

    The T5 wrapper's own encoder is never run (E_s is passed in as ``encoder_outputs``): it is left
    out of the optimizer and of the saved state."""

    def __init__(self, model: CodeFusionModel, decoder_layers: int | None = None):
        super().__init__()
        conf = t5_config(model.cfg)
        # generate()'s cache is sized by num_layers, so the unused encoder gets the decoder's depth
        conf.num_layers = conf.num_decoder_layers = decoder_layers or model.cfg.enc_layers
        conf.decoder_start_token_id, conf.use_cache = conf.pad_token_id, False
        self.encoder = model.encoder
        self.encoder_len, self.target_len = model.cfg.max_source_len, model.cfg.max_target_len
        self.seq2seq = T5ForConditionalGeneration(conf)
        # only the unused encoder's own layers are frozen: its token embedding is the decoder's
        # (shared, and tied to the output head), which must train
        self.seq2seq.encoder.block.requires_grad_(False)
        self.seq2seq.encoder.final_layer_norm.requires_grad_(False)

    def loss(self, src_ids: torch.Tensor, src_mask: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Teacher-forced cross-entropy of tgt (B, n: code + </s> + pads) given E(src)."""
        return self.loss_on(self.encoder(src_ids, src_mask), src_mask, tgt)

    def loss_on(self, mem: torch.Tensor, src_mask: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """The same cross-entropy from E_s already computed (by the denoiser's training step)."""
        labels = tgt.masked_fill(tgt == self.seq2seq.config.pad_token_id, -100)
        out = self.seq2seq(encoder_outputs=BaseModelOutput(last_hidden_state=mem), attention_mask=src_mask,
                           labels=labels)
        return out.loss

    @torch.no_grad()
    def greedy(self, src_ids: torch.Tensor, src_mask: torch.Tensor, max_len: int) -> torch.Tensor:
        """(B, ≤ max_len) token ids, greedy, stopping at </s>."""
        mem = self.encoder(src_ids, src_mask)
        conf = self.seq2seq.config
        return self.seq2seq.generate(encoder_outputs=BaseModelOutput(last_hidden_state=mem),
                                     attention_mask=src_mask, max_new_tokens=max_len, do_sample=False, num_beams=1,
                                     decoder_start_token_id=conf.pad_token_id, eos_token_id=conf.eos_token_id,
                                     pad_token_id=conf.pad_token_id, use_cache=True)[:, 1:]

    def write(self, tok, utterances: list[str], langs: list[str], batch: int = 64) -> list[str]:
        """Greedy programs for utterances, ``batch`` at a time."""
        return [text for text, _ in self.write_finished(tok, utterances, langs, batch)]

    def write_finished(self, tok, utterances: list[str], langs: list[str],
                       batch: int = 64) -> list[tuple[str, bool]]:
        """(greedy program, whether it ended with </s> within the target length) per utterance: an
        unfinished one was cut off, typically a loop repeating a token."""
        eos, out = self.seq2seq.config.eos_token_id, []
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

    def save(self, out: Path) -> None:
        save_file(self.decoder_state(), str(out / SEQ2SEQ))

    def load(self, out: Path) -> None:
        path = out / SEQ2SEQ
        if not path.is_file():
            raise CheckpointError(f"{out} holds no {SEQ2SEQ}: it was not written by --task encoder; "
                                  "drop --resume or pick the encoder run's --out")
        saved = self.decoder_state().keys()  # not the unused encoder, not the tied copies
        missing, unexpected = self.seq2seq.load_state_dict(load_file(str(path)), strict=False)
        missing = [k for k in missing if k in saved]
        if unexpected or missing:
            raise CheckpointError(f"{path} does not match this model's seq2seq decoder; "
                                  f"first mismatch: {(unexpected or missing)[0]}")


def seq2seq_dev_check(task: Seq2SeqTask, tok, dev) -> dict:
    """Greedy decoding of dev rows: syntax validity per language, exact match and token F1 overall."""
    from ..eval.metrics import normalize, syntax_valid

    was_training = task.training
    task.eval()
    valid: dict[str, list[bool]] = defaultdict(list)
    exact, f1 = [], []
    for e, text in zip(dev, task.write(tok, [e.nl for e in dev], [e.lang for e in dev])):
        valid[e.lang].append(syntax_valid(text, e.lang))
        exact.append(normalize(text) == normalize(e.code))
        f1.append(token_f1(text, e.code))
    task.train(was_training)
    out = {"n": len(exact), "exact": round(sum(exact) / len(exact), 4), "token_f1": round(sum(f1) / len(f1), 4)}
    out.update({f"syntax_{lang}": round(sum(v) / len(v), 4) for lang, v in sorted(valid.items())})
    return out


def score(task: Seq2SeqTask, tok, rows: list[dict], lang: str) -> dict:
    """Greedy top-1 of the seq2seq model on eval rows, scored by ``codefusion eval``'s metrics:
    {"n", "metrics", "ci95"} (the figures of models/README.md, "Session 6")."""
    from ..eval.evaluate import aggregate, score_rows

    tops = [[text] for text in task.write(tok, [r["nl"] for r in rows], [lang] * len(rows))]
    metrics, ci, counts = aggregate(score_rows(rows, tops, tops, lang, [1]))
    return {"n": len(rows), "metrics": metrics, "ci95": ci, "counts": counts}


def _kept_or_why(text: str, finished: bool, row: dict, lang: str, checked: bool = True) -> str:
    """"teacher" when the teacher's program replaces the row's own, else why not: "unfinished" (empty,
    or cut off at the target length: typically a loop repeating a token), "invalid" (does not parse),
    "wrong" (CF: runs on the row's table but gives other labels than the reference, which gives them).
    Unless ``checked``, only unfinished programs are refused (the distillation of the shipped lineage)."""
    from ..eval.evaluate import exec_flags
    from ..eval.metrics import syntax_valid

    if not text or not finished:
        return "unfinished"
    if not checked:
        return "teacher"
    if not syntax_valid(text, lang):
        return "invalid"
    if lang == "cf" and exec_flags(row, [text]) == [False]:  # None: no table, or the reference cannot run on it
        return "wrong"
    return "teacher"


def distill(task: Seq2SeqTask, tok, data_dir: str | Path, out_dir: str | Path,
            checked: bool = True, only: str | None = None, drop: bool = False) -> dict[str, dict[str, int]]:
    """Sequence-level knowledge distillation (Kim & Rush 2016): a copy of ``data_dir`` whose train rows
    carry the seq2seq model's greedy program as ``code`` (the original kept as ``code_ref``), for the
    denoiser to learn one program per request instead of averaging several at high noise. Dev and
    pre-training splits are copied unchanged. A row keeps its own program where the teacher's is no
    better a target (``_kept_or_why``): unfinished, not parsing, or, on a CF row with a table, computing
    other labels; the student would otherwise learn the teacher's mistakes (``checked=False`` refuses only
    unfinished programs, as the shipped lineage's phase 11 did). ``only`` (comma-separated dataset names)
    distils those datasets and copies the others' train rows unchanged (counted as "not_asked"): where the
    teacher is no better than the data, e.g. CF, whose teacher writes a few programs for every request.
    ``drop`` leaves the refused rows out instead of keeping their own programs, so every target is one the
    teacher wrote: a mix of the teacher's programs and the data's own gives the denoiser two modes for
    similar requests again, which is what distillation removes.
    Returns, per dataset, the rows read and written and how many took the teacher's program or kept their
    own (or were dropped), and why."""
    import json
    import shutil

    from .data import select_datasets

    data_dir, names = select_datasets(data_dir, None)
    asked = set(select_datasets(data_dir, only)[1])  # an unknown name fails before any writing
    if asked - set(names):
        raise DataError(f"--only names {', '.join(sorted(asked - set(names)))}, which {data_dir} does not hold")
    written = {}
    for name in names:
        src, dst, lang = data_dir / name, Path(out_dir) / name, DATASET_LANG[name]
        rows = read_jsonl(src / "train.jsonl")
        if name in asked:  # (why, the teacher's program) per row
            written_by = task.write_finished(tok, [r["nl"] for r in rows], [lang] * len(rows))
            decided = [(_kept_or_why(text, done, r, lang, checked), text) for r, (text, done) in zip(rows, written_by)]
        else:
            decided = [("not_asked", "")] * len(rows)
        counts = {"rows": len(rows), **dict.fromkeys(("teacher", "unfinished", "invalid", "wrong", "not_asked"), 0),
                  "written": 0}
        dst.mkdir(parents=True, exist_ok=True)
        with open(dst / "train.jsonl", "w", encoding="utf-8") as f:
            for r, (why, text) in zip(rows, decided):
                counts[why] += 1
                if drop and why not in ("teacher", "not_asked"):
                    continue
                counts["written"] += 1
                f.write(json.dumps({**r, "code": text if why == "teacher" else r["code"], "code_ref": r["code"]})
                        + "\n")
        for split in ("dev", "pretrain"):
            if (src / f"{split}.jsonl").is_file():
                shutil.copyfile(src / f"{split}.jsonl", dst / f"{split}.jsonl")
        written[name] = counts
    return written


def main(argv: list[str] | None = None) -> int:
    """python -m codefusion.train.seq2seq RUN --data FILE.jsonl --lang L [--limit N]: score an encoder run;
    python -m codefusion.train.seq2seq RUN --data DATA_DIR --distill OUT_DIR [--keep-wrong] [--drop-rejected]:
    write its distilled train set."""
    import argparse
    import json

    from ..checkpoint import load_checkpoint

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("run")
    p.add_argument("--data", required=True)
    p.add_argument("--lang", choices=["bash", "python", "cf"])
    p.add_argument("--limit", type=int, default=None)
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
    model, tok, _ = load_checkpoint(a.run)
    task = Seq2SeqTask(model).eval()
    task.load(Path(a.run))
    if a.distill:
        print(json.dumps(distill(task, tok, a.data, a.distill, checked=not a.keep_wrong, only=a.only,
                                 drop=a.drop_rejected)))
    else:
        print(json.dumps(score(task, tok, read_jsonl(Path(a.data))[: a.limit], a.lang)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
