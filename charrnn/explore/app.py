"""The explorer's routes on ``charrnn serve``'s server: the page at ``/explore`` and its JSON
endpoints, ``POST /v1/explain`` (the text scored, units, gates, a stretch's units),
``POST /v1/explain/memory`` (the gradient through time for one character) and
``POST /v1/explain/next`` (the next character's distribution through ``sample``'s filters, and
one character drawn from it).

The model runs in a worker thread, one request at a time (``Explorer.lock``), so the event loop
keeps answering ``/health`` and the completion streams while a text is analysed."""

from __future__ import annotations

import threading
from importlib import resources

import numpy as np
import torch
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from charrnn.cells import CELLS, GATE_NAMES
from charrnn.errors import ConfigError, CorpusError, InsufficientMemory, InvalidText, VocabError
from charrnn.explore.requests import ExplainRequest, MemoryRequest, NextRequest, explain_request, memory_request, next_request
from charrnn.generation.noise import Noise
from charrnn.generation.sample import SampleConfig, next_distribution, sample_next
from charrnn.inspect import explain as ex
from charrnn.inspect.saturation import summarise
from charrnn.model.network import CharRNN
from charrnn.options import DEFAULTS
from charrnn.ranges import RANGES
from charrnn.serve.protocol import ApiError, parse_body

PAGE = "/explore"
ROUTES = "GET /explore, POST /v1/explain, POST /v1/explain/memory, POST /v1/explain/next"
# Bytes of request body per character of text at most (a JSON escape of a character outside
# the Basic Multilingual Plane, two \uXXXX), and for the other fields.
BODY_BYTES_PER_CHAR = 12
BODY_OTHER_BYTES = 1 << 16
DIGITS = 7  # decimals of the figures in a reply: float32's precision


class Explorer:
    def __init__(self, model: CharRNN, vocab, max_chars: int = DEFAULTS["explore"]["max_chars"], memory_steps: int = DEFAULTS["gradients"]["steps"]) -> None:
        RANGES["explore"]["max_chars"].check("--max-chars", max_chars)
        self.model, self.vocab, self.max_chars, self.memory_steps = model.eval(), vocab, max_chars, memory_steps
        self.lock = threading.Lock()
        self.token_names = [_token(vocab, i) for i in range(model.config.vocab_size)]

    def routes(self) -> list[Route]:
        return [
            Route(PAGE, self.page, methods=["GET"]),
            Route("/v1/explain", self.explain, methods=["POST"]),
            Route("/v1/explain/memory", self.memory, methods=["POST"]),
            Route("/v1/explain/next", self.next_char, methods=["POST"]),
        ]

    async def page(self, request: Request) -> Response:
        page = resources.files("charrnn.explore").joinpath("explore.html").read_text(encoding="utf-8")
        return HTMLResponse(page, headers={"Content-Security-Policy": "default-src 'self'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"})

    async def _body(self, request: Request) -> dict:
        limit = self.max_chars * BODY_BYTES_PER_CHAR + BODY_OTHER_BYTES
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ApiError(413, f"the request body is over {limit:,} bytes; the explorer reads at most {self.max_chars:,} characters (--max-chars)", code="request_too_large")
        return parse_body(bytes(body))

    async def _run(self, work, *args) -> JSONResponse:
        try:
            return JSONResponse(await run_in_threadpool(self._locked, work, *args))
        except InsufficientMemory as exc:
            raise ApiError(503, str(exc), code="insufficient_memory", kind="server_error") from None
        except (ConfigError, CorpusError, VocabError, InvalidText) as exc:
            code = "characters_outside_vocabulary" if isinstance(exc, VocabError) else "invalid_value"
            raise ApiError(400, str(exc), param="text" if isinstance(exc, (VocabError, CorpusError)) else None, code=code) from None

    def _locked(self, work, *args) -> dict:
        with self.lock:
            return work(*args)

    async def explain(self, request: Request) -> Response:
        c = self.model.config
        wanted = explain_request(await self._body(request), self.max_chars, c.layers, c.hidden, CELLS[c.cell].has_cell_state)
        return await self._run(self._explain, wanted)

    async def memory(self, request: Request) -> Response:
        return await self._run(self._memory, memory_request(await self._body(request), self.max_chars))

    async def next_char(self, request: Request) -> Response:
        return await self._run(self._next, next_request(await self._body(request), self.max_chars, len(self.vocab)))

    # -- the work, in the worker thread -------------------------------------------------

    def _encoded(self, text: str):
        ids, pieces = ex.encode(self.vocab, text, self.max_chars)
        return ids, pieces

    def _explain(self, wanted: ExplainRequest) -> dict:
        ids, pieces = self._encoded(wanted.text)
        replay = bool(wanted.units or wanted.features or wanted.gates or wanted.stretch)
        tokens_per_char = 1.0 if getattr(self.vocab, "kind", "chars") == "chars" else len(ids) / len(wanted.text)
        found = ex.explain(self.model, ids, pieces, tokens_per_char, replay=replay)
        answer = {
            "tokens": list(pieces),
            "prob": _figures(found.prob),
            "bits": _figures(found.bits),
            "top": _guesses(found, self.token_names),
            "bpc": found.bpc,
            "unigram_bpc": found.unigram,
            "characters": len(wanted.text),
            "state": wanted.state,
            "units": [{"layer": layer, "unit": unit, "values": _figures(ex.unit_values(found, layer, unit, wanted.state))} for layer, unit in wanted.units],
        }
        if wanted.features:
            answer["features"] = [{"feature": m.feature, "layer": m.layer, "unit": m.unit, "r": round(m.correlation, 4)} for m in ex.feature_units(found, wanted.state)]
        if wanted.gates:
            answer["gates"] = _gates(found)
        if wanted.stretch:
            ranked = ex.stretch_units(found, *wanted.stretch, which=wanted.state)
            answer["stretch"] = [{"layer": u.layer, "unit": u.unit, "inside": round(u.inside, 4), "outside": round(u.outside, 4)} for u in ranked]
        return answer

    def _memory(self, wanted: MemoryRequest) -> dict:
        ids, _ = self._encoded(wanted.text)
        found = ex.memory(self.model, ids, wanted.position, self.memory_steps)
        return {"position": found.position, "start": found.start, "norms": [float(f"{v:.4g}") for v in found.norms], "bits": found.bits}

    def _next(self, wanted: NextRequest) -> dict:
        ids, _ = self._encoded(wanted.text)
        config = SampleConfig(
            temperature=wanted.temperature, top_k=wanted.top_k, top_p=wanted.top_p, min_p=wanted.min_p,
            repetition_penalty=wanted.repetition_penalty, seed=wanted.seed,
        )
        with torch.no_grad():
            # The decoder at the last step only: a vocabulary of thousands of tokens would
            # otherwise take a row of logits per character of the text.
            out, _ = self.model.rnn(self.model.embedding(torch.as_tensor(ids).unsqueeze(0)))
            last = self.model.decoder(out[0, -1:]).float()
        history = torch.as_tensor(ids[-config.repetition_window :]).unsqueeze(0) if config.repetition_penalty != 1.0 else None
        probs = next_distribution(last, config, history)[0].numpy()
        generator = torch.Generator().manual_seed(config.seed)
        chosen = int(sample_next(last, config, Noise(generator, 1, last.size(-1), most=1), history)[0])
        raw = torch.softmax(last[0], dim=-1).numpy()
        tokens = self.token_names
        return {"tokens": tokens, "probs": _figures(probs), "model_probs": _figures(raw), "chosen": tokens[chosen], "chosen_id": chosen, "seed": config.seed}


def _figures(values: np.ndarray) -> list:
    """Floats for JSON: rounded to float32's precision, NaN (nothing predicted) as null."""
    rounded = np.round(np.asarray(values, dtype=np.float64), DIGITS)
    return [None if v != v else v for v in rounded.tolist()]


def _token(vocab, i: int) -> str:
    """The text of token ``i`` alone (a byte vocabulary's part of a character: U+FFFD)."""
    try:
        return vocab.decode([i])
    except Exception:  # an id with no text of its own (a vocabulary's [UNK])
        return "\ufffd"


def _guesses(found: ex.Explanation, names: list[str]) -> list:
    """Per token its top guesses as [text, probability] pairs (none at the first)."""
    probs = np.round(found.top_probs.astype(np.float64), DIGITS).tolist()
    texts = np.asarray(names, dtype=object)[np.maximum(found.top_ids, 0)].tolist()
    rows = [[[t, p] for t, p in zip(row_texts, row_probs)] for row_texts, row_probs in zip(texts, probs)]
    rows[0] = []  # nothing predicts the first token
    return rows


def _gates(found: ex.Explanation) -> list:
    saturation = ex.saturation(found)
    if saturation is None:
        return []
    rows = []
    for summary in summarise(saturation):
        gate, layer = summary.gate, summary.layer
        rows.append({
            "layer": layer, "gate": GATE_NAMES.get(gate, gate),
            "left": [round(v, 4) for v in saturation.left[gate][layer].tolist()],
            "right": [round(v, 4) for v in saturation.right[gate][layer].tolist()],
            "mean_left": round(summary.mean_left, 4), "mean_right": round(summary.mean_right, 4),
            "mostly_closed": summary.mostly_closed, "mostly_open": summary.mostly_open,
        })  # fmt: skip
    return rows
