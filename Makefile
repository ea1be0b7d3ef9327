# The two commands README.md gives. Both work on a fresh machine: they install what they need.
.PHONY: demo test lint unit integration deps sync bench

demo: ## set up, then run the daemon on config/ with the example model server
	bash scripts/demo.sh

test: ## set up, then lint, type-check and run the whole test suite against real servers
	bash scripts/test.sh

deps:
	bash scripts/install-deps.sh

sync:
	uv sync --frozen --all-extras

lint: sync
	uv run --frozen ruff check watcher tests bench examples deploy docs/hooks
	uv run --frozen mypy watcher

unit: sync
	uv run --frozen pytest tests/unit tests/fuzz -q

integration: deps sync
	uv run --frozen pytest tests/integration

bench: deps sync ## every benchmark at full size; figures go to stdout and bench/results/
	uv run --frozen python -m bench.latency --source all --changes 200
	uv run --frozen python -m bench.footprint --source all --models 1,100,1000 --seconds 60
	uv run --frozen python -m bench.footprint --source localdir --models 1000 --seconds 60 --api on
	uv run --frozen python -m bench.scale --source all --models 1000 --publishes 10000
	uv run --frozen python -m bench.fanout --daemons 200
	uv run --frozen python -m bench.fleet --daemons 200
	uv run --frozen python -m bench.availability
	uv run --frozen python -m bench.weights --size-mb 512 --repeat 3
