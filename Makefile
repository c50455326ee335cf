# Two commands on a fresh machine: `make book` and `make test`. Both set up first.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-setup
PROFILE ?= cpu
CHAPTER ?=
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup data book test lab bench clean-book

setup: $(STAMP) data

# Re-runs only when pyproject.toml changes; pip finds torch's CPU wheel where one is provided.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[book,dev,vision]'
	@touch $@

# Fashion-MNIST from Debian when it is missing and apt can install it; otherwise kdlib
# explains where it looked and how to get the files.
data:
	@if [ ! -f $(FMNIST)/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing dataset-fashion-mnist"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	fi

test: setup
	$(BIN)/python -m pytest

book: setup
	$(BIN)/python -m kdlib book --profile $(PROFILE) $(if $(CHAPTER),--chapter $(CHAPTER))

lab: setup
	$(BIN)/jupyter lab book/

bench: setup
	$(BIN)/python -m kdlib bench
