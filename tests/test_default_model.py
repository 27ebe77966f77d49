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


def test_each_prompt_runs_at_its_own_length_bucket_whatever_its_neighbours():
    """A request's prompts used to share the longest bucket among them, so a short prompt's program changed (and
    was cut at another length) when a long prompt came along. Each prompt now runs at its own bucket: its answer,
    its trace and what streams out equal those of the prompt alone."""
    cf = CodeFusion.from_pretrained(None, dtype="float32")
    short, long = "sort a list of numbers", ("find all files larger than 10MB in /var/log and compress each of them "
                                             "with gzip, then move the archives into /backup/logs keeping the "
                                             "directory structure, and finally email a report")
    prompts = [short, long, "list files"]
    buckets = cf.length_buckets(prompts, "bash")
    assert buckets[0] != buckets[1] and buckets[2] == buckets[0]  # the case: two buckets in one request
    config = GenerationConfig(steps=3, num_samples=2, trace_steps=(1, 3))
    together = cf.generate(prompts, config)
    streamed = []
    cf.generate_many([(prompts, config)], on_trace=lambda r, entry: streamed.append((r, entry)))
    assert [(r, e["step"]) for r, e in streamed] == [(0, 1), (0, 3)]  # one entry per step, once every part has it
    for j, prompt in enumerate(prompts):
        alone = cf.generate([prompt], config)
        assert together.texts[j] == alone.texts[0] and together.scores[j] == alone.scores[0]
        assert together.samples[j] == alone.samples[0] and together.sample_lengths[j] == alone.sample_lengths[0]
        assert [e["texts"][j] for e in together.trace] == [e["texts"][0] for e in alone.trace]
        assert [e["texts"][j] for _, e in streamed] == [e["texts"][0] for e in alone.trace]
    assert together.timings["length"] == max(buckets)
    # the one-loop path (several requests, every bucket in one loop) joins the parts the same way
    first, second = cf.generate_many([(prompts, GenerationConfig(steps=3)), ([long], GenerationConfig(steps=3))])
    assert first.texts == [cf.generate([p], GenerationConfig(steps=3)).texts[0] for p in prompts]
    assert second.texts == [first.texts[1]]
