"""`sample --prime-file`: the prime read from a file gives the text --prime gives, and every
bad file is one line."""

from __future__ import annotations


import pytest

from tests.test_edges_sampling import charrnn, one_line


def test_a_prime_file_samples_as_the_same_prime_given_on_the_command_line(trained_run, tmp_path):
    prime = "[JULIET] Good night, 'good' night!\n[ROMEO] O, "
    path = tmp_path / "prime.txt"
    path.write_text(prime, encoding="utf-8")
    from_file = charrnn("sample", trained_run, "--prime-file", path, "--length", 40, "--seed", 5, "--threads", 1)
    given = charrnn("sample", trained_run, "--prime", prime, "--length", 40, "--seed", 5, "--threads", 1)
    assert from_file.returncode == 0, from_file.stderr
    assert from_file.stdout == given.stdout
    assert from_file.stdout.decode("utf-8").startswith(prime)


def test_unknown_applies_to_a_prime_file(trained_run, tmp_path):
    path = tmp_path / "prime.txt"
    path.write_text("[ROMEO] Qx", encoding="utf-8")
    refused = charrnn("sample", trained_run, "--prime-file", path, "--length", 5)
    assert refused.returncode == 1 and "not in the model's vocabulary" in one_line(refused)
    skipped = charrnn("sample", trained_run, "--prime-file", path, "--unknown", "skip", "--length", 5, "--seed", 1)
    reference = charrnn("sample", trained_run, "--prime", "[ROMEO] ", "--length", 5, "--seed", 1)
    assert skipped.returncode == 0, skipped.stderr
    # The prime is printed as given; the text after it is that of the prime without them.
    assert skipped.stdout.decode()[len("[ROMEO] Qx"):] == reference.stdout.decode()[len("[ROMEO] "):]


def _bad_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"caf\xe9")
    return path


def _huge(tmp_path):
    path = tmp_path / "huge.txt"
    with open(path, "wb") as handle:
        handle.truncate(2**40)  # sparse: 1 TiB of size, nothing written
    return path


@pytest.mark.parametrize(
    "make, extra, code, answer",
    [
        (lambda p: p / "absent.txt", [], 2, "charrnn: invalid options: --prime-file {path} does not exist"),
        (lambda p: p, [], 2, "charrnn: invalid options: --prime-file {path} is a directory: name a text file"),
        (_bad_utf8, [], 2, "charrnn: invalid text: --prime-file {path} is not valid UTF-8 text: byte 0xe9 at byte 3"),
        (lambda p: (p / "empty.txt").write_text("") and None or p / "empty.txt", [], 2, "is empty"),
        (lambda p: (p / "x.txt").write_text("[ROMEO]") and None or p / "x.txt", ["--prime", "a"], 2,
         "charrnn: invalid options: --prime and --prime-file cannot be combined: give the prime one way"),
        (_huge, [], 1, "charrnn: out of memory: a prime of 1,099,511,627,776 bytes (--prime-file {path}) would need about"),
    ],
    ids=["missing", "directory", "not-utf8", "empty", "with-prime", "huge"],
)
def test_a_bad_prime_file_is_one_line(trained_run, tmp_path, make, extra, code, answer):
    path = make(tmp_path)
    result = charrnn("sample", trained_run, "--prime-file", path, *extra, "--length", 5)
    assert result.returncode == code, result.stderr
    assert answer.format(path=path) in one_line(result)
    assert result.stdout == b""
