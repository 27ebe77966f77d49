"""--split-brackets: one spelling per program (tokenizer.py), kept in config.json, used by training."""
import json

import pytest

from codefusion.checkpoint import load_checkpoint, save_checkpoint
from codefusion.errors import CheckpointError, CodeFusionError
from codefusion.tokenizer import CodeTokenizer
from codefusion.train.batches import TaskBatches
from codefusion.train.config import TrainConfig
from codefusion.train.data import load_split
from codefusion.train.trainer import train

from conftest import PAIRS, write_data


@pytest.fixture(scope="module")
def merging():
    """A BPE that has learned the bracket merges the default model's has ('()', '%)', '("')."""
    texts = ['Duplicate()', 'top(10%)', 'bottom(5%)', 'TextContains("a")', 'f(g())', 'print(x)'] * 20
    return CodeTokenizer.train(texts, vocab_size=300)


def _pieces(tok, ids):
    return [tok.tok.id_to_token(i) for i in ids]


@pytest.mark.parametrize("code, brackets", [("top(10%)", ["(", ")"]), ("Duplicate()", ["(", ")"]),
                                            ('TextContains("a (b)")', ["(", "(", ")", ")"]), ("f(g())", ["(", "(", ")", ")"]),
                                            ("no brackets at all", [])])
def test_split_brackets_spells_each_bracket_alone_and_round_trips(merging, code, brackets):
    split = CodeTokenizer(merging.tok, "bpe", ["cf"])
    ids = split.encode_code([code], ["cf"])[0]
    pieces = _pieces(split, ids)
    assert [p for p in pieces if "(" in p or ")" in p] == brackets  # no merged '()', '%)', '("'
    assert split.decode(ids) == code


def test_split_brackets_applies_to_its_languages_only(merging):
    split = CodeTokenizer(merging.tok, "bpe", ["cf"])
    assert "()" in _pieces(merging, merging.encode_text(["Duplicate()"])[0])  # the merge exists …
    codes, langs = ["Duplicate()", "Duplicate()", "f(g())"], ["python", "cf", "bash"]
    got = split.encode_code(codes, langs)
    assert got[0] == merging.encode_text(["Duplicate()"])[0] and got[2] == merging.encode_text(["f(g())"])[0]
    assert _pieces(split, got[1])[-2:] == ["(", ")"]  # … and only the cf row loses it
    assert merging.encode_code(codes, langs) == merging.encode_text(codes)  # default: no language split
    with pytest.raises(CodeFusionError, match="2 programs but 1 languages"):
        split.encode_code(["a", "b"], ["cf"])


@pytest.mark.parametrize("langs, message", [(["cobol"], "unknown language 'cobol'"),
                                            ("cf", "must be a list of languages")])
def test_split_brackets_refuses_bad_languages(merging, langs, message):
    with pytest.raises(CodeFusionError, match=message):
        CodeTokenizer(merging.tok, "bpe", langs)


def test_bracket_spelling_round_trips_through_the_checkpoint(tiny_model, tokenizer, tmp_path):
    split = CodeTokenizer(tokenizer.tok, "bpe", ["python", "cf"])
    save_checkpoint(tmp_path / "s", tiny_model, split)
    assert json.loads((tmp_path / "s" / "config.json").read_text())["tokenizer"]["split_brackets"] == ["cf", "python"]
    assert load_checkpoint(tmp_path / "s")[1].split_brackets == ("cf", "python")
    save_checkpoint(tmp_path / "p", tiny_model, tokenizer)  # none: the key is left out, and reads back as none
    assert "split_brackets" not in json.loads((tmp_path / "p" / "config.json").read_text())["tokenizer"]
    assert load_checkpoint(tmp_path / "p")[1].split_brackets == ()


def test_a_bad_bracket_spelling_in_config_is_one_line(tiny_model, tokenizer, tmp_path):
    save_checkpoint(tmp_path, tiny_model, tokenizer)
    config = json.loads((tmp_path / "config.json").read_text())
    config["tokenizer"]["split_brackets"] = ["java"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="tokenizer.split_brackets must list languages"):
        load_checkpoint(tmp_path)


def test_a_run_with_split_brackets_trains_on_that_spelling_and_keeps_it(tmp_path):
    data = write_data(tmp_path / "data", {"cf": PAIRS["cf"]})
    out = train(TrainConfig(preset="tiny", data=str(data), out=str(tmp_path / "run"), max_steps=2, batch_size=4,
                            dev_rows=0, dtype="float32", warmup=1, split_brackets="cf"))
    config = json.loads((out / "config.json").read_text())
    assert config["tokenizer"]["split_brackets"] == ["cf"] and config["meta"]["history"][-1]["split_brackets"] == ["cf"]
    model, tok, _ = load_checkpoint(out)
    examples = load_split(str(data), None, "train")
    batches = TaskBatches(examples, tok, model.cfg, ("finetune",), 4, 0)
    brackets = {tok.tok.token_to_id("("), tok.tok.token_to_id(")")}
    for ids, e in zip(batches.code_ids, examples):  # every bracket of every cf target is a token of its own
        assert sum(i in brackets for i in ids) == e.code.count("(") + e.code.count(")")
    # a continuation keeps the checkpoint's spelling unless told; "none" clears it
    again = train(TrainConfig(preset="tiny", data=str(data), out=str(tmp_path / "run2"), init=str(out), max_steps=1,
                              batch_size=4, dev_rows=0, dtype="float32", warmup=1))
    assert load_checkpoint(again)[1].split_brackets == ("cf",)
    cleared = train(TrainConfig(preset="tiny", data=str(data), out=str(tmp_path / "run3"), init=str(out), max_steps=1,
                                batch_size=4, dev_rows=0, dtype="float32", warmup=1, split_brackets="none"))
    assert load_checkpoint(cleared)[1].split_brackets == ()


@pytest.mark.parametrize("kw, message", [({"split_brackets": "cf,java"}, "--split-brackets takes languages"),
                                         ({"split_brackets": "cf", "task": "length"}, "does not go with --task length")])
def test_bad_split_brackets_are_refused(tmp_path, kw, message):
    with pytest.raises(CodeFusionError, match=message):
        train(TrainConfig(preset="tiny", data=str(tmp_path), out=str(tmp_path / "o"), max_steps=1, **kw))
