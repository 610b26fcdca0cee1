"""`charrnn serve`: real servers on loopback ports, real HTTP clients (urllib, raw sockets,
OpenAI's own client). The text a seed makes is checked against `charrnn sample`'s generator
(``charrnn.generation.sample.stream``), alone and beside other streams."""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest

from tests.conftest import sample_text
from tests.serving import ServerProcess, call, health, open_stream, sse_events, wait_until

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

pytestmark = pytest.mark.slow

LIMITS = ("--max-streams", "4", "--max-queue", "2", "--max-tokens-limit", "100000", "--max-body", "4096", "--max-prompt", "200", "--max-n", "3")


@pytest.fixture(scope="module")
def server(trained_run):
    process = ServerProcess(trained_run, *LIMITS)
    yield process
    assert process.stop() == 0, "".join(process.stderr_lines)


@pytest.fixture(scope="module")
def model_id(server):
    return health(server.url)["model"]


def reference(model_and_vocab, prompt: str, seed: int, length: int, **options) -> str:
    """What `charrnn sample --prime PROMPT --seed SEED --length LENGTH` makes."""
    return sample_text(model_and_vocab, prime=prompt, seed=seed, length=length, **options)


def complete(server, **body):
    status, reply, _ = call(server.url + "/v1/completions", body)
    assert status == 200, reply
    return reply


# -------------------------------------------------------------------------- endpoints


def test_health_and_models_describe_the_served_run(server, trained_run):
    state = health(server.url)
    assert state["status"] == "ok" and state["model"] == trained_run.name
    assert state["streams"]["max_streams"] == 4 and state["streams"]["max_queue"] == 2
    status, listing, _ = call(server.url + "/v1/models")
    assert status == 200 and listing["object"] == "list"
    [entry] = listing["data"]
    assert entry["id"] == trained_run.name and entry["object"] == "model"
    assert (entry["cell"], entry["layers"], entry["hidden"]) == ("lstm", 2, 32)


def test_completion_is_the_text_charrnn_sample_makes(server, model_and_vocab):
    reply = complete(server, prompt="[ROMEO] ", max_tokens=120, seed=7, temperature=0.8)
    assert reply["object"] == "text_completion" and reply["id"].startswith("cmpl-")
    [choice] = reply["choices"]
    assert choice["text"] == reference(model_and_vocab, "[ROMEO] ", 7, 120, temperature=0.8)
    assert choice["finish_reason"] == "length" and choice["index"] == 0
    assert reply["usage"] == {"prompt_tokens": 8, "completion_tokens": 120, "total_tokens": 128}


def test_streamed_completion_is_one_event_per_piece_ending_with_done(server, model_and_vocab):
    body = {"prompt": "[JULIET]", "max_tokens": 3000, "seed": 3, "stream": True, "stream_options": {"include_usage": True}}
    status, text, headers = call(server.url + "/v1/completions", body)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = sse_events(text)
    assert events[-1] == "[DONE]"
    chunks = [e for e in events[:-1] if e["choices"]]
    assert len(chunks) > 1, "the text came in one piece: it was not streamed"
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == reference(model_and_vocab, "[JULIET]", 3, 3000)
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "length"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert events[-2]["usage"]["completion_tokens"] == 3000


def test_stop_string_ends_the_completion_before_it(server, model_and_vocab):
    full = reference(model_and_vocab, "", 21, 300)
    stop = full[40:43]
    reply = complete(server, max_tokens=300, seed=21, stop=[stop, "never-made"])
    assert reply["choices"][0] == {"text": full[: full.index(stop)], "index": 0, "logprobs": None, "finish_reason": "stop"}


def test_n_completions_draw_from_consecutive_seeds_and_top_p_filters(server, model_and_vocab):
    reply = complete(server, prompt="[MERCUTIO]", max_tokens=80, seed=40, n=3, top_p=0.9, temperature=1.2)
    texts = [c["text"] for c in sorted(reply["choices"], key=lambda c: c["index"])]
    assert texts == [reference(model_and_vocab, "[MERCUTIO]", s, 80, top_p=0.9, temperature=1.2) for s in (40, 41, 42)]


def test_ollama_generate_streams_lines_then_timings(server, model_and_vocab):
    body = {"prompt": "[ROMEO]", "options": {"seed": 9, "num_predict": 150, "top_k": 5}}
    status, text, headers = call(server.url + "/api/generate", raw=json.dumps(body).encode())
    assert status == 200 and headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) > 2 and all(not line["done"] for line in lines[:-1])
    expected = reference(model_and_vocab, "[ROMEO]", 9, 150, top_k=5)
    assert "".join(line["response"] for line in lines) == expected
    last = lines[-1]
    assert last["done"] and last["done_reason"] == "length" and last["eval_count"] == 150
    assert last["prompt_eval_count"] == 7 and last["total_duration"] >= last["eval_duration"] > 0
    status, whole, _ = call(server.url + "/api/generate", {**body, "stream": False})
    assert status == 200 and whole["response"] == expected and whole["done"]


def test_same_seed_same_text_alone_and_beside_other_streams(server, model_and_vocab):
    alone = complete(server, prompt="[JULIET] ", max_tokens=400, seed=11, temperature=0.9)["choices"][0]["text"]
    # Two long streams with other seeds and filters hold rows of the batch (their clients
    # read nothing yet), and a third runs beside them with the first one's seed.
    others = [
        open_stream(server.port, "/v1/completions", {"max_tokens": 90000, "seed": 1, "stream": True, "top_p": 0.5}),
        open_stream(server.port, "/api/generate", {"options": {"num_predict": 90000, "temperature": 1.5}}),
    ]
    try:
        assert wait_until(lambda: health(server.url)["streams"]["active"] == 2)
        beside = complete(server, prompt="[JULIET] ", max_tokens=400, seed=11, temperature=0.9)["choices"][0]["text"]
        assert health(server.url)["streams"]["busiest_step"] >= 3
    finally:
        for sock in others:
            sock.close()
    assert beside == alone == reference(model_and_vocab, "[JULIET] ", 11, 400, temperature=0.9)
    assert wait_until(lambda: health(server.url)["streams"]["open"] == 0)


def test_a_repeated_prompt_is_primed_once_and_gives_the_text_a_fresh_priming_gives(server, model_and_vocab):
    hits = health(server.url)["streams"]["prompt_cache_hits"]
    first = complete(server, prompt="[JULIET] [ROMEO] ", max_tokens=150, seed=21, temperature=0.8)["choices"][0]["text"]
    assert health(server.url)["streams"]["prompt_cache_hits"] == hits  # new: primed through the model
    again = complete(server, prompt="[JULIET] [ROMEO] ", max_tokens=150, seed=21, temperature=0.8)["choices"][0]["text"]
    other_seed = complete(server, prompt="[JULIET] [ROMEO] ", max_tokens=150, seed=22, temperature=0.8)["choices"][0]["text"]
    assert health(server.url)["streams"]["prompt_cache_hits"] == hits + 2
    assert again == first == reference(model_and_vocab, "[JULIET] [ROMEO] ", 21, 150, temperature=0.8)
    assert other_seed == reference(model_and_vocab, "[JULIET] [ROMEO] ", 22, 150, temperature=0.8) != first
    # A prompt scored for its log probabilities is run through the model every time.
    body = {"prompt": "[JULIET] [ROMEO] ", "max_tokens": 5, "seed": 21, "logprobs": 1, "echo": True}
    scored = [complete(server, **body)["choices"][0] for _ in range(2)]
    assert scored[0] == scored[1] and health(server.url)["streams"]["prompt_cache_hits"] == hits + 2


def test_the_primed_prompts_keep_the_most_recent_and_hand_out_copies():
    import numpy as np
    import torch

    from charrnn.generation.stepper import FastState
    from charrnn.serve.scheduler import PrimedPrompts

    cache = PrimedPrompts(entries=2)
    state = lambda v: FastState(np.full((1, 4), v, np.float32), np.full((1, 1, 4), -v, np.float32))  # noqa: E731
    for v in (1, 2):
        cache.put(np.array([v, v]), state(v), torch.full((1, 3), float(v)))
    assert cache.get(np.array([1, 1])) is not None  # now the most recent
    cache.put(np.array([3, 3]), state(3), torch.full((1, 3), 3.0))
    assert cache.get(np.array([2, 2])) is None and cache.get(np.array([3])) is None
    got, logits = cache.get(np.array([1, 1]))
    got.h += 10
    got.c += 10
    logits += 10
    again, logits_again = cache.get(np.array([1, 1]))
    assert (again.h == 1).all() and (again.c == -1).all() and (logits_again == 1).all()
    assert cache.hits == 3


def test_a_client_that_leaves_mid_stream_frees_its_slot_within_a_step(server):
    before = health(server.url)["streams"]
    sock = open_stream(server.port, "/v1/completions", {"max_tokens": 100000, "stream": True})
    received = sock.recv(4096)
    assert b"200 OK" in received
    while b"data: {" not in received:
        received += sock.recv(4096)
    sock.close()
    after = wait_until(lambda: (s := health(server.url)["streams"])["open"] == 0 and s, timeout=5)
    assert after, "the stream kept its slot after its client left"
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["most_steps_after_cancel"] <= 1


def test_a_client_that_leaves_before_a_whole_reply_frees_its_slot(server):
    before = health(server.url)["streams"]["cancelled"]
    sock = open_stream(server.port, "/api/generate", {"stream": False, "options": {"num_predict": 100000}})
    assert wait_until(lambda: health(server.url)["streams"]["active"] == 1)
    sock.close()
    assert wait_until(lambda: (s := health(server.url)["streams"])["open"] == 0 and s["cancelled"] == before + 1, timeout=5)


def test_a_full_server_answers_503_with_retry_after_and_recovers(server):
    held = [open_stream(server.port, "/v1/completions", {"max_tokens": 90000, "stream": True}) for _ in range(6)]
    try:
        # Four run, two wait for a slot.
        assert wait_until(lambda: ((s := health(server.url)["streams"])["active"], s["queued"]) == (4, 2))
        status, reply, headers = call(server.url + "/v1/completions", {"max_tokens": 5})
        assert status == 503 and headers["Retry-After"] == "1"
        assert reply["error"]["code"] == "server_busy" and "4 streams running, 2 waiting" in reply["error"]["message"]
    finally:
        for sock in held:
            sock.close()
    assert wait_until(lambda: health(server.url)["streams"]["open"] == 0)
    assert complete(server, max_tokens=5)["choices"][0]["finish_reason"] == "length"


# ----------------------------------------------------------------------- bad requests

BAD_REQUESTS = {
    # id: (path, body or raw bytes, status, param, code)
    "malformed-json": ("/v1/completions", b'{"prompt": "a",', 400, None, "invalid_json"),
    "not-an-object": ("/v1/completions", b"[1, 2]", 400, None, "invalid_json"),
    "not-utf8": ("/v1/completions", b'{"prompt": "\xff"}', 400, None, "invalid_json"),
    "unknown-field": ("/v1/completions", {"prompt": "a", "temprature": 1}, 400, "temprature", "unknown_field"),
    "max-tokens-over-limit": ("/v1/completions", {"max_tokens": 100001}, 400, "max_tokens", "out_of_range"),
    "max-tokens-zero": ("/v1/completions", {"max_tokens": 0}, 400, "max_tokens", "out_of_range"),
    "max-tokens-text": ("/v1/completions", {"max_tokens": "ten"}, 400, "max_tokens", "invalid_type"),
    "max-tokens-fraction": ("/v1/completions", {"max_tokens": 2.5}, 400, "max_tokens", "invalid_type"),
    "temperature-negative": ("/v1/completions", {"temperature": -1}, 400, "temperature", "out_of_range"),
    "temperature-nan": ("/v1/completions", b'{"temperature": NaN}', 400, "temperature", "out_of_range"),
    "top-p-zero": ("/v1/completions", {"top_p": 0}, 400, "top_p", "out_of_range"),
    "seed-negative": ("/v1/completions", {"seed": -1}, 400, "seed", "out_of_range"),
    "seed-past-64-bits": ("/v1/completions", {"seed": 2**64}, 400, "seed", "out_of_range"),
    "n-over-limit": ("/v1/completions", {"n": 4}, 400, "n", "out_of_range"),
    "too-many-stops": ("/v1/completions", {"stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "out_of_range"),
    "empty-stop": ("/v1/completions", {"stop": [""]}, 400, "stop", "invalid_value"),
    "stream-not-bool": ("/v1/completions", {"stream": "yes"}, 400, "stream", "invalid_type"),
    "prompt-outside-vocabulary": ("/v1/completions", {"prompt": "Zebra 🙂"}, 400, "prompt", "characters_outside_vocabulary"),
    "prompt-too-long": ("/v1/completions", {"prompt": "a" * 201}, 400, "prompt", "prompt_too_long"),
    "prompt-not-text": ("/v1/completions", {"prompt": [1, 2]}, 400, "prompt", "invalid_type"),
    "penalty-asked": ("/v1/completions", {"frequency_penalty": 0.5}, 400, "frequency_penalty", "unsupported_value"),
    "other-model": ("/v1/completions", {"model": "gpt-4"}, 404, "model", "model_not_found"),
    "body-too-large": ("/v1/completions", {"prompt": "a" * 5000}, 413, None, "request_too_large"),
    "ollama-unknown-option": ("/api/generate", {"options": {"mirostat": 1}}, 400, "options.mirostat", "unknown_field"),
    "ollama-temperature": ("/api/generate", {"options": {"temperature": 5}}, 400, "options.temperature", "out_of_range"),
    "ollama-num-predict": ("/api/generate", {"options": {"num_predict": 0}}, 400, "options.num_predict", "out_of_range"),
    "ollama-options-not-object": ("/api/generate", {"options": [1]}, 400, "options", "invalid_type"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_bad_request_is_an_error_object_naming_the_field(server, case):
    path, body, status, param, code = BAD_REQUESTS[case]
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    got, reply, headers = call(server.url + path, raw=raw)
    assert got == status, reply
    assert headers["content-type"] == "application/json"
    error = reply["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["param"], error["code"]) == (param, code), error
    assert error["message"] and (param is None or error["message"].startswith(param))
    if case == "prompt-outside-vocabulary":
        assert "'Z'" in error["message"] and "🙂" in error["message"]


def test_unknown_paths_and_methods_are_error_objects_and_the_server_lives_on(server):
    status, reply, _ = call(server.url + "/v2/chat")
    assert status == 404 and reply["error"]["code"] == "not_found"
    status, reply, _ = call(server.url + "/v1/completions")
    assert status == 405 and reply["error"]["code"] == "method_not_allowed"
    assert health(server.url)["status"] == "ok"


# ------------------------------------------------------------------ OpenAI's client


def test_openai_client_completes_and_streams(server, model_id, model_and_vocab):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none-needed", max_retries=0)
    expected = reference(model_and_vocab, "[ROMEO] ", 5, 60, temperature=0.7)
    reply = client.completions.create(model=model_id, prompt="[ROMEO] ", max_tokens=60, seed=5, temperature=0.7)
    assert reply.choices[0].text == expected and reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 60
    pieces = client.completions.create(model=model_id, prompt="[ROMEO] ", max_tokens=60, seed=5, temperature=0.7, stream=True)
    assert "".join(chunk.choices[0].text for chunk in pieces) == expected
    assert [m.id for m in client.models.list()] == [model_id]
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model=model_id, prompt="Zebra", max_tokens=5)
    assert refused.value.body["param"] == "prompt"


# --------------------------------------------------------------- access and shutdown


def test_api_key_is_checked_on_every_request_and_cors_only_when_asked(server, trained_run):
    keyed = ServerProcess(trained_run, "--cors", "http://allowed.test", env={"CHARRNN_API_KEY": "s3cret"})
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            status, reply, answered = call(keyed.url + "/v1/completions", {"max_tokens": 3}, headers=headers)
            assert status == 401 and reply["error"]["code"] == "invalid_api_key" and answered["WWW-Authenticate"] == "Bearer"
        assert call(keyed.url + "/health")[0] == 401
        status, reply, _ = call(keyed.url + "/v1/completions", {"max_tokens": 3}, headers={"Authorization": "Bearer s3cret"})
        assert status == 200 and len(reply["choices"][0]["text"]) == 3
        status, page, _ = call(keyed.url + "/")  # the page holds nothing; it asks for the key
        assert status == 200 and "<title>charrnn playground</title>" in page
        preflight = {"Origin": "http://allowed.test", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
        status, _, answered = call(keyed.url + "/v1/completions", method="OPTIONS", headers=preflight)
        assert status == 200 and answered["Access-Control-Allow-Origin"] == "http://allowed.test"
        status, _, answered = call(keyed.url + "/v1/completions", method="OPTIONS", headers={**preflight, "Origin": "http://other.test"})
        assert answered.get("Access-Control-Allow-Origin") is None
    finally:
        keyed.stop()
    # The server without --cors says nothing to a browser about other origins.
    _, _, answered = call(server.url + "/health", headers={"Origin": "http://allowed.test"})
    assert answered.get("Access-Control-Allow-Origin") is None


def test_binding_beyond_loopback_needs_an_api_key(trained_run):
    import subprocess
    import sys

    from tests.conftest import REPO

    result = subprocess.run(
        [sys.executable, "-m", "charrnn", "serve", str(trained_run), "--host", "0.0.0.0"],
        capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "charrnn: invalid options: --host 0.0.0.0 lets other machines reach the model: give an API key "
        "with --api-key KEY (or CHARRNN_API_KEY), or serve on 127.0.0.1"
    ]


def _read_all(sock, into: list) -> None:
    while chunk := sock.recv(65536):
        into.append((time.monotonic(), chunk))


def test_sigterm_lets_streams_finish_within_the_grace_period_then_ends_them_saying_so(trained_run):
    grace = 3.0
    stopping = ServerProcess(trained_run, "--grace", str(grace), "--max-tokens-limit", str(10**7))
    endless = open_stream(stopping.port, "/v1/completions", {"max_tokens": 10**7, "stream": True})
    short = open_stream(stopping.port, "/api/generate", {"options": {"num_predict": 1500}})
    received: dict[str, list] = {"endless": [], "short": []}
    readers = [threading.Thread(target=_read_all, args=(s, received[name])) for name, s in (("endless", endless), ("short", short))]
    for reader in readers:
        reader.start()
    try:
        # Both streams under way: a request still in flight at the signal is turned away.
        assert wait_until(lambda: received["endless"] and received["short"])
        signalled = time.monotonic()
        stopping.signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(OSError):  # no new connections once stopping
            call(stopping.url + "/health", timeout=2)
        code = stopping.process.wait(grace + 10)
        for reader in readers:
            reader.join(5)
    finally:
        endless.close()
        short.close()
        stopping.stop()
    assert code == 0, "".join(stopping.stderr_lines)
    short_text = b"".join(chunk for _, chunk in received["short"]).decode()
    assert '"done_reason": "length"' in short_text and '"eval_count": 1500' in short_text
    endless_text = b"".join(chunk for _, chunk in received["endless"]).decode()
    assert max(t for t, _ in received["endless"]) - signalled >= grace - 0.2, "the stream was ended before its grace period"
    assert '"code": "server_shutdown"' in endless_text and "cut short after the 3 s grace period" in endless_text
    assert "data: [DONE]" in endless_text.split('"server_shutdown"')[-1]


def test_without_the_serve_extra_one_line_says_how_to_get_it(trained_run):
    import subprocess
    import sys

    from tests.conftest import REPO

    # None in sys.modules makes an import fail as a missing package does.
    code = "import sys; sys.modules['uvicorn'] = None; from charrnn.cli.app import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", code, "serve", str(trained_run)], capture_output=True, text=True, cwd=REPO, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["charrnn: invalid options: charrnn serve needs uvicorn: pip install 'charrnn[serve]'"]


def test_a_port_already_taken_is_one_line(trained_run):
    import socket
    import subprocess
    import sys

    from tests.conftest import REPO

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "charrnn", "serve", str(trained_run), "--port", str(port)],
            capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=60,
        )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"charrnn: invalid options: cannot listen on 127.0.0.1:{port}: Address already in use; choose another --port (0 picks a free one)"
    ]
