#!/usr/bin/env bash
# Runs the README's tour (and every other ```sh tour block under docs/) against a fresh
# server, as a person following the docs would, and checks each answer against the block's
# own `#>` lines (each must appear, as a fixed string, in the answer of the command above it).
#
# The server is the real binary (CHRONICLE_BIN, default target/debug/chronicle) started on a
# free port with a fresh database, stream and subject prefix and a DATA_DIR in a temp dir,
# with nothing else configured. Afterwards it is stopped, and the database and the stream
# are dropped. Needs curl, jq, and PostgreSQL and NATS as the tests do (TEST_PG_BASE,
# TEST_NATS_URL). Run from anywhere: bash tests/docs/run_readme_tour.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${CHRONICLE_BIN:-$root/target/debug/chronicle}
pg_base=${TEST_PG_BASE:-postgres://postgres@127.0.0.1:5432}
nats_url=${TEST_NATS_URL:-nats://127.0.0.1:4222}

die() { printf 'tour: %s\n' "$*" >&2; exit 1; }
[ -x "$bin" ] || die "$bin is missing: cargo build --bin chronicle (or set CHRONICLE_BIN)"
for tool in curl jq; do
  command -v "$tool" >/dev/null || die "$tool is missing (apt-get install $tool)"
done

id=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
work=$(mktemp -d "${TMPDIR:-/tmp}/chronicle-tour-XXXXXX")
database=chronicle_test_tour_$id
stream=CHRONICLE_TEST_TOUR_$id
server_pid=

# The stream is deleted with a plain JetStream API request over the NATS protocol (no NATS
# CLI needed): PUB to $JS.API.STREAM.DELETE.<stream>, then PING/PONG so it was read.
delete_stream() {
  local hostport=${nats_url#nats://} reply
  exec 3<>"/dev/tcp/${hostport%:*}/${hostport##*:}" || return 0
  printf 'CONNECT {"verbose":false}\r\nPUB $JS.API.STREAM.DELETE.%s 0\r\n\r\nPING\r\n' "$stream" >&3
  while read -r -t 5 reply <&3; do [[ $reply == PONG* ]] && break; done
  exec 3>&-
}

cleanup() {
  local status=$?
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid"
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ "$status" -ne 0 ] && [ -f "$work/server.log" ]; then
    echo "--- the server's log (last 40 lines) ---" >&2
    tail -n 40 "$work/server.log" >&2
  fi
  delete_stream || true
  if command -v psql >/dev/null; then
    psql "$pg_base/postgres" -qc "drop database if exists \"$database\" with (force)" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

# What a person has: the defaults, and little else. BIND=127.0.0.1:0 picks a free port,
# which the server logs.
export DATABASE_URL=$pg_base/$database
export NATS_URL=$nats_url
export CHRONICLE_STREAM=$stream
export CHRONICLE_SUBJECT_PREFIX=ttour$id
export DATA_DIR=$work/data
# The one setting a person would not need: on a busy two-core CI machine the read models
# can take longer than production's 2 s to catch up, as in the other e2e tests.
export READ_YOUR_WRITES_TIMEOUT_MS=30000
(cd "$work" && exec env -u PLANS_FILE -u PLANS BIND=127.0.0.1:0 "$bin" serve) >"$work/server.log" 2>&1 &
server_pid=$!

addr=
for _ in $(seq 600); do
  kill -0 "$server_pid" 2>/dev/null || die "the server exited at start"
  addr=$(grep -m 1 'Chronicle API listening' "$work/server.log" | grep -Eo '127\.0\.0\.1:[0-9]+' || true)
  [ -n "$addr" ] && curl -sf "http://$addr/health/live" >/dev/null && break
  addr=
  sleep 0.1
done
[ -n "$addr" ] || die "the server did not answer /health/live within 60 s"

# The blocks to run: fenced ```sh tour ... ```, README first, then docs/ in name order.
extract() { awk '/^```sh tour$/ {on=1; next} on && /^```$/ {on=0; next} on' "$1"; }

# A block becomes a script: `#> text` after a command checks that its answer contains text.
# Answers are what curl and the CLI write to standard output (also inside $(...)).
to_script() {
  cat <<'PRELUDE'
set -euo pipefail
answer=$TOUR_WORK/answer
: >"$answer"
curl() { command curl "$@" | tee "$answer"; }
expect() {
  grep -qF -- "$1" "$answer" || {
    printf '\ntour: line %s: the answer does not contain\n  %s\nanswer:\n' "$2" "$1" >&2
    cat "$answer" >&2
    exit 1
  }
}
PRELUDE
  local n=0 line
  while IFS= read -r line; do
    n=$((n + 1))
    if [[ $line == '#> '* ]]; then
      printf 'expect %q %q\n' "${line#'#> '}" "$n"
    else
      printf '%s\n' "$line"
    fi
  done
}

cat >"$work/chronicle-cli" <<'EOF_CLI'
#!/usr/bin/env bash
set -o pipefail
"$TOUR_BIN" "$@" | tee "$TOUR_WORK/answer"
EOF_CLI
chmod +x "$work/chronicle-cli"

ran=0
for doc in "$root/README.md" "$root"/docs/*.md; do
  block=$(extract "$doc")
  [ -n "$block" ] || continue
  checks=$(grep -c '^#> ' <<<"$block" || true)
  [ "$checks" -gt 0 ] || die "${doc#"$root"/}: a tour block without #> checks"
  printf '%s\n' "$block" | to_script >"$work/tour.sh"
  mkdir -p "$work/cwd"
  echo "==> ${doc#"$root"/}: $checks checks against http://$addr"
  (cd "$work/cwd" && BASE=http://$addr CHRONICLE=$work/chronicle-cli TOUR_BIN=$bin TOUR_WORK=$work \
    bash "$work/tour.sh") >"$work/tour.out" 2>&1 || {
    cat "$work/tour.out" >&2
    die "${doc#"$root"/}: the tour failed"
  }
  ran=$((ran + checks))
done
[ "$ran" -gt 0 ] || die "no \`\`\`sh tour block found in README.md or docs/"
echo "tour: $ran checks passed"
