"""Training end to end on tiny data: the overfit check with the 1200-step reference sampler, pre-training →
fine-tuning, --pooled-condition, a CodeT5 start, --freeze-encoder and --encoder-from, --repeat, timestep sampling,
the dev check and the condition probe. Resuming and interrupts: test_train_resume.py; refused options and data, and
the CLI: test_train_inputs.py."""
import json

import pytest
import torch

from codefusion import CodeFusion, GenerationConfig
from codefusion.errors import CodeFusionError
from codefusion.train.data import load_split
from codefusion.train.trainer import train

from conftest import PAIRS, bash_data, train_config, write_data


def test_tiny_model_overfits_8_pairs_with_the_1200_step_reference_sampler(overfit_dir):
    cf = CodeFusion.from_pretrained(overfit_dir, backend="reference")
    prompts, codes = zip(*PAIRS["nl2bash"])
    out = cf.generate(list(prompts), GenerationConfig(lang="bash", steps=1200, seed=0))
    assert out.timings["steps"] == 1200
    assert [texts[0] for texts in out.texts] == list(codes)


def test_checkpoint_records_the_run(overfit_dir):
    config = json.loads((overfit_dir / "config.json").read_text())
    run = config["meta"]["history"][-1]
    assert run["task"] == "finetune" and run["steps"] == 600 and run["wall_s"] > 0
    log = [json.loads(line) for line in (overfit_dir / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["step"] == 1 and log[-1]["final"] and "ce" in log[1]


def test_pretrain_then_finetune_from_init(tmp_path, data_dir):
    pre = train(train_config(tmp_path, data_dir, task="pretrain", out=str(tmp_path / "pre")))
    log = [json.loads(line) for line in (pre / "train_log.jsonl").read_text().splitlines()]
    assert any("dev" in row for row in log)
    fine = train(train_config(tmp_path, data_dir, task="finetune", init=str(pre), out=str(tmp_path / "fine")))
    history = json.loads((fine / "config.json").read_text())["meta"]["history"]
    assert [h["task"] for h in history] == ["pretrain", "finetune"]


def test_pooled_condition_extends_an_init_model(tmp_path, data_dir, overfit_dir):
    """--pooled-condition on a model without it: the extension starts as the same function, then trains."""
    from codefusion.checkpoint import load_checkpoint
    from codefusion.train.start import with_pooled_condition
    model = load_checkpoint(overfit_dir)[0].eval()
    extended = with_pooled_condition(model).eval()
    x, t, mem = torch.randn(2, 16, model.cfg.d_embed), torch.tensor([3, 1199]), torch.randn(2, 5, model.cfg.enc_d_model)
    assert torch.equal(model.denoiser(x, t, mem, None), extended.denoiser(x, t, mem, None))
    out = train(train_config(tmp_path, data_dir, init=str(overfit_dir), pooled_condition=True, max_steps=3))
    trained = load_checkpoint(out)[0]
    assert trained.cfg.pooled_condition and bool(trained.denoiser.cond.mlp[2].weight.detach().abs().sum() > 0)


def test_minutes_budget_stops_the_run(tmp_path, data_dir):
    out = train(train_config(tmp_path, data_dir, max_steps=10_000, minutes=0.02, dev_rows=0))
    assert json.loads((out / "trainer_state.json").read_text())["step"] < 10_000


def test_encoder_starts_from_a_local_codet5_directory(tmp_path, data_dir):
    """A CodeT5-shaped directory (config + safetensors + RoBERTa BPE files) seeds E and the tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import T5EncoderModel

    from codefusion.checkpoint import load_checkpoint
    from codefusion.config import get_preset
    from codefusion.model.encoder import t5_config

    codet5 = tmp_path / "codet5"
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator([c for rows in PAIRS.values() for _, c in rows] * 10, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "<s>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    codet5.mkdir()
    bpe.model.save(str(codet5))
    torch.manual_seed(1)
    encoder = T5EncoderModel(t5_config(__import__("dataclasses").replace(get_preset("tiny"), vocab_size=320)))
    encoder.save_pretrained(str(codet5))
    out = train(train_config(tmp_path, data_dir, codet5=str(codet5), max_steps=1, lr=1e-12, warmup=1, dev_rows=0))
    model, tok, config = load_checkpoint(out)
    assert tok.kind == "codet5" and model.cfg.vocab_size == 320 and config["meta"]["encoder_init"] == str(codet5)
    torch.testing.assert_close(model.encoder.t5.encoder.block[0].layer[0].SelfAttention.q.weight,
                               encoder.encoder.block[0].layer[0].SelfAttention.q.weight, atol=1e-6, rtol=0)


def test_dev_check_rows_cover_every_language(data_dir):
    from codefusion.train.data import balanced

    rows = balanced(load_split(data_dir, None, "dev"), 6)
    assert [r.lang for r in rows] == ["bash", "python", "cf"] * 2


def test_dev_check_reports_syntax_per_language(overfit_dir, data_dir):
    """The overfit Bash model writes its 8 commands (all parse) for the Bash rows; for the Python and CF
    rows it writes Bash too, which CF's grammar refuses: per-language figures, not one pooled figure."""
    from codefusion.checkpoint import load_checkpoint
    from codefusion.eval.metrics import syntax_valid
    from codefusion.train.devcheck import dev_check

    model, tok, _ = load_checkpoint(overfit_dir)
    dev = load_split(data_dir, None, "dev")
    result = dev_check(model, tok, dev, "finetune", 5, "cpu")
    assert result["n"] == 16 and result["syntax_bash"] == 1.0 and result["syntax_cf"] == 0.0
    assert set(result) == {"n", "exact", "token_f1", "syntax_bash", "syntax_python", "syntax_cf"}
    assert not syntax_valid("GreaterThan(2", "cf") and syntax_valid("GreaterThan(2)", "cf")


def test_high_noise_timestep_sampling():
    from codefusion.train.trainer import sample_t
    torch.manual_seed(0)
    t = sample_t("high", 200_000, 1200, "cpu")
    assert int(t.min()) >= 0 and int(t.max()) == 1199
    assert abs(float((t >= 600).float().mean()) - (1 - (1 - 0.5 ** 0.5))) < 0.005  # P(t/T ≥ ½) = √½ ≈ 0.707
    u = sample_t("uniform", 200_000, 1200, "cpu")
    assert abs(float((u >= 600).float().mean()) - 0.5) < 0.005


def test_noise_clipping_keeps_a_share_of_the_whole_range():
    from codefusion.train.trainer import sample_t
    torch.manual_seed(0)
    t = sample_t("uniform", 200_000, 1200, "cpu", t_min=0.5, t_min_share=0.8)
    low = (t < 600).float().mean()  # only the unclipped 20% can land below ½T, half of them do
    assert abs(float(low) - 0.1) < 0.005 and int(t.max()) == 1199
    assert int(sample_t("high", 50_000, 1200, "cpu", t_min=0.75).min()) == 900


def test_condition_probe_on_the_overfit_model(overfit_dir, tmp_path):
    """The overfit model must use its condition: at t = T−1 only E_s tells the 8 programs apart."""
    from codefusion.train.probe import probe
    data = write_data(tmp_path / "data", {"nl2bash": PAIRS["nl2bash"]})
    rows = {r["t"]: r for r in probe(str(overfit_dir), str(data), rows=8, n=16)}
    assert rows[1199]["rows"] == 8 and rows[1199]["acc_right"] > rows[1199]["acc_shuffled"] + 0.3


def test_freeze_encoder_keeps_e(tmp_path, overfit_dir):
    from codefusion.checkpoint import load_checkpoint
    before = load_checkpoint(overfit_dir)[0].state_dict()
    out = train(train_config(tmp_path, bash_data(tmp_path), init=str(overfit_dir), freeze_encoder=True, max_steps=3,
                     dev_rows=0))
    after = load_checkpoint(out)[0].state_dict()
    changed = {name.split(".")[0] for name, w in before.items() if not torch.equal(w, after[name])}
    assert "encoder" not in changed and "denoiser" in changed


def test_encoder_from_replaces_e_and_keeps_the_rest(tmp_path, overfit_dir):
    """--init A --encoder-from B: E is B's (bit for bit under --freeze-encoder), everything else A's."""
    import dataclasses
    from codefusion.checkpoint import load_checkpoint, save_checkpoint
    from codefusion.model.codefusion import CodeFusionModel
    model, tok, _ = load_checkpoint(overfit_dir)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(0.01)
    donor = save_checkpoint(tmp_path / "donor", model, tok)
    out = train(train_config(tmp_path, bash_data(tmp_path), init=str(overfit_dir), encoder_from=str(donor),
                     freeze_encoder=True, max_steps=1, lr=1e-9, warmup=0, dev_rows=0))
    after, _, config = load_checkpoint(out)
    init = load_checkpoint(overfit_dir)[0].state_dict()
    for name, w in after.state_dict().items():
        if name.startswith("encoder."):
            assert torch.equal(w, model.state_dict()[name]), name
        else:
            torch.testing.assert_close(w, init[name], atol=1e-6, rtol=0)
    assert config["meta"]["encoder_from"] == str(donor)
    other = CodeFusionModel(dataclasses.replace(model.cfg, enc_layers=model.cfg.enc_layers + 1))
    save_checkpoint(tmp_path / "other", other, tok)
    with pytest.raises(CodeFusionError, match="enc_layers differs"):
        train(train_config(tmp_path, bash_data(tmp_path), init=str(overfit_dir), encoder_from=str(tmp_path / "other"),
                   out=str(tmp_path / "run2")))
    with pytest.raises(CodeFusionError, match="give --init too"):
        train(train_config(tmp_path, bash_data(tmp_path), encoder_from=str(donor), out=str(tmp_path / "run3")))


def test_repeat_equals_a_train_file_that_holds_copies_of_itself(tmp_path, data_dir):
    from codefusion.train.data import parse_repeat, repeat_rows
    doubled = write_data(tmp_path / "doubled")
    cf_train = doubled / "cf" / "train.jsonl"
    cf_train.write_text(cf_train.read_text() * 2)
    rows = load_split(str(data_dir), None, "train")
    repeated = repeat_rows(rows, parse_repeat("cf=2,nl2bash=1"))
    assert repeated == load_split(str(doubled), None, "train")
    assert sum(r.lang == "cf" for r in repeated) == 2 * sum(r.lang == "cf" for r in rows)
    out = train(train_config(tmp_path, data_dir, repeat="cf=2", max_steps=2, dev_rows=0))
    assert json.loads((out / "config.json").read_text())["meta"]["history"][-1]["repeat"] == "cf=2"
