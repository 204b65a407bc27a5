.PHONY: run demo test bench chaos package bootstrap fmt lint

## Run the whole system locally (API on http://127.0.0.1:3000, moto as AWS).
run:
	@scripts/run.sh

## The same, driving a demo signup to ACTIVE and its signed webhook.
demo:
	@scripts/run.sh --demo

## Run every test and check.
test:
	@scripts/test.sh

## Build every function as deployed and run the benchmarks; writes docs/PERFORMANCE.md.
bench:
	@scripts/bench.sh

## The chaos run: SIGNUPS (300) signups under AWS, Meta, process and customer faults, then the
## invariants; writes docs/RELIABILITY.md. SEED=<n> replays a run. (`make test` runs a small one.)
chaos:
	@scripts/chaos.sh

## Build every function for Lambda as deployed (`sam build` with scripts/lambda-build-flags.sh).
package:
	@scripts/package.sh

bootstrap:
	@scripts/bootstrap.sh

fmt:
	cargo fmt --all

lint:
	cargo clippy --workspace --all-targets -- -D warnings
