#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on loopback for the tests; prints its URL.
# Usage: eval "$(scripts/pg-test-server.sh)"  -> exports TOISIO_TEST_POSTGRES_URL
# With TOISIO_REQUIRE_POSTGRES=1 (CI) a PostgreSQL that is missing or does not start is an error (exit 1),
# never a silent fall-back to SQLite only.
set -euo pipefail
REQUIRE=${TOISIO_REQUIRE_POSTGRES:-0}
fail() {
  if [ "$REQUIRE" = 1 ]; then echo "$1 (TOISIO_REQUIRE_POSTGRES=1)" >&2; exit 1; fi
  echo "echo '$1: tests run on SQLite only' >&2"; exit 0
}
BIN=${TOISIO_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)}
[ -n "$BIN" ] && [ -x "$BIN/initdb" ] || fail "PostgreSQL is not installed"
PORT=${PG_TEST_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
DIR=$(mktemp -d /tmp/toisio-pg-XXXXXX)
RUN_AS=()
if [ "$(id -u)" = 0 ]; then
  chown postgres:postgres "$DIR"
  RUN_AS=(runuser -u postgres --)
fi
"${RUN_AS[@]}" "$BIN/initdb" -D "$DIR/data" -U postgres --auth=trust -E UTF8 >/dev/null 2>&1 \
  || fail "PostgreSQL's initdb failed"
if ! "${RUN_AS[@]}" "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w \
  -o "-h 127.0.0.1 -p $PORT -k $DIR -c fsync=off -c synchronous_commit=off" start >/dev/null 2>&1; then
  cat "$DIR/log" >&2 || true
  fail "PostgreSQL did not start (see $DIR/log)"
fi
echo "export TOISIO_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:$PORT/postgres"
echo "export TOISIO_TEST_POSTGRES_DIR=$DIR"
