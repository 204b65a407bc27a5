.PHONY: run test bootstrap fmt lint

## Run the whole system locally (API on http://127.0.0.1:3000, moto as AWS).
run:
	@scripts/run.sh

## Run every test and check.
test:
	@scripts/test.sh

bootstrap:
	@scripts/bootstrap.sh

fmt:
	cargo fmt --all

lint:
	cargo clippy --workspace --all-targets -- -D warnings
