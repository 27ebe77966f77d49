"""The embedded default model: it ships with the package, loads with no path, and is what the CLI uses."""
import json

from safetensors import safe_open

from codefusion import CodeFusion, GenerationConfig
from codefusion.api import default_model_dir
from codefusion.cli import main


def test_the_default_checkpoint_ships_bf16_under_40_mb_with_its_card():
    d = default_model_dir()
    weights = d / "model.safetensors"
    assert weights.stat().st_size <= 40 * 2**20
    with safe_open(str(weights), "pt") as f:
        assert {str(f.get_slice(k).get_dtype()) for k in f.keys()} == {"BF16"}
    config = json.loads((d / "config.json").read_text())
    assert config["model"]["name"] == "small" and config["model"]["length_head"] is True
    # the length head reads only E_s: every phase after its last fit keeps E frozen, so the fit stands
    tasks = [h["task"] for h in config["meta"]["history"]]
    last_fit = len(tasks) - 1 - tasks[::-1].index("length")
    # (a blend of such phases records the encoder among the modules it left unchanged)
    assert all(h["freeze_encoder"] if h["task"] != "blend" else "encoder" in h["unchanged"]
               for h in config["meta"]["history"][last_fit + 1:])
    assert config["generation"] == {"clamp": "decode"}  # the sampler its card reports as its default
    card = (d / "README.md").read_text()
    assert "scripts/train_default_model.sh" in card and "training_curve.png" in card


def test_from_pretrained_none_loads_it_and_generates():
    cf = CodeFusion.from_pretrained(None)
    assert cf.cfg.name == "small" and cf.resolve(GenerationConfig()).clamp == "decode"
    out = cf.generate(["find all python files modified in the last day"], GenerationConfig(steps=2))
    assert len(out.texts) == 1 and out.timings["length"] in cf.cfg.length_buckets


def test_cli_generate_uses_it_without_model(capsys):
    assert main(["generate", "list files", "--steps", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["timings"]["steps"] == 2
