# Throwaway PostgreSQL clusters for the demo and the benchmarks. Sourced
# after prereqs.sh.
# cluster_start NAME PORT [name=value ...]: a cluster in $WORK/NAME on 127.0.0.1:PORT
# (with CLUSTER_WALDIR set, its pg_wal lives there: initdb --waldir).
# cluster_stop NAME. Needs WORK (a directory) and PG_BINDIR: workspace_start sets both.

pg_as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cluster_start() {
  local name=$1 port=$2; shift 2
  local dir="$WORK/$name"
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres "$WORK" "$dir"
  pg_as_owner "$PG_BINDIR/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 --no-sync \
    ${CLUSTER_WALDIR:+--waldir="$CLUSTER_WALDIR"} >/dev/null
  {
    echo "port = $port"
    echo "listen_addresses = '127.0.0.1'"
    echo "unix_socket_directories = '$dir'"
    echo "wal_level = logical"
    echo "max_wal_senders = 20"
    echo "max_replication_slots = 20"
    for setting in "$@"; do echo "${setting%%=*} = '${setting#*=}'"; done
  } | pg_as_owner tee -a "$dir/data/postgresql.auto.conf" >/dev/null
  pg_as_owner "$PG_BINDIR/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null
  STARTED_CLUSTERS+=("$name")
}

cluster_stop() {
  local dir="$WORK/$1"
  [ -d "$dir/data" ] && pg_as_owner "$PG_BINDIR/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
}

# workspace_start PREFIX: PostgreSQL 15 and a release build of walpipe
# (WALPIPE; BUILT_WALPIPE names a build to use instead), a scratch directory
# (WORK), and an exit trap that stops every
# background job and every cluster started with cluster_start, even on failure.
workspace_start() {
  ensure_postgres15
  PG_BINDIR=$PG15_BINDIR
  if [ -n "${BUILT_WALPIPE:-}" ]; then
    WALPIPE=$(realpath "$BUILT_WALPIPE")
  else
    echo "== building walpipe (release)"
    cargo build --release --locked -q
    WALPIPE=$PWD/target/release/walpipe
  fi
  WORK=$(mktemp -d "/tmp/$1.XXXXXX")
  STARTED_CLUSTERS=()
  trap workspace_stop EXIT
  trap 'exit 1' INT TERM
}

workspace_stop() {
  set +e
  for pid in $(jobs -p); do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  for name in "${STARTED_CLUSTERS[@]}"; do cluster_stop "$name"; done
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}
