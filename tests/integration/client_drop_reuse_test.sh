#!/usr/bin/env bash
# A page the program writes right after dropping it keeps what it wrote. An
# allocator purges memory with MADV_DONTNEED and reuses it at once; the
# pager sends the drop's zeroes to the module as a write-back of their own,
# and the program's write, its fault served while those zeroes are in
# flight, must not be lost to them when the page is evicted and fetched
# again. reuse_probe.c does this 2000 times under a 4 MiB budget.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/client_lib.sh"
PROBE=${MEMFED_REUSE_PROBE:?set MEMFED_REUSE_PROBE to memfed-test-reuse-probe}

start_pager a 8G
run_on a --heap-budget 4M --heap-size 1G -- "$PROBE" "$T/done" >"$T/out" 2>"$T/err" &
prog=$!
for _ in $(seq 1 600); do
	grep -q "^bad" "$T/out" && break
	kill -0 $prog 2>/dev/null || fail "the program ended before its check: $(cat "$T/out" "$T/err")"
	sleep 0.1
done
grep -q "^bad" "$T/out" || fail "the program did not check its pages in 60 s: $(cat "$T/out" "$T/err")"
# It waits for $T/done: its pager counters are still listed.
read -r ev fe <<<"$(pager_sum a evictions fetches)"
touch "$T/done"
rc=0
wait $prog || rc=$?
[ $rc -eq 0 ] || fail "the program exited $rc (128+N: signal N): $(cat "$T/out" "$T/err")"
[ "${ev:-0}" -gt 16000 ] && [ "${fe:-0}" -gt 2000 ] ||
	fail "the pager evicted ${ev:-0} and fetched ${fe:-0} pages; the pages were not evicted and fetched again, the test proves nothing"
grep -q "^bad 0 of 2000 pages$" "$T/out" ||
	fail "pages written right after their drop lost the write (evicted $ev, fetched $fe): $(cat "$T/out")"
ok "2000 pages written right after their drop kept the write through $ev evictions and $fe fetches"
echo "$PASSED passed, 0 failed"
