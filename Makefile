# Two commands for newcomers (see README.md):
#   make book   set up .venv if missing, prepare the artefacts of $(EXPERIMENT), build the book
#   make test   set up .venv if missing, run the tests
#   make publish  push the built book to the gh-pages branch of REMOTE (ghp-import)
#   make widths  a width sweep at one site of $(EXPERIMENT) (its own target: about 40 minutes on 2 cores, estimated)
#   make twins   seed twins of $(EXPERIMENT) (a second SAE at 4 sites, another seed) and their pass: the noise floor
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
.DEFAULT_GOAL := help

PYTHON_SYS ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXPERIMENT ?= gemma
export EXPERIMENT
# make widths: the widths (at least 3, each 4x the last) and the site; empty: the preset's width /4, x1, x4
# at its middle site
WIDTHS ?=
SITE ?=
# make publish: the git remote (name or URL) whose gh-pages branch GitHub Pages serves
REMOTE ?= origin
# Extra pip arguments for torch, e.g. PIP_TORCH_ARGS="--index-url <your CPU wheel index>"
PIP_TORCH_ARGS ?=
# Without an NVIDIA GPU, pin torch with constraints-cpu.txt: never pull several GB of CUDA wheels.
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
CONSTRAINTS := $(if $(HAS_GPU),,-c constraints-cpu.txt)
STAMP := $(VENV)/.installed
# pip on these machines warns once per package about an unused local index: keep the log readable
# (grep finding nothing is fine; a failing pip still fails the pipeline through pipefail)
QUIET_PIP := { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: help venv test book artefacts widths twins publish clean-book clean

help:
	@echo "make book   build the Jupyter Book for EXPERIMENT=$(EXPERIMENT) into book/_build/html"
	@echo "make test   run the test suite"
	@echo "make publish  push book/_build/html to the gh-pages branch of REMOTE=$(REMOTE)"
	@echo "make widths  train (or reuse) SAEs of several widths at one site of EXPERIMENT=$(EXPERIMENT), then their pass and splitting"
	@echo "make twins   train (or reuse) seed twins of EXPERIMENT=$(EXPERIMENT) at 4 sites, then their pass (the noise floor)"

$(STAMP): pyproject.toml constraints-cpu.txt
	test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | $(QUIET_PIP)
	$(PY) -m pip install -q $(CONSTRAINTS) $(PIP_TORCH_ARGS) torch 2>&1 | $(QUIET_PIP)
	$(PY) -m pip install -q $(CONSTRAINTS) -e '.[book,dev]' 2>&1 | $(QUIET_PIP)
	$(PY) -c "import torch, nnsight, sae_lens, helpers; print('set up: torch', torch.__version__, '| nnsight', nnsight.__version__, '| sae_lens', sae_lens.__version__)"
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

artefacts: $(STAMP)
	$(PY) -m helpers prepare --experiment $(EXPERIMENT)

book: artefacts
	mkdir -p book/_widths
	$(PY) -m helpers explorer --experiment $(EXPERIMENT) --quiet --widths
	$(PY) -m helpers browser --experiment $(EXPERIMENT)
	rm -rf book/_build/.jupyter_cache
	$(VENV)/bin/jupyter-book build --all book $(BOOK_FLAGS)
	@echo "book: $(CURDIR)/book/_build/html/index.html"

widths: $(STAMP)
	$(PY) -m helpers widths --experiment $(EXPERIMENT) $(if $(WIDTHS),--widths $(WIDTHS)) $(if $(SITE),--site $(SITE))

twins: $(STAMP)
	$(PY) -m helpers prepare --experiment $(EXPERIMENT)-seeds

publish: $(STAMP)
	$(PY) -m helpers publish --html book/_build/html --remote $(REMOTE)

clean-book:
	rm -rf book/_build book/_explorer book/_browser book/_widths

clean: clean-book
	rm -rf $(VENV)
