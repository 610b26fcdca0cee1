"""The command line, assembled: one module per command (``charrnn/cli/<command>.py``), each
parsing its options, building a config, calling the library and showing the result.

Generated text goes to stdout, raw; everything else (progress, status, errors) to stderr.
torch is imported inside the commands so that ``--help`` stays fast.
"""

from typing import Annotated

import typer

from charrnn import __version__
from charrnn.cli import bench, corpus, evaluate, explore, export, gradients, info, inspect_command, plot, sample, serve, train, vocab
from charrnn.cli.errors import OneLineUsageErrors, user_errors
from charrnn.cli.help import HelpCommand, HelpGroup


class _Group(OneLineUsageErrors, HelpGroup):
    pass


app = typer.Typer(
    cls=_Group,
    help="Train character-level LSTM/GRU language models, stream samples, resume exactly.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)
corpus_app = typer.Typer(cls=HelpGroup, help="List, fetch and build named corpora.", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")

# In the order `charrnn --help` lists them.
COMMANDS = [
    ("train", train.train),
    ("sample", sample.sample),
    ("info", info.info),
    ("eval", evaluate.evaluate_command),
    ("vocab", vocab.vocab),
    ("export", export.export),
    ("serve", serve.serve),
    ("plot", plot.plot),
    ("gradients", gradients.gradients),
    ("inspect", inspect_command.inspect_command),
    ("explore", explore.explore),
    ("bench", bench.bench),
]
# Every command's exceptions become one line on stderr (cli/errors.py), applied here once.
for name, command in COMMANDS:
    app.command(name, cls=HelpCommand)(user_errors(command))
for name, command in [("list", corpus.corpus_list), ("fetch", corpus.corpus_fetch), ("suite", corpus.corpus_suite)]:
    corpus_app.command(name, cls=HelpCommand)(user_errors(command))


def _version(value: bool) -> None:
    if value:
        print(f"charrnn {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    pass


def main() -> None:
    app(prog_name="charrnn")


if __name__ == "__main__":
    main()
