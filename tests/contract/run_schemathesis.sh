#!/usr/bin/env bash
# schemathesis (pinned in tests/contract/requirements.txt) against the document the real
# server serves, with every check (`--checks all`), in three phases:
#
#   1. user:     a verified normal user's bearer token, every non-admin operation except
#                the ones that end the caller's own session or account (phase 2);
#   2. sign-out: a fresh token of the same user, only the operations that end it;
#   3. admin:    an admin API key (X-Admin-Key), the admin operations.
#
# It starts `target/debug/chronicle serve` on a fresh database, NATS stream prefix and
# DATA_DIR, and stops it and drops the database at the end. Exits non-zero on any failure.
#
#   tests/contract/run_schemathesis.sh            # SEED=... MAX_EXAMPLES=... to change
#
# Exclusions are in tests/contract/schemathesis.toml and below, each with its reason.
set -euo pipefail
cd "$(dirname "$0")/../.."

SEED=${SEED:-20260105}
MAX_EXAMPLES=${MAX_EXAMPLES:-12}
# One worker: with two, CPython 3.11's ast module raised "AST constructor recursion depth
# mismatch" inside hypothesis (parsing lambdas in two threads at once), a crash of the tool,
# not of the server.
WORKERS=${WORKERS:-1}
PG=${PG_URL:-postgres://postgres@127.0.0.1:5432}

say() { printf '==> %s\n' "$*"; }
die() { printf 'schemathesis: %s\n' "$*" >&2; exit 1; }

# schemathesis's `st`, on PATH or beside the python3 that has it installed
ST_BIN=$(command -v st || python3 -c 'import os, sys; print(os.path.join(os.path.dirname(sys.executable), "st"))')
[ -x "$ST_BIN" ] || die "st is missing: pip install -r tests/contract/requirements.txt"
command -v psql >/dev/null || die "psql is missing"

[ -n "${SKIP_BUILD:-}" ] || cargo build --locked --quiet --bin chronicle
BIN=$PWD/target/debug/chronicle

tag="fuzz_$$_$RANDOM"
DB="chronicle_fuzz_$tag" # not chronicle_test_%: scripts/test sweeps those before it starts, also under a run in progress
WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BASE="http://127.0.0.1:$PORT"
SERVER_PID=

cleanup() {
  local rc=$?
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  psql "$PG/postgres" -qc "drop database if exists \"$DB\" with (force)" >/dev/null 2>&1 || true
  if [ "$rc" -ne 0 ] && [ -f "$WORK/server.log" ]; then
    echo "--- the server's last log lines ($WORK/server.log) ---" >&2
    tail -n 20 "$WORK/server.log" >&2 || true
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT INT TERM

export APP_ENV=development
export DATABASE_URL="$PG/$DB"
export NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}
export CHRONICLE_STREAM="FUZZ_$tag"
export CHRONICLE_SUBJECT_PREFIX="fuzz_$tag"
export DATA_DIR="$WORK/data"
# Plans with room for thousands of requests: the fuzzer makes hundreds of conversations and
# messages as one user, and a plan limit's 402 is the contract (tested in tests/e2e/usage.rs
# and conversations.rs), not a schema-valid request wrongly refused.
unset PLANS_FILE
export PLANS='{"default":"free","plans":[{"name":"free","messages_per_day":1000000,"tokens_per_day":1000000000,"uploads_per_day":1000000,"max_conversations":1000000},{"name":"pro","messages_per_day":1000000,"tokens_per_day":1000000000,"uploads_per_day":1000000,"max_conversations":1000000}]}'
export BIND="127.0.0.1:$PORT"
export PUBLIC_URL="$BASE"
export SECRET_KEY
SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
export ADMIN_EMAIL="admin-$tag@example.com"
export ADMIN_PASSWORD="fuzz-admin-$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
# generous limits: the fuzzer sends thousands of requests from one IP to a few accounts
export RATE_LIMIT_AUTH_IP_PER_MINUTE=1000000
export RATE_LIMIT_AUTH_ACCOUNT_PER_MINUTE=1000000
export RATE_LIMIT_STATUS_IP_PER_MINUTE=1000000
export LOGIN_MAX_FAILURES=1000000
export LOG_FORMAT=json
unset SMTP_URL FRONTEND_URL LLM_BASE_URL || true
mkdir -p "$DATA_DIR"

say "starting chronicle serve on $BASE (database $DB)"
"$BIN" serve >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 300); do
  curl -fsS "$BASE/health/ready" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || die "the server exited: $(tail -n 20 "$WORK/server.log")"
  sleep 0.2
done
curl -fsS "$BASE/health/ready" >/dev/null || die "the server is not ready after 60 s"

# --- a verified normal user, made through the API ---
USER_EMAIL="user-$tag@example.com"
USER_PASSWORD="fuzz-user-$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
json() { python3 -c 'import json,sys; print(json.dumps(dict(zip(sys.argv[1::2], sys.argv[2::2]))))' "$@"; }
field() { python3 -c 'import json,sys; d=json.load(sys.stdin)["data"]; print(d[sys.argv[1]])' "$1"; }
post() { curl -fsS -X POST -H 'Content-Type: application/json' -d "$2" "$BASE$1"; }

post /api/v1/auth/register "$(json email "$USER_EMAIL" password "$USER_PASSWORD" display_name Fuzz)" >/dev/null
CODE=
for _ in $(seq 1 100); do
  CODE=$(grep -rlsF "$USER_EMAIL" "$DATA_DIR/mail" 2>/dev/null | head -n 1 | xargs -r cat |
    tr -d '\r' | grep -E '^[[:space:]]+[0-9]{6}[[:space:]]*$' | tr -d '[:space:]' | head -c 6 || true)
  [ -n "$CODE" ] && break
  sleep 0.1
done
[ -n "$CODE" ] || die "no verification mail for $USER_EMAIL in $DATA_DIR/mail"
post /api/v1/auth/verify-email "$(json email "$USER_EMAIL" code "$CODE")" >/dev/null
login() { post /api/v1/auth/login "$(json email "$USER_EMAIL" password "$USER_PASSWORD")" | field access_token; }

ADMIN_KEY=$("$BIN" admin api-key create --name fuzz --json 2>>"$WORK/server.log" |
  python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("key") or d.get("api_key") or d["data"]["key"])')
[ -n "$ADMIN_KEY" ] || die "no admin API key"

export SCHEMATHESIS_HOOKS=hooks # tests/contract/hooks.py
export PYTHONPATH="$PWD/tests/contract${PYTHONPATH:+:$PYTHONPATH}"
# Every check runs: schemathesis enables all of them by default, which is `--checks all`
# (not given on the command line: a check named there overrides the per-operation
# exclusions in schemathesis.toml, each of which says why it is there).
ST=("$ST_BIN" --config-file "$WORK/schemathesis.toml" run "$BASE/openapi.json"
  --seed "$SEED" --max-examples "$MAX_EXAMPLES" --workers "$WORKERS"
  --no-color
  # hypothesis's "too slow" health check trips on message contents (up to 32,000
  # characters under the pattern that refuses control characters): generation is slow
  # there, not wrong, and every check still runs on what it generates
  --suppress-health-check too_slow)

failed=0
bearer_auth() { printf '[auth.openapi.bearer]\nbearer = "%s"' "$1"; }
phase() { # name, auth (TOML lines for [auth.openapi]), st arguments...
  local name=$1 auth=$2
  shift 2
  say "schemathesis: $name"
  # the credentials as [auth.openapi.<security scheme>] so that schemathesis knows which
  # scheme they satisfy (given as plain -H headers, it generates the other schemes' values
  # too, and ignored_auth then takes the valid admin key beside a made-up bearer token for
  # "accepts invalid authentication")
  { cat tests/contract/schemathesis.toml; printf '\n%s\n' "$auth"; } >"$WORK/schemathesis.toml"
  if ! "${ST[@]}" "$@" >"$WORK/st-$name.log" 2>&1; then
    failed=1
    cat "$WORK/st-$name.log"
  else
    sed -n '/SUMMARY/,$p' "$WORK/st-$name.log"
  fi
}

# The operations that end the caller's own session or account: in phase 1 they would sign
# the fuzzing user out and every later request would only see 401; they get phase 2.
ENDS_CALLER='^(POST /api/v1/auth/logout(-all)?|DELETE /api/v1/users/me|DELETE /api/v1/users/me/sessions/\{id\})$'

# 1. a verified normal user, everything but the admin routes (phase 3) and ENDS_CALLER
# (one regex: schemathesis ANDs the conditions of one filter)
phase user "$(bearer_auth "$(login)")" \
  --exclude-name-regex "^[A-Z]+ /api/v1/admin/|$ENDS_CALLER"

# 2. a fresh token of the same user, the operations that end it (after the first one that
# succeeds the rest answer 401, which is their documented answer). Before the admin phase,
# which may deactivate or erase that user through the admin routes.
phase sign-out "$(bearer_auth "$(login)")" --include-name-regex "$ENDS_CALLER"

# 3. an admin API key, the admin routes
phase admin "$(printf '[auth.openapi.admin_key]\napi_key = "%s"' "$ADMIN_KEY")" \
  --include-name-regex '^[A-Z]+ /api/v1/admin/'

if [ "$failed" -ne 0 ]; then
  die "failures (seed $SEED); the logs are in $WORK"
fi
say "schemathesis: 0 failures (seed $SEED)"
