"""codefusion.models: the embedded default checkpoint (config.json, model.safetensors, tokenizer.json)."""
from pathlib import Path

DEFAULT_DIR = Path(__file__).resolve().parent
