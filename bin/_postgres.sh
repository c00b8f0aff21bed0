# Sourced by bin/test: start a throwaway PostgreSQL cluster on a Unix socket for the Postgres-marked tests, and
# export COUNCIL_TEST_POSTGRES_URL; the cluster is stopped and deleted when the calling script exits.
# Uses Debian's postgresql package (`.ci/run` installs it); without it the Postgres tests are skipped.
pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
if [ -n "${COUNCIL_TEST_POSTGRES_URL:-}" ]; then
  :  # a server named by the caller
elif [ -x "$pg_bin/initdb" ]; then
  pg_dir="$(mktemp -d /tmp/council-pg.XXXXXX)"
  as_pg=()
  if [ "$(id -u)" = 0 ]; then  # initdb refuses to run as root
    chown postgres "$pg_dir"
    as_pg=(runuser -u postgres --)
  fi
  "${as_pg[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U postgres -A trust --no-sync >/dev/null
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
    -o "-k $pg_dir -c listen_addresses='' -c fsync=off -c max_connections=200" start >/dev/null
  trap '"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null; rm -rf "$pg_dir"' EXIT
  export COUNCIL_TEST_POSTGRES_URL="postgresql+psycopg://postgres@/postgres?host=$pg_dir"
else
  echo "PostgreSQL not found: the Postgres-marked tests are skipped (apt-get install postgresql)" >&2
fi
