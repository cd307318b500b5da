#!/usr/bin/env bash
# Install (Debian's package) and start a PostgreSQL server on loopback for the worker tests;
# print the SQLAlchemy URL of a database the tests may use (the only line on stdout). Needs root.
#
# The server is a daemon that outlives this script: it must not inherit our stdout or stderr,
# or a caller reading them (`URL=$(.ci/start-postgres.sh)`, a CI log pipe) waits forever.
set -euo pipefail
log=$(mktemp -t medlora-postgres.XXXXXX)
quiet() { "$@" </dev/null >>"$log" 2>&1 || { echo "start-postgres: '$*' failed:" >&2; cat "$log" >&2; exit 1; }; }

if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  quiet apt-get update -qq
  quiet env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
fi
version=$(ls /usr/lib/postgresql | sort -n | tail -1)
pg_lsclusters -h | grep -q "^$version main" || quiet pg_createcluster "$version" main
pg_ctlcluster "$version" main start </dev/null >>"$log" 2>&1 || true   # "already running" is fine
for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 && break; sleep 1; done
pg_isready -q -h 127.0.0.1 || { echo "start-postgres: server did not come up:" >&2; cat "$log" >&2; exit 1; }
as_pg() { su postgres -c "$1" </dev/null 2>>"$log"; }
# a password found nowhere else, so that tests can grep every output for it (tests/study/test_secrets.py)
password=pgSecret7Xq
as_pg "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='medlora'\"" | grep -q 1 \
  || quiet su postgres -c "psql -qc \"CREATE ROLE medlora LOGIN\""
quiet su postgres -c "psql -qc \"ALTER ROLE medlora PASSWORD '$password'\""
as_pg "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='medlora_test'\"" | grep -q 1 \
  || quiet su postgres -c "createdb -O medlora medlora_test"
rm -f "$log"
echo "postgresql://medlora:$password@127.0.0.1:5432/medlora_test"   # as the README writes it (psycopg 3)
