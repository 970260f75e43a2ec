# The two commands a newcomer needs. Both install cmake first when it is
# missing (pingora's build needs it); the tests also install what they
# drive (jq, curl, PyYAML, pebble, chromium).
.PHONY: demo test lint deps deps-build

deps:
	@scripts/ensure-build-deps.sh

deps-build:
	@scripts/ensure-build-deps.sh --build

# The proxy in front of two built-in backends, on 127.0.0.1:8080.
demo: deps-build
	cargo run -p switchyard -- demo

# Every unit and end-to-end test (the real binary on loopback). nextest
# when installed (one process per test, one summary line), else cargo test.
test: deps
	@if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run --workspace --no-fail-fast; \
	else \
		cargo test --workspace --no-fail-fast; \
	fi

lint: deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
