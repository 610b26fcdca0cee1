"""The explorer's request bodies, checked field by field into what ``charrnn.inspect.explain``
and the sampling filters take; every refusal is a 4xx ``ApiError`` naming the field, as the
rest of the server answers."""

from __future__ import annotations

from dataclasses import dataclass

from charrnn.serve.protocol import flag, invalid, number, unknown_fields

# Units one request may ask for over the text: each adds a float per character to the reply.
MAX_UNITS = 16
# The temperature slider's range: the server's API range (OpenAI's).
MAX_TEMPERATURE = 2.0


@dataclass(frozen=True)
class ExplainRequest:
    text: str
    units: tuple[tuple[int, int], ...]
    state: str
    features: bool
    gates: bool
    stretch: tuple[int, int] | None


@dataclass(frozen=True)
class MemoryRequest:
    text: str
    position: int


@dataclass(frozen=True)
class NextRequest:
    text: str
    temperature: float
    top_k: int
    top_p: float
    min_p: float
    repetition_penalty: float
    seed: int | None


def _text(body: dict, max_chars: int) -> str:
    value = body.get("text")
    if not isinstance(value, str):
        raise invalid("text", "give the text to read, as a string", code="invalid_type")
    if not value:
        raise invalid("text", "the text is empty; type or paste some text")
    if len(value) > max_chars:
        raise invalid("text", f"{len(value):,} characters, more than the {max_chars:,} read here (--max-chars)", code="text_too_long", status=413)
    return value


def _units(body: dict, layers: int, hidden: int) -> tuple[tuple[int, int], ...]:
    value = body.get("units") or []
    if not isinstance(value, list) or len(value) > MAX_UNITS:
        raise invalid("units", f"give a list of at most {MAX_UNITS} objects {{\"layer\": L, \"unit\": N}}", code="invalid_type")
    units = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise invalid(f"units[{i}]", "must be an object {\"layer\": L, \"unit\": N}", code="invalid_type")
        unknown_fields(item, ("layer", "unit"), f"units[{i}]")
        layer = number(item, "layer", None, 0, layers - 1, integer=True, param=f"units[{i}].layer")
        unit = number(item, "unit", None, 0, hidden - 1, integer=True, param=f"units[{i}].unit")
        if layer is None or unit is None:
            raise invalid(f"units[{i}]", "give both layer and unit (counted from 0)")
        units.append((layer, unit))
    return tuple(units)


def explain_request(body: dict, max_chars: int, layers: int, hidden: int, has_cell: bool) -> ExplainRequest:
    unknown_fields(body, ("text", "units", "state", "features", "gates", "stretch"), "/v1/explain")
    text = _text(body, max_chars)
    state = body.get("state", "h")
    if state not in ("h", "c") or (state == "c" and not has_cell):
        raise invalid("state", "must be \"h\"" + (" or \"c\"" if has_cell else " (this model has no cell state)"))
    stretch = body.get("stretch")
    if stretch is not None:
        if not (isinstance(stretch, list) and len(stretch) == 2 and all(type(v) is int for v in stretch)):
            raise invalid("stretch", "must be [start, end]: token positions, end excluded", code="invalid_type")
        stretch = (stretch[0], stretch[1])
    return ExplainRequest(text, _units(body, layers, hidden), state, flag(body, "features", False), flag(body, "gates", False), stretch)


def memory_request(body: dict, max_chars: int) -> MemoryRequest:
    unknown_fields(body, ("text", "position"), "/v1/explain/memory")
    text = _text(body, max_chars)
    position = number(body, "position", None, 1, integer=True)
    if position is None:
        raise invalid("position", "give the position of the character whose prediction to follow back (from 1)")
    return MemoryRequest(text, position)


def next_request(body: dict, max_chars: int, vocab_size: int) -> NextRequest:
    unknown_fields(body, ("text", "temperature", "top_k", "top_p", "min_p", "repetition_penalty", "seed"), "/v1/explain/next")
    from charrnn.options import DEFAULTS
    from charrnn.ranges import MAX_SEED

    sample = DEFAULTS["sample"]
    return NextRequest(
        text=_text(body, max_chars),
        temperature=number(body, "temperature", sample["temperature"], 0, MAX_TEMPERATURE),
        top_k=number(body, "top_k", sample["top_k"], 0, vocab_size, integer=True),
        top_p=number(body, "top_p", sample["top_p"], 0, 1, low_open=True),
        min_p=number(body, "min_p", sample["min_p"], 0, 1),
        repetition_penalty=number(body, "repetition_penalty", sample["repetition_penalty"], 0, 100, low_open=True),
        seed=number(body, "seed", None, 0, MAX_SEED, integer=True),
    )


