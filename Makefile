# Two commands for a newcomer:
#   make demo   set up .venv, train ~2 minutes on the embedded corpus (Python's stdlib), stream a sample
#   make test   set up .venv (with test extras) and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
CONSTRAINTS ?= constraints-cpu.txt

.PHONY: setup browser demo test docs docs-figures clean

$(BIN)/charrnn: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c $(CONSTRAINTS) -e '.[test]'
	@touch $@

setup: $(BIN)/charrnn

demo: setup
	run=checkpoints/demo-$$(date +%Y%m%d-%H%M%S) && \
	$(BIN)/charrnn train stdlib --minutes 2 --eval-chars 200000 --out $$run && \
	$(BIN)/charrnn sample $$run --best --length 800 --temperature 0.7 --prime "def "

# The playground test drives a real headless browser: Debian's chromium and chromedriver,
# installed here when they are missing and apt-get can (as root); otherwise that test skips.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "no chromium and no root apt-get here: the playground test will skip"; fi

# Two workers, a test file each at a time (module fixtures stay whole): most tests wait on one
# single-threaded subprocess, so two cores run two files (2026-12-06, a quiet 2-core Intel Xeon,
# torch 2.13.0+cpu: 529 s against 784 s in one process).
test: setup browser
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# Regenerate the option tables of docs/usage.md from the commands themselves.
docs: setup
	$(BIN)/python -m charrnn.cli.usage_doc

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache

# Re-run the docs' examples marked `figures` and rewrite their figures and machine in place.
docs-figures: setup
	$(BIN)/python -m tests.doc_examples --update
