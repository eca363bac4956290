# A throwaway MariaDB server for the benches and drills (Debian's mariadbd),
# with the binlog walpipe needs. Sourced after scripts/lib/prereqs.sh, once
# workspace_start has run ($WORK).
#
#   mariadb_start PORT [mariadbd options...]   # data in $WORK/mariadb, user walpipe/pw, database shop
#   my [mariadb client args...]                # the root client on its socket
#   mariadb_stop

MY="${WORK:-/tmp}/mariadb"

my() { mariadb --no-defaults --socket="$MY/sock" -uroot --batch --skip-column-names "$@"; }

mariadb_start() {
  local port=$1; shift
  MY="$WORK/mariadb"
  chmod 755 "$WORK"  # mysqld runs as mysql and must reach its directory
  mkdir -p "$MY" && chown -R mysql "$MY"
  mariadb-install-db --no-defaults --datadir="$MY/data" --user=mysql --auth-root-authentication-method=normal --skip-test-db >/dev/null 2>&1
  setsid -f mariadbd --no-defaults --datadir="$MY/data" --socket="$MY/sock" --port="$port" --bind-address=127.0.0.1 \
    --user=mysql --pid-file="$MY/pid" --log-error="$MY/error.log" --server-id=1 --log-bin="$MY/data/binlog" \
    --binlog-format=ROW --binlog-row-image=FULL --binlog-row-metadata=FULL "$@"
  for _ in $(seq 1 100); do my -e "SELECT 1" >/dev/null 2>&1 && break; sleep 0.2; done
  my -e "CREATE USER walpipe@'%' IDENTIFIED BY 'pw'; GRANT ALL ON *.* TO walpipe@'%'; CREATE DATABASE shop"
}

mariadb_stop() {
  [ -f "$MY/pid" ] && kill -9 "$(cat "$MY/pid")" 2>/dev/null
  rm -f "$MY/pid"
}
