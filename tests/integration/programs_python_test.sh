#!/usr/bin/env bash
# Acceptance: python3 hashes a heap structure far larger than its budget;
# the hash equals a native run's and the resident set stays within the
# budget plus a small overhead (the interpreter, libraries, the shim).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/client_lib.sh"

N=400000
BUDGET_MB=16
OVERHEAD_MB=16
want=$($PY "$HASH_PY" $N)
native_kb=$(/usr/bin/time -f %M $PY "$HASH_PY" $N 2>&1 >/dev/null)

start_pager a 8G
rss_watch -f "$HASH_PY" "$T/rss" &
watcher=$!
got=$(run_on a --heap-budget ${BUDGET_MB}M --heap-size 1G --stats "$T/stats.json" -- $PY "$HASH_PY" $N) ||
	fail "python3 under memfedctl run failed"
kill $watcher; wait $watcher || true
[ "$got" = "$want" ] || fail "hash '$got', native '$want'"
ok "python3's hash of a $((native_kb / 1024)) MiB heap equals the native run's"

max_kb=$(cat "$T/rss")
echo "# VmRSS max ${max_kb} kB (native ${native_kb} kB), budget ${BUDGET_MB} MiB + ${OVERHEAD_MB} MiB"
[ "$max_kb" -gt 0 ] || fail "no RSS sample taken"
[ "$max_kb" -le $(((BUDGET_MB + OVERHEAD_MB) * 1024)) ] ||
	fail "VmRSS reached $max_kb kB, above ${BUDGET_MB}M + ${OVERHEAD_MB}M"
[ "$max_kb" -lt "$native_kb" ] || fail "VmRSS $max_kb kB is not below the native $native_kb kB"
ok "resident set stayed within the budget plus ${OVERHEAD_MB} MiB"

# --stats: the pager's counters for the run's heaps, written before they
# were deleted. A heap larger than its budget by far must have been evicted
# by at least the difference, and faulted back in part.
min_evictions=$(((native_kb - (BUDGET_MB + OVERHEAD_MB) * 1024) / 4))
read -r heaps faults evictions <<<"$($PY -c '
import json, sys
d = json.load(open(sys.argv[1]))
names = [h["region"] for h in d["heaps"]]
assert names and all(n.startswith("heap.") for n in names), names
t = d["total"]
assert t["evictions"] == sum(h["evictions"] for h in d["heaps"])
print(len(names), t["faults"], t["evictions"])' "$T/stats.json")" || fail "--stats wrote $(cat "$T/stats.json" 2>&1)"
echo "# --stats: $heaps heap(s), $faults faults, $evictions evictions (at least $min_evictions expected)"
[ "$evictions" -ge "$min_evictions" ] || fail "--stats counted $evictions evictions, fewer than $min_evictions"
[ "$faults" -gt 0 ] || fail "--stats counted no fault"
ctl a region ls | grep -q '^heap\.' && fail "the heaps outlived the run"
ok "memfedctl run --stats wrote the heaps' paging counters, then the heaps were deleted"

# MADV_POPULATE_READ/WRITE of a heap range larger than the budget: skipped
# (libclient/preload/mmap_hooks.cc), so the call succeeds, no byte changes,
# and the pager does not bring in the range page by page to push it out
# again (natively a populate-read of untouched memory costs nothing).
POP_MB=64
got=$(run_on a --heap-budget 8M --stats "$T/populate.json" -- $PY -c "
import mmap
n = $POP_MB << 20
m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # private: in the heap
m[0:5] = b'hello'
m[n - 5:n] = b'world'
m.madvise(22)  # MADV_POPULATE_READ (this python's mmap does not name it)
m.madvise(23)  # MADV_POPULATE_WRITE
assert m[0:5] == b'hello' and m[n - 5:n] == b'world' and m[n // 2] == 0
print('populated')") || fail "a populate of $POP_MB MiB under an 8 MiB budget failed: $got"
[ "$got" = populated ] || fail "the populate program said '$got'"
brought=$($PY -c '
import json, sys
t = json.load(open(sys.argv[1]))["total"]
print(t["faults"] + t["prefetched"])' "$T/populate.json")
echo "# populate of $POP_MB MiB at an 8 MiB budget: $brought pages faulted or prefetched"
# (python's own start-up brings about 5 k pages through this budget; the
# two populates, done, about 40 k.)
[ "$brought" -lt $((POP_MB * 256 / 2)) ] ||
	fail "the populate brought in $brought pages of $((POP_MB * 256)): it was not skipped"
ok "a populate larger than the budget is skipped; the bytes stay as written"
