"""`charrnn explore` and the explorer's endpoints through a real server on a loopback port:
the figures against the model computed here, bad requests answered 4xx with the server still
up, the page at /explore of both commands, and Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tests.conftest import REPO, small_text
from tests.serving import ServerProcess, call, health

pytest.importorskip("starlette")
# Each test starts a server process (a few seconds each on a busy machine), as the serve tests do.
pytestmark = pytest.mark.slow

TEXT = small_text(4)


class ExploreProcess(ServerProcess):
    """``python -m charrnn explore RUN --no-browser --port 0``."""

    COMMAND = ("explore", "--no-browser")

    @staticmethod
    def url_in(line: str) -> str | None:
        return line.split(" on ", 1)[1].strip().removesuffix("/explore") if " on http://" in line else None


@pytest.fixture(scope="module")
def explorer(trained_run):
    server = ExploreProcess(trained_run, "--max-chars", "5000")
    yield server
    server.stop()


def test_explain_endpoint_figures(explorer, model_and_vocab):
    from charrnn.model.evaluation import evaluate
    from charrnn.units import nats_to_bpc

    model, vocab = model_and_vocab
    status, answer, _ = call(explorer.url + "/v1/explain", {"text": TEXT, "units": [{"layer": 1, "unit": 5}], "features": True, "gates": True})
    assert status == 200, answer
    ids = vocab.encode(TEXT)
    assert answer["bpc"] == pytest.approx(nats_to_bpc(evaluate(model, ids, torch.device("cpu"))), abs=1e-3)
    assert len(answer["tokens"]) == len(TEXT) and answer["bits"][0] is None and answer["top"][0] == []
    with torch.no_grad():
        logits, _, _ = model(torch.as_tensor(ids[:-1]).unsqueeze(0))
        out, _ = model.rnn(model.embedding(torch.as_tensor(ids).unsqueeze(0)))
    probs = torch.softmax(logits[0], -1)
    best = torch.topk(probs[40], 5)
    assert [vocab.encode(c)[0] for c, _ in answer["top"][41]] == best.indices.tolist()
    assert np.allclose([p for _, p in answer["top"][41]], best.values.numpy(), atol=1e-6)
    assert np.allclose(answer["units"][0]["values"], out[0, :, 5].numpy(), atol=1e-5)
    assert {f["feature"] for f in answer["features"]} >= {"position in line"}
    assert [g["gate"] for g in answer["gates"] if g["layer"] == 0] == ["input gate", "forget gate", "output gate"]


def test_memory_and_next_endpoints(explorer, model_and_vocab):
    model, vocab = model_and_vocab
    status, remembered, _ = call(explorer.url + "/v1/explain/memory", {"text": TEXT, "position": 150})
    assert status == 200 and remembered["start"] == 50 and len(remembered["norms"]) == 100
    body = {"text": TEXT, "temperature": 0.5, "top_k": 5, "seed": 3}
    status, first, _ = call(explorer.url + "/v1/explain/next", body)
    assert status == 200 and sum(first["probs"]) == pytest.approx(1, abs=1e-5)
    # The bars are the model's last logits at temperature 0.5, the five largest kept.
    with torch.no_grad():
        logits, _, _ = model(torch.as_tensor(vocab.encode(TEXT)).unsqueeze(0))
    last = logits[0, -1]
    kept = torch.full_like(last, float("-inf"))
    top = torch.topk(last, 5).indices
    kept[top] = last[top] / 0.5
    assert np.allclose(first["probs"], torch.softmax(kept, -1).numpy(), atol=1e-6)
    assert np.allclose(first["model_probs"], torch.softmax(last, -1).numpy(), atol=1e-6)
    assert sum(p > 0 for p in first["probs"]) <= 5 and first["probs"][first["chosen_id"]] > 0
    assert call(explorer.url + "/v1/explain/next", body)[1]["chosen"] == first["chosen"]  # seeded


BAD_REQUESTS = {
    "too-long": ("/v1/explain", {"text": "a" * 5001}, 413, "text_too_long"),
    "layer-out-of-range": ("/v1/explain", {"text": TEXT, "units": [{"layer": 2, "unit": 0}]}, 400, "out_of_range"),
    "unit-out-of-range": ("/v1/explain", {"text": TEXT, "units": [{"layer": 0, "unit": 32}]}, 400, "out_of_range"),
    "outside-vocabulary": ("/v1/explain", {"text": "ROMEO \u2603"}, 400, "characters_outside_vocabulary"),
    "empty-text": ("/v1/explain", {"text": ""}, 400, "invalid_value"),
    "text-not-a-string": ("/v1/explain", {"text": 3}, 400, "invalid_type"),
    "stretch-backwards": ("/v1/explain", {"text": TEXT, "stretch": [30, 10]}, 400, "invalid_value"),
    "lone-surrogate": ("/v1/explain", {"text": "a\udc80"}, 400, "invalid_text"),
    "unknown-field": ("/v1/explain", {"txt": TEXT}, 400, "unknown_field"),
    "memory-past-the-end": ("/v1/explain/memory", {"text": TEXT, "position": len(TEXT)}, 400, "invalid_value"),
    "negative-temperature": ("/v1/explain/next", {"text": TEXT, "temperature": -1}, 400, "out_of_range"),
    "top-p-zero": ("/v1/explain/next", {"text": TEXT, "top_p": 0}, 400, "out_of_range"),
    "body-too-large": ("/v1/explain", {"text": "a", "units": "x" * 130_000}, 413, "request_too_large"),
}


@pytest.mark.parametrize("path, body, status, code", list(BAD_REQUESTS.values()), ids=list(BAD_REQUESTS))
def test_bad_requests_are_answered_4xx_and_the_server_goes_on(explorer, path, body, status, code):
    got, answer, _ = call(explorer.url + path, body)
    assert (got, answer["error"]["code"]) == (status, code), answer
    assert health(explorer.url)["status"] == "ok"


def test_invalid_json_and_the_page(explorer):
    status, answer, _ = call(explorer.url + "/v1/explain", raw=b"{not json")
    assert status == 400 and answer["error"]["code"] == "invalid_json"
    status, page, head = call(explorer.url + "/explore")
    assert status == 200 and "charrnn explorer" in page
    assert not re.search(r"""(src|href|url)\s*[=(]\s*["']?(https?:)?//""", page)  # nothing from another host
    assert "<script src" not in page


def test_serve_has_the_explorer_page_too(trained_run):
    server = ServerProcess(trained_run, "--api-key", "k")
    try:
        assert call(server.url + "/explore")[0] == 200  # the page asks for the key itself
        assert call(server.url + "/v1/explain", {"text": TEXT})[0] == 401
        status, answer, _ = call(server.url + "/v1/explain", {"text": TEXT}, headers={"Authorization": "Bearer k"})
        assert status == 200 and answer["bpc"] > 0
    finally:
        server.stop()


def test_ctrl_c_stops_the_explorer_within_a_second(trained_run):
    server = ExploreProcess(trained_run)
    started = time.monotonic()
    server.signal(signal.SIGINT)
    try:
        while not any("stopped" in line for line in server.stderr_lines) and time.monotonic() - started < 10:
            time.sleep(0.01)
        said = time.monotonic() - started
        assert server.process.wait(15) == 0
        gone = time.monotonic() - started
    finally:
        server.stop()
    # Stopped listening when it says so, and the process gone within the second too.
    assert said < 1.0 and gone < 1.0, (said, gone, server.stderr_lines)


@pytest.mark.parametrize(
    "options, message",
    [
        (["--port", "70000"], "--port must be in [0, 65535]"),
        (["--max-chars", "0"], "--max-chars"),
    ],
    ids=["port-out-of-range", "max-chars-zero"],
)
def test_bad_options_are_one_line(trained_run, options, message):
    result = subprocess.run(
        [sys.executable, "-m", "charrnn", "explore", str(trained_run), "--no-browser", *options],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60,
    )
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_a_port_already_taken_is_one_line(trained_run):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "charrnn", "explore", str(trained_run), "--no-browser", "--port", str(port)],
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60,
        )
    assert result.returncode == 2 and "already in use" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
