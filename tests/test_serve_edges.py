"""`charrnn serve` at its edges, through real servers on loopback ports: text that is not
Unicode in any field of a request, odd but valid JSON, a prompt long enough to stall the
batch if it were primed in one pass, and an address the server cannot listen on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, VERSE, sample_text
from tests.prime_gap import OPTIONS, long_prompt, measure
from tests.serving import ServerProcess, call, health, open_stream, wait_until

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(trained_run):
    process = ServerProcess(trained_run, *OPTIONS, "--max-streams", "4", "--max-n", "3")
    yield process
    assert process.stop() == 0, "".join(process.stderr_lines)


def _error(server, path: str, raw: bytes) -> tuple[int, dict]:
    status, reply, headers = call(server.url + path, raw=raw)
    assert headers["content-type"] == "application/json", reply
    assert set(reply["error"]) == {"message", "type", "param", "code"}, reply
    return status, reply["error"]


# --------------------------------------------------------------- text that is not Unicode

# JSON's \uXXXX escapes carry lone surrogates through a body that is valid UTF-8 and valid
# JSON; json.dumps writes them as such escapes. id: (path, body, param)
INVALID_TEXT = {
    "prompt": ("/v1/completions", {"prompt": "\udc80abc", "max_tokens": 5}, "prompt"),
    "prompt-in-array": ("/v1/completions", {"prompt": ["ab\ud800"]}, "prompt[0]"),
    "stop": ("/v1/completions", {"stop": "\udc80", "max_tokens": 5}, "stop"),
    "second-stop": ("/v1/completions", {"stop": ["a", "b\udfff"]}, "stop[1]"),
    "model": ("/v1/completions", {"model": "\ud800"}, "model"),
    "user": ("/v1/completions", {"user": "\ud800", "max_tokens": 5}, "user"),
    "suffix": ("/v1/completions", {"suffix": "\udc80"}, "suffix"),
    "field-name": ("/v1/completions", {"\ud800": 1}, None),
    "stream-options-field-name": ("/v1/completions", {"stream": True, "stream_options": {"\ud800": 1}}, "stream_options"),
    "logit-bias-key": ("/v1/completions", {"logit_bias": {"\udc80": 1}}, "logit_bias"),
    "ollama-prompt": ("/api/generate", {"prompt": "\udc80abc", "options": {"num_predict": 5}}, "prompt"),
    "ollama-stop": ("/api/generate", {"options": {"stop": ["\udc80"], "num_predict": 3}}, "options.stop[0]"),
    "ollama-model": ("/api/generate", {"model": "run\udcff"}, "model"),
    "ollama-keep-alive": ("/api/generate", {"keep_alive": "\ud800", "options": {"num_predict": 3}}, "keep_alive"),
    "ollama-option-name": ("/api/generate", {"options": {"\ud800": 1}}, "options"),
}


@pytest.mark.parametrize("case", INVALID_TEXT, ids=list(INVALID_TEXT))
def test_text_that_is_not_unicode_is_a_400_naming_its_field(server, case):
    path, body, param = INVALID_TEXT[case]
    raw = json.dumps(body).encode()
    assert b"\\u" in raw  # the surrogate travels as an escape: the body itself is UTF-8
    status, error = _error(server, path, raw)
    assert status == 400, error
    assert (error["param"], error["code"], error["type"]) == (param, "invalid_text", "invalid_request_error")
    assert error["message"].startswith(param or "a field name"), error
    assert "is not valid UTF-8 text: a lone surrogate U+D" in error["message"]


@pytest.mark.parametrize("path", ["/v1/completions", "/api/generate"])
@pytest.mark.parametrize("raw, bad", [(b'{"prompt": "caf\xe9"}', "0xe9"), (b'{"prompt": "\xed\xa0\x80"}', "0xed")], ids=["latin-1", "encoded-surrogate"])
def test_a_body_that_is_not_utf8_is_a_400_naming_the_byte(server, path, raw, bad):
    status, error = _error(server, path, raw)
    assert status == 400 and (error["param"], error["code"]) == (None, "invalid_json")
    assert error["message"].startswith(f"the request body is not valid UTF-8 text: byte {bad} at byte ")


# ------------------------------------------------------------------- odd but valid JSON

HUGE = "9" * 400  # past a float's range (1e308)
ODD_JSON = {
    # id: (path, raw body, status, param, code)
    "empty-body": ("/v1/completions", b"", 400, None, "invalid_json"),
    "a-string": ("/api/generate", b'"prompt"', 400, None, "invalid_json"),
    "null": ("/v1/completions", b"null", 400, None, "invalid_json"),
    "a-number": ("/api/generate", b"7", 400, None, "invalid_json"),
    "integer-past-the-digit-limit": ("/v1/completions", b'{"max_tokens": ' + b"9" * 5000 + b"}", 400, None, "invalid_json"),
    "huge-max-tokens": ("/v1/completions", f'{{"max_tokens": {HUGE}}}'.encode(), 400, "max_tokens", "out_of_range"),
    "huge-temperature": ("/v1/completions", f'{{"temperature": {HUGE}}}'.encode(), 400, "temperature", "out_of_range"),
    "huge-negative-top-p": ("/v1/completions", f'{{"top_p": -{HUGE}}}'.encode(), 400, "top_p", "out_of_range"),
    "huge-seed": ("/v1/completions", f'{{"seed": {HUGE}}}'.encode(), 400, "seed", "out_of_range"),
    "huge-n": ("/v1/completions", f'{{"n": {HUGE}}}'.encode(), 400, "n", "out_of_range"),
    "ollama-huge-top-k": ("/api/generate", f'{{"options": {{"top_k": {HUGE}}}}}'.encode(), 400, "options.top_k", "out_of_range"),
    "ollama-huge-num-predict": ("/api/generate", f'{{"options": {{"num_predict": -{HUGE}}}}}'.encode(), 400, "options.num_predict", "out_of_range"),
    "infinity-temperature": ("/v1/completions", b'{"temperature": Infinity}', 400, "temperature", "out_of_range"),
    "minus-infinity-top-p": ("/api/generate", b'{"options": {"top_p": -Infinity}}', 400, "options.top_p", "out_of_range"),
    "nan-seed": ("/api/generate", b'{"options": {"seed": NaN}}', 400, "options.seed", "invalid_type"),
    "infinity-max-tokens": ("/v1/completions", b'{"max_tokens": Infinity}', 400, "max_tokens", "invalid_type"),
    "negative-max-tokens": ("/v1/completions", b'{"max_tokens": -5}', 400, "max_tokens", "out_of_range"),
    "negative-n": ("/v1/completions", b'{"n": -1}', 400, "n", "out_of_range"),
    "array-for-model": ("/v1/completions", b'{"model": ["run"]}', 400, "model", "invalid_type"),
    "object-for-model": ("/api/generate", b'{"model": {"name": "run"}}', 400, "model", "invalid_type"),
    "number-for-model": ("/v1/completions", b'{"model": 3}', 400, "model", "invalid_type"),
    "array-of-numbers-for-stop": ("/v1/completions", b'{"stop": [1]}', 400, "stop", "invalid_type"),
    "nested-array-for-prompt": ("/v1/completions", b'{"prompt": [["a"]]}', 400, "prompt", "invalid_type"),
    "object-for-prompt": ("/api/generate", b'{"prompt": {"text": "a"}}', 400, "prompt", "invalid_type"),
    "array-for-user": ("/v1/completions", b'{"user": ["me"]}', 400, "user", "invalid_type"),
    "zero-for-options": ("/api/generate", b'{"options": 0}', 400, "options", "invalid_type"),
    "false-for-options": ("/api/generate", b'{"options": false}', 400, "options", "invalid_type"),
    "fractional-no-limit": ("/api/generate", b'{"stream": false, "options": {"num_predict": -1.0}}', 400, "options.num_predict", "invalid_type"),
    "object-for-stream": ("/api/generate", b'{"stream": {}}', 400, "stream", "invalid_type"),
    "object-for-keep-alive": ("/api/generate", b'{"keep_alive": {}}', 400, "keep_alive", "invalid_type"),
    "deeply-nested": ("/v1/completions", b'{"user": ' + b"[" * 100000 + b"]" * 100000 + b"}", 400, None, "invalid_json"),
}


@pytest.mark.parametrize("case", ODD_JSON, ids=list(ODD_JSON))
def test_odd_but_valid_json_is_a_4xx_naming_the_field_and_the_server_lives_on(server, case):
    path, raw, status, param, code = ODD_JSON[case]
    got, error = _error(server, path, raw)
    assert got == status, error
    assert (error["param"], error["code"]) == (param, code), error
    assert param is None or error["message"].startswith(param)
    assert len(error["message"]) < 300, "a number or a body was echoed whole"
    assert health(server.url)["status"] == "ok"


def test_other_endpoints_answer_odd_paths_and_methods_with_error_objects(server):
    status, error = _error(server, "/%ED%A0%80", None)  # a percent-escaped lone surrogate
    assert status == 404 and error["code"] == "not_found"
    for path in ("/", "/health", "/v1/models"):
        status, reply, _ = call(server.url + path, raw=b'{"prompt": "\\udc80"}')  # POST: not allowed
        assert status == 405 and reply["error"]["code"] == "method_not_allowed"
    status, page, _ = call(server.url + "/?q=%ff")
    assert status == 200 and "<title>charrnn playground</title>" in page
    assert health(server.url)["status"] == "ok"


def test_a_run_whose_name_is_not_utf8_is_served_under_an_escaped_name(trained_run, tmp_path):
    # The model's name goes into every reply; the run directory's name comes from the disk.
    run = Path(os.fsdecode(os.fsencode(tmp_path) + b"/run\xff"))
    shutil.copytree(trained_run, run)
    odd = ServerProcess(run)
    try:
        status, listing, _ = call(odd.url + "/v1/models")
        assert status == 200 and listing["data"][0]["id"] == "run\\xff"
        status, reply, _ = call(odd.url + "/v1/completions", {"model": "run\\xff", "max_tokens": 4})
        assert status == 200 and reply["model"] == "run\\xff" and len(reply["choices"][0]["text"]) == 4
    finally:
        assert odd.stop() == 0, "".join(odd.stderr_lines)


# ---------------------------------------------------------------- a long prompt's priming

PROMPT_CHARS = 400_000


def test_a_long_prompt_is_primed_in_pieces_between_the_running_streams_steps(server, model_and_vocab):
    before = health(server.url)["streams"]
    results = measure(server.port, [PROMPT_CHARS], VERSE, quiet=0.5, predict=30, seed=12)
    after = health(server.url)["streams"]
    gap, primed_seconds, reply = results[PROMPT_CHARS]
    # The held stream's longest wait is a small part of the prompt's priming (in one pass it
    # was all of it).
    assert gap < primed_seconds / 4, (gap, primed_seconds, results["no prompt"])
    # Primed in several pieces, none of them the whole prompt.
    assert after["prime_pieces"] - before["prime_pieces"] >= 3
    assert after["longest_prime_piece"] < PROMPT_CHARS
    # Pieces change nothing: the text is charrnn sample's after one pass over the prompt.
    expected = sample_text(model_and_vocab, prime=long_prompt(PROMPT_CHARS, VERSE), seed=12, length=30)
    assert reply["response"] == expected and reply["prompt_eval_count"] == PROMPT_CHARS


def test_a_client_that_leaves_while_its_prompt_is_primed_stops_the_priming(server):
    before = health(server.url)["streams"]
    prompt = long_prompt(900_000, VERSE)
    sock = open_stream(server.port, "/api/generate", {"prompt": prompt, "stream": False, "options": {"num_predict": 5}})
    try:
        assert wait_until(lambda: health(server.url)["streams"]["priming"] == 1, timeout=30)
    finally:
        sock.close()
    after = wait_until(lambda: (s := health(server.url)["streams"])["open"] == 0 and s, timeout=30)
    assert after, "the stream kept its slot after its client left"
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["primed_chars"] - before["primed_chars"] < len(prompt), "the whole prompt was primed for nobody"


# --------------------------------------------------------------------- where to listen


def _charrnn(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("charrnn")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "charrnn"]
    environ = {k: v for k, v in os.environ.items() if k != "CHARRNN_API_KEY"}
    environ.update({"PYTHONPATH": str(REPO), **(env or {})})
    return subprocess.run([*command, *args], capture_output=True, env=environ, timeout=60)


def test_an_address_not_on_this_machine_names_host_not_port(trained_run):
    # 8.8.8.8 is no address of this machine: bind() refuses it at once, and nothing is sent.
    result = _charrnn("serve", str(trained_run), "--host", "8.8.8.8", "--api-key", "k", "--port", "8123")
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert lines == [
        "charrnn: invalid options: cannot listen on 8.8.8.8:8123: Cannot assign requested address: 8.8.8.8 is not "
        "an address of this machine; choose another --host (127.0.0.1 for this machine only, 0.0.0.0 for all its addresses)"
    ]
    assert "--port" not in lines[0]


@pytest.mark.parametrize("given", ["option", "environment"])
def test_an_api_key_that_is_not_utf8_is_one_line(trained_run, given):
    key = os.fsdecode(b"k\xff")  # the byte 0xff, as Python holds an undecodable argument
    if given == "option":
        result = _charrnn("serve", str(trained_run), "--api-key", key, "--port", "0")
    else:
        result = _charrnn("serve", str(trained_run), "--port", "0", env={"CHARRNN_API_KEY": key})
    assert result.returncode == 2
    [line] = result.stderr.decode().strip().splitlines()
    assert line.startswith("charrnn: invalid text: --api-key")
    assert line.endswith("is not valid UTF-8 text: byte 0xff at character 1")
