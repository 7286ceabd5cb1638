#!/usr/bin/env bash
# Drive a stock skynet v1.6.0 for bee interop checks. The skynet tree is SKYNET_DIR when
# set, else the one `cargo xtask skynet` builds under target/skynet (this repository
# ships no skynet code; that command builds it from a tarball or a clone).
#
#   run.sh node   NAME CLUSTERFILE          start a skynet node named NAME (foreground);
#                                           it listens on the address CLUSTERFILE gives NAME
#                                           and registers "@echo" and "@sink".
#   run.sh kkt    NAME CLUSTERFILE          start a skynet node named NAME (foreground) that
#                                           registers "@kktlua", our Lua service speaking the
#                                           game team's frame (service/skylab_kkt.lua).
#   run.sh client TARGET CLUSTERFILE [PUSHES]
#                                           interop checks against node TARGET (skynet or bee);
#                                           exit status 0 only if "RESULT PASS".
#   run.sh bench  TARGET CLUSTERFILE        reference benchmark against TARGET's "@echo"/"@sink";
#                                           prints one line "BENCH {json}".
#
# CLUSTERFILE lines look like:  name = "127.0.0.1:port"   (bee nodes may be listed too).
# Extra knobs (env): SKY_ECHO, SKY_SINK (names, default @echo/@sink), SKY_STEP_TIMEOUT,
# B2_CALLS, B3_SECONDS, B3_INFLIGHT, B4_PUSHES, B5_SECONDS, SKY_TIMEOUT (outer kill, s),
# SKYNET_THREADS (the nodes' worker threads, skynet's `thread`; default 2).
set -euo pipefail

LAB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SKY="${SKYNET_DIR:-$LAB/../../target/skynet}"
[ -x "$SKY/skynet" ] || { echo "no skynet binary in $SKY: run \`cargo xtask skynet\` or set SKYNET_DIR to a built stock skynet v1.6.0 tree" >&2; exit 2; }

abspath() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }

usage() { sed -n '2,20p' "$0" >&2; exit 2; }

export SKY_ROOT="$SKY" SKY_LAB="$LAB" SKY_THREAD="${SKYNET_THREADS:-2}"
cmd="${1:-}"; shift || true
case "$cmd" in
  node|kkt)
    [ $# -eq 2 ] || usage
    start=skylab_main; [ "$cmd" = kkt ] && start=skylab_kkt_main
    export SKY_NODE="$1" SKY_CLUSTER="$(abspath "$2")" SKY_START="$start"
    [ -r "$SKY_CLUSTER" ] || { echo "cannot read $SKY_CLUSTER" >&2; exit 2; }
    cd "$SKY" && exec ./skynet "$LAB/skynode.config"
    ;;
  client|bench)
    [ $# -ge 2 ] || usage
    export SKY_TARGET="$1" SKY_CLUSTER="$(abspath "$2")" SKY_NODE="skylab_$cmd"
    [ -r "$SKY_CLUSTER" ] || { echo "cannot read $SKY_CLUSTER" >&2; exit 2; }
    if [ "$cmd" = client ]; then
      export SKY_START=skylab_client SKY_PUSHES="${3:-${SKY_PUSHES:-10000}}"
      tag="RESULT PASS"; limit="${SKY_TIMEOUT:-300}"
    else
      export SKY_START=skylab_bench
      tag="BENCH {"; limit="${SKY_TIMEOUT:-600}"
    fi
    log="$(mktemp)"
    trap 'rm -f "$log"' EXIT
    cd "$SKY"
    set +e
    timeout "$limit" ./skynet "$LAB/skynode.config" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    set -e
    if [ "$rc" -eq 124 ]; then echo "run.sh: $cmd killed after ${limit}s" >&2; exit 1; fi
    grep -q "^$tag" "$log" || exit 1
    if [ "$cmd" = bench ] && grep -q '^BENCH FAIL' "$log"; then exit 1; fi
    exit 0
    ;;
  *) usage ;;
esac
