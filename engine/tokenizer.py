"""Tokenizer: byte-level BPE (``tokenizers``) trained on our corpora, or a local CodeT5 tokenizer.

Special tokens of our own BPE, in id order: <pad>=0, </s>=1, <unk>=2, <mask>=3, then one language
tag per language (<bash>, <python>, <cf>). A CodeT5 directory keeps its own ids (<pad>=0, </s>=2,
<mask>=4) and gets the language tags appended.

Source:  [<lang>] + BPE(utterance) + [</s>], truncated (with a warning) and padded to S.
Target:  BPE(code) + [</s>], padded to n with <pad>; decoding cuts at the first </s> or <pad>.
Byte-level BPE round-trips any text exactly (spaces, newlines, quotes).

Bracket spelling (``split_brackets``, per language; in config.json, not in tokenizer.json). BPE merges
punctuation runs, so one program has several near spellings: ``top(10)`` ends in ``)`` but ``top(10%)`` in the
single token ``%)``, ``Duplicate()`` holds ``()`` where ``Duplicate(1)`` holds ``(`` … ``)``. A denoiser unsure
between two of them leaves a position between two embeddings, and the decoder reads a bracket short
(models/README.md, session 14). For a language in ``split_brackets`` every ``(`` and ``)`` of a program is
its own token: the programs of that language are encoded piece by piece around their brackets, with the same
vocabulary, so decoding is unchanged and the text round-trips exactly.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from .config import LANGS
from .errors import CheckpointError, CodeFusionError

PAD, EOS, UNK, MASK = "<pad>", "</s>", "<unk>", "<mask>"
LANG_TOKENS = {lang: f"<{lang}>" for lang in LANGS}
SPECIALS = [PAD, EOS, UNK, MASK, *LANG_TOKENS.values()]
BRACKET = re.compile(r"([()])")


@dataclass
class SourceBatch:
    ids: torch.Tensor  # (B, S) int64
    mask: torch.Tensor  # (B, S) bool
    truncated: list[bool]


class CodeTokenizer:
    def __init__(self, tok: Tokenizer, kind: str = "bpe", split_brackets: Iterable[str] = ()):
        missing = [t for t in (PAD, EOS) if tok.token_to_id(t) is None]
        if missing:
            raise CheckpointError(f"tokenizer lacks the special tokens {missing}; retrain it with `codefusion tokenizer`")
        tok.add_special_tokens([t for t in [MASK, *LANG_TOKENS.values()] if tok.token_to_id(t) is None])
        tok.no_padding()
        tok.no_truncation()
        tok.encode_special_tokens = True  # "<pad>" or "</s>" typed in a request or a program is text (encode_text)
        self.tok, self.kind = tok, kind
        self.pad_id, self.eos_id = tok.token_to_id(PAD), tok.token_to_id(EOS)
        self.mask_id = tok.token_to_id(MASK)
        self.lang_ids = {lang: tok.token_to_id(t) for lang, t in LANG_TOKENS.items()}
        self.special_ids = {tok.token_to_id(t) for t in SPECIALS if tok.token_to_id(t) is not None}
        # and any other control token of the file (a CodeT5 tokenizer's <s>), never part of a decoded program
        self.special_ids |= {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
        self.split_brackets = check_split_brackets(split_brackets)

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> "CodeTokenizer":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIALS,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok, "bpe")

    @classmethod
    def load(cls, path: str | Path) -> "CodeTokenizer":
        """A ``tokenizer.json`` file, a checkpoint directory holding one, or a CodeT5 directory
        (``tokenizer.json`` or ``vocab.json`` + ``merges.txt``)."""
        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        try:
            if file.is_file():
                kind = "codet5" if (path / "merges.txt").is_file() or _is_codet5(file) else "bpe"
                return cls(Tokenizer.from_file(str(file)), kind)
            if path.is_dir() and (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
                return cls(_codet5_from_vocab(path), "codet5")
        except CodeFusionError:
            raise
        except Exception as e:  # tokenizers raises a bare Exception on a malformed file
            raise CheckpointError(f"cannot read tokenizer {file}: {str(e).splitlines()[0]}") from None
        raise CheckpointError(f"no tokenizer at {path}: expected tokenizer.json (or vocab.json + merges.txt); "
                              "train one with `codefusion tokenizer`")

    def save(self, path: str | Path) -> None:
        self.tok.save(str(path))

    # ---- encoding -----------------------------------------------------------------------------
    def lang_id(self, lang: str) -> int:
        if lang not in self.lang_ids:
            raise CodeFusionError(f"unknown language {lang!r}: choose one of {', '.join(LANGS)}")
        return self.lang_ids[lang]

    def encode_text(self, texts: list[str]) -> list[list[int]]:
        """BPE ids of ``texts``, read literally: a special token's spelling in the text ("<pad>", "</s>",
        "<python>") is those characters, not the control token (it used to be: a prompt with "<pad>" in it was
        masked out as padding). The one exception is <mask>, the masked-span marker of the pre-training prompts
        (train/masking.cpd_mask), which stays the mask token."""
        pieces = [text.split(MASK) for text in texts]
        encoded = iter(e.ids for e in self.tok.encode_batch([p for ps in pieces for p in ps], add_special_tokens=False))
        out = []
        for ps in pieces:
            ids: list[int] = []
            for k, piece_ids in enumerate(islice(encoded, len(ps))):
                ids += ([self.mask_id] if k else []) + piece_ids
            out.append(ids)
        return out

    def encode_code(self, texts: list[str], langs: list[str]) -> list[list[int]]:
        """Programs as training targets: BPE, with every bracket its own token for the languages in
        ``split_brackets`` (module docstring)."""
        if len(texts) != len(langs):
            raise CodeFusionError(f"encode_code got {len(texts)} programs but {len(langs)} languages")
        plain = [i for i, lang in enumerate(langs) if lang not in self.split_brackets]
        split = [i for i, lang in enumerate(langs) if lang in self.split_brackets]
        out: list[list[int]] = [[] for _ in texts]
        for i, ids in zip(plain, self.encode_text([texts[i] for i in plain])):
            out[i] = ids
        pieces = [[p for p in BRACKET.split(texts[i]) if p] for i in split]
        encoded = iter(self.encode_text([p for ps in pieces for p in ps]))
        for i, ps in zip(split, pieces):
            out[i] = [t for ids in islice(encoded, len(ps)) for t in ids]
        return out

    def encode_source(self, texts: list[str], langs: list[str], max_len: int,
                      token_ids: list[list[int]] | None = None) -> SourceBatch:
        """[<lang>] + tokens + [</s>], cut to ``max_len``; ``token_ids`` skips BPE (pre-tokenized input)."""
        token_ids = self.encode_text(texts) if token_ids is None else token_ids
        ids = torch.full((len(token_ids), max_len), self.pad_id, dtype=torch.int64)
        mask = torch.zeros((len(token_ids), max_len), dtype=torch.bool)
        truncated = []
        for row, (toks, lang) in enumerate(zip(token_ids, langs)):
            body = toks[: max_len - 2]
            truncated.append(len(body) < len(toks))
            seq = [self.lang_id(lang), *body, self.eos_id]
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = True  # by length: the ids of the text itself never count as padding
        return SourceBatch(ids, mask, truncated)

    def encode_target(self, token_ids: list[list[int]], length: int) -> torch.Tensor:
        """tokens + [</s>], padded with <pad> to ``length``: (B, length). Rows must fit (caller filters)."""
        out = torch.full((len(token_ids), length), self.pad_id, dtype=torch.int64)
        for row, toks in enumerate(token_ids):
            seq = [*toks, self.eos_id][:length]
            out[row, : len(seq)] = torch.tensor(seq)
        return out

    # ---- decoding -----------------------------------------------------------------------------
    def content_length(self, ids: list[int]) -> int:
        """Number of tokens before the first </s> or <pad>."""
        for j, i in enumerate(ids):
            if i in (self.eos_id, self.pad_id):
                return j
        return len(ids)

    def decode(self, ids: list[int]) -> str:
        body = [i for i in ids[: self.content_length(ids)] if i not in self.special_ids]
        return self.tok.decode(body, skip_special_tokens=False).strip()


def check_split_brackets(langs: Iterable[str]) -> tuple[str, ...]:
    """The languages of a bracket spelling, sorted; one-line error on an unknown one."""
    if isinstance(langs, str):
        raise CodeFusionError(f"split_brackets must be a list of languages, got the string {langs!r}")
    langs = tuple(sorted(set(langs)))
    unknown = [lang for lang in langs if lang not in LANGS]
    if unknown:
        raise CodeFusionError(f"split_brackets names unknown language {unknown[0]!r}: choose from {', '.join(LANGS)}")
    return langs


def _is_codet5(file: Path) -> bool:
    vocab = json.loads(file.read_text(encoding="utf-8")).get("model", {}).get("vocab", {})
    return isinstance(vocab, dict) and vocab.get("<s>") == 1 and vocab.get("</s>") == 2


def _codet5_from_vocab(path: Path) -> Tokenizer:
    tok = Tokenizer(models.BPE.from_file(str(path / "vocab.json"), str(path / "merges.txt")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok
