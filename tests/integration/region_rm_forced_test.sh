#!/usr/bin/env bash
# `region rm --force` of a region a live program maps as a file. The probe's
# exact scenario first: a pager with `--pager-budget 16K`, python reading a
# 64 KiB region mapped as a file in a loop, then the forced delete. It used
# to freeze the reader in handle_userfault while the pager spun (its fault
# counter climbing 15 k/s, no log line); without a budget the reader kept
# seeing the deleted bytes. Now every mapping gets SIGBUS on its next
# access, the pager's counters stand still, it logs one line for the
# region, and a new region in the same place reads as zeros to everyone.
# Runs: the budget, no budget, a region on a remote module deleted there
# by that module's own node (with and without a budget), and a program's
# heap region (private memory) deleted under it.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/client_lib.sh"

# Programs this test started; a failure kills them (and what memfedctl run
# started), or a frozen one would keep the test from ending.
BG=()
fail() {
	local p
	for p in "${BG[@]}"; do
		kill -9 $(cat /proc/"$p"/task/*/children 2>/dev/null) "$p" 2>/dev/null || true
	done
	echo "FAIL: $*" >&2
	exit 1
}

# The reader: maps the region file, checks it holds the bytes of $2, says
# so, then reads it over and over. Any other content is a failure (exit 3);
# the forced delete must end it with SIGBUS (exit 135 through memfedctl run).
cat >"$T/reader.py" <<'PY'
import mmap, os, sys
want = open(sys.argv[2], "rb").read()
fd = os.open(sys.argv[1], os.O_RDONLY)
m = mmap.mmap(fd, len(want), mmap.MAP_SHARED, mmap.PROT_READ)
if m[:] != want:
    sys.exit("first read differs from the region's bytes")
print("read ok", flush=True)
while True:
    got = m[:]
    if got != want:
        print("saw other bytes (%d non-zero)" % (len(got) - got.count(0)), flush=True)
        sys.exit(3)
PY
# holder.py REGION: maps the region, reads it, says how many bytes are
# not zero (a new region: must be none). holder.py REGION GO: then waits
# until the file GO exists and reads the region once more (the deleted
# region: must get SIGBUS, exit 135).
cat >"$T/holder.py" <<'PY'
import mmap, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
m = mmap.mmap(fd, 65536, mmap.MAP_SHARED, mmap.PROT_READ)
got = m[:]
if len(sys.argv) < 3:
    print("fresh %d non-zero" % (len(got) - got.count(0)), flush=True)
    sys.exit(0)
print("holding", flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.02)
got = m[:]
print("read %d non-zero bytes after the delete" % (len(got) - got.count(0)), flush=True)
sys.exit(3)
PY

# faults NAME: the pager's fault counters of daemon NAME, summed.
faults() {
	ctl "$1" -j stats | python3 -c '
import json, sys
p = json.load(sys.stdin).get("pager", {})
print(sum(r.get("faults", 0) + r.get("wp_faults", 0) for r in p.get("regions", [])))'
}
# dropped NAME: the pages whose write-back daemon NAME's pager dropped
# because their region had been deleted.
dropped() { ctl "$1" -j stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["pager"]["writebacks_dropped"])'; }
fa_of() { ctl "$1" -j region show "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["fa"])'; }
# wait_line FILE TEXT PID: until FILE has a line with TEXT (PID must live).
wait_line() {
	for _ in $(seq 1 400); do
		grep -q "$2" "$1" && return 0
		kill -0 "$3" 2>/dev/null || fail "pid $3 ended before '$2': $(cat "$1")"
		sleep 0.05
	done
	fail "no '$2' from pid $3 in 20 s: $(cat "$1")"
}
# wait_exit PID WHAT: its exit status in RC; a reader that never ends (the
# bug: frozen in handle_userfault) fails the test after 20 s.
wait_exit() {
	for _ in $(seq 1 400); do
		kill -0 "$1" 2>/dev/null || break
		sleep 0.05
	done
	if kill -0 "$1" 2>/dev/null; then
		local c
		for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
			echo "--- kernel stacks of pid $c" >&2
			cat /proc/"$c"/task/*/stack >&2 2>/dev/null || true
		done
		fail "$2 still runs 20 s after region rm --force (frozen on its fault?)"
	fi
	set +e
	wait "$1"
	RC=$?
	set -e
}

# forced_rm LABEL PAGER_NODE DELETING_NODE: the scenario, the reader and
# holder running on PAGER_NODE, the delete issued on DELETING_NODE.
forced_rm() {
	local label=$1 node=$2 deleter=$3 region=doomed-$1
	# Only the owner's node may delete a region: the deleting node creates
	# it and lets the pager node write it.
	ctl "$deleter" region create "$region" 64K >/dev/null
	[ "$deleter" = "$node" ] || ctl "$deleter" region grant "$region" "$(key_of "$node")" write >/dev/null
	head -c 64K /dev/urandom >"$T/old-$label.bin"
	ctl "$node" region write "$region" <"$T/old-$label.bin"
	local fa
	fa=$(fa_of "$node" "$region")
	rm -f "$T/go-$label"
	run_on "$node" -- $PY "$T/holder.py" "/memfed/$region" "$T/go-$label" >"$T/holder-$label.out" 2>&1 &
	local holder=$!
	BG+=($holder)
	wait_line "$T/holder-$label.out" holding $holder
	run_on "$node" -- $PY "$T/reader.py" "/memfed/$region" "$T/old-$label.bin" >"$T/reader-$label.out" 2>&1 &
	local reader=$!
	BG+=($reader)
	wait_line "$T/reader-$label.out" "read ok" $reader
	sleep 0.3 # the reader loops: under a budget, pages are evicted and fetched again

	ctl "$deleter" region rm --force "$region"
	wait_exit $reader "the reader"
	[ $RC -eq 135 ] || fail "$label: the reader exited $RC, expected 135 (SIGBUS): $(cat "$T/reader-$label.out")"
	ok "$label: region rm --force: the reader looping over the mapping dies of SIGBUS"

	local f1 f2
	f1=$(faults "$node")
	sleep 1
	f2=$(faults "$node")
	# A bound on behaviour, not on time: the spinning pager counted ~15,000
	# faults a second; an idle one counts none.
	[ $((f2 - f1)) -le 20 ] || fail "$label: the pager counted $((f2 - f1)) faults in a second with nothing running"
	ok "$label: the pager does not spin afterwards ($f1 then $f2 faults)"

	local n
	n=$(grep -c "region '$region'.*poisoned" "$T/$node.log" || true)
	[ "$n" -eq 1 ] || fail "$label: $n pager log lines poisoning '$region', expected 1: $(grep "$region" "$T/$node.log")"
	ok "$label: one log line: $(grep "region '$region'.*poisoned" "$T/$node.log" | sed 's/^.*\] //')"

	# The same name again, in the same place, while the holder still maps
	# the deleted one: never the old bytes, neither to a new mapper nor
	# through the module.
	ctl "$node" region create "$region" 64K >/dev/null
	local nfa
	nfa=$(fa_of "$node" "$region")
	[ "$nfa" = "$fa" ] || echo "# note: the new region is at $nfa, not the old extent $fa"
	[ "$(ctl "$node" region read "$region" | tr -d '\0' | wc -c)" -eq 0 ] ||
		fail "$label: the new region reads non-zero bytes through the module"
	local got
	got=$(run_on "$node" -- $PY "$T/holder.py" "/memfed/$region" 2>&1) || fail "$label: holder.py: $got"
	[ "$got" = "fresh 0 non-zero" ] || fail "$label: a new mapping of the new region: $got"
	ok "$label: the new '$region' at $nfa reads as zeros, mapped and through the module"

	touch "$T/go-$label"
	wait_exit $holder "the holder"
	[ $RC -eq 135 ] || fail "$label: the holder exited $RC, expected 135 (SIGBUS): $(cat "$T/holder-$label.out")"
	ok "$label: an idle mapping of the deleted region gets SIGBUS on its next access too"
	ctl "$node" region rm "$region"
}

start_daemon budget --roles module,pager --listen 127.0.0.1:0 --pool-size 64M --pager-budget 16K
forced_rm budget budget budget
stop_daemon budget

start_daemon nobudget --roles module,pager --listen 127.0.0.1:0 --pool-size 256M
forced_rm nobudget nobudget nobudget

# Private memory: python's heap in a region of its own, under a budget so
# that its pages are evicted and fetched again, deleted under it.
cat >"$T/heap.py" <<'PY'
data = [bytes([i % 251]) * 4096 for i in range(4096)] # 16 MiB, 4M budget
print("heap ok", flush=True)
while True:
    for i, b in enumerate(data):
        if b[100] != i % 251:
            print("heap byte changed", flush=True)
            raise SystemExit(3)
PY
run_on nobudget --heap-budget 4M --heap-size 64M --keep-heaps -- $PY "$T/heap.py" >"$T/heap.out" 2>&1 &
HEAP_RUN=$!
BG+=($HEAP_RUN)
wait_line "$T/heap.out" "heap ok" $HEAP_RUN
HEAP=$(ctl nobudget region ls | awk '/^heap\./ {print $1}')
[ -n "$HEAP" ] || fail "the heap region of python did not appear"
dropped_before=$(dropped nobudget)
ctl nobudget region rm --force "$HEAP"
wait_exit $HEAP_RUN "python on its deleted heap"
[ $RC -eq 135 ] || fail "python on its deleted heap exited $RC, expected 135 (SIGBUS): $(cat "$T/heap.out")"
ok "heap: python whose heap region is deleted under it dies of SIGBUS"
f1=$(faults nobudget)
sleep 1
f2=$(faults nobudget)
[ $((f2 - f1)) -le 20 ] || fail "heap: the pager counted $((f2 - f1)) faults in a second with nothing running"
n=$(grep -c "region '$HEAP'.*poisoned" "$T/nobudget.log" || true)
[ "$n" -eq 1 ] || fail "heap: $n pager log lines poisoning '$HEAP', expected 1"
ok "heap: the pager does not spin afterwards ($f1 then $f2 faults) and logged one line"
# python writes to its heap all the time (reference counts): dirty pages were
# resident when the region went. Their write-backs are dropped and counted,
# not sent to the deleted region and not logged as failures.
dropped_after=$(dropped nobudget)
[ "$dropped_after" -gt "$dropped_before" ] ||
	fail "heap: writebacks_dropped stayed at $dropped_after across the forced delete of a dirty heap"
ctl nobudget stats | grep -qx "pager.writebacks_dropped $dropped_after" ||
	fail "heap: memfedctl stats does not show pager.writebacks_dropped $dropped_after: $(ctl nobudget stats | grep dropped)"
! grep -E "writing back .*(not_found|deleted)" "$T/nobudget.log" ||
	fail "heap: write-backs to the deleted region were logged as failures (above)"
ok "heap: $((dropped_after - dropped_before)) dirty pages of the deleted heap dropped and counted (pager.writebacks_dropped), none logged"
stop_daemon nobudget

# The region on node "module", mapped through node "car"'s pager, deleted by
# "module" itself: car's pager hears of it only from the module.
trust_all module car car2
start_daemon module --roles module --listen 127.0.0.1:0 --pool-size 64M --module-id 02:00:00:00:00:01
start_daemon car --roles pager --listen 127.0.0.1:0 --peer "$(listen_of module)" --pager-budget 16K
forced_rm remote car module
# With no budget the reader never faults again: the pager's probe of the
# regions it maps finds the delete.
start_daemon car2 --roles pager --listen 127.0.0.1:0 --peer "$(listen_of module)"
forced_rm remote-nobudget car2 module
