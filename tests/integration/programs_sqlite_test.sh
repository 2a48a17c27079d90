#!/usr/bin/env bash
# Acceptance: sqlite3 builds an in-memory database of a few hundred MiB on a
# remote heap (sqlite's heap is malloc, which glibc would serve from brk: the
# shim's allocator takes it instead). PRAGMA integrity_check is ok and a
# checksum query gives what a native run gives.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/client_lib.sh"

ROWS=250000 # about 240 MiB of database
BUDGET_MB=160 # well below it: the pager evicts hundreds of thousands of pages
OVERHEAD_MB=16
cat >"$T/db.sql" <<SQL
CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT, c REAL);
WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s LIMIT $ROWS)
INSERT INTO t SELECT x, printf('%.400c', char(65 + x % 26)) || x, x * 0.5 FROM s;
CREATE INDEX tb ON t(b);
PRAGMA integrity_check;
SELECT count(*), sum(a), sum(length(b)), sum(c) FROM t;
SELECT hex(sha3_query('SELECT a, b, c FROM t ORDER BY b'));
SQL
native=$(sqlite3 :memory: <"$T/db.sql")
native_kb=$(/usr/bin/time -f %M sqlite3 :memory: <"$T/db.sql" 2>&1 >/dev/null | tail -1)

start_pager a 8G
rss_watch sqlite3 "$T/rss" &
watcher=$!
got=$(run_on a --heap-budget ${BUDGET_MB}M --heap-size 1G -- sqlite3 :memory: <"$T/db.sql") ||
	fail "sqlite3 under memfedctl run failed"
kill $watcher; wait $watcher || true
echo "# native VmRSS ${native_kb} kB, remote max $(cat "$T/rss") kB"
[ "$(head -1 <<<"$got")" = "ok" ] || fail "integrity_check said: $(head -1 <<<"$got")"
ok "PRAGMA integrity_check is ok on a $((native_kb / 1024)) MiB in-memory database"
[ "$got" = "$native" ] || fail "results differ from the native run: '$got' vs '$native'"
ok "count/sum and sha3 checksum queries equal the native run's"
max_kb=$(cat "$T/rss")
[ "$max_kb" -gt 0 ] || fail "no RSS sample taken"
[ "$max_kb" -le $(((BUDGET_MB + OVERHEAD_MB) * 1024)) ] ||
	fail "VmRSS reached $max_kb kB, above ${BUDGET_MB}M + ${OVERHEAD_MB}M"
[ "$max_kb" -lt "$native_kb" ] || fail "the heap was not remote: VmRSS $max_kb kB"
ok "sqlite3's resident set stayed within ${BUDGET_MB} MiB + ${OVERHEAD_MB} MiB"
