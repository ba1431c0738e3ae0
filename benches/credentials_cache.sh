#!/usr/bin/env bash
# Times a cache-hit `latchkey credentials` against `cat` of a file of the same size, both as
# whole processes (fork + exec + exit), and prints the ratio of the medians. Target: <= 1.5.
#
# Usage: benches/credentials_cache.sh [RUNS]      (default 200 runs of each)
#   LATCHKEY_BIN=path   use this binary instead of building target/release/latchkey
#
# No server is involved: a stored login and a fresh cache entry are written into a temporary
# home, which is exactly the state `credentials` finds on a cache hit. Uses hyperfine when it
# is installed; otherwise a timing loop in bash that reads the clock without forking
# ($EPOCHREALTIME), so each sample is one fork + exec + wait of the program under test.
set -euo pipefail

runs="${1:-200}"
root="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -z "${LATCHKEY_BIN:-}" ]]; then
  cargo build --release --quiet --bin latchkey --manifest-path "$root/Cargo.toml"
  target="${CARGO_TARGET_DIR:-$root/target}"
  LATCHKEY_BIN="$target/release/latchkey"
fi

home="$(mktemp -d)"
trap 'rm -rf "$home"' EXIT
export HOME="$home" XDG_CONFIG_HOME="$home/config" XDG_CACHE_HOME="$home/cache"
mkdir -m 700 -p "$XDG_CONFIG_HOME/latchkey" "$XDG_CACHE_HOME/latchkey"

server="https://latchkey.example.com"
issuer="https://idp.example.com"
subject="alice"
role="readonly"
expires_at=$(( $(date +%s) + 3600 ))
expiration="$(date -u -d "@$expires_at" +%Y-%m-%dT%H:%M:%SZ)"

umask 077
cat > "$XDG_CONFIG_HOME/latchkey/login.json" <<JSON
{"server":"$server","issuer":"$issuer","client_id":"latchkey-cli","subject":"$subject",
 "id_token":"x.y.z","id_token_expires_at":$expires_at}
JSON
# The cache file name: creds-<sha256 of server NUL principal NUL role NUL duration>.
key="$(printf '%s\0%s\0%s\0' "$server" "$issuer#$subject" "$role" | sha256sum | cut -d' ' -f1)"
cat > "$XDG_CACHE_HOME/latchkey/creds-$key.json" <<JSON
{"expires_at":$expires_at,"credentials":{"access_key_id":"ASIABENCHMARKEXAMPLE","secret_access_key":"$(head -c 30 /dev/urandom | base64)","session_token":"$(head -c 600 /dev/urandom | base64 -w0)","expiration":"$expiration","role":"$role","role_arn":"arn:aws:iam::123456789012:role/ReadOnly","grant_id":"g","source_identity":"alice","session_name":"alice"}}
JSON

out="$("$LATCHKEY_BIN" credentials --role "$role")"
[[ "$out" == '{"Version":1,"AccessKeyId":"ASIABENCHMARKEXAMPLE",'* ]] || {
  echo "not a cache hit: $out" >&2
  exit 1
}
same_size="$home/same-size.json"
printf '%s\n' "$out" > "$same_size"

if command -v hyperfine > /dev/null; then
  hyperfine -N --warmup 20 --runs "$runs" --export-json "$home/h.json" \
    "$LATCHKEY_BIN credentials --role $role" "cat $same_size" > /dev/null
  read -r latchkey_ms cat_ms < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))["results"]
print(*(x["median"] * 1000 for x in r))' "$home/h.json")
else
  median_ms() {
    local i t0 t1 samples=()
    for ((i = 0; i < 10; i++)); do "$@" > /dev/null; done
    for ((i = 0; i < runs; i++)); do
      t0=${EPOCHREALTIME/[.,]/}
      "$@" > /dev/null
      t1=${EPOCHREALTIME/[.,]/}
      samples+=($((t1 - t0)))
    done
    printf '%s\n' "${samples[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)] / 1e3}'
  }
  latchkey_ms="$(median_ms "$LATCHKEY_BIN" credentials --role "$role")"
  cat_ms="$(median_ms cat "$same_size")"
fi
python3 -c '
import sys
l, c = float(sys.argv[1]), float(sys.argv[2])
print(f"latchkey credentials (cache hit): {l:.3f} ms median")
print(f"cat of a file of the same size:   {c:.3f} ms median")
print(f"ratio: {l / c:.2f}x (target <= 1.5x)")' "$latchkey_ms" "$cat_ms"
