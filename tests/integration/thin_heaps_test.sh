#!/usr/bin/env bash
# Thin regions under real programs: a heap region takes pool space only for
# the pages written, so memfedd's default pool (1 GiB) runs programs whose
# heaps are 64 GiB each (memfedctl run's default --heap-size), eight at once
# in a pipeline, and a heap that grows past 4 GiB at a 64 MiB budget; the
# budget holds for all of it, and the pool checks clean afterwards.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/client_lib.sh"

GROW_PY=$(realpath "$(dirname "$0")/../heap_grow.py")

# memfedd's defaults: a 1 GiB pool, thin.
start_daemon a --listen 127.0.0.1:0
pool=$(ctl a -j status | python3 -c 'import json,sys; p=json.load(sys.stdin)["pool"]; print(p["path"], p["capacity_bytes"], p["thin"], p["address_bytes"])')
read -r pool_path capacity thin address <<<"$pool"
[ "$thin" = True ] || fail "the default pool is not thin: $pool"
[ "$capacity" -le $((1 << 30)) ] || fail "the default pool holds $capacity bytes, more than 1 GiB"
[ "$address" -ge $((4 << 40)) ] || fail "the default pool's address space is $address bytes"
ok "memfedd's default pool holds $((capacity >> 20)) MiB in a $((address >> 40)) TiB address space"

# 1. --heap-budget 32M with the default heap size, larger than the pool.
N=200000
want=$($PY "$HASH_PY" $N)
got=$(run_on a --heap-budget 32M --keep-heaps -- $PY "$HASH_PY" $N) ||
	fail "memfedctl run --heap-budget 32M failed on the default pool"
[ "$got" = "$want" ] || fail "hash '$got', native '$want'"
ok "memfedctl run --heap-budget 32M runs python3 on a 1 GiB pool with a 64 GiB heap"

# 2. The heap region shows its size and the space it takes.
heaps=$(ctl a -j region ls | python3 -c '
import json, sys
for r in json.load(sys.stdin):
    if r["name"].startswith("heap."):
        print(r["name"], r["size"], r["used_bytes"])')
[ -n "$heaps" ] || fail "no heap region kept"
read -r heap size used <<<"$(head -n 1 <<<"$heaps")"
[ "$size" -eq $((64 << 30)) ] || fail "heap region $heap is $size bytes, expected 64 GiB"
[ "$used" -gt 0 ] && [ "$used" -lt $((256 << 20)) ] ||
	fail "heap region $heap uses $used bytes, expected some, and far less than its size"
ctl a region ls | grep -q "^$heap .* used " || fail "region ls does not show what $heap uses"
ok "region ls: heap $heap of 64 GiB uses $((used >> 10)) KiB"
for h in $(cut -d' ' -f1 <<<"$heaps"); do ctl a region rm "$h" >/dev/null; done

# 3. A pipeline of 8 programs, each with a heap of its own (and the shell
# forking them): 8 heaps of 64 GiB on a 1 GiB pool.
PIPE='seq 1 300000 | awk "{print (\$1 * 7919) % 300007}" | sort -n | uniq | sed "s/^/x/" | grep -v 7 | tr x y | sha256sum'
want=$(sh -c "$PIPE")
got=$(run_on a --heap-budget 16M -- sh -c "$PIPE") || fail "the pipeline under memfedctl run failed"
[ "$got" = "$want" ] || fail "pipeline output '$got', native '$want'"
ok "a pipeline of 8 programs with 64 GiB heaps each runs on a 1 GiB pool"

# 4. A heap that grows past 4 GiB at a 64 MiB budget: 68 blocks of 64 MiB
# (4.25 GiB), a byte written every 64 KiB (272 MiB of pages touched).
want=$($PY "$GROW_PY" 68 65536)
# Sampled by command line, not by name: other python3 processes (tests run
# side by side) are not this program.
rss_watch -f "$GROW_PY" "$T/rss" &
watcher=$!
got=$(run_on a --heap-budget 64M -- $PY "$GROW_PY" 68 65536 2>"$T/grow.err") ||
	fail "heap_grow.py under memfedctl run failed: $(tail -n 3 "$T/grow.err")"
kill $watcher; wait $watcher || true
# The sums must agree; where the blocks lie is the allocator's business.
[ "${got#* }" = "${want#* }" ] || fail "heap_grow.py printed '$got', native '$want'"
span_mb=${got%% *}
[ "$span_mb" -gt 4096 ] || fail "the heap spans $span_mb MiB, not past 4 GiB"
! grep -q "remote heap is full" "$T/grow.err" || fail "the heap overflowed: $(cat "$T/grow.err")"
max_kb=$(cat "$T/rss")
echo "# VmRSS max ${max_kb} kB with 272 MiB of the heap touched, budget 64 MiB"
[ "$max_kb" -gt 0 ] && [ "$max_kb" -le $(((64 + 32) * 1024)) ] ||
	fail "VmRSS reached $max_kb kB, above the 64 MiB budget + 32 MiB"
ok "a heap grown to $span_mb MiB stays within its 64 MiB budget"

# 5. The pool, checked offline: clean, and holding what was written only.
stop_daemon a
"$MEMFEDCTL" pool check "$pool_path" >"$T/check" || fail "pool check: $(cat "$T/check")"
used=$("$MEMFEDCTL" -j pool info "$pool_path" | python3 -c 'import json,sys; print(json.load(sys.stdin)["used_bytes"])')
[ "$used" -le "$capacity" ] || fail "pool info says $used bytes used of $capacity"
ok "pool check is clean; $((used >> 20)) MiB used of $((capacity >> 20)) MiB"
