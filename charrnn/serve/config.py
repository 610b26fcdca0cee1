"""The server's options and limits, checked before any model is loaded."""

from __future__ import annotations

import errno
import ipaddress
import re
from dataclasses import asdict, dataclass, field

from charrnn.errors import ConfigError
from charrnn.options import DEFAULTS, ServePrecision
from charrnn.ranges import check_ranges
from charrnn.text import require_valid
from charrnn.threads import check_thread_count

_SERVE = DEFAULTS["serve"]

API_KEY_ENV = "CHARRNN_API_KEY"


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name that may resolve to anything


@dataclass
class ServeConfig:
    host: str = _SERVE["host"]
    port: int = _SERVE["port"]
    max_streams: int = _SERVE["max_streams"]
    max_queue: int = _SERVE["max_queue"]
    max_tokens: int | None = None  # None: the default, or max_tokens_limit if that is lower
    max_tokens_limit: int = _SERVE["max_tokens_limit"]
    max_prompt: int = _SERVE["max_prompt"]
    max_body: int = _SERVE["max_body"]
    max_n: int = _SERVE["max_n"]
    grace: float = _SERVE["grace"]
    threads: int = _SERVE["threads"]
    precision: str = _SERVE["precision"]  # "auto", "fp32" or "bf16" (charrnn.precision)
    api_key: str | None = None
    cors: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        # Each of these reaches a socket call, the API key check (as bytes) or a header.
        require_valid(self.host, "--host")
        if self.api_key is not None:
            require_valid(self.api_key, f"--api-key (or {API_KEY_ENV})")
        for origin in self.cors:
            require_valid(origin, "--cors")
        check_ranges("serve", asdict(self))
        if self.max_tokens is None:
            self.max_tokens = min(_SERVE["max_tokens"], max(1, self.max_tokens_limit))
        checks = [
            (bool(self.host.strip()), "--host must not be empty"),
            (
                self.max_tokens <= self.max_tokens_limit,
                f"--max-tokens must be in 1..--max-tokens-limit ({self.max_tokens_limit})",
            ),
            (self.api_key is None or bool(self.api_key.strip()), f"--api-key (or {API_KEY_ENV}) must not be empty"),
            (all(origin.strip() for origin in self.cors), "--cors origins must not be empty"),
            (self.precision in {p.value for p in ServePrecision}, "--precision must be auto, fp32 or bf16 (the server runs on the CPU)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        check_thread_count(self.threads)
        for origin in self.cors:
            check_origin(origin)
        if not is_loopback(self.host) and self.api_key is None:
            raise ConfigError(
                f"--host {self.host} lets other machines reach the model: give an API key with "
                f"--api-key KEY (or {API_KEY_ENV}), or serve on 127.0.0.1"
            )


# What a browser sends as its Origin header (RFC 6454): a scheme, a host and a port only
# where it is not the scheme's own, lowercase, with no path. Starlette's CORS check compares
# the header with each --cors value as a string, so a value written any other way (a trailing
# slash, capitals, :443 after https) would never match, and the page would fail with no word
# from the server.
_ORIGIN = re.compile(r"(https?)://(\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*)(?::(\d{1,5}))?")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def check_origin(origin: str) -> None:
    """Refuse a --cors value that is neither ``*`` (every origin, which starlette allows) nor
    an origin exactly as browsers send it: ``http[s]://host[:port]``."""
    if origin == "*" or _as_sent(origin) == origin:
        return
    sent = _as_sent(origin.lower().rstrip("/"))
    hint = f" (browsers send {sent})" if sent else ""
    raise ConfigError(
        f"--cors {origin!r} is not an origin as a browser sends it: give http://host or https://host, with an "
        f"optional :port and no path, or * for every origin{hint}"
    )


def _as_sent(origin: str) -> str | None:
    """``origin`` as a browser's Origin header would carry it, or None if it names none."""
    found = _ORIGIN.fullmatch(origin)
    if found is None:
        return None
    scheme, host, port = found.group(1), found.group(2), found.group(6)
    if port is None:
        return f"{scheme}://{host}"
    if not 0 < int(port) <= 65535:
        return None
    return f"{scheme}://{host}" + ("" if int(port) == _DEFAULT_PORTS[scheme] else f":{int(port)}")


def require_server_packages() -> None:
    """The HTTP stack is an optional extra: say how to get it, in one line."""
    import importlib

    try:
        for name in ("starlette", "uvicorn"):
            importlib.import_module(name)
    except ImportError as exc:
        raise ConfigError(f"charrnn serve needs {exc.name}: pip install 'charrnn[serve]'") from None


def listening_socket(host: str, port: int):
    """A socket bound to host:port (port 0: a free one), or a one-line error that names the
    option at fault: --port only when the port is (taken, or privileged), --host when the
    address is not one of this machine's or the name does not resolve."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: the name does not resolve to an address ({exc.strerror}); give an address of this machine, such as 127.0.0.1") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(_bind_problem(host, port, exc)) from None
    sock.set_inheritable(True)
    return sock


def _bind_problem(host: str, port: int, exc: OSError) -> str:
    where = f"cannot listen on {host}:{port}: {exc.strerror}"
    if exc.errno == errno.EADDRINUSE:
        return f"{where}; choose another --port (0 picks a free one)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{where}: {host} is not an address of this machine; choose another --host (127.0.0.1 for this machine only, 0.0.0.0 for all its addresses)"
    if exc.errno == errno.EACCES and 0 < port < 1024:
        return f"{where}: ports below 1024 need administrator rights; choose a --port of 1024 or more"
    return where
