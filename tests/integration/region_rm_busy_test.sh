#!/usr/bin/env bash
# Deleting regions that processes use. First the probe that found the noise:
# a real program under a heap budget, then `memfedctl run` deletes its heap
# region as it exits; that delete used to race the pager writing the exited
# process's pages back, and every write-back of the deleted region logged
# "writing back 64 pages of region 'heap…': not_found" (about 1,000 a run).
# Then `region rm` of a region a live process maps: busy (exit 9) naming the
# pid, unless --force.
. "$(dirname "$0")/lib.sh"

start_daemon node --roles module,pager --listen 127.0.0.1:0 --pool-size 512M
ok "a module and pager"

seq 1 500000 | shuf >"$T/in.txt"
sort -n "$T/in.txt" >"$T/want.txt"
ctl node run --heap-budget 8M --heap-size 256M -- sort -n -S 48M "$T/in.txt" >"$T/out.txt"
cmp "$T/want.txt" "$T/out.txt" || fail "sort under a heap budget: output differs from a native run"
[ -z "$(ctl node region ls)" ] || fail "memfedctl run left regions: $(ctl node region ls)"
if grep -E "writing back .*not_found|detached with pages not written back" "$T/node.log" >"$T/wb.txt"; then
	fail "$(wc -l <"$T/wb.txt") write-backs to a deleted region, e.g. $(head -1 "$T/wb.txt")"
fi
ok "sort under an 8M heap budget: right output, heap deleted, no write-back to a deleted region"

ctl node region create idle 1M >/dev/null
ctl node region rm idle
ok "a region nobody maps is deleted at once"

# A live process mapping its heap region.
ctl node run --heap-budget 8M --heap-size 64M --keep-heaps -- sleep 60 &
RUN_PID=$!
for _ in $(seq 1 200); do
	HEAP=$(ctl node region ls | awk '/^heap\./ {print $1}')
	[ -n "$HEAP" ] && break
	sleep 0.05
done
[ -n "$HEAP" ] || fail "the heap region of 'sleep' did not appear"
SLEEP_PID=${HEAP##*.}
# The pager learns of the mapping just after the region is created.
for _ in $(seq 1 200); do
	ctl node -j stats | python3 -c '
import json, sys
regions = json.load(sys.stdin).get("pager", {}).get("regions", [])
sys.exit(0 if any(r["region"] == sys.argv[1] for r in regions) else 1)' "$HEAP" && break
	sleep 0.05
done
set +e
ERR=$(ctl node region rm "$HEAP" 2>&1)
rc=$?
set -e
[ $rc -eq 9 ] || fail "region rm of a mapped region exited $rc, expected 9 (busy): $ERR"
case "$ERR" in
*"in use by pid $SLEEP_PID"*"--force"*) ;;
*) fail "busy error does not name pid $SLEEP_PID and --force: $ERR" ;;
esac
ctl node region ls | grep -q "^$HEAP " || fail "a busy region was deleted"
ok "region rm of a region pid $SLEEP_PID maps: exit 9, naming the pid and --force"

expect_exit 2 ctl node region ls --force
ctl node region rm --force "$HEAP"
ctl node region ls | grep -q "^$HEAP " && fail "region rm --force left the region"
ok "region rm --force deletes it anyway"
kill "$SLEEP_PID" 2>/dev/null || true
wait "$RUN_PID" 2>/dev/null || true
