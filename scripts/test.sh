#!/usr/bin/env bash
# Set up a Debian 12 machine and run pmxfs's whole test suite: formatting, lints, unit
# tests, and the end-to-end tests that mount the real filesystem through /dev/fuse.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

echo "== build"
cargo build --workspace --bins --all-targets

echo "== tests"
cargo test --workspace --no-fail-fast 2>&1 | tee target/test-output.txt
grep -E '^test result:' target/test-output.txt | awk '{p+=$4; f+=$6} END {print "tests: " p " passed, " f " failed"}'
