#!/usr/bin/env bash
# The OpenAPI is the truth: start the API (a fresh SQLite store, no Temporal) on a free loopback
# port and let schemathesis fuzz every operation of /openapi.json. Fails on any 5xx, any status the
# OpenAPI does not document, any answer that does not match its schema or content type.
# SCHEMATHESIS_EXAMPLES bounds the cases per operation (default 100: about a minute on 2 cores).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
work="$(mktemp -d "${TMPDIR:-/tmp}/cairn-schemathesis.XXXXXX")"
server=""
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

port="$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
PYTHONPATH="$repo" python .ci/serve_api.py "$port" "$work/home" >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do
    if python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/v1/health')" 2>/dev/null; then
        break
    fi
    kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; echo "the API did not start" >&2; exit 1; }
    sleep 0.2
done

# Every route but the probes, the unsubscribe link and the provider callbacks needs a key: the
# fuzzer calls as admin (401 and 403 are documented on every keyed route all the same).
key="$(cat "$work/home/admin-key")"

status=0
cd "$work"  # schemathesis keeps its cache in the working directory
schemathesis run "http://127.0.0.1:$port/openapi.json" \
    --header "Authorization: Bearer $key" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-examples "${SCHEMATHESIS_EXAMPLES:-100}" --seed "${SCHEMATHESIS_SEED:-1}" \
    --workers 1 --phases examples,coverage,fuzzing --continue-on-failure \
    --suppress-health-check all --report-dir "$work/report" || status=$?
if [ "$status" -ne 0 ]; then
    echo "--- server log (last 80 lines)" >&2
    tail -n 80 "$work/server.log" >&2
fi
exit "$status"
