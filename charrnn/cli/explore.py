"""`charrnn explore`: the explorer page on a local server."""

import os
from typing import Annotated, Optional

import typer

from charrnn.cli import leave_when_stopped
from charrnn.cli.shared import RunArgument, BestOption, err, ranged
from charrnn.options import DEFAULTS

EXPLORE = DEFAULTS["explore"]


def explore(
    checkpoint: RunArgument,
    port: Annotated[int, ranged("serve", "port", help="Port to listen on (127.0.0.1 only); 0 picks a free one. The address is printed.")] = EXPLORE["port"],
    max_chars: Annotated[int, ranged("explore", "max_chars", checked=True, help="The longest text the page analyses, in characters.")] = EXPLORE["max_chars"],
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Only print the page's address; do not open a browser.")] = False,
    best: BestOption = False,
) -> None:
    """Watch the model read: a page where typed text is coloured by the model's surprise, with its guesses, units, gates, memory and step-by-step generation."""
    from charrnn.serve.config import ServeConfig, require_server_packages

    # Loopback only, no API key; a Ctrl-C ends it at once (no streams to wait for).
    config = ServeConfig(host="127.0.0.1", port=port, grace=0.0, threads=1)
    require_server_packages()
    from charrnn import checkpoint as ckpt
    from charrnn.cli.serve import model_facts
    from charrnn.explore.app import PAGE, ROUTES, Explorer
    from charrnn.model.loading import load_model
    from charrnn.serve.app import serve as run_server

    path = ckpt.resolve(checkpoint, "best" if best else "last")
    model, vocab, saved = load_model(path, device="cpu")
    model_id = (checkpoint if checkpoint.is_dir() else path.parent).resolve().name
    explorer = Explorer(model, vocab, max_chars=max_chars)
    m = model.config

    def announce(url: Optional[str]) -> None:
        if url is None:
            os.write(2, b"stopping\n")  # from the signal handler: os.write, as a buffered stream may be mid-write
            return
        page = f"{url}{PAGE}"
        err.print(f"exploring {model_id} ({m.cell.upper()} {m.layers}x{m.hidden}, vocabulary {len(vocab)}) on {page}\n  Ctrl-C stops", markup=False)
        if not no_browser:
            import threading
            import webbrowser

            threading.Thread(target=webbrowser.open, args=(page,), daemon=True).start()

    facts = model_facts(model, vocab, saved, config.max_tokens_limit)
    run_server(model, vocab, model_id, facts, config, announce, explorer.routes(), (PAGE,), ROUTES)
    err.print("stopped", markup=False)
    leave_when_stopped()
