# Two commands on a fresh machine: `make book` and `make test`. Both set up first.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-setup
PROFILE ?= cpu
CHAPTER ?=
BENCH_ARGS ?=
FMNIST := /usr/share/datasets/fashion-mnist
MATHJAX := _vendor/mathjax/tex-svg-full.js

.PHONY: setup system book test lab bench

setup: $(STAMP) $(MATHJAX) system

# Re-runs only when pyproject.toml changes; pip finds torch's CPU wheel where one is provided.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[book,dev,vision]'
	@touch $@

# The book serves MathJax itself (no CDN when a page is viewed): one file from npm.
$(MATHJAX):
	@command -v npm >/dev/null || { echo "npm is needed once to fetch MathJax (apt-get install npm)"; exit 1; }
	@tmp=$$(mktemp -d) && (cd $$tmp && npm pack --silent mathjax@3.2.2 >/dev/null) \
		&& tar -xzf $$tmp/mathjax-3.2.2.tgz -C $$tmp package/es5/tex-svg-full.js \
		&& mkdir -p $(@D) && cp $$tmp/package/es5/tex-svg-full.js $@ && rm -rf $$tmp

# Debian packages where missing and apt can install them: Fashion-MNIST (real data) and
# Chromium (the headless check of the HTML book). Elsewhere kdlib says where it looked.
system:
	@need=""; \
	[ -f $(FMNIST)/train-images-idx3-ubyte.gz ] || need="$$need dataset-fashion-mnist"; \
	command -v chromium >/dev/null || need="$$need chromium"; \
	if [ -n "$$need" ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing$$need"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need >/dev/null; \
	fi

test: setup
	$(BIN)/python -m pytest

book: setup
	$(BIN)/python -m kdlib book --profile $(PROFILE) $(if $(CHAPTER),--chapter $(CHAPTER))

# Jupyter refuses to start as root unless told; containers often run as root.
lab: setup
	$(BIN)/jupyter lab book/ $$([ "$$(id -u)" = 0 ] && echo --allow-root)

# kdlib's trainer against a reference-style loop; options in bench/README.md (e.g. BENCH_ARGS=--quick).
bench: $(STAMP) system
	$(BIN)/python -m kdlib bench $(BENCH_ARGS)
