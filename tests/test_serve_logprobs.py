"""Log probabilities over the API: a real `charrnn serve` on a loopback port, OpenAI's legacy
`logprobs` (streamed and not, with `echo`), Ollama's `logprobs` / `top_logprobs`, and OpenAI's
own client parsing them. Every figure is checked against the model run here over the same
text, with the temperature and filters applied by hand."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.conftest import sample_text, small_text
from tests.serving import ServerProcess, call, health, sse_events

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

LIMITS = ("--max-streams", "4", "--max-tokens-limit", "1000", "--max-prompt", "200", "--max-n", "3")


@pytest.fixture(scope="module")
def server(trained_run):
    process = ServerProcess(trained_run, *LIMITS, "--threads", "1")
    yield process
    assert process.stop() == 0, "".join(process.stderr_lines)


def expected_log_probs(model_and_vocab, text: str, temperature: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """log p(token t+1 | text up to t) for every t, as the sampler's distribution: the model's
    logits over ``text`` divided by the temperature, the top-k kept, renormalised."""
    model, vocab = model_and_vocab
    ids = torch.tensor([vocab.encode(text).tolist()])
    with torch.no_grad():
        logits = model(ids)[0][0].double() / temperature
    if top_k:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.log_softmax(logits, dim=-1)


def completion(server, **body) -> dict:
    status, reply, _ = call(server.url + "/v1/completions", body)
    assert status == 200, reply
    return reply


def check_against_model(model_and_vocab, prompt: str, logprobs: dict, text: str, top: int, temperature: float, first: int = 0) -> None:
    """The entries ``first`` on are tokens of ``text`` drawn after ``prompt``."""
    _, vocab = model_and_vocab
    expected = expected_log_probs(model_and_vocab, prompt + text, temperature)
    for j, token in enumerate(logprobs["tokens"][first:]):
        row = expected[len(prompt) - 1 + j]
        token_id = vocab.chars.index(token)
        assert logprobs["token_logprobs"][first + j] == pytest.approx(float(row[token_id]), abs=1e-3)
        alternatives = logprobs["top_logprobs"][first + j]
        best = row.topk(top)
        wanted = {vocab.chars[int(i)]: float(v) for v, i in zip(best.values, best.indices)}
        wanted.setdefault(token, float(row[token_id]))
        assert alternatives.keys() == wanted.keys()
        assert all(alternatives[k] == pytest.approx(v, abs=1e-3) for k, v in wanted.items())


def test_logprobs_are_those_the_sampler_drew_from_and_leave_the_text_unchanged(server, model_and_vocab):
    prompt, seed = "[ROMEO] ", 11
    plain = completion(server, prompt=prompt, max_tokens=60, seed=seed, temperature=0.7)["choices"][0]
    [choice] = completion(server, prompt=prompt, max_tokens=60, seed=seed, temperature=0.7, logprobs=3)["choices"]
    assert choice["text"] == plain["text"] == sample_text(model_and_vocab, prime=prompt, seed=seed, length=60, temperature=0.7)
    logprobs = choice["logprobs"]
    assert set(logprobs) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    assert "".join(logprobs["tokens"]) == choice["text"] and len(logprobs["tokens"]) == 60
    assert logprobs["text_offset"] == list(range(len(prompt), len(prompt) + 60))  # counted from the prompt's start
    check_against_model(model_and_vocab, prompt, logprobs, choice["text"], top=3, temperature=0.7)


def test_streamed_logprobs_cover_each_chunk_and_equal_the_whole_reply(server):
    body = {"prompt": "[JULIET]", "max_tokens": 400, "seed": 4, "logprobs": 2}
    whole = completion(server, **body)["choices"][0]
    status, text, _ = call(server.url + "/v1/completions", {**body, "stream": True})
    chunks = [e["choices"][0] for e in sse_events(text)[:-1]]
    assert status == 200 and len(chunks) > 1
    for chunk in chunks:
        assert "".join(chunk["logprobs"]["tokens"]) == chunk["text"]
    joined = {key: [v for c in chunks for v in c["logprobs"][key]] for key in whole["logprobs"]}
    assert joined["tokens"] == whole["logprobs"]["tokens"] and joined["text_offset"] == whole["logprobs"]["text_offset"]
    assert joined["token_logprobs"] == pytest.approx(whole["logprobs"]["token_logprobs"], abs=1e-6)


@pytest.mark.parametrize("prompt", ["[MERCUTIO] A plague o' both", small_text()[:190]], ids=["one-piece", "primed-in-pieces"])
def test_echo_with_logprobs_scores_the_prompt_first_token_null(server, model_and_vocab, prompt):
    [choice] = completion(server, prompt=prompt, max_tokens=20, seed=2, echo=True, logprobs=1, temperature=1.0)["choices"]
    assert choice["text"].startswith(prompt)
    logprobs = choice["logprobs"]
    assert logprobs["tokens"] == list(choice["text"])
    assert logprobs["text_offset"] == list(range(len(choice["text"])))
    assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
    expected = expected_log_probs(model_and_vocab, choice["text"])
    _, vocab = model_and_vocab
    for t in range(1, len(choice["text"])):
        assert logprobs["token_logprobs"][t] == pytest.approx(float(expected[t - 1][vocab.chars.index(choice["text"][t])]), abs=1e-3)
    # A likely prompt scores better than the same characters shuffled.
    assert sum(logprobs["token_logprobs"][1 : len(prompt)]) > -2.5 * len(prompt)


def test_echo_streams_the_prompt_first(server):
    status, text, _ = call(server.url + "/v1/completions", {"prompt": "[ROMEO]", "max_tokens": 30, "seed": 1, "echo": True, "stream": True})
    chunks = [e["choices"][0] for e in sse_events(text)[:-1]]
    plain = completion(server, prompt="[ROMEO]", max_tokens=30, seed=1)["choices"][0]["text"]
    assert status == 200 and chunks[0]["text"].startswith("[ROMEO]")
    assert "".join(c["text"] for c in chunks) == "[ROMEO]" + plain


def test_a_stop_string_leaves_no_logprobs_past_the_text(server, model_and_vocab):
    full = sample_text(model_and_vocab, prime="[ROMEO] ", seed=21, length=200)
    stop = full[50:53]
    [choice] = completion(server, prompt="[ROMEO] ", max_tokens=200, seed=21, stop=[stop], logprobs=0)["choices"]
    assert choice["finish_reason"] == "stop" and choice["text"] == full[: full.index(stop)]
    assert "".join(choice["logprobs"]["tokens"]) == choice["text"]
    assert all(len(alternatives) == 1 for alternatives in choice["logprobs"]["top_logprobs"])  # logprobs 0: the drawn one


def test_greedy_reports_the_models_own_distribution(server, model_and_vocab):
    [choice] = completion(server, prompt="[JULIET] ", max_tokens=30, temperature=0, logprobs=1)["choices"]
    expected = expected_log_probs(model_and_vocab, "[JULIET] " + choice["text"])
    for j, value in enumerate(choice["logprobs"]["token_logprobs"]):
        row = expected[len("[JULIET] ") - 1 + j]
        assert value == pytest.approx(float(row.max()), abs=1e-3)  # the most likely, at temperature 1


def test_ollama_logprobs_and_top_logprobs_after_top_k(server, model_and_vocab):
    body = {"prompt": "[ROMEO]", "stream": False, "logprobs": True, "top_logprobs": 2, "options": {"seed": 9, "num_predict": 40, "top_k": 5, "temperature": 0.9}}
    status, reply, _ = call(server.url + "/api/generate", body)
    assert status == 200, reply
    entries = reply["logprobs"]
    assert "".join(e["token"] for e in entries) == reply["response"] and len(entries) == 40
    _, vocab = model_and_vocab
    expected = expected_log_probs(model_and_vocab, "[ROMEO]" + reply["response"], temperature=0.9, top_k=5)
    for j, entry in enumerate(entries):
        row = expected[len("[ROMEO]") - 1 + j]
        assert entry["logprob"] == pytest.approx(float(row[vocab.chars.index(entry["token"])]), abs=1e-3)
        assert entry["bytes"] == list(entry["token"].encode("utf-8"))
        assert [t["token"] for t in entry["top_logprobs"]] == [vocab.chars[int(i)] for i in row.topk(2).indices]
    # The probabilities are the sampler's: the five kept after top-k sum to one.
    assert math.fsum(math.exp(v) for v in expected[len("[ROMEO]") - 1].tolist() if v > -math.inf) == pytest.approx(1.0)
    status, text, _ = call(server.url + "/api/generate", {**body, "stream": True})
    lines = [json.loads(line) for line in text.splitlines()]
    streamed = [e for line in lines for e in line.get("logprobs", [])]
    assert [e["token"] for e in streamed] == [e["token"] for e in entries]
    assert "top_logprobs" not in call(server.url + "/api/generate", {**body, "top_logprobs": 0})[1]["logprobs"][0]


def test_openai_client_parses_logprobs(server, model_and_vocab):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none-needed", max_retries=0)
    model_id = health(server.url)["model"]
    reply = client.completions.create(model=model_id, prompt="[ROMEO] ", max_tokens=25, seed=5, logprobs=2, echo=True)
    logprobs = reply.choices[0].logprobs
    assert "".join(logprobs.tokens) == reply.choices[0].text
    assert logprobs.token_logprobs[0] is None and all(isinstance(v, float) for v in logprobs.token_logprobs[1:])
    assert logprobs.text_offset[-1] == len(reply.choices[0].text) - 1
    assert all(len(alternatives) in (2, 3) for alternatives in logprobs.top_logprobs[1:])
    pieces = client.completions.create(model=model_id, prompt="[ROMEO] ", max_tokens=25, seed=5, logprobs=2, stream=True)
    tokens = [t for chunk in pieces for t in chunk.choices[0].logprobs.tokens]
    assert "".join(tokens) == reply.choices[0].text[len("[ROMEO] "):]


BAD = {
    "logprobs-past-5": ("/v1/completions", {"logprobs": 6}, "logprobs", "out_of_range"),
    "logprobs-negative": ("/v1/completions", {"logprobs": -1}, "logprobs", "out_of_range"),
    "logprobs-boolean": ("/v1/completions", {"logprobs": True}, "logprobs", "invalid_type"),
    "echo-not-boolean": ("/v1/completions", {"echo": 1}, "echo", "invalid_type"),
    "ollama-top-logprobs-past-20": ("/api/generate", {"logprobs": True, "top_logprobs": 21}, "top_logprobs", "out_of_range"),
    "ollama-top-logprobs-alone": ("/api/generate", {"top_logprobs": 3}, "top_logprobs", "invalid_value"),
    "ollama-logprobs-not-boolean": ("/api/generate", {"logprobs": 1}, "logprobs", "invalid_type"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_a_bad_logprobs_request_is_a_400_error_object(server, case):
    path, body, param, code = BAD[case]
    status, reply, _ = call(server.url + path, {"max_tokens": 3, **body} if path.startswith("/v1") else body)
    assert status == 400 and (reply["error"]["param"], reply["error"]["code"]) == (param, code), reply
    assert health(server.url)["status"] == "ok"
