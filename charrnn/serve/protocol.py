"""What a request may say, and the errors that answer it when it says something else.

Bodies are checked field by field against what the endpoint takes, so that every refusal
names the field at fault, in the shape of the OpenAI API's error object:
``{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}``. The Ollama-style
endpoint answers in the same shape (its own clients read the ``error`` key too).

Fields that OpenAI's completions API defines but a character model cannot honour
(penalties, ``logit_bias``, ``suffix``, ``best_of``, ...) are accepted at their neutral value and
refused, by name, at any other: a client that sends its defaults works, and one that relies
on them hears that they do nothing here.

One rule for text holds before any field is read: every string of the body, field names
included, must be valid Unicode (JSON's ``\uDC80`` escapes can carry a lone surrogate, which
no model, stop matcher or JSON reply can hold), and is refused naming where it is.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from charrnn.data.vocab import Vocab
from charrnn.errors import InvalidText, VocabError
from charrnn.options import DEFAULTS
from charrnn.ranges import MAX_SEED
from charrnn.serve.config import ServeConfig
from charrnn.serve.logprobs import OLLAMA_MAX_TOP_LOGPROBS, OPENAI_MAX_LOGPROBS
from charrnn.text import decode, require_valid

# OpenAI's ranges for the options both APIs share.
API_MAX_TEMPERATURE = 2.0
MAX_STOP_STRINGS = 4


class ApiError(Exception):
    """A request the server answers with an error object instead of text."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers or {}

    def body(self) -> dict:
        return error_object(self.message, self.kind, self.param, self.code)


def error_object(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@dataclass(frozen=True)
class GenerationRequest:
    """One request's text to continue and how: ``n`` streams, each with its own seed."""

    prompt: str
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    stop: tuple[str, ...]
    seed: int | None
    n: int
    stream: bool
    include_usage: bool = False
    # Log probabilities: None = none; else this many alternatives per token (charrnn.serve.logprobs).
    logprobs: int | None = None
    echo: bool = False  # the prompt comes back before the completion (scored, with logprobs)
    # The prompt's ids, encoded once when the prompt was checked.
    prompt_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), compare=False)

    def seeds(self) -> list[int | None]:
        """Completion i of a seeded request draws from seed + i (wrapping inside 0..MAX_SEED),
        so that each is reproducible alone."""
        if self.seed is None:
            return [None] * self.n
        return [(self.seed + i) % (MAX_SEED + 1) for i in range(self.n)]


def parse_body(raw: bytes) -> dict:
    """The JSON object of a request body, every string in it valid Unicode."""
    try:
        text = decode(raw, "the request body")
    except InvalidText as exc:
        raise ApiError(400, str(exc), code="invalid_json") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", code="invalid_json") from None
    except RecursionError:
        raise ApiError(400, "the request body is not valid JSON: nested too deeply", code="invalid_json") from None
    except ValueError:
        # Python refuses to read an integer this long (a guard against quadratic parsing).
        limit = sys.get_int_max_str_digits()
        raise ApiError(400, f"the request body holds an integer of more than {limit:,} digits", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, not {_json_type(body)}", code="invalid_json")
    _require_text(body)
    return body


def _require_text(body: dict) -> None:
    """Refuse the first string, field names included, that is not valid Unicode, naming its
    place (``prompt``, ``stop[1]``, ``options.stop[0]``) as the error's param."""
    todo: list[tuple[str, Any]] = [("", body)]
    while todo:  # a loop, not recursion: a body may nest as deep as the JSON parser allows
        path, value = todo.pop()
        if isinstance(value, str):
            try:
                require_valid(value, path, from_bytes=False)
            except InvalidText as exc:
                raise ApiError(400, str(exc), param=path, code="invalid_text") from None
        elif isinstance(value, dict):
            for name in value:
                try:
                    require_valid(name, f"{path}: a field name" if path else "a field name", from_bytes=False)
                except InvalidText as exc:
                    raise ApiError(400, str(exc), param=path or None, code="invalid_text") from None
            todo.extend(reversed([(f"{path}.{name}" if path else name, item) for name, item in value.items()]))
        elif isinstance(value, list):
            todo.extend(reversed([(f"{path}[{i}]", item) for i, item in enumerate(value)]))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


# The field checks every JSON API of the server shares (this module's, the explorer's): each
# refusal is an ApiError that names the field.


def invalid(param: str, message: str, code: str = "invalid_value", status: int = 400) -> ApiError:
    return ApiError(status, f"{param}: {message}", param=param, code=code)


def unknown_fields(body: dict, known: tuple[str, ...], where: str, prefix: str = "") -> None:
    for name in body:
        if name not in known:
            raise invalid(
                prefix + name,
                f"unknown field; {where} takes {', '.join(known)}",
                code="unknown_field",
            )


def number(body: dict, name: str, default, low: float, high: float | None = None, *, integer: bool = False, low_open: bool = False, param: str | None = None):
    """``body[name]`` (``default`` where absent), a JSON number (an integer if ``integer``)
    in [low, high] (``low_open``: above low; ``high`` None: no upper bound)."""
    param = param or name
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise invalid(param, f"must be {'an integer' if integer else 'a number'}, not {_json_type(value)}", code="invalid_type")
    # An integer is compared exactly: math.isfinite would convert it to a float, which
    # overflows past 1e308.
    if (isinstance(value, float) and not math.isfinite(value)) or value < low or (high is not None and value > high) or (low_open and value == low):
        low_bracket = "(" if low_open else "["
        span = f"in {low_bracket}{low:g}, {high:g}]" if high is not None else f"{'above' if low_open else 'at least'} {low:g}"
        raise invalid(param, f"must be {span}, not {_shown_number(value)}", code="out_of_range")
    return value


def _shown_number(value: int | float) -> str:
    shown = str(value)
    return shown if len(shown) <= 24 else f"{shown[:12]}... ({len(shown.lstrip('-')):,} digits)"


def flag(body: dict, name: str, default: bool, param: str | None = None) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(param or name, f"must be true or false, not {_json_type(value)}", code="invalid_type")
    return value


def _stop(body: dict, name: str, param: str | None = None) -> tuple[str, ...]:
    param = param or name
    value = body.get(name)
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise invalid(param, "must be a string or an array of strings", code="invalid_type")
    if len(stops) > MAX_STOP_STRINGS:
        raise invalid(param, f"at most {MAX_STOP_STRINGS} stop strings, not {len(stops)}", code="out_of_range")
    if not all(stops):
        raise invalid(param, "stop strings must not be empty")
    return tuple(stops)


def _prompt(body: dict, vocab: Vocab, limits: ServeConfig) -> tuple[str, np.ndarray]:
    value = body.get("prompt", "")
    if value is None:
        value = ""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        value = value[0]  # OpenAI clients may send one prompt as a one-element array
    if not isinstance(value, str):
        raise invalid("prompt", f"must be a string, not {_json_type(value)}", code="invalid_type")
    if len(value) > limits.max_prompt:
        raise invalid("prompt", f"{len(value):,} characters, more than the server's limit of {limits.max_prompt:,}", code="prompt_too_long")
    try:
        ids = vocab.encode(value)
    except VocabError as exc:
        raise invalid("prompt", str(exc), code="characters_outside_vocabulary") from None
    return value, ids


def _model(body: dict, model_id: str) -> None:
    value = body.get("model")
    if value is None:
        return
    if not isinstance(value, str):
        raise invalid("model", f"must be a string, not {_json_type(value)}", code="invalid_type")
    if value != model_id:
        shown = json.dumps(value, ensure_ascii=False)[:80]
        raise ApiError(404, f"model: {shown} is not served here; this server serves {model_id!r}", param="model", code="model_not_found")


# -- OpenAI /v1/completions -----------------------------------------------------------

COMPLETION_FIELDS = (
    "model", "prompt", "max_tokens", "temperature", "top_p", "stop", "seed", "n", "stream",
    "stream_options", "echo", "logprobs", "frequency_penalty", "presence_penalty", "best_of",
    "logit_bias", "suffix", "user",
)

# Defined by OpenAI, with a value at which they change nothing; any other is refused.
_NEUTRAL = {
    "frequency_penalty": (None, 0),
    "presence_penalty": (None, 0),
    "logit_bias": (None, {}),
    "suffix": (None, ""),
}


def completion_request(body: dict, vocab: Vocab, limits: ServeConfig, model_id: str) -> GenerationRequest:
    """A /v1/completions body, checked (OpenAI's fields and ranges)."""
    unknown_fields(body, COMPLETION_FIELDS, "/v1/completions")
    _model(body, model_id)
    for name, neutral in _NEUTRAL.items():
        value = body.get(name)
        if value is not None and not any(value == v and isinstance(value, bool) == isinstance(v, bool) for v in neutral):
            raise invalid(name, f"not supported by a character model; leave it out (or send {json.dumps(neutral[-1])})", code="unsupported_value")
    if "user" in body and not isinstance(body["user"], (str, type(None))):
        raise invalid("user", "must be a string", code="invalid_type")
    n = number(body, "n", 1, 1, min(limits.max_n, limits.max_streams), integer=True)
    best_of = body.get("best_of")
    if best_of is not None and best_of != n:
        raise invalid("best_of", f"must equal n ({n}): completions are not ranked here", code="unsupported_value")
    stream = flag(body, "stream", False)
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise invalid("stream_options", "only with stream: true")
        if not isinstance(options, dict):
            raise invalid("stream_options", f"must be an object, not {_json_type(options)}", code="invalid_type")
        unknown_fields(options, ("include_usage",), "stream_options", prefix="stream_options.")
        include_usage = flag(options, "include_usage", False, param="stream_options.include_usage")
    prompt, prompt_ids = _prompt(body, vocab, limits)
    return GenerationRequest(
        prompt=prompt,
        prompt_ids=prompt_ids,
        max_tokens=number(body, "max_tokens", limits.max_tokens, 1, limits.max_tokens_limit, integer=True),
        temperature=float(number(body, "temperature", _default_temperature(), 0, API_MAX_TEMPERATURE)),
        top_p=float(number(body, "top_p", 1.0, 0, 1, low_open=True)),
        top_k=0,
        stop=_stop(body, "stop"),
        seed=number(body, "seed", None, 0, MAX_SEED, integer=True),
        n=n,
        stream=stream,
        include_usage=include_usage,
        logprobs=number(body, "logprobs", None, 0, OPENAI_MAX_LOGPROBS, integer=True),
        echo=flag(body, "echo", False),
    )


def _default_temperature() -> float:
    return DEFAULTS["sample"]["temperature"]


# -- Ollama /api/generate -------------------------------------------------------------

GENERATE_FIELDS = ("model", "prompt", "stream", "options", "keep_alive", "raw", "logprobs", "top_logprobs")
GENERATE_OPTIONS = ("temperature", "top_p", "top_k", "seed", "num_predict", "stop")


def generate_request(body: dict, vocab: Vocab, limits: ServeConfig, model_id: str) -> GenerationRequest:
    """An /api/generate body, checked (Ollama's fields; ``keep_alive`` and ``raw`` change
    nothing here: the model stays loaded and no template is ever applied)."""
    unknown_fields(body, GENERATE_FIELDS, "/api/generate")
    _model(body, model_id)
    if "raw" in body:
        flag(body, "raw", True)
    keep_alive = body.get("keep_alive")
    if keep_alive is not None and (isinstance(keep_alive, bool) or not isinstance(keep_alive, (str, int, float))):
        raise invalid("keep_alive", "must be a duration (a string such as \"5m\" or a number of seconds)", code="invalid_type")
    options = body.get("options")
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise invalid("options", f"must be an object, not {_json_type(options)}", code="invalid_type")
    unknown_fields(options, GENERATE_OPTIONS, "options", prefix="options.")
    predict = options.get("num_predict")
    if type(predict) is int and predict == -1:
        max_tokens = limits.max_tokens_limit  # Ollama's "no limit": the server's
    else:
        max_tokens = number(options, "num_predict", limits.max_tokens, 1, limits.max_tokens_limit, integer=True, param="options.num_predict")
    prompt, prompt_ids = _prompt(body, vocab, limits)
    return GenerationRequest(
        prompt=prompt,
        prompt_ids=prompt_ids,
        max_tokens=max_tokens,
        temperature=float(number(options, "temperature", _default_temperature(), 0, API_MAX_TEMPERATURE, param="options.temperature")),
        top_p=float(number(options, "top_p", 1.0, 0, 1, low_open=True, param="options.top_p")),
        top_k=number(options, "top_k", 0, 0, len(vocab), integer=True, param="options.top_k"),
        stop=_stop(options, "stop", param="options.stop"),
        seed=number(options, "seed", None, 0, MAX_SEED, integer=True, param="options.seed"),
        n=1,
        stream=flag(body, "stream", True),
        logprobs=_ollama_logprobs(body),
    )


def _ollama_logprobs(body: dict) -> int | None:
    """Ollama's ``logprobs`` (true: each token's) and ``top_logprobs`` (that many alternatives)."""
    wanted = flag(body, "logprobs", False)
    top = number(body, "top_logprobs", 0, 0, OLLAMA_MAX_TOP_LOGPROBS, integer=True)
    if top and not wanted:
        raise invalid("top_logprobs", "only with logprobs: true")
    return top if wanted else None
