"""`charrnn serve`: the HTTP server."""

import os
from typing import Annotated, Optional

import typer

from charrnn.cli import leave_when_stopped
from charrnn.cli.shared import DEVICE, RunArgument, BestOption, err, ranged, say_precision
from charrnn.options import DEFAULTS, ServePrecision

SERVE = DEFAULTS["serve"]
LIMITS = "Limits"
ACCESS = "Access"


def serve(
    checkpoint: RunArgument,
    host: Annotated[str, typer.Option(help="Address to listen on; another than loopback needs --api-key.", rich_help_panel=ACCESS)] = SERVE["host"],
    port: Annotated[int, ranged("serve", "port", help="Port to listen on; 0 picks a free one (the address is printed).", rich_help_panel=ACCESS)] = SERVE["port"],
    api_key: Annotated[Optional[str], typer.Option(envvar="CHARRNN_API_KEY", show_envvar=True, help="Require Authorization: Bearer KEY on every request (the playground page asks for it). \\[default: none on loopback]", show_default=False, rich_help_panel=ACCESS)] = None,
    cors: Annotated[Optional[list[str]], typer.Option(metavar="ORIGIN", help="Let pages from this origin call the API from a browser (repeatable). \\[default: none]", show_default=False, rich_help_panel=ACCESS)] = None,
    max_streams: Annotated[int, ranged("serve", "max_streams", help="Streams advanced together in one batched step.", rich_help_panel=LIMITS)] = SERVE["max_streams"],
    max_queue: Annotated[int, ranged("serve", "max_queue", help="Streams waiting for a slot; past this a request is answered 503 with Retry-After.", rich_help_panel=LIMITS)] = SERVE["max_queue"],
    max_tokens: Annotated[Optional[int], ranged("serve", "max_tokens", help=f"Characters made when a request gives no max_tokens (num_predict). \\[default: {SERVE['max_tokens']}, or --max-tokens-limit if lower]", show_default=False, rich_help_panel=LIMITS)] = None,
    max_tokens_limit: Annotated[int, ranged("serve", "max_tokens_limit", help="The most max_tokens a request may ask for.", rich_help_panel=LIMITS)] = SERVE["max_tokens_limit"],
    max_prompt: Annotated[int, ranged("serve", "max_prompt", help="The longest prompt, in characters.", rich_help_panel=LIMITS)] = SERVE["max_prompt"],
    max_body: Annotated[int, ranged("serve", "max_body", help="The largest request body, in bytes.", rich_help_panel=LIMITS)] = SERVE["max_body"],
    max_n: Annotated[int, ranged("serve", "max_n", help="The most completions (n) one request may ask for.", rich_help_panel=LIMITS)] = SERVE["max_n"],
    grace: Annotated[float, ranged("serve", "grace", help="Seconds running streams get to finish after SIGTERM or Ctrl-C; then each ends with an event that says so.")] = SERVE["grace"],
    threads: Annotated[int, ranged("serve", "threads", help="CPU threads of the model step (the event loop that serves HTTP runs beside it).")] = SERVE["threads"],
    precision: Annotated[ServePrecision, typer.Option(help="Arithmetic of the model's products: fp32; bf16 on a CPU with native bf16 instructions (avx512_bf16, amx_bf16); auto = bf16 where a short probe of a step of --max-streams rows finds it at least 1.25x fp32's speed, else fp32. Same seed, same text within one precision.", rich_help_panel=DEVICE)] = ServePrecision(SERVE["precision"]),
    best: BestOption = False,
) -> None:
    """Serve a model over HTTP to many clients at once: OpenAI-compatible /v1/completions,
    Ollama-style /api/generate, a playground page at /, and the explorer page at /explore."""
    from charrnn.serve.config import ServeConfig, require_server_packages

    from charrnn.text import require_valid

    for value, option in ((host, "--host"), (api_key or "", "--api-key"), *((origin, "--cors") for origin in cors or ())):
        require_valid(value, option)
    config = ServeConfig(
        host=host, port=port, max_streams=max_streams, max_queue=max_queue, max_tokens=max_tokens,
        max_tokens_limit=max_tokens_limit, max_prompt=max_prompt, max_body=max_body, max_n=max_n,
        grace=grace, threads=threads, precision=precision.value, api_key=api_key, cors=tuple(cors or ()),
    )
    require_server_packages()
    from charrnn import checkpoint as ckpt
    from charrnn.model.loading import load_model
    from dataclasses import replace

    import torch

    from charrnn.precision import DTYPE_NAMES
    from charrnn.serve.app import serve as run_server, serving_precision
    from charrnn.serve.config import listening_socket

    path = ckpt.resolve(checkpoint, "best" if best else "last")
    model, vocab, saved = load_model(path, device="cpu")
    model_id = (checkpoint if checkpoint.is_dir() else path.parent).resolve().name
    m = model.config
    facts = model_facts(model, vocab, saved, max_tokens_limit)
    sock = listening_socket(config.host, config.port)  # before the probe: a taken port is answered at once
    dtype, probe = serving_precision(model, config)
    say_precision(config.precision, dtype, torch.device("cpu"), probe)
    config = replace(config, precision=DTYPE_NAMES[dtype])  # chosen once: the server does not probe again

    def announce(url: Optional[str]) -> None:
        if url is None:
            # From the signal handler: os.write, as a buffered stream may be mid-write.
            os.write(2, f"stopping: no new requests; running streams get {grace:g} s to finish (Ctrl-C again quits at once)\n".encode())
            return
        err.print(
            f"serving {model_id} ({m.cell.upper()} {m.layers}x{m.hidden}, vocabulary {len(vocab)}) on {url}\n"
            f"  playground {url}/   explorer {url}/explore   OpenAI {url}/v1   Ollama {url}/api/generate\n"
            f"  up to {max_streams} streams at once, {max_queue} waiting; "
            + ("API key required" if api_key else "no API key")
            + "; Ctrl-C or SIGTERM stops",
            markup=False,
        )

    from charrnn.explore.app import PAGE, ROUTES, Explorer

    explorer = Explorer(model, vocab)
    run_server(model, vocab, model_id, facts, config, announce, explorer.routes(), (PAGE,), ROUTES, sock)
    err.print("stopped", markup=False)
    leave_when_stopped()


def model_facts(model, vocab, saved, max_tokens_limit: int) -> dict:
    """What /v1/models says of the model beside its id."""
    m = model.config
    return {
        "cell": m.cell, "layers": m.layers, "hidden": m.hidden, "vocab_size": len(vocab),
        "parameters": model.num_parameters(), "step": saved.metrics.step, "max_tokens_limit": max_tokens_limit,
    }
