"""A sweep of the odd inputs a new user might try, through the real CLI.

Every case runs ``python -m charrnn ...`` as a subprocess (cwd a directory of its own holding a
copy of one tiny real run and its text; CHARRNN_CACHE in tmp; DEBUG unset; address space
limited to 4 GiB) and is held to the project's promises:

  - the exit code: 0 for what should work; non-zero for what should be refused (2 for an
    invalid option, 1 otherwise; pinned where the case is clearly an invalid option);
  - never "Traceback", never "internal error", on either stream;
  - a refusal is exactly one non-empty line on stderr, starting with ``charrnn: `` and saying
    what was wrong (a fragment per case), and nothing on stdout;
  - the files it was given are unchanged afterwards (the run's checkpoints and other files,
    the text, every input file a case names), and special files stay what they were;
  - per case, that what should work did what a user wants (a file written, text on stdout).

/dev/null as an output (--out, --png, --dump-states) is expected to be refused in one line,
like every other special file: the user wants the output thrown away, but every output is
written through an atomic rename that would replace the device node itself (these tests run as
root), so a clear "name a regular file" is the safe answer; /dev/null must stay a character
device whatever the command does. As an input text it is an empty file, refused as such.

Ctrl-C cases send SIGINT to the process group, as a terminal does: the command must exit 130
within about a second (1.5 s allowed on busy cores), its last stderr line one ``charrnn: `` line
(training's own "stopped at step N; checkpoint saved" report instead). Killed by the signal
before Python could handle it counts as 130 too (a shell shows 130), a traceback does not; one
case sends SIGINT the moment Python handles it, while charrnn's modules are being imported.
Interactive cases feed stdin. A few cases speak HTTP to one server and check for 4xx JSON
answers and a server that stays up. As root, the cases about file permissions run with
CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH dropped, so that chmod means what it says.

The cases run a few at a time in a pool before the first test reads its result, so that the
module stays within a few minutes on two busy cores; ``-k`` runs only the selected cases.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import dataclasses
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional

import pytest

from tests.conftest import REPO, small_text

pytestmark = pytest.mark.slow

TINY = ["--layers", "1", "--hidden", "32", "--embed", "8", "--batch-size", "8", "--seq-len", "32"]
SHORT = ["--max-steps", "30", "--eval-every", "10"]
MEMORY_LIMIT = 4 << 30
WORKERS = 3
INTERRUPT_BOUND_S = 1.5  # "within a second", with a little room for two busy cores
ROOT = os.geteuid() == 0


# ------------------------------------------------------------------------------ the cases


@dataclasses.dataclass
class Ctx:
    dir: Path  # the case's working directory
    base: Path  # the module's directory: the trained runs and their text
    protect: list = dataclasses.field(default_factory=list)  # more files that must not change
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def run(self) -> Path:
        return self.dir / "run"

    @property
    def text(self) -> Path:
        return self.dir / "verse.txt"

    @property
    def training_text(self) -> Path:
        """The text the run records as its training text (default of inspect, gradients)."""
        return self.base / "verse.txt"


@dataclasses.dataclass
class Case:
    id: str
    args: list  # after "charrnn": str, bytes, or callable(ctx) -> str | bytes
    expect: str  # ok | refused | either | interrupted
    fragment: str = ""  # regex (case-insensitive) the refusal line must contain
    code: Optional[int] = None  # exit code of a refusal, where it is clearly an invalid option
    setup: Optional[Callable] = None
    check: Optional[Callable] = None  # (ctx, result) -> None, asserting on a success
    stdin: Optional[bytes] = None
    timeout: float = 60.0
    sigint: Optional[str] = None  # "imports": once Python handles SIGINT; "startup": 0.5 s; "running": 1 s after output
    serial: bool = False  # run alone (timing, or it may damage what other cases share)
    mutates_run: bool = False  # the case is meant to change the run (a resume)
    permissions: bool = False  # file permissions matter (as root: run without the override)
    http: Optional[dict] = None  # an HTTP request to the shared server instead of a command
    prefix: bool = True  # after Ctrl-C the last line is a "charrnn: " line (train: its own stop report)
    accepted_when: Optional[str] = None  # stderr regex that means the command went ahead: stop it there


def C(id, args, expect, fragment="", **kw) -> Case:
    return Case(id, list(args), expect, fragment, **kw)


# Setups ---------------------------------------------------------------------------------


def write(name, content):
    def setup(ctx: Ctx):
        path = ctx.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        ctx.protect.append(path)

    return setup


def mkdir(name):
    def setup(ctx: Ctx):
        (ctx.dir / name).mkdir(parents=True, exist_ok=True)

    return setup


def fifo(name):
    def setup(ctx: Ctx):
        os.mkfifo(ctx.dir / name)

    return setup


def symlink(name, target):
    def setup(ctx: Ctx):
        (ctx.dir / name).symlink_to(target)

    return setup


def copy_run(name, source="run"):
    """A copy of the case's run (or the module's GRU run) under another name; protected."""

    def setup(ctx: Ctx):
        src = ctx.base / "gru" if source == "gru" else ctx.run
        dst = ctx.dir / name
        shutil.copytree(src, dst)
        ctx.protect.extend(p for p in dst.rglob("*") if p.is_file())

    return setup


def without(name):
    def setup(ctx: Ctx):
        (ctx.run / name).unlink()

    return setup


def truncated(name):
    def setup(ctx: Ctx):
        data = (ctx.run / "last.pt").read_bytes()
        (ctx.dir / name).write_bytes(data[: len(data) // 2])
        ctx.protect.append(ctx.dir / name)

    return setup


def corrupted(name):
    def setup(ctx: Ctx):
        data = bytearray((ctx.run / "last.pt").read_bytes())
        for i in range(64, len(data), 97):
            data[i] ^= 0x5A
        (ctx.dir / name).write_bytes(bytes(data))
        ctx.protect.append(ctx.dir / name)

    return setup


def unreadable(name, content="some text\n" * 20):
    def setup(ctx: Ctx):
        path = ctx.dir / name
        path.write_text(content)
        path.chmod(0)

    return setup


def readonly_file(name, content="mine\n"):
    def setup(ctx: Ctx):
        path = ctx.dir / name
        path.write_text(content)
        path.chmod(0o444)
        ctx.protect.append(path)

    return setup


def readonly_dir(name):
    def setup(ctx: Ctx):
        path = ctx.dir / name
        path.mkdir()
        path.chmod(0o555)

    return setup


def bound_port(ctx: Ctx):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    ctx.extra["socket"] = sock
    ctx.extra["port"] = str(sock.getsockname()[1])


def both(*setups):
    def setup(ctx: Ctx):
        for one in setups:
            one(ctx)

    return setup


def port(ctx: Ctx) -> str:
    return ctx.extra["port"]


# Checks on a success -----------------------------------------------------------------------


def wrote(name, magic: bytes | None = None):
    def check(ctx: Ctx, res):
        path = ctx.dir / name
        assert path.is_file(), f"{name} was not written"
        assert path.stat().st_size > 0, f"{name} is empty"
        if magic is not None:
            assert path.read_bytes().startswith(magic), f"{name} does not start with {magic!r}"

    return check


def stdout_has(pattern):
    def check(ctx: Ctx, res):
        assert re.search(pattern, res.out, re.S), f"stdout lacks {pattern!r}: {res.out[-300:]!r}"

    return check


def stderr_has(pattern):
    def check(ctx: Ctx, res):
        assert re.search(pattern, res.err, re.S | re.I), f"stderr lacks {pattern!r}: {res.err[-600:]!r}"

    return check


def stdout_chars(at_least: int):
    def check(ctx: Ctx, res):
        assert len(res.out) >= at_least, f"only {len(res.out)} characters on stdout"

    return check


def json_stdout(ctx: Ctx, res):
    json.loads(res.out)


def run_dir(name):
    return wrote(f"{name}/last.pt", b"CHARRNN\n")


def all_of(*checks):
    def check(ctx, res):
        for one in checks:
            one(ctx, res)

    return check


# TOML files --------------------------------------------------------------------------------

TOML_BROKEN = 'paths = ["verse.txt"\nbatch-size = = 8\n[[[\n'
TOML_UNKNOWN = 'paths = ["verse.txt"]\nbatchsize = 8\nlayers = 1\n'
TOML_WRONG_TYPE = 'paths = ["verse.txt"]\nhidden = "thirty-two"\n'
TOML_PATHS_NUMBER = "paths = 5\n"
TOML_OUT_OF_RANGE = 'paths = ["verse.txt"]\nlayers = 0\n'
TOML_NAN = 'paths = ["verse.txt"]\ndropout = nan\n'

R = "run"  # the case's copy of the trained LSTM run
SERVING = r"serving .* on http://"  # the server listens: it accepted its options


def _cases() -> list[Case]:
    cases: list[Case] = []
    add = cases.append

    # ---------------------------------------------------------------------- general
    add(C("charrnn-unknown-command", ["bogus"], "refused", r"bogus", code=2))
    add(C("charrnn-version", ["--version"], "ok", check=stdout_has(r"charrnn \d")))
    add(C("sample-no-checkpoint-argument", ["sample"], "refused", r"missing|checkpoint", code=2))
    add(C("sample-option-name-with-non-utf8-byte", ["sample", R, b"--l\xffength", "5"], "refused", r"option|length", code=2))
    add(C("sample-leading-dash-run-name", ["sample", "-myrun", "--length", "5"], "refused", r"-m|option", code=2))
    add(C("corpus-unknown-subcommand", ["corpus", "bogus"], "refused", r"bogus", code=2))

    # ---------------------------------------------------------------------- train: text
    add(C("train-text-empty-file", ["train", "empty.txt", "--out", "out", *TINY, *SHORT], "refused", r"empty", setup=write("empty.txt", "")))
    add(C("train-text-devnull", ["train", "/dev/null", "--out", "out", *TINY, *SHORT], "refused", r"/dev/null"))
    add(C("train-text-devzero", ["train", "/dev/zero", "--out", "out", *TINY, *SHORT], "refused", r"/dev/zero", timeout=30))
    add(C("train-text-unreadable", ["train", "secret.txt", "--out", "out", *TINY, *SHORT], "refused", r"secret\.txt.*(permission|read)", setup=unreadable("secret.txt"), permissions=True))
    add(C("train-text-name-with-space-and-newline", ["train", "my verse\nfile.txt", "--out", "out", *TINY, *SHORT], "ok", setup=write("my verse\nfile.txt", small_text(60)), check=run_dir("out")))
    add(C("train-text-leading-dash-after-double-dash", ["train", "--out", "out", *TINY, *SHORT, "--", "-notes.txt"], "ok", setup=write("-notes.txt", small_text(60)), check=run_dir("out")))
    add(C("train-text-leading-dash-without-double-dash", ["train", "-notes.txt", "--out", "out"], "refused", r"-n|option", code=2, setup=write("-notes.txt", small_text(60))))
    add(C("train-encoding-bogus", ["train", "verse.txt", "--encoding", "klingon-8", "--out", "out", *TINY, *SHORT], "refused", r"klingon", code=2))
    add(C("train-encoding-non-utf8-bytes", ["train", "verse.txt", "--encoding", b"utf\xff8", "--out", "out", *TINY, *SHORT], "refused", r"encoding|utf-8|unicode"))
    add(C("train-val-file-is-directory", ["train", "verse.txt", "--val-file", "vals", "--out", "out", *TINY, *SHORT], "refused", r"vals", setup=mkdir("vals")))
    add(C("train-corpus-name-unknown", ["train", "shakespeare-complete-works", "--out", "out", *TINY, *SHORT], "refused", r"shakespeare-complete-works"))

    # ---------------------------------------------------------------------- train: where it writes
    add(C("train-out-is-the-input-text", ["train", "verse.txt", "--out", "verse.txt", *TINY, *SHORT], "refused", r"verse\.txt"))
    add(C("train-out-inside-a-file", ["train", "verse.txt", "--out", "verse.txt/run", *TINY, *SHORT], "refused", r"not a directory"))
    add(C("train-out-devnull", ["train", "verse.txt", "--out", "/dev/null", *TINY, *SHORT], "refused", r"/dev/null"))
    add(C("train-out-directory-holding-users-config-json", ["train", "verse.txt", "--out", "proj", *TINY, *SHORT], "refused", r"proj|config\.json", setup=write("proj/config.json", '{"mine": true}\n')))
    add(C("train-out-read-only-directory", ["train", "verse.txt", "--out", "ro/run", *TINY, *SHORT], "refused", r"ro.*(writ|permission)", setup=readonly_dir("ro"), permissions=True))
    add(C("train-out-empty-string", ["train", "verse.txt", "--out", "", *TINY, *SHORT], "refused", r"--out", code=2))

    # ---------------------------------------------------------------------- train: numbers
    for opt, value, frag in [
        ("--max-steps", "0", r"max-steps"),
        ("--max-steps", "-5", r"max-steps"),
        ("--max-steps", "1.5", r"max-steps"),
        ("--max-steps", "0x10", r"max-steps"),
        ("--lr", "1e400", r"lr"),
        ("--lr", "0", r"lr"),
        ("--lr", "", r"lr"),
        ("--grad-clip", "nan", r"grad-clip"),
        ("--minutes", "nan", r"minutes"),
        ("--seed", "-1", r"seed"),
        ("--threads", "0", r"threads"),
        ("--threads", "100000", r"threads"),
        ("--eval-chars", "1", r"eval-chars"),
        ("--patience", "-1", r"patience"),
        ("--warmup-steps", "", r"warmup-steps"),
    ]:
        args = [*TINY, *SHORT]
        if opt in args:  # the value under test replaces the fixed one
            i = args.index(opt)
            del args[i : i + 2]
        add(C(f"train{opt}-{value or 'empty'}", ["train", "verse.txt", "--out", "out", *args, opt, value], "refused", frag, code=2))
    add(C("train-hidden-ten-million-memory", ["train", "verse.txt", "--out", "out", "--hidden", "10000000", "--layers", "1", "--embed", "8", "--batch-size", "8", "--seq-len", "32", *SHORT], "refused", r"memory|--hidden"))
    add(C("train-device-bogus", ["train", "verse.txt", "--out", "out", *TINY, *SHORT, "--device", "tpu"], "refused", r"device", code=2))
    add(C("train-preset-bogus", ["train", "verse.txt", "--out", "out", "--preset", "huge", *SHORT], "refused", r"preset", code=2))

    # ---------------------------------------------------------------------- train: --config
    add(C("train-config-broken-toml", ["train", "--config", "c.toml", "--out", "out", *TINY, *SHORT], "refused", r"c\.toml.*toml", code=2, setup=write("c.toml", TOML_BROKEN)))
    add(C("train-config-unknown-key", ["train", "--config", "c.toml", "--out", "out", *SHORT], "refused", r"batchsize", code=2, setup=write("c.toml", TOML_UNKNOWN)))
    add(C("train-config-wrong-type", ["train", "--config", "c.toml", "--out", "out", "--layers", "1", "--embed", "8", "--batch-size", "8", "--seq-len", "32", *SHORT], "refused", r"hidden", code=2, setup=write("c.toml", TOML_WRONG_TYPE)))
    add(C("train-config-paths-a-number", ["train", "--config", "c.toml", "--out", "out", *TINY, *SHORT], "refused", r"paths", code=2, setup=write("c.toml", TOML_PATHS_NUMBER)))
    add(C("train-config-layers-zero", ["train", "--config", "c.toml", "--out", "out", "--hidden", "32", "--embed", "8", "--batch-size", "8", "--seq-len", "32", *SHORT], "refused", r"layers", code=2, setup=write("c.toml", TOML_OUT_OF_RANGE)))
    add(C("train-config-dropout-nan", ["train", "--config", "c.toml", "--out", "out", *TINY, *SHORT], "refused", r"dropout", code=2, setup=write("c.toml", TOML_NAN)))
    add(C("train-config-missing-file", ["train", "--config", "nope.toml", "--out", "out", *TINY, *SHORT], "refused", r"nope\.toml", code=2))
    add(C("train-config-is-directory", ["train", "--config", "confs", "--out", "out", *TINY, *SHORT], "refused", r"confs", code=2, setup=mkdir("confs")))
    add(C("train-config-is-a-checkpoint", ["train", "--config", "run/last.pt", "--out", "out", *TINY, *SHORT], "refused", r"last\.pt", code=2))

    # ---------------------------------------------------------------------- train: --resume
    add(C("train-resume-with-different-preset", ["train", "--resume", R, "--preset", "large", "--max-steps", "31"], "refused", r"preset|hidden|layers|architecture|differ"))
    add(C("train-resume-extend-steps-zero", ["train", "--resume", R, "--extend-steps", "0"], "refused", r"extend-steps", code=2))
    add(C("train-resume-extend-epochs-nan", ["train", "--resume", R, "--extend-epochs", "nan"], "refused", r"extend-epochs", code=2))
    add(C("train-resume-truncated-checkpoint", ["train", "--resume", "trunc.pt", "--max-steps", "31"], "refused", r"trunc\.pt|checkpoint", setup=truncated("trunc.pt")))

    # ---------------------------------------------------------------------- sample: checkpoint
    add(C("sample-run-is-text-file", ["sample", "verse.txt", "--length", "5"], "refused", r"verse\.txt.*checkpoint|checkpoint.*verse\.txt"))
    add(C("sample-checkpoint-dev-zero", ["sample", "/dev/zero", "--length", "5"], "refused", r"/dev/zero", timeout=30))
    add(C("sample-best-without-best-pt", ["sample", R, "--best", "--length", "5"], "refused", r"best", setup=without("best.pt")))
    add(C("sample-best-with-a-checkpoint-file", ["sample", "run/last.pt", "--best", "--length", "5"], "refused", r"best"))
    add(C("sample-run-dir-with-non-utf8-name", ["sample", b"run\xff", "--length", "20", "--seed", "1"], "ok", setup=copy_run("run\udcff"), check=stdout_chars(20)))
    add(C("sample-run-dir-with-newline-in-name", ["sample", "my run\nv2", "--length", "20", "--seed", "1"], "ok", setup=copy_run("my run\nv2"), check=stdout_chars(20)))

    # ---------------------------------------------------------------------- sample: numbers
    for opt, value, frag in [
        ("--length", "0", r"length"),
        ("--length", "-1", r"length"),
        ("--length", "1e6", r"length"),
        ("--length", "", r"length"),
        ("--temperature", "1e309", r"temperature"),
        ("--temperature", "-0.5", r"temperature"),
        ("--top-p", "0", r"top-p"),
        ("--min-p", "nan", r"min-p"),
        ("--repetition-penalty", "0", r"repetition-penalty"),
        ("--repetition-window", "0", r"repetition-window"),
        ("--seed", "0x10", r"seed"),
        ("--threads", "0", r"threads"),
        ("--threads", "100000", r"threads"),
        ("--num-samples", "0", r"num-samples"),
        ("--copy-min-run", "0", r"copy-min-run"),
        ("--device", "bogus", r"device"),
        ("--engine", "turbo", r"engine"),
        ("--unknown", "bogus", r"unknown"),
    ]:
        add(C(f"sample{opt}-{value or 'empty'}", ["sample", R, "--length", "5", opt, value] if opt != "--length" else ["sample", R, opt, value], "refused", frag, code=2))
    add(C("sample-min-p-1-is-greedy", ["sample", R, "--length", "30", "--min-p", "1", "--seed", "1"], "ok", check=stdout_chars(30)))
    add(C("sample-top-k-larger-than-vocabulary", ["sample", R, "--length", "30", "--top-k", "1000", "--seed", "1"], "ok", check=stdout_chars(30)))
    add(C("sample-top-k-beyond-64-bits", ["sample", R, "--length", "30", "--top-k", str(10**20), "--seed", "1"], "either", r"top-k", check=stdout_chars(30)))
    add(C("sample-device-cuda-on-cpu-machine", ["sample", R, "--length", "5", "--device", "cuda"], "refused", r"cuda|gpu"))
    add(C("sample-beam-a-trillion", ["sample", R, "--length", "5", "--beam", str(10**12)], "refused", r"beam|memory"))

    # ---------------------------------------------------------------------- sample: text options
    add(C("sample-prime-with-unknown-characters", ["sample", R, "--length", "5", "--prime", "the QXZ"], "refused", r"Q|X|Z"))
    # Skipping leaves no prime: refused (the prime was surely a mistake), not sampled from nothing.
    add(C("sample-prime-only-unknown-with-skip", ["sample", R, "--length", "20", "--prime", "QXZ", "--unknown", "skip", "--seed", "1"], "refused", r"prime.*vocabulary"))
    add(C("sample-prime-100k-characters", ["sample", R, "--length", "10", "--prime", "the night " * 10000, "--seed", "1"], "ok", check=stdout_chars(100_010), timeout=90))
    add(C("sample-stop-empty-string", ["sample", R, "--length", "5", "--stop", ""], "refused", r"stop", code=2))
    add(C("sample-stop-non-utf8-bytes", ["sample", R, "--length", "5", "--stop", b"\xff\xfe"], "refused", r"stop|utf-8|unicode"))
    add(C("sample-separator-only-braces", ["sample", R, "--length", "10", "--num-samples", "2", "--separator", "{}", "--seed", "1"], "ok", check=stdout_has(r"\n\{\}\n.*\n\{\}\n")))
    add(C("sample-separator-with-newline", ["sample", R, "--length", "10", "--num-samples", "2", "--separator", "--\n--"], "refused", r"separator", code=2))
    add(C("sample-interactive-with-num-samples", ["sample", R, "-i", "--num-samples", "3"], "refused", r"num-samples|interactive", code=2, stdin=b"the\n"))
    add(C("sample-interactive-with-separator", ["sample", R, "-i", "--separator", "==="], "refused", r"separator|interactive", code=2, stdin=b"the\n"))

    # ---------------------------------------------------------------------- sample --interactive (stdin)
    add(C("interactive-line-with-invalid-utf8", ["sample", R, "-i", "--length", "10", "--seed", "1"], "ok", stdin=b"th\xff\xfee\nthe\n", check=stderr_has(r"(utf-8|unicode|not valid|invalid).*\n.*1 replies")))
    add(C("interactive-empty-line", ["sample", R, "-i", "--length", "10", "--seed", "1"], "ok", stdin=b"\n", check=stderr_has(r"replies")))
    add(C("interactive-temp-bogus", ["sample", R, "-i", "--length", "10", "--seed", "1"], "ok", stdin=b"/temp bogus\n/show\n", check=stderr_has(r"/temp needs a number.*temp 0\.8")))
    add(C("interactive-temp-nan", ["sample", R, "-i", "--length", "10", "--seed", "1"], "ok", stdin=b"/temp nan\n/show\nthe\n", check=stderr_has(r"unchanged.*temp 0\.8.*1 replies")))
    add(C("interactive-len-negative", ["sample", R, "-i", "--length", "10", "--seed", "1"], "ok", stdin=b"/len -1\n/show\n", check=stderr_has(r"unchanged.*len 10")))
    add(C("interactive-seed-beyond-64-bits", ["sample", R, "-i", "--length", "10", "--seed", "1"], "ok", stdin=b"/seed 99999999999999999999999\nthe\n", check=stderr_has(r"unchanged.*1 replies")))
    add(C("interactive-prompt-with-unknown-characters", ["sample", R, "-i", "--length", "10", "--seed", "1"], "ok", stdin=b"QXZ\nthe\n", check=stderr_has(r"another prompt.*1 replies")))
    add(C("interactive-nul-bytes", ["sample", R, "-i", "--length", "10", "--seed", "1"], "ok", stdin=b"\x00\x00\nthe\n", check=stderr_has(r"1 replies")))
    add(C("interactive-eof-at-once", ["sample", R, "-i"], "ok", stdin=b"", check=stderr_has(r"0 replies")))

    # ---------------------------------------------------------------------- Ctrl-C
    add(C("ctrl-c-while-sampling", ["sample", R, "--length", "100000000", "--seed", "1"], "interrupted", r"interrupt", sigint="running", serial=True))
    add(C("ctrl-c-while-sampling-several", ["sample", R, "--length", "10000000", "--num-samples", "3", "--seed", "1"], "interrupted", r"interrupt", sigint="running", serial=True))
    add(C("ctrl-c-during-imports", ["sample", R, "--length", "100000000", "--seed", "1"], "interrupted", r"interrupt", sigint="imports", serial=True))
    add(C("ctrl-c-during-startup", ["sample", R, "--length", "100000000", "--seed", "1"], "interrupted", r"interrupt", sigint="startup", serial=True))
    add(C("ctrl-c-while-training", ["train", "verse.txt", "--out", "out", *TINY, "--max-steps", "1000000", "--eval-every", "100000"], "interrupted", r"stopped at step.*checkpoint saved.*\n.*resume", sigint="running", serial=True, check=run_dir("out"), prefix=False))

    # ---------------------------------------------------------------------- info
    add(C("info-zero-byte-file", ["info", "zero.pt"], "refused", r"zero\.pt", setup=write("zero.pt", b"")))
    add(C("info-truncated-checkpoint", ["info", "trunc.pt"], "refused", r"trunc\.pt", setup=truncated("trunc.pt")))
    add(C("info-corrupted-checkpoint", ["info", "bad.pt"], "refused", r"bad\.pt", setup=corrupted("bad.pt")))
    add(C("info-text-file", ["info", "verse.txt"], "refused", r"verse\.txt"))
    add(C("info-directory-without-checkpoint", ["info", "empty"], "refused", r"empty", setup=mkdir("empty")))
    add(C("info-best-with-checkpoint-file", ["info", "run/last.pt", "--best"], "refused", r"best"))
    add(C("info-json", ["info", R, "--json"], "ok", check=json_stdout))
    add(C("info-run-dir-with-non-utf8-name", ["info", b"run\xff"], "ok", setup=copy_run("run\udcff"), check=stdout_has(r"vocab")))
    add(C("info-empty-path", ["info", ""], "refused", r"checkpoint|path|empty"))

    # ---------------------------------------------------------------------- eval
    add(C("eval-ok", ["eval", R, "verse.txt"], "ok", check=stdout_has(r"\d\.\d+")))
    add(C("eval-empty-file", ["eval", R, "empty.txt"], "refused", r"empty", setup=write("empty.txt", "")))
    add(C("eval-one-character", ["eval", R, "one.txt"], "refused", r"one\.txt|character", setup=write("one.txt", "a")))
    add(C("eval-unknown-bogus", ["eval", R, "verse.txt", "--unknown", "bogus"], "refused", r"unknown", code=2))
    add(C("eval-file-is-directory", ["eval", R, "texts"], "refused", r"texts", setup=mkdir("texts")))
    add(C("eval-skip-leaves-nothing", ["eval", R, "odd.txt", "--unknown", "skip"], "refused", r"skip|outside|unknown|vocabulary", setup=write("odd.txt", "QXZQXZ" * 10)))
    add(C("eval-encoding-bogus", ["eval", R, "verse.txt", "--encoding", "klingon-8"], "refused", r"klingon", code=2))
    add(C("eval-named-corpus-bogus", ["eval", R, "nosuchcorpus:test"], "refused", r"nosuchcorpus"))
    add(C("eval-text-from-dev-stdin", ["eval", R, "/dev/stdin"], "either", r"/dev/stdin", stdin=small_text(20).encode(), check=stdout_has(r"\d\.\d+")))
    add(C("eval-dev-zero", ["eval", R, "/dev/zero"], "refused", r"/dev/zero", timeout=30))
    add(C("eval-text-non-utf8-file-name", ["eval", R, b"v\xffrse.txt"], "ok", setup=write("v\udcffrse.txt", small_text(20)), check=stdout_has(r"\d\.\d+")))
    add(C("eval-best-with-checkpoint-file", ["eval", "run/last.pt", "verse.txt", "--best"], "refused", r"best"))

    # ---------------------------------------------------------------------- vocab
    add(C("vocab-ok-name-with-space-and-newline", ["vocab", R, "--out", "my tok\nx.json"], "ok", check=wrote("my tok\nx.json", b"{")))
    add(C("vocab-out-leading-dash-name", ["vocab", R, "--out", "-tok.json"], "ok", check=wrote("-tok.json", b"{")))
    add(C("vocab-out-non-utf8-name", ["vocab", R, "--out", b"tok\xff.json"], "either", r"tok|utf-8|unicode", check=wrote("tok\udcff.json", b"{")))
    add(C("vocab-out-directory", ["vocab", R, "--out", "outdir"], "refused", r"outdir.*directory", setup=mkdir("outdir")))
    add(C("vocab-out-missing-directory", ["vocab", R, "--out", "no/such/tok.json"], "refused", r"no/such"))
    add(C("vocab-out-devnull", ["vocab", R, "--out", "/dev/null"], "refused", r"/dev/null"))
    add(C("vocab-out-other-runs-config-json", ["vocab", R, "--out", "other/config.json"], "refused", r"config\.json", setup=copy_run("other")))
    add(C("vocab-out-own-checkpoint", ["vocab", R, "--out", "run/best.pt"], "refused", r"best\.pt"))
    add(C("vocab-out-symlink-to-checkpoint", ["vocab", R, "--out", "tok.json"], "refused", r"tok\.json", setup=symlink("tok.json", "run/last.pt")))
    add(C("vocab-out-read-only-file", ["vocab", R, "--out", "ro.json"], "refused", r"ro\.json", setup=readonly_file("ro.json"), permissions=True))

    # ---------------------------------------------------------------------- export
    add(C("export-c-int8", ["export", R, "--format", "c", "--quantize", "int8", "--out", "m8.c"], "ok", check=wrote("m8.c"), timeout=90))
    add(C("export-c-float16-name-with-space", ["export", R, "--format", "c", "--quantize", "float16", "--out", "my model.c"], "ok", check=wrote("my model.c"), timeout=90))
    add(C("export-pt2-quantize-int8", ["export", R, "--format", "pt2", "--quantize", "int8", "--out", "m.pt2"], "refused", r"quantize", code=2))
    add(C("export-torchscript-quantize-float16", ["export", R, "--format", "torchscript", "--quantize", "float16", "--out", "m.ts"], "refused", r"quantize|torchscript", code=2))
    add(C("export-onnx-quantize-float16", ["export", R, "--format", "onnx", "--quantize", "float16", "--out", "m.onnx"], "refused", r"quantize|float16", code=2))
    add(C("export-format-bogus", ["export", R, "--format", "tflite"], "refused", r"format", code=2))
    # Like cp: a directory given as --out takes the file under its default name (or a refusal).
    add(C("export-out-directory", ["export", R, "--format", "c", "--out", "outdir"], "either", r"outdir.*directory", setup=mkdir("outdir"), check=wrote("outdir/model.c")))
    # A missing directory for the file is made, as mkdir -p would (every format alike).
    add(C("export-out-missing-directory", ["export", R, "--format", "c", "--out", "no/such/m.c"], "ok", check=wrote("no/such/m.c")))
    add(C("export-out-under-a-file", ["export", R, "--format", "c", "--out", "afile/m.c"], "refused", r"afile", setup=write("afile", "x")))
    add(C("export-out-other-runs-metrics", ["export", R, "--format", "c", "--out", "other/metrics.jsonl"], "refused", r"metrics\.jsonl", setup=copy_run("other")))
    add(C("export-best-without-best-pt", ["export", R, "--best", "--format", "c", "--out", "m.c"], "refused", r"best", setup=without("best.pt")))

    # ---------------------------------------------------------------------- plot
    add(C("plot-terminal-ok", ["plot", R, "--terminal"], "ok", check=stdout_has(r"\S")))
    add(C("plot-non-run-directory", ["plot", "empty", "--terminal"], "refused", r"empty|metrics", setup=mkdir("empty")))
    add(C("plot-missing-run", ["plot", "nope", "--terminal"], "refused", r"nope"))
    add(C("plot-text-file", ["plot", "verse.txt", "--terminal"], "refused", r"verse\.txt"))
    add(C("plot-x-bogus", ["plot", R, "--terminal", "--x", "epoch"], "refused", r"--x", code=2))
    add(C("plot-width-zero", ["plot", R, "--terminal", "--width", "0"], "refused", r"width", code=2))
    add(C("plot-height-huge", ["plot", R, "--terminal", "--height", "100000"], "refused", r"height", code=2))
    add(C("plot-empty-metrics-file", ["plot", "m/metrics.jsonl", "--terminal"], "refused", r"metrics|empty|no ", setup=write("m/metrics.jsonl", "")))
    add(C("plot-garbage-metrics-file", ["plot", "m/metrics.jsonl", "--terminal"], "refused", r"metrics", setup=write("m/metrics.jsonl", "this is not json\n{also not\n")))
    add(C("plot-out-onto-own-metrics", ["plot", R, "--out", "run/metrics.jsonl"], "refused", r"metrics\.jsonl"))
    add(C("plot-out-onto-other-runs-config", ["plot", R, "--out", "other/config.json"], "refused", r"config\.json", setup=copy_run("other")))
    add(C("plot-out-directory", ["plot", R, "--out", "outdir"], "refused", r"outdir.*directory", setup=mkdir("outdir")))

    # ---------------------------------------------------------------------- gradients
    add(C("gradients-ok-png", ["gradients", R, "--steps", "20", "--png", "g.png"], "ok", check=wrote("g.png", b"\x89PNG")))
    add(C("gradients-steps-zero", ["gradients", R, "--steps", "0"], "refused", r"steps", code=2))
    add(C("gradients-seed-negative", ["gradients", R, "--steps", "20", "--seed", "-1"], "refused", r"seed", code=2))
    add(C("gradients-text-empty", ["gradients", R, "--steps", "20", "--text", "empty.txt"], "refused", r"empty", setup=write("empty.txt", "")))
    # A window longer than the text: the window shrinks to the text, and stderr says so.
    add(C("gradients-text-shorter-than-steps", ["gradients", R, "--steps", "100", "--text", "short.txt"], "ok", setup=write("short.txt", "the night"), check=stderr_has(r"short\.txt has 9 characters")))
    add(C("gradients-png-onto-text", ["gradients", R, "--steps", "20", "--text", "verse.txt", "--png", "verse.txt"], "refused", r"verse\.txt"))
    add(C("gradients-png-onto-runs-training-text", lambda_args(lambda c: ["gradients", R, "--steps", "20", "--png", str(c.training_text)]), "refused", r"verse\.txt", serial=True))
    add(C("gradients-png-devnull", ["gradients", R, "--steps", "20", "--png", "/dev/null"], "refused", r"/dev/null"))

    # ---------------------------------------------------------------------- inspect
    add(C("inspect-gates-ok", ["inspect", R, "--gates", "--chars", "200"], "ok", check=stdout_has(r"\S")))
    add(C("inspect-neuron-html-ok", ["inspect", R, "--neuron", "0:3", "--chars", "200", "--html", "n.html"], "ok", check=wrote("n.html", b"<")))
    add(C("inspect-find-ok", ["inspect", R, "--find", "--chars", "300"], "ok", check=stdout_has(r"\S")))
    add(C("inspect-dump-states-ok", ["inspect", R, "--dump-states", "s.npz", "--chars", "100"], "ok", check=wrote("s.npz", b"PK")))
    for value in ["0", "a:b", "5:0", "0:999", "-1:0"]:
        add(C(f"inspect-neuron-{value or 'empty'}", ["inspect", R, "--neuron", value, "--chars", "100"], "refused", r"neuron|layer|unit", code=2))
    add(C("inspect-state-c-on-gru", ["inspect", "gru", "--neuron", "0:1", "--state", "c", "--chars", "100"], "refused", r"lstm|state", code=2, setup=copy_run("gru", source="gru")))
    add(C("inspect-html-without-neuron", ["inspect", R, "--gates", "--html", "n.html", "--chars", "100"], "refused", r"--neuron", code=2))
    add(C("inspect-chars-zero", ["inspect", R, "--gates", "--chars", "0"], "refused", r"chars", code=2))
    add(C("inspect-top-zero", ["inspect", R, "--find", "--top", "0"], "refused", r"top", code=2))
    add(C("inspect-state-bogus", ["inspect", R, "--neuron", "0:1", "--state", "x"], "refused", r"state", code=2))
    add(C("inspect-text-empty", ["inspect", R, "--gates", "--text", "empty.txt"], "refused", r"empty", setup=write("empty.txt", "")))
    add(C("inspect-png-onto-text", ["inspect", R, "--gates", "--chars", "100", "--text", "verse.txt", "--png", "verse.txt"], "refused", r"verse\.txt"))
    add(C("inspect-dump-states-onto-runs-training-text", lambda_args(lambda c: ["inspect", R, "--chars", "100", "--dump-states", str(c.training_text)]), "refused", r"verse\.txt", serial=True))
    add(C("inspect-html-onto-checkpoint", ["inspect", R, "--neuron", "0:1", "--chars", "100", "--html", "run/last.pt"], "refused", r"last\.pt"))
    add(C("inspect-dump-states-onto-other-runs-config", ["inspect", R, "--chars", "100", "--dump-states", "other/config.json"], "refused", r"config\.json", setup=copy_run("other")))
    add(C("inspect-png-devnull", ["inspect", R, "--gates", "--chars", "100", "--png", "/dev/null"], "refused", r"/dev/null"))

    # ---------------------------------------------------------------------- serve (refused before it listens)
    for name, extra, frag, code in [
        ("serve-port-70000", ["--port", "70000"], r"port", 2),
        ("serve-port-negative", ["--port", "-1"], r"port", 2),
        ("serve-max-body-zero", ["--max-body", "0"], r"max-body", 2),
        ("serve-grace-nan", ["--grace", "nan"], r"grace", 2),
        ("serve-grace-inf", ["--grace", "inf"], r"grace", 2),
        ("serve-threads-zero", ["--threads", "0"], r"threads", 2),
        ("serve-max-tokens-above-limit", ["--max-tokens", "100", "--max-tokens-limit", "10"], r"max-tokens", 2),
        ("serve-host-not-an-address", ["--host", "not a host!"], r"host|not a host", None),
        ("serve-host-non-utf8", ["--host", b"loc\xffalhost"], r"host|utf-8|unicode", None),
        ("serve-public-host-with-empty-api-key", ["--host", "0.0.0.0", "--api-key", ""], r"api-key", 2),
        ("serve-cors-not-an-origin", ["--cors", "not an origin"], r"cors|origin", 2),
    ]:
        add(C(name, ["serve", R, *extra], "refused", frag, code=code, timeout=25, accepted_when=SERVING))
    add(C("serve-port-in-use", lambda_args(lambda c: ["serve", R, "--port", port(c)]), "refused", r"in use|port", setup=bound_port, timeout=25, accepted_when=SERVING))
    add(C("serve-missing-run", ["serve", "nope", "--port", "0"], "refused", r"nope", timeout=25, accepted_when=SERVING))

    # ---------------------------------------------------------------------- bench (refused before work)
    for name, extra, frag, code in [
        ("bench-preset-bogus", ["--preset", "giant"], r"preset|giant", 2),
        ("bench-batch-size-zero", ["--batch-size", "0"], r"batch-size", 2),
        ("bench-threads-zero", ["--threads", "0"], r"threads", 2),
        ("bench-corpus-mb-a-billion", ["--corpus-mb", "1000000000"], r"corpus-mb|memory|disk", None),
        ("bench-export-chars-one", ["--export", R, "--export-chars", "1"], r"export-chars", 2),
        ("bench-export-missing-run", ["--export", "nope"], r"nope", None),
        ("bench-serve-run-missing", ["--serve", "--serve-run", "nope"], r"nope", None),
        ("bench-text-missing", ["--text", "nope.txt"], r"nope\.txt", None),
        ("bench-json-directory", ["--json", "outdir"], r"outdir.*directory", None),
        ("bench-json-missing-directory", ["--json", "no/such/b.json"], r"no/such", None),
        ("bench-contention-and-startup-together", ["--contention", "--startup"], r"contention|startup", 2),
        ("bench-device-cuda-on-cpu-machine", ["--device", "cuda"], r"cuda|gpu", None),
    ]:
        add(C(name, ["bench", *extra], "refused", frag, code=code, timeout=15, setup=mkdir("outdir") if "outdir" in extra else None))

    # ---------------------------------------------------------------------- corpus
    add(C("corpus-list", ["corpus", "list"], "ok", check=stdout_has(r"\S")))
    add(C("corpus-fetch-unknown-name", ["corpus", "fetch", "no-such-corpus"], "refused", r"no-such-corpus", timeout=30))
    add(C("corpus-fetch-empty-name", ["corpus", "fetch", ""], "refused", r"name|corpus", timeout=30))
    add(C("corpus-fetch-path-traversal", ["corpus", "fetch", "../../etc/passwd"], "refused", r"passwd|name|corpus", timeout=30))
    add(C("corpus-fetch-non-utf8-name", ["corpus", "fetch", b"tiny\xffshakespeare"], "refused", r"corpus|utf-8|unicode|name", timeout=30))

    # ---------------------------------------------------------------------- HTTP against one server
    for name, path, body, method in [
        ("http-invalid-json", "/v1/completions", b"{", "POST"),
        ("http-body-is-a-list", "/v1/completions", b"[]", "POST"),
        ("http-body-not-utf8", "/v1/completions", b'{"prompt": "the \xff"}', "POST"),
        ("http-max-tokens-negative", "/v1/completions", {"prompt": "the", "max_tokens": -1}, "POST"),
        ("http-max-tokens-a-string", "/v1/completions", {"prompt": "the", "max_tokens": "10"}, "POST"),
        ("http-max-tokens-1e400", "/v1/completions", b'{"prompt": "the", "max_tokens": 1e400}', "POST"),
        ("http-temperature-nan", "/v1/completions", b'{"prompt": "the", "max_tokens": 5, "temperature": NaN}', "POST"),
        ("http-top-p-zero", "/v1/completions", {"prompt": "the", "max_tokens": 5, "top_p": 0}, "POST"),
        ("http-n-zero", "/v1/completions", {"prompt": "the", "max_tokens": 5, "n": 0}, "POST"),
        ("http-n-above-limit", "/v1/completions", {"prompt": "the", "max_tokens": 5, "n": 1000}, "POST"),
        ("http-seed-beyond-64-bits", "/v1/completions", {"prompt": "the", "max_tokens": 5, "seed": 2**64}, "POST"),
        ("http-prompt-unknown-characters", "/v1/completions", {"prompt": "QXZ", "max_tokens": 5}, "POST"),
        ("http-prompt-a-number", "/v1/completions", {"prompt": 5, "max_tokens": 5}, "POST"),
        ("http-generate-num-predict-negative", "/api/generate", {"prompt": "the", "options": {"num_predict": -5}}, "POST"),
        ("http-generate-options-a-list", "/api/generate", {"prompt": "the", "options": [1]}, "POST"),
        ("http-unknown-path", "/v1/bogus", None, "GET"),
        ("http-get-on-completions", "/v1/completions", None, "GET"),
    ]:
        add(C(name, [], "http", http={"path": path, "body": body, "method": method}))
    add(C("http-server-still-serves-after-bad-requests", [], "http", http={"path": "/v1/completions", "body": {"prompt": "the", "max_tokens": 5}, "method": "POST", "ok": True, "last": True}))
    return cases


def lambda_args(function):
    """Arguments that depend on the case's directories."""
    return [function]


CASES = _cases()
assert len({case.id for case in CASES}) == len(CASES), "case ids must be unique"


# ------------------------------------------------------------------------------ running


@dataclasses.dataclass
class Result:
    rc: Optional[int] = None
    out: str = ""
    err: str = ""
    seconds: float = 0.0
    timed_out: bool = False
    went_ahead: bool = False  # accepted_when matched: the command went ahead (stopped there)
    after_interrupt_s: Optional[float] = None
    changed: list = dataclasses.field(default_factory=list)  # protected files that changed
    problems: list = dataclasses.field(default_factory=list)  # found while running (setup, HTTP)
    check_error: Optional[str] = None
    argv: list = dataclasses.field(default_factory=list)
    http_status: Optional[int] = None
    http_body: object = None


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


_LIBC = ctypes.CDLL(None, use_errno=True)


def _limit_memory_and_permissions() -> None:
    """As root, whom file permissions do not stop: drop CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH from the bounding set before exec, so that chmod 000 means it."""
    _limit_memory()
    if ROOT:
        for capability in (1, 2):
            if _LIBC.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _permissions_apply() -> bool:
    if not ROOT:
        return True
    try:
        return subprocess.run(["true"], preexec_fn=_limit_memory_and_permissions).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


PERMISSIONS_APPLY = _permissions_apply()


def _env(ctx_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "CHARRNN_API_KEY", "OMP_NUM_THREADS")}
    env["CHARRNN_CACHE"] = str(ctx_dir / "cache")
    env["CHARRNN_CORPORA"] = str(ctx_dir / "corpora")
    env["PYTHONPATH"] = str(REPO)
    return env


def _argv(case: Case, ctx: Ctx) -> list:
    argv = [sys.executable, "-m", "charrnn"]
    for arg in case.args:
        value = arg(ctx) if callable(arg) else arg
        if isinstance(value, list):
            argv.extend(value)
        else:
            argv.append(value)
    return argv


def _fingerprint(path: Path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing"
    if stat.S_ISREG(st.st_mode):
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return f"mode {stat.S_IFMT(st.st_mode):o}"


def _protected(case: Case, ctx: Ctx) -> list[Path]:
    paths = [ctx.text, ctx.training_text, Path("/dev/null"), *ctx.protect]
    if not case.mutates_run:
        paths.extend(p for p in ctx.run.rglob("*") if p.is_file())
    return paths


def _catches_sigint(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = re.search(r"^SigCgt:\s*([0-9a-f]+)", status, re.M)
    return bool(caught and int(caught.group(1), 16) & (1 << (signal.SIGINT - 1)))


def _read_all(stream, sink: bytearray, first: threading.Event) -> None:
    for chunk in iter(lambda: stream.read1(65536), b""):
        sink.extend(chunk)
        first.set()


def run_case(case: Case, base: Path) -> Result:
    res = Result()
    ctx_dir = base / "cases" / re.sub(r"[^A-Za-z0-9_.-]", "_", case.id)
    ctx_dir.mkdir(parents=True)
    shutil.copytree(base / "run", ctx_dir / "run")
    shutil.copy(base / "verse.txt", ctx_dir / "verse.txt")
    ctx = Ctx(ctx_dir, base)
    try:
        _run_case(case, ctx, res)
    except Exception as exc:  # noqa: BLE001 - a broken case is reported, not the module
        res.problems.append(f"the case could not run: {type(exc).__name__}: {exc}")
    finally:
        sock = ctx.extra.get("socket")
        if sock is not None:
            sock.close()
        # The shared training text is restored if a case destroyed it.
        if _fingerprint(ctx.training_text) != TRAINING_TEXT_HASH[0]:
            ctx.training_text.write_text(small_text(), encoding="utf-8")
        for path in ctx_dir.rglob("*"):  # so that pytest can remove what a case made read-only
            try:
                if not path.is_symlink():
                    path.chmod(0o755 if path.is_dir() else 0o644)
            except OSError:
                pass
    return res


def _run_case(case: Case, ctx: Ctx, res: Result) -> None:
    base, ctx_dir = ctx.base, ctx.dir
    if case.setup:
        case.setup(ctx)
    protected = _protected(case, ctx)
    before = {p: _fingerprint(p) for p in protected}
    argv = _argv(case, ctx)
    res.argv = [os.fsdecode(a) if isinstance(a, bytes) else a for a in argv[3:]]
    started = time.monotonic()
    process = subprocess.Popen(
        argv, cwd=ctx_dir, env=_env(ctx_dir), start_new_session=True,
        preexec_fn=_limit_memory_and_permissions if case.permissions else _limit_memory,
        stdin=subprocess.PIPE if case.stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    out, err = bytearray(), bytearray()
    out_seen, err_seen = threading.Event(), threading.Event()
    readers = [
        threading.Thread(target=_read_all, args=(process.stdout, out, out_seen), daemon=True),
        threading.Thread(target=_read_all, args=(process.stderr, err, err_seen), daemon=True),
    ]
    for reader in readers:
        reader.start()
    if case.stdin is not None:
        try:
            process.stdin.write(case.stdin)
            process.stdin.close()
        except BrokenPipeError:
            pass
    sent = None
    if case.sigint == "imports":
        # 40 ms after Python handles SIGINT (its handler is installed during its own start-up,
        # ~20 ms before the main module runs): the signal lands while charrnn and its libraries
        # (typer, rich) are being imported, which takes a few hundred ms.
        while time.monotonic() < started + 10 and process.poll() is None and not _catches_sigint(process.pid):
            time.sleep(0.002)
        time.sleep(0.04)
        sent = time.monotonic()
    elif case.sigint == "startup":
        time.sleep(0.5)
        sent = time.monotonic()
    elif case.accepted_when is not None:
        while time.monotonic() < started + case.timeout and process.poll() is None:
            if re.search(case.accepted_when, err.decode("utf-8", "replace")):
                res.went_ahead = True
                os.killpg(process.pid, signal.SIGTERM)
                break
            time.sleep(0.05)
    elif case.sigint == "running":
        # Output has started (stdout for sample; "step" lines on stderr for train).
        deadline = started + case.timeout / 2
        while time.monotonic() < deadline and process.poll() is None:
            if out or re.search(rb"\nstep \d+", bytes(err)):
                break
            time.sleep(0.05)
        time.sleep(1.0)
        sent = time.monotonic()
    if sent is not None and process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=max(1.0, case.timeout - (time.monotonic() - started)))
    except subprocess.TimeoutExpired:
        res.timed_out = True
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    if sent is not None:
        res.after_interrupt_s = time.monotonic() - sent
    for reader in readers:
        reader.join(10)
    try:  # a server or anything else the command left in its group
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    res.seconds = time.monotonic() - started
    res.rc = process.returncode
    res.out = out.decode("utf-8", "replace")
    res.err = err.decode("utf-8", "replace")
    for path, print_before in before.items():
        after = _fingerprint(path)
        if after != print_before:
            res.changed.append(f"{path.relative_to(base) if path.is_relative_to(base) else path}: {print_before[:12]} -> {after[:12]}")
    if case.check is not None and res.rc == 0:
        try:
            case.check(ctx, res)
        except AssertionError as exc:
            res.check_error = str(exc)
    elif case.check is not None and case.expect == "interrupted":
        try:
            case.check(ctx, res)
        except AssertionError as exc:
            res.check_error = str(exc)


TRAINING_TEXT_HASH = [""]


def _train(base: Path, out: str, *extra: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "charrnn", "train", str(base / "verse.txt"), "--out", str(base / out), "--device", "cpu",
         *TINY, *SHORT, *extra],
        cwd=base, env=_env(base), preexec_fn=_limit_memory, capture_output=True, text=True, timeout=240,
    )
    assert completed.returncode == 0, completed.stderr


# HTTP ---------------------------------------------------------------------------------------

URL_LINE = re.compile(r"serving .* on (http://\S+)")


def _http(url: str, spec: dict) -> tuple[int, object, str]:
    body = spec["body"]
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + spec["path"], data=data, method=spec["method"])
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            status, raw, kind = reply.status, reply.read(), reply.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        status, raw, kind = error.code, error.read(), error.headers.get("Content-Type", "")
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        parsed = raw.decode("utf-8", "replace")
    return status, parsed, kind


def run_http_cases(cases: list[Case], base: Path) -> dict[str, Result]:
    results = {case.id: Result(argv=[case.http["method"], case.http["path"], repr(case.http["body"])[:120]]) for case in cases}
    ctx_dir = base / "cases" / "http-server"
    ctx_dir.mkdir(parents=True)
    shutil.copytree(base / "run", ctx_dir / "run")
    before = {p: _fingerprint(p) for p in (ctx_dir / "run").rglob("*") if p.is_file()}
    process = subprocess.Popen(
        [sys.executable, "-m", "charrnn", "serve", "run", "--port", "0", "--grace", "1"], cwd=ctx_dir,
        env=_env(ctx_dir), preexec_fn=_limit_memory, start_new_session=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    out, err = bytearray(), bytearray()
    seen = threading.Event()
    readers = [
        threading.Thread(target=_read_all, args=(process.stdout, out, threading.Event()), daemon=True),
        threading.Thread(target=_read_all, args=(process.stderr, err, seen), daemon=True),
    ]
    for reader in readers:
        reader.start()
    url = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        found = URL_LINE.search(err.decode("utf-8", "replace"))
        if found:
            url = found.group(1)
            break
        time.sleep(0.05)
    try:
        if url is None:
            for res in results.values():
                res.problems.append(f"the server did not start: {err.decode('utf-8', 'replace')[-500:]}")
            return results
        for case in sorted(cases, key=lambda c: bool(c.http.get("last"))):
            res = results[case.id]
            started = time.monotonic()
            try:
                res.http_status, res.http_body, kind = _http(url, case.http)
            except Exception as exc:  # noqa: BLE001 - the server went away or hung: a finding
                res.problems.append(f"no HTTP answer: {type(exc).__name__}: {exc}")
                continue
            res.seconds = time.monotonic() - started
            if case.http.get("ok"):
                if res.http_status != 200:
                    res.problems.append(f"expected 200, got {res.http_status}: {res.http_body!r:.300}")
            else:
                if not (400 <= res.http_status < 500):
                    res.problems.append(f"expected a 4xx answer, got {res.http_status}: {res.http_body!r:.300}")
                if not isinstance(res.http_body, dict) or "application/json" not in kind:
                    res.problems.append(f"the answer is not a JSON object ({kind}): {res.http_body!r:.300}")
            if process.poll() is not None:
                res.problems.append(f"the server died (exit {process.returncode})")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for reader in readers:
            reader.join(10)
        text = out.decode("utf-8", "replace") + err.decode("utf-8", "replace")
        last = next(res for case, res in ((c, results[c.id]) for c in cases) if case.http.get("last")) if any(c.http.get("last") for c in cases) else None
        for res in results.values():
            res.err = err.decode("utf-8", "replace")
            res.rc = 0
        if last is not None:
            if "Traceback" in text or "internal error" in text:
                last.problems.append("the server's output holds a traceback or an internal error: " + text[-800:])
            if process.returncode not in (0, 130, -signal.SIGTERM):
                last.problems.append(f"the server exited {process.returncode} on SIGTERM")
            for path, print_before in before.items():
                if _fingerprint(path) != print_before:
                    last.changed.append(str(path.relative_to(base)))
    return results


# ------------------------------------------------------------------------------ the module's results


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory) -> dict[str, Result]:
    module = sys.modules[__name__]
    selected = {
        item.callspec.params["case"].id
        for item in request.session.items
        if getattr(item, "module", None) is module and hasattr(item, "callspec")
    }
    chosen = [case for case in CASES if case.id in selected and not (case.permissions and not PERMISSIONS_APPLY)]
    base = tmp_path_factory.mktemp("sweep")
    (base / "verse.txt").write_text(small_text(), encoding="utf-8")
    TRAINING_TEXT_HASH[0] = _fingerprint(base / "verse.txt")
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        trained = [pool.submit(_train, base, "run"), pool.submit(_train, base, "gru", "--cell", "gru")]
        for future in trained:
            future.result()
    results: dict[str, Result] = {}
    commands = [case for case in chosen if case.http is None]
    parallel = [case for case in commands if not case.serial]
    serial = [case for case in commands if case.serial]
    http = [case for case in chosen if case.http is not None]
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        futures = {pool.submit(run_case, case, base): case.id for case in parallel}
        if http:
            http_future = pool.submit(run_http_cases, http, base)
        for future in concurrent.futures.as_completed(futures):
            results[futures[future]] = future.result()
        if http:
            results.update(http_future.result())
    for case in serial:
        results[case.id] = run_case(case, base)
    if os.environ.get("CHARRNN_SWEEP_TIMES"):  # where the time goes, for whoever trims the sweep
        Path(os.environ["CHARRNN_SWEEP_TIMES"]).write_text(json.dumps(
            {"total_s": time.monotonic() - started, "cases": {k: round(v.seconds, 1) for k, v in results.items()}}, indent=1))
    return results


def _refusal_problems(case: Case, res: Result) -> list[str]:
    problems = []
    lines = [line for line in res.err.splitlines() if line.strip()]
    if len(lines) != 1:
        problems.append(f"stderr has {len(lines)} non-empty lines, not one: {res.err[-800:]!r}")
    if lines and not lines[-1].startswith("charrnn: "):
        problems.append(f"the line does not start with 'charrnn: ': {lines[-1]!r}")
    if case.fragment and lines and not re.search(case.fragment, lines[-1], re.I):
        problems.append(f"the line does not say {case.fragment!r}: {lines[-1]!r}")
    if res.out.strip():
        problems.append(f"a refusal wrote to stdout: {res.out[:300]!r}")
    return problems


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_input(case: Case, outcomes):
    if case.permissions and not PERMISSIONS_APPLY:
        pytest.skip("root bypasses file permissions here, and they cannot be dropped")
    res = outcomes[case.id]
    problems = list(res.problems)
    command = "charrnn " + " ".join(repr(a) if (not a or re.search(r"[^\w./:=+-]", a)) else a for a in res.argv)
    if case.http is None:
        if res.went_ahead:
            problems.append(f"accepted: it went ahead ({case.accepted_when!r} on stderr) and was stopped there; expected a refusal saying {case.fragment!r}")
        elif res.timed_out:
            problems.append(f"did not finish within {case.timeout:.0f} s (killed)")
        for name, text in (("stdout", res.out), ("stderr", res.err)):
            if "Traceback" in text:
                problems.append(f"a traceback on {name}: ...{text[-600:]!r}")
            if "internal error" in text:
                problems.append(f"'internal error' on {name}: {text[-400:]!r}")
        # Killed by SIGINT before Python's handler could run is what a shell shows as 130 too.
        # So does a KeyboardInterrupt in Python's own start-up, before any charrnn frame: no
        # program can answer that one (it is retried by timing, not blamed on charrnn).
        killed_early = case.sigint in ("imports", "startup") and res.rc == -signal.SIGINT and "charrnn" not in res.err
        if case.expect == "interrupted" and not killed_early:
            if res.rc != 130:
                problems.append(f"exit {res.rc}, expected 130 after Ctrl-C")
            lines = [line for line in res.err.splitlines() if line.strip()]
            if case.prefix and (not lines or not lines[-1].startswith("charrnn: ") or not re.search(case.fragment, lines[-1], re.I)):
                problems.append(f"the last stderr line is not one 'charrnn: ' line saying {case.fragment!r}: {lines[-3:]!r}")
            if not case.prefix and not re.search(case.fragment, "\n".join(lines[-2:]), re.I):
                problems.append(f"the last stderr lines do not say {case.fragment!r}: {lines[-3:]!r}")
            if res.after_interrupt_s is not None and res.after_interrupt_s > INTERRUPT_BOUND_S:
                problems.append(f"took {res.after_interrupt_s:.1f} s to exit after Ctrl-C")
        elif case.expect != "interrupted" and not res.timed_out and not res.went_ahead:
            if res.rc != 0 and res.rc is not None:
                problems.extend(_refusal_problems(case, res))
                if res.rc not in (1, 2):
                    problems.append(f"exit {res.rc}, not 1 or 2")
            if case.expect == "ok" and res.rc != 0:
                problems.append(f"exit {res.rc}, expected success")
            if case.expect == "refused":
                if res.rc == 0:
                    problems.append(f"accepted (exit 0), expected a refusal saying {case.fragment!r}; stderr: {res.err[-300:]!r}")
                elif case.code is not None and res.rc != case.code:
                    problems.append(f"exit {res.rc}, expected {case.code}")
        if res.check_error:
            problems.append(res.check_error)
    if res.changed:
        problems.append("files it was given changed: " + "; ".join(res.changed))
    assert not problems, f"{command}\n  exit {res.rc} in {res.seconds:.1f} s\n  " + "\n  ".join(problems)
