"""What a generate request may be and how one is refused: the JSON body (``GenerateRequest``), the server's
``Limits``, the checks that turn a body into (prompts, GenerationConfig), and the one-line {"error": ...}
answers. The HTTP server (app.py) and the Ray deployment (ray_app.py) share them."""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, fields

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ..config import GenerationConfig
from ..errors import CodeFusionError
from ..validate import check_config, check_prompts


@dataclass(frozen=True)
class Limits:
    max_prompts: int = 64  # per request
    max_prompt_chars: int = 2000
    max_num_samples: int = 16
    max_steps: int = 1200
    max_body_bytes: int = 1 << 20
    timeout_s: float = 120.0
    retry_after_s: int = 1


class GenerateRequest(BaseModel):
    # strict: JSON types as declared ("steps": "3", 3.0 or true is an error, not 3 or 1); forbid: a misspelt
    # field ("num_sample") is an error, not silently the default
    model_config = ConfigDict(strict=True, extra="forbid")

    prompts: list[str] = Field(min_length=1)
    lang: str = "bash"
    steps: int = 1200
    solver: str = "ddpm"
    num_samples: int = 1
    seed: int = 0
    max_length: int | None = None
    early_exit: bool = False
    eta: float = 0.0
    clamp: bool | str | None = None  # false/true, or "none" | "nearest" | "decode"; null: the model's default
    trace_steps: list[int] = Field(default_factory=list)


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def refusal(headers, api_key: str | None, limit: int) -> JSONResponse | None:
    """The answer to a request refused on its headers alone (401 without the API key when one is set, 413
    for a declared body over ``limit`` bytes), else None. The HTTP server and the Ray deployment share it."""
    if api_key and headers.get("x-api-key") != api_key:
        return _error(401, "missing or wrong X-API-Key header")
    size = headers.get("content-length")
    if size and size.isdigit() and int(size) > limit:
        return _error(413, f"request body is {size} bytes; the limit is {limit}")
    return None


def too_large(limit: int) -> JSONResponse:
    """413 for a body that passed ``limit`` bytes as it was read (no declared length, or a wrong one)."""
    return _error(413, f"request body is over {limit} bytes, the limit")


def validation_message(errors) -> str:
    """pydantic's errors for a request body → one line naming the field (the first field that is wrong)."""
    first = errors[0]
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    if first.get("type") == "json_invalid":
        return f"the body is not valid JSON ({first.get('ctx', {}).get('error', first.get('msg'))})"
    if not loc or first.get("type") in ("model_attributes_type", "dict_type", "model_type"):
        return 'the body must be a JSON object such as {"prompts": ["list files"], "steps": 20}'
    field = loc[0]
    if first.get("type") == "extra_forbidden":
        names = list(GenerateRequest.model_fields)
        close = difflib.get_close_matches(field, names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else f"; the fields are {', '.join(names)}"
        return f"{field}: unknown field{hint}"
    where = field + "".join(f"[{x}]" for x in loc[1:] if x.isdigit())
    msgs = dict.fromkeys(e["msg"] for e in errors if [str(x) for x in e.get("loc", ()) if x != "body"][:1] == [field])
    return f"{where}: {' or '.join(msgs)}, got {json.dumps(first.get('input'), default=str)[:60]}"


def _validate(req: GenerateRequest, cf, limits: Limits) -> tuple[list[str], GenerationConfig]:
    """Request → (prompts, GenerationConfig), or a CodeFusionError whose message names the field."""
    if len(req.prompts) > limits.max_prompts:
        raise CodeFusionError(f"prompts: {len(req.prompts)} prompts; at most {limits.max_prompts} per request")
    long = next((j for j, p in enumerate(req.prompts) if len(p) > limits.max_prompt_chars), None)
    if long is not None:
        raise CodeFusionError(f"prompts[{long}]: longer than {limits.max_prompt_chars} characters")
    if req.num_samples > limits.max_num_samples:
        raise CodeFusionError(f"num_samples: at most {limits.max_num_samples}, got {req.num_samples}")
    if req.steps > limits.max_steps:
        raise CodeFusionError(f"steps: at most {limits.max_steps} on this server, got {req.steps}")
    names = {f.name for f in fields(GenerationConfig)}
    values = {k: v for k, v in req.model_dump().items() if k in names}
    prompts = check_prompts(req.prompts)
    # canonical (clamp true = "nearest", trace steps sorted) and with the model's defaults now, so the batch key
    # sees what the loop will run
    return prompts, cf.resolve(check_config(GenerationConfig(**values), cf.cfg, cf.backend.name))
