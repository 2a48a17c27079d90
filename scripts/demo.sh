#!/usr/bin/env bash
# The memfed demo: a one-node federation (module + pager in one memfedd with
# its built-in defaults), a region created, data written and read back, the
# daemon's status, and an unmodified program running on remote memory.
# Usage: scripts/demo.sh [BUILD_DIR]   (make demo passes build/release)
#        scripts/demo.sh --installed   the installed /usr/sbin/memfedd and
#                                      /usr/bin/memfedctl (the Debian package)
set -euo pipefail
if [ "${1:-}" = "--installed" ]; then
	MEMFEDD=/usr/sbin/memfedd MEMFEDCTL=/usr/bin/memfedctl
else
	BIN=$(cd "${1:-build/release}/bin" && pwd)
	MEMFEDD=$BIN/memfedd MEMFEDCTL=$BIN/memfedctl
fi
[ -x "$MEMFEDD" ] && [ -x "$MEMFEDCTL" ] || { echo "demo: $MEMFEDD or $MEMFEDCTL missing" >&2; exit 2; }
DEMO=$(mktemp -d /tmp/memfed-demo.XXXXXX)
export MEMFED_SOCKET=$DEMO/memfedd.sock
ctl() { "$MEMFEDCTL" "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
	[ -n "${PID:-}" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
	rm -rf "$DEMO"
}
trap cleanup EXIT

say "memfedd with built-in defaults (module + pager), state in $DEMO"
"$MEMFEDD" --state-dir "$DEMO" --socket "$MEMFED_SOCKET" --listen 127.0.0.1:0 \
	--pool-size 4G >"$DEMO/memfedd.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do ctl status >/dev/null 2>&1 && break; sleep 0.05; done
cat "$DEMO/memfedd.log"

say "memfedctl region create notes 16M"
ctl region create notes 16M

say "write a message into the region and read it back"
echo "Memory is leaving the machine. ($(date -u))" | ctl region write notes --offset 4096
ctl region read notes --offset 4096 --length 64 | tr -d '\0'
echo

say "memfedctl region ls"
ctl region ls

if ctl run --help >/dev/null 2>&1 && command -v sqlite3 >/dev/null; then
	say "an unmodified sqlite3 with its heap in remote memory (64M resident at most)"
	ctl run --heap-budget 64M --heap-size 512M -- sqlite3 :memory: \
		"CREATE TABLE t(x); WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c LIMIT 200000)
		 INSERT INTO t SELECT randomblob(100) FROM c; SELECT count(*), sum(length(x)) FROM t; PRAGMA integrity_check;"

	say "a region as a file: an empty one that grows, for programs that know nothing of memfed"
	ctl region create journal 1M --length 0
	ctl run -- sh -c 'date -u >>/memfed/journal; echo "appended by $$" >>/memfed/journal; cat /memfed/journal; wc -c </memfed/journal'
	ctl region show journal | grep '^length'
fi

say "memfedctl status"
ctl status

say "memfedctl stats"
ctl stats
