# One target per stage. Stage outputs are tracked by completion stamps under paths.stamps (data/stamps):
# <stage>.done is remade when an upstream .done is newer or when <stage>.cfg, the fingerprint of the config
# sections the stage reads, changes. A second `make all` therefore does nothing.
#
#   make all                    setup + every stage on configs/default.toml
#   make vocab CONFIG=configs/tiny.toml ARGS="vocab.min_freq=3"

CONFIG ?= configs/default.toml
ARGS ?=
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIPELINE := $(PY) -m pipeline
# Stamps live where the config says (paths.stamps); ask the config rather than repeating the path here.
STAMPS := $(shell test -x $(PY) && $(PIPELINE) path stamps --config $(CONFIG) $(foreach a,$(ARGS),--set $(a)) 2>/dev/null || echo data/stamps)
SETUP := $(VENV)/.installed

STAGES := data prepare vocab embed train-ner evaluate-ner train-translate evaluate-translate export report

.PHONY: all setup test test-fast lint clean help $(STAGES) bench bench-serving FORCE
.DEFAULT_GOAL := help

help:
	@echo "make all      setup, then every stage on CONFIG (default $(CONFIG))"
	@echo "make test     unit and end-to-end tests (tiny config)"
	@echo "make test-fast   the same without the tests marked slow (over ~20 s each)"
	@echo "make setup    create $(VENV) and install the project (idempotent)"
	@echo "make STAGE    one stage and what it needs: $(STAGES)"
	@echo "make lint     ruff"
	@echo "make report  data/reports/index.html: every result as tables and plots"
	@echo "make bench   training and decoding speed on real batches (data/reports/bench.json)"
	@echo "make bench-serving   CPU latency / throughput of the latest exported SavedModels"

all: setup $(STAGES)

setup: $(SETUP)

$(SETUP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

# Config fingerprints: the recipe runs every time but rewrites the file only when its content changed,
# and make then sees an unchanged mtime.
$(STAMPS)/%.cfg: FORCE | $(SETUP)
	@$(PIPELINE) stamp $* --config $(CONFIG) $(foreach a,$(ARGS),--set $(a))

$(STAMPS)/data.done: $(STAMPS)/data.cfg
	$(PIPELINE) data --config $(CONFIG) $(ARGS)

$(STAMPS)/prepare.done: $(STAMPS)/data.done $(STAMPS)/prepare.cfg
	$(PIPELINE) prepare --config $(CONFIG) $(ARGS)

$(STAMPS)/vocab.done: $(STAMPS)/prepare.done $(STAMPS)/vocab.cfg
	$(PIPELINE) vocab --config $(CONFIG) $(ARGS)

$(STAMPS)/embed.done: $(STAMPS)/vocab.done $(STAMPS)/embed.cfg
	$(PIPELINE) embed --config $(CONFIG) $(ARGS)

$(STAMPS)/train-ner.done: $(STAMPS)/embed.done $(STAMPS)/train-ner.cfg
	$(PIPELINE) train-ner --config $(CONFIG) $(ARGS)

$(STAMPS)/evaluate-ner.done: $(STAMPS)/train-ner.done $(STAMPS)/evaluate-ner.cfg
	$(PIPELINE) evaluate-ner --config $(CONFIG) $(ARGS)

$(STAMPS)/train-translate.done: $(STAMPS)/embed.done $(STAMPS)/train-translate.cfg
	$(PIPELINE) train-translate --config $(CONFIG) $(ARGS)

$(STAMPS)/evaluate-translate.done: $(STAMPS)/train-translate.done $(STAMPS)/evaluate-translate.cfg
	$(PIPELINE) evaluate-translate --config $(CONFIG) $(ARGS)

# ---- export for TF Serving: saved_models/{ner,translate}/<next version>/ and saved_models/models.config ----
$(STAMPS)/export.done: $(STAMPS)/train-ner.done $(STAMPS)/train-translate.done $(STAMPS)/export.cfg
	$(PIPELINE) export --config $(CONFIG) $(ARGS)

# A measurement, not an artifact: it runs every time it is asked for.
bench-serving: $(STAMPS)/export.done
	$(PIPELINE) bench-serving --config $(CONFIG) $(ARGS)

# The report reads every evaluation; it is remade when any of them is newer.
$(STAMPS)/report.done: $(STAMPS)/evaluate-ner.done $(STAMPS)/evaluate-translate.done $(STAMPS)/report.cfg
	$(PIPELINE) report --config $(CONFIG) $(ARGS)

# Measurements, not artifacts: they run every time they are asked for.
bench: $(STAMPS)/embed.done
	$(PIPELINE) bench --config $(CONFIG) $(ARGS)

$(STAGES): %: $(STAMPS)/%.done

test: $(SETUP)
	$(PY) -m pytest

test-fast: $(SETUP)
	$(PY) -m pytest -m 'not slow'

lint: $(SETUP)
	$(PY) -m ruff check pipeline tests
	$(PY) -m ruff format --check pipeline tests

clean:
	rm -rf data/raw data/processed data/vocab data/embeddings data/reports data/stamps

FORCE:
