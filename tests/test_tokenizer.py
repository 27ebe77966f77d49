import json

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from codefusion.errors import CheckpointError, CodeFusionError
from codefusion.tokenizer import CodeTokenizer


@pytest.mark.parametrize("code", ["find . -name '*.txt' -exec rm {} \\;", "def f(x):\n    return x  # é", 'A  "b"'])
def test_round_trip_is_exact(tokenizer, code):
    assert tokenizer.decode(tokenizer.encode_text([code])[0]) == code


def test_special_ids_and_language_tags(tokenizer):
    assert (tokenizer.pad_id, tokenizer.eos_id, tokenizer.mask_id) == (0, 1, 3)
    assert tokenizer.lang_ids == {"bash": 4, "python": 5, "cf": 6}
    assert tokenizer.encode_text(["x <mask> y"])[0].count(tokenizer.mask_id) == 1


def test_source_layout_truncation_and_padding(tokenizer):
    long = " ".join(["files"] * 50)
    src = tokenizer.encode_source(["list files", long], ["bash", "python"], 12)
    assert src.ids.shape == (2, 12) and src.truncated == [False, True]
    row = src.ids[0].tolist()
    assert row[0] == 4 and row[row.index(1) + 1:] == [0] * (11 - row.index(1))
    assert src.ids[1, 0] == 5 and src.ids[1, -1] == 1 and src.mask[1].all()
    assert src.mask[0].sum() == row.index(1) + 1


def test_target_layout_and_cut(tokenizer):
    ids = tokenizer.encode_text(["ls -la"])[0]
    tgt = tokenizer.encode_target([ids], 16)[0].tolist()
    assert tgt[: len(ids) + 1] == ids + [1] and set(tgt[len(ids) + 1:]) == {0}
    assert tokenizer.decode(tgt) == "ls -la" and tokenizer.content_length(tgt) == len(ids)


def test_unknown_language(tokenizer):
    with pytest.raises(CodeFusionError, match="unknown language 'java'"):
        tokenizer.encode_source(["x"], ["java"], 8)


def test_save_and_load(tokenizer, tmp_path):
    tokenizer.save(tmp_path / "tokenizer.json")
    again = CodeTokenizer.load(tmp_path)
    assert again.vocab_size == tokenizer.vocab_size and again.kind == "bpe"
    assert again.encode_text(["grep -r x ."]) == tokenizer.encode_text(["grep -r x ."])


def _codet5_like(tmp_path):
    """A CodeT5-style tokenizer directory (RoBERTa BPE files, <pad>=0 <s>=1 </s>=2 <unk>=3 <mask>=4)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(["find . -name x", "ls -la"] * 20, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "<s>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.model.save(str(tmp_path))  # vocab.json + merges.txt
    return tmp_path


def test_codet5_directory_loads_with_its_own_ids(tmp_path):
    tok = CodeTokenizer.load(_codet5_like(tmp_path))
    assert tok.kind == "codet5" and (tok.pad_id, tok.eos_id, tok.mask_id) == (0, 2, 4)
    assert sorted(tok.lang_ids.values()) == [tok.vocab_size - 3, tok.vocab_size - 2, tok.vocab_size - 1]
    assert tok.decode(tok.encode_text(["ls -la"])[0]) == "ls -la"


def test_missing_or_broken_tokenizer(tmp_path):
    with pytest.raises(CheckpointError, match="no tokenizer at"):
        CodeTokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read tokenizer"):
        CodeTokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"nope": 1}))
    with pytest.raises(CheckpointError):
        CodeTokenizer.load(tmp_path)


def test_tokenizer_cli_refuses_to_overwrite_and_checks_its_arguments(data_dir, tmp_path, capsys):
    """`codefusion tokenizer` keeps an existing file unless --force, and bad arguments are one line before any
    training (a negative --vocab-size was an OverflowError, a missing folder a bare Exception)."""
    from codefusion.cli import main
    out = tmp_path / "tokenizer.json"
    out.write_text("mine")
    cases = [(["--vocab-size", "300", "--out", str(out)], "exists: choose another path or pass --force"),
             (["--vocab-size", "-5", "--out", str(tmp_path / "t.json")], "--vocab-size must be at least"),
             (["--vocab-size", "300", "--out", str(tmp_path / "nodir" / "t.json")], "does not exist; create it"),
             (["--vocab-size", "300", "--out", str(tmp_path)], "is a directory: name the file")]
    for args, message in cases:
        assert main(["tokenizer", "--data", str(data_dir), *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert out.read_text() == "mine"
    assert main(["tokenizer", "--data", str(data_dir), "--vocab-size", "300", "--out", str(out), "--force"]) == 0
    assert out.read_text() != "mine"


@pytest.mark.parametrize("text", ["print('<pad>')", "echo </s> done", "grep '<bash>' f", "x = '<python><unk>'"])
def test_special_token_spellings_in_text_are_text(tokenizer, text):
    """A request or program that spells a control token means those characters: they round-trip, and a prompt
    full of "<pad>" keeps its words (it was masked out as padding, and its real words cut)."""
    ids = tokenizer.encode_text([text])[0]
    assert tokenizer.pad_id not in ids and tokenizer.eos_id not in ids and tokenizer.decode(ids) == text
    src = tokenizer.encode_source(["<pad>" * 4 + " " + text], ["bash"], 64)
    assert int(src.mask.sum()) == len(tokenizer.encode_text(["<pad>" * 4 + " " + text])[0]) + 2


def test_the_mask_marker_stays_the_mask_token(tokenizer):
    ids = tokenizer.encode_text(["ls <mask> -l"])[0]
    assert ids.count(tokenizer.mask_id) == 1
