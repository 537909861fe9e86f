# Single source for set-up, demo, tests, lint and benchmarks (CI calls `make test` and `make lint`).
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip
QIPO := $(BIN)/qipo
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
DEMO ?= build/demo

.PHONY: setup demo test test-all test-client lint fmt clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch first, pinned to the CPU wheel: the `train` extra's range is satisfied by it, so pip never
# resolves a multi-GB CUDA build. The client distribution (clients/python) is not on an index: it is
# installed from the checkout in the same command as the package that depends on it.
$(STAMP): pyproject.toml clients/python/pyproject.toml | $(BIN)/python
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ./clients/python -e '.[cpu,train,dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	bash scripts/demo.sh

test: $(STAMP)
	bash scripts/redis-up.sh
	$(BIN)/pytest -m "not slow" -q

test-all: $(STAMP)
	bash scripts/redis-up.sh
	$(BIN)/pytest -q

# The robot's side installed alone: a fresh venv gets qipo-client (first bare, to show it pulls nothing of
# the server, then with its `ws` extra and pytest) and runs the client's own tests against a live server.
CLIENT_VENV ?= build/client-venv
SERVER_ONLY := fastapi starlette uvicorn redis onnxruntime torch
test-client: $(STAMP)
	rm -rf $(CLIENT_VENV)
	$(PY) -m venv $(CLIENT_VENV)
	$(CLIENT_VENV)/bin/pip install -q --upgrade pip
	$(CLIENT_VENV)/bin/pip install -q ./clients/python
	$(CLIENT_VENV)/bin/python -c 'import importlib.util as u, sys, qipo_client; \
	  found = [m for m in sys.argv[1:] if u.find_spec(m)]; \
	  sys.exit(f"qipo-client pulled server packages: {found}" if found else 0)' $(SERVER_ONLY)
	$(CLIENT_VENV)/bin/pip install -q './clients/python[ws]' pytest
	bash scripts/redis-up.sh
	$(BIN)/python scripts/client_check.py --python $(CLIENT_VENV)/bin/python

LINTED := service training tests clients/python scripts loadtests
lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy service training scripts loadtests
	$(BIN)/mypy --strict service clients/python/qipo_client
	cd clients/python && ../../$(BIN)/mypy qipo_client

fmt: $(STAMP)
	$(BIN)/ruff format $(LINTED)
	$(BIN)/ruff check --fix $(LINTED)

clean:
	rm -rf build .qipo-cache .pytest_cache .mypy_cache .ruff_cache

# --- training benchmarks ---------------------------------------------------------------------------
# d3rlpy 2.8.1 pins gymnasium==1.0.0 (and imports the old `gym`): install it without its pins, plus the
# deps it actually imports, so our gymnasium and torch stay as they are.
D3RLPY_STAMP := $(VENV)/.d3rlpy
$(D3RLPY_STAMP): | $(STAMP)
	$(PIP) install -q --no-deps d3rlpy==2.8.1 gym==0.26.2
	$(PIP) install -q click colorama dataclasses-json structlog scikit-learn cloudpickle gym_notices
	touch $(D3RLPY_STAMP)

.PHONY: bench-train bench-rl
bench-train: $(STAMP) $(D3RLPY_STAMP)
	$(BIN)/python scripts/bench_train.py --out docs/bench

bench-rl: $(STAMP)
	$(BIN)/python scripts/bench_rl.py --out docs/bench

# MuJoCo tier: ~200k-transition Minari datasets under data/ from SAC behaviour policies (Hopper-v5,
# HalfCheetah-v5, Walker2d-v5: random, medium, medium-replay, medium-expert).
.PHONY: mujoco-data mujoco-policies
# Rollouts of the committed SAC behaviour policies (training/data/policies/*.npz): about a minute per env.
mujoco-data: $(STAMP)
	for env in hopper halfcheetah walker2d; do $(QIPO) data make $$env --out data || exit 1; done

# The rest of the grid's suite (training/data/suite.py): Reacher-v5 (scripted arm, 50-step episodes, mixed
# = 20% expert / 30% noisy / 50% random) and Pendulum, each in seconds.
.PHONY: suite-data
suite-data: mujoco-data
	for env in reacher pendulum; do $(QIPO) data make $$env --out data || exit 1; done

# Train the behaviour policies anew (25–70 min per env on one core) and record how they were made.
mujoco-policies: $(STAMP)
	mkdir -p docs/data
	for env in hopper halfcheetah walker2d; do \
	  $(QIPO) data make $$env --out data --threads 1 --train-sac && cp data/$$env/generation.json docs/data/$$env-generation.json \
	  || exit 1; done

# p99 latency while replicas swap models vs steady p99 of the same run (docs/bench/swap.*).
.PHONY: bench-swap
bench-swap: $(STAMP)
	bash scripts/redis-up.sh
	$(BIN)/python scripts/bench_swap.py

# ---------------------------------------------------------------- deploy
# The compose topology as local processes: Redis (if none answers), replicas on loopback, nginx, and
# Prometheus; logs and pid files under $(STACK_DIR). Settings: see scripts/stack.sh.
STACK_DIR ?= build/stack
STACK_LB_PORT ?= 8080
STACK_PROM_PORT ?= 9090
SCENARIO ?= steady
DASHBOARD_SECONDS ?= 120
.PHONY: stack-deps stack stack-down stack-restart stack-status loadtest stack-dashboard lint-deploy
.PHONY: test-compose docker-engine docker-engine-down

# Debian's nginx (the balancer, and `nginx -t` in CI), prometheus (+ promtool), redis-server and dnsmasq
# (stands in for Docker's DNS in tests/e2e/test_stack_compose_lb.py), installed when missing.
stack-deps:
	@missing=""; command -v nginx >/dev/null || missing="nginx"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v dnsmasq >/dev/null || missing="$$missing dnsmasq-base"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

stack: $(STAMP) stack-deps
	STACK_DIR=$(STACK_DIR) STACK_LB_PORT=$(STACK_LB_PORT) STACK_PROM_PORT=$(STACK_PROM_PORT) bash scripts/stack.sh up

stack-down:
	STACK_DIR=$(STACK_DIR) bash scripts/stack.sh down

stack-restart:
	STACK_DIR=$(STACK_DIR) bash scripts/stack.sh restart

stack-status:
	STACK_DIR=$(STACK_DIR) bash scripts/stack.sh status

# A headless, bounded locust run against the running stack: SCENARIO=steady|ramp|upgrade.
loadtest: $(STAMP)
	QIPO_DURATION=$${QIPO_DURATION:-20} QIPO_LOCUST_SUMMARY=$(STACK_DIR)/loadtest-$(SCENARIO).json \
	  QIPO_REGISTRY=$${QIPO_REGISTRY:-redis://127.0.0.1:6379/0} QIPO_REGISTRY_PREFIX=$${QIPO_REGISTRY_PREFIX:-qipo-stack} \
	  $(BIN)/locust -f loadtests/$(SCENARIO).py --headless --only-summary \
	  -H http://127.0.0.1:$(STACK_LB_PORT) --stop-timeout 5

# Every panel of the Grafana dashboard, drawn from the stack's Prometheus (Grafana is not on Debian).
stack-dashboard: $(STAMP)
	$(BIN)/python loadtests/dashboard.py --prometheus http://127.0.0.1:$(STACK_PROM_PORT) \
	  --last $(DASHBOARD_SECONDS) --out docs/bench/dashboard.png

lint-deploy: $(STAMP) stack-deps
	bash scripts/stack-lint.sh

# docker-compose.yml for real: build, `up -d`, health, both replicas behind nginx, Prometheus, and
# publish → promote → rollback under robots' load; always `down -v`. Starts an engine (docker-engine.sh) when
# `docker info` does not answer and stops it afterwards. Numbers: build/compose-test/summary.json.
test-compose: $(STAMP)
	$(BIN)/pytest tests/e2e/test_compose.py -m slow -q

# Debian's dockerd + Compose v2 + stand-ins for images that cannot be pulled (scripts/docker-engine.sh).
docker-engine:
	bash scripts/docker-engine.sh up .

docker-engine-down:
	bash scripts/docker-engine.sh down

# Action chunks under simulated delay d ∈ {0,1,2,4,8}, closed loop through the real server (loadtests/chunks.py):
# H = 1 delayed, synchronous chunks, naive switching, ACT's temporal ensembling, inpainting; H ∈ {1,4,8} at
# d = 0. CHUNK_RUNS: trained run dirs or artifacts (default: what `make chunk-runs` trained).
# `scripts/bench_chunks.py --smoke` checks the pipeline on tiny Pendulum policies in seconds (build/).
CHUNK_RUNS ?= $(patsubst %/summary.json,%,$(wildcard build/chunk-runs/*/summary.json))

# The runs bench-chunks needs: QIPO-OT at the library defaults and each horizon on the medium-expert files
# (`make mujoco-data`), ≈ 20 min of one core each (18 runs: 6 h). Resumable: a run with summary.json is done,
# one with a checkpoint continues; CHUNK_ENVS / CHUNK_HORIZONS / CHUNK_SEEDS pick a subset.
CHUNK_ENVS ?= hopper halfcheetah
CHUNK_HORIZONS ?= 1 4 8
CHUNK_SEEDS ?= 0 1 2
.PHONY: chunk-runs
chunk-runs: $(STAMP)
	for env in $(CHUNK_ENVS); do for h in $(CHUNK_HORIZONS); do for s in $(CHUNK_SEEDS); do \
	  out=build/chunk-runs/$$env-medium-expert-h$$h-s$$s; test -f $$out/summary.json && continue; \
	  resume=$$(test -f $$out/checkpoint.pt && echo --resume); \
	  OMP_NUM_THREADS=1 $(QIPO) train data/$$env/medium-expert-v0 --out $$out --set action_horizon=$$h \
	    --seed $$s --threads 1 --eval-episodes 0 --quiet $$resume || exit 1; \
	done; done; done
.PHONY: bench-chunks
bench-chunks: $(STAMP)
	@test -n "$(CHUNK_RUNS)" || { echo "set CHUNK_RUNS to trained run dirs or artifacts (see the Makefile)"; exit 1; }
	OMP_NUM_THREADS=1 $(BIN)/python scripts/bench_chunks.py $(CHUNK_RUNS) --out docs/bench $(BENCH_CHUNKS_ARGS)

# Serving benchmark: floor vs real server under uvicorn at 1/16/64 clients, the app called in
# process, ONNX vs torch eager. BENCH_SERVE_ARGS="--profile --baseline DIR" adds the py-spy profile and a
# server run from another source tree (e.g. `git archive <commit> service | tar -x -C DIR`) in the same run.
BENCH_SERVE_ARGS ?=
.PHONY: bench-serve
bench-serve: $(STAMP)
	$(BIN)/python scripts/bench_serve.py --out docs/bench $(BENCH_SERVE_ARGS)

# The in-process part alone (no sockets; thread CPU, so a shared box barely moves it): a minute or two.
.PHONY: bench-serve-inproc
bench-serve-inproc: $(STAMP)
	$(BIN)/python scripts/bench_serve.py --inproc-only --out docs/bench/inproc $(BENCH_SERVE_ARGS)

# EFM exactness on the six 2-D toys: ~25 min of CPU on one thread; writes docs/bench/toy.*
.PHONY: bench-toy
bench-toy: $(STAMP)
	$(QIPO) toy bench --out docs/bench --threads 1

# The same at the large size (`--size large`: hidden 256, 2 residual blocks, 8k steps, 100 Euler steps): about
# an hour of one core per dataset, so one resumable shard per dataset under docs/bench/toy-8k/shards/, merged
# into docs/bench/toy-8k/toy.*. Two cores: two calls, each with its own TOY_DATASETS. The earlier 4k-step
# run is docs/bench/toy-4k (TOY_SIZE="--size large --steps 4000" TOY_LARGE=docs/bench/toy-4k).
TOY_DATASETS ?= 8gaussians swissroll moons rings checkerboard 2spirals
.PHONY: bench-toy-large
bench-toy-large: $(STAMP)
	bash scripts/toy_shards.sh $(TOY_DATASETS)

# QIPO-OT (+ its BC warm-up and best-of-N) vs d3rlpy IQL and TD3+BC, same datasets and budget.
# Resumable: a run whose record exists under docs/bench/rl-runs/ is skipped. One QIPO run at the default
# budget takes about 20 min of one core; pick a subset with GRID_ENVS/GRID_ALGOS/GRID_SEEDS.
GRID_ALGOS ?= qipo-ot iql td3bc
GRID_SEEDS ?= 0 1 2
# Each env runs its suite datasets (training/data/suite.py; data: `make suite-data`).
GRID_ENVS ?= hopper halfcheetah walker2d reacher pendulum
.PHONY: bench-grid
bench-grid: $(STAMP) $(D3RLPY_STAMP)
	for env in $(GRID_ENVS); do \
	  $(BIN)/python scripts/bench_grid.py run --envs $$env --algos $(GRID_ALGOS) --seeds $(GRID_SEEDS) \
	    || exit 1; done
	$(BIN)/python scripts/bench_grid.py summarise

# Training past one process: steps/s and renewal seconds at 1 and 2 torchrun processes (50k transitions),
# peak RSS and renewal seconds at 200k and 2M (synthetic Hopper-shaped data under build/bench-scale). Needs 2 idle cores; about
# 10 min on a quiet box: an eager renewal of 50k states at 1 and 2 processes (≈ 1.5 ms per state on one
# EPYC core), then 200k and 2M with the default lazy renewal at 1 process.
# BENCH_SCALE_ARGS=--quick: small sizes in ~2 min.
BENCH_SCALE_ARGS ?=
.PHONY: bench-scale
bench-scale: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python scripts/bench_scale.py --out docs/bench $(BENCH_SCALE_ARGS)
