#!/usr/bin/env bash
# Times a cache hit of the command `latchkey configure` writes as AWS `credential_process`,
# `latchkey-credentials --role R`, against `cat` of a file of the same size, both as whole
# processes (fork + exec + exit), and prints the ratio of the medians. Target: <= 1.5. Also
# prints the time of `latchkey credentials --role R` (the full binary) for comparison.
#
# Usage: benches/credentials_cache.sh [RUNS]      (default 200 runs of each)
#   LATCHKEY_BIN=path   use this `latchkey` instead of building target/release/latchkey; the
#                       `latchkey-credentials` next to it is timed, or when there is none,
#                       `latchkey credentials` (as configure writes it then)
#
# Where the time goes (docs/performance.md): a process of the full 46 MB binary spends most of
# its start-up in the dynamic loader relocating code it never runs here, so the profiles run the
# small `latchkey-credentials`.
#
# No server is involved: a stored login and a fresh cache entry are written into a temporary
# home, which is exactly the state `credentials` finds on a cache hit. Uses hyperfine when it
# is installed; otherwise a timing loop in bash that reads the clock without forking
# ($EPOCHREALTIME), so each sample is one fork + exec + wait of the program under test.
set -euo pipefail

runs="${1:-200}"
root="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -z "${LATCHKEY_BIN:-}" ]]; then
  cargo build --release --quiet --bin latchkey --bin latchkey-credentials \
    --manifest-path "$root/Cargo.toml"
  target="${CARGO_TARGET_DIR:-$root/target}"
  LATCHKEY_BIN="$target/release/latchkey"
fi
own="$(dirname "$LATCHKEY_BIN")/latchkey-credentials"
if [[ -x "$own" ]]; then
  process=("$own" --role)
  label="latchkey-credentials"
else
  process=("$LATCHKEY_BIN" credentials --role)
  label="latchkey credentials"
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

out="$("${process[@]}" "$role")"
[[ "$out" == '{"Version":1,"AccessKeyId":"ASIABENCHMARKEXAMPLE",'* ]] || {
  echo "not a cache hit: $out" >&2
  exit 1
}
[[ "$("$LATCHKEY_BIN" credentials --role "$role")" == "$out" ]] || {
  echo "latchkey credentials prints something else" >&2
  exit 1
}
same_size="$home/same-size.json"
printf '%s\n' "$out" > "$same_size"

if command -v hyperfine > /dev/null; then
  hyperfine -N --warmup 20 --runs "$runs" --export-json "$home/h.json" \
    "${process[*]} $role" "cat $same_size" "$LATCHKEY_BIN credentials --role $role" > /dev/null
  read -r latchkey_ms cat_ms full_ms < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))["results"]
print(*(x["median"] * 1000 for x in r))' "$home/h.json")
else
  # One sample of each command per round, so a change in the machine's load (other builds)
  # falls on all three alike.
  median_ms() { sort -n | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)] / 1e3}'; }
  own_us=() cat_us=() full_us=()
  for ((i = 0; i < 10; i++)); do
    "${process[@]}" "$role" > /dev/null
    cat "$same_size" > /dev/null
    "$LATCHKEY_BIN" credentials --role "$role" > /dev/null
  done
  for ((i = 0; i < runs; i++)); do
    t0=${EPOCHREALTIME/[.,]/}
    "${process[@]}" "$role" > /dev/null
    t1=${EPOCHREALTIME/[.,]/}
    cat "$same_size" > /dev/null
    t2=${EPOCHREALTIME/[.,]/}
    "$LATCHKEY_BIN" credentials --role "$role" > /dev/null
    t3=${EPOCHREALTIME/[.,]/}
    own_us+=($((t1 - t0))) cat_us+=($((t2 - t1))) full_us+=($((t3 - t2)))
  done
  latchkey_ms="$(printf '%s\n' "${own_us[@]}" | median_ms)"
  cat_ms="$(printf '%s\n' "${cat_us[@]}" | median_ms)"
  full_ms="$(printf '%s\n' "${full_us[@]}" | median_ms)"
fi
python3 -c '
import sys
l, c, f, name = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
rows = [(name + " --role", l, "(cache hit)"), ("cat of a file of the same size", c, ""),
        ("latchkey credentials --role", f, f"({f / c:.2f}x cat)")]
for label, ms, note in rows:
    print(f"{label:32} {ms:.3f} ms median {note}".rstrip())
print(f"ratio: {l / c:.2f}x (target <= 1.5x)")' \
  "$latchkey_ms" "$cat_ms" "$full_ms" "$label"
