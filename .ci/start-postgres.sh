#!/usr/bin/env bash
# Install (Debian's package) and start a PostgreSQL server on loopback for the worker tests;
# print the SQLAlchemy URL of a database the tests may use (the only line on stdout). Needs root.
set -euo pipefail
exec 3>&1 1>&2  # everything but the URL goes to stderr
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /usr/lib/postgresql | sort -n | tail -1)
pg_lsclusters -h | grep -q "^$version main" || pg_createcluster "$version" main >/dev/null
pg_ctlcluster "$version" main start || true   # "already running" is fine
for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 && break; sleep 1; done
as_pg() { su postgres -c "$1"; }
as_pg "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='medlora'\"" | grep -q 1 \
  || as_pg "psql -qc \"CREATE ROLE medlora LOGIN PASSWORD 'medlora'\""
as_pg "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='medlora_test'\"" | grep -q 1 \
  || as_pg "createdb -O medlora medlora_test"
echo "postgresql+psycopg2://medlora:medlora@127.0.0.1:5432/medlora_test" >&3
