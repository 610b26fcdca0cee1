"""`charrnn vocab`: the vocabulary as a Hugging Face tokenizer.json."""

from pathlib import Path
from typing import Annotated

import typer

from charrnn.cli.shared import CheckpointArgument, err, output_path


def vocab(
    checkpoint: CheckpointArgument,
    output: Annotated[Path, typer.Option("--out", parser=output_path, metavar="<path>", help="Where to write the Hugging Face tokenizer.json.")] = Path("tokenizer.json"),
) -> None:
    """Export the vocabulary as a Hugging Face tokenizer.json (PreTrainedTokenizerFast loads it)."""
    from charrnn.model.loading import load_model

    from charrnn import checkpoint as ckpt
    from charrnn.data.vocab_kinds import vocab_kind
    from charrnn.outputs import check_output_file

    check_output_file(output, "--out", inputs=[checkpoint, ckpt.resolve(checkpoint)], example="tokenizer.json")
    _, chars, _ = load_model(checkpoint, device="cpu")
    chars.save_tokenizer_json(output)
    err.print(f"wrote {output} ({len(chars)} {vocab_kind(chars.kind).unit}s)", markup=False)
