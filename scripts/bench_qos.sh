#!/usr/bin/env bash
# make bench, section "qos": does a write-back storm slow demand faults down
# (issue 11, item 5)? A line of network namespaces, every link shaped to
# QOS_BENCH_MBIT (default 30 Mbit/s), every node a memfedd in the mesh:
#
#     n0 (pager) --- n1 (relay) --- n2 (relay) --- n3 (module)
#
#   probe: memfed_fault_probe (tests/qemu/fault_probe.c) under `memfedctl
#          run --map` on n0 touches each page of one half of a 2 MiB region
#          on n3's module once, in a random order, prefetch off: each touch
#          a demand fault over 3 hops (fault connection, EF); p50 and p99.
#   storm: a program on n0 (python3, under the same pager) rewrites a
#          4 MiB region on n3's module with fresh bytes and msyncs it, over
#          and over: a write-back storm on the pager's bulk connection (CS1)
#          along the same 3 hops, with no reads of its own (its pages stay
#          resident; a rewrite is a write-protect fault, served locally).
# Three modes, in turn for QOS_BENCH_ROUNDS rounds:
#   on    memfedd's priority qdisc on every mesh interface
#         (daemon/mesh/priority_qdisc.h: htb classes by DSCP, u32 filters,
#         one segment per packet), shaping at the link rate
#         (--mesh-qos-rate-mbit).
#   off   --no-mesh-qos; every interface shaped by a plain htb of one class
#         at the same rate (one FIFO: what a link without the qdisc does).
#   fifo1 as off, but with one segment per packet (gso_max_segs 1) as the
#         qdisc sets it: how much of the difference is priority and how
#         much the size of what a FIFO holds.
# In each: the probe idle, then during the storm. Target (issue 11): with
# the qdisc on, storm p99 <= 1.5x idle p99.
#
# Usage: scripts/bench_qos.sh BUILD_DIR RESULTS_DIR   (as root)
set -euo pipefail
BUILD_BIN=$(cd "$1/bin" && pwd)
RESULTS=$2
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
ROUNDS=${QOS_BENCH_ROUNDS:-2}
MBIT=${QOS_BENCH_MBIT:-30}
PY=/usr/bin/python3
OUT=$RESULTS/mesh-qos.txt
if [ "$(id -u)" -ne 0 ]; then
	echo "qos: SKIPPED, it needs root (network namespaces)"
	exit 0
fi
[ -x "$BUILD_BIN/memfed_fault_probe" ] ||
	{ echo "qos: $BUILD_BIN/memfed_fault_probe is missing (make release)" >&2; exit 1; }
export MEMFEDD=$BUILD_BIN/memfedd MEMFEDCTL=$BUILD_BIN/memfedctl
. "$(dirname "$0")/../tests/integration/lib.sh"
. "$(dirname "$0")/../tests/integration/mesh_lib.sh"

M3=02:00:00:00:00:03
trust_all n0 n1 n2 n3
for n in n0 n1 n2 n3; do mesh_node $n; done
mesh_link n0 n1; mesh_link n1 n2; mesh_link n2 n3
IFACES="n0:n0-n1 n1:n1-n0 n1:n1-n2 n2:n2-n1 n2:n2-n3 n3:n3-n2"

hops_to() {
	ctl n0 -j module ls | $PY -c '
import json, sys
m = [m for m in json.load(sys.stdin) if m["module"] == sys.argv[1] and m["reachable"]]
print(m[0]["hops"] if m else "-")' "$1"
}
hops_are() { [ "$(hops_to "$1")" = "$2" ]; }

# start MODE: every daemon up in MODE (on: memfedd's qdisc; off: a plain
# shaper), n0 reaching n3's module over 3 hops.
start() {
	local qos=(--mesh-qos-rate-mbit "$MBIT")
	if [ "$1" != on ]; then
		qos=(--no-mesh-qos)
		for nd in $IFACES; do
			in_ns "${nd%%:*}" tc qdisc add dev "${nd#*:}" root handle 1: htb default 1
			in_ns "${nd%%:*}" tc class add dev "${nd#*:}" parent 1: classid 1:1 \
				htb rate "${MBIT}mbit" ceil "${MBIT}mbit" quantum 6056
			[ "$1" = off ] || in_ns "${nd%%:*}" ip link set dev "${nd#*:}" gso_max_segs 1
		done
	fi
	mesh_daemon n3 --roles module --module-id $M3 --pool-size 64M --log-level warn "${qos[@]}"
	mesh_daemon n2 --roles relay --log-level warn "${qos[@]}"
	mesh_daemon n1 --roles relay --log-level warn "${qos[@]}"
	mesh_daemon n0 --roles pager --pager-prefetch 0 --pager-budget 16M --log-level warn "${qos[@]}"
	wait_for "n0 reaches $M3 over 3 hops" 30 hops_are $M3 3
	local want=htb
	for nd in $IFACES; do
		in_ns "${nd%%:*}" tc qdisc show dev "${nd#*:}" | grep -q "^qdisc htb $([ "$1" = on ] && echo 6d66 || echo 1):" ||
			fail "mode $1: not the expected qdisc on ${nd#*:}: $(in_ns "${nd%%:*}" tc qdisc show dev "${nd#*:}")"
	done
}
stop() {
	for n in n0 n1 n2 n3; do stop_daemon $n; done
	for nd in $IFACES; do
		in_ns "${nd%%:*}" tc qdisc del dev "${nd#*:}" root 2>/dev/null || true
		in_ns "${nd%%:*}" ip link set dev "${nd#*:}" gso_max_segs 65535
	done
}

# probe: "p50 p99" of one fault-probe run.
probe() {
	ctl n0 run --map "probe=$T/probe.file" -- "$BUILD_BIN/memfed_fault_probe" "$T/probe.file" |
		awk '/^fault_probe:/ {print $5, $8}'
}
storm_start() {
	rm -f "$T/storm.stop"
	ctl n0 run --map "storm=$T/storm.file" -- $PY -c '
import mmap, os, sys, time
path, stop = sys.argv[1:3]
size = 4 << 20
with open(path, "r+b") as f:
    m = mmap.mmap(f.fileno(), size)
    data = [os.urandom(size), os.urandom(size)]
    n, t0 = 0, time.monotonic()
    while not os.path.exists(stop):
        m[:] = data[n & 1]
        m.flush()
        n += 1
    print(n, time.monotonic() - t0)' "$T/storm.file" "$T/storm.stop" >"$T/storm.out" 2>&1 &
	STORM_PID=$!
	sleep 2 # the storm under way: the bulk queue full
}
storm_stop() {
	touch "$T/storm.stop"
	wait "$STORM_PID" || fail "the storm program failed: $(cat "$T/storm.out")"
}

start on
ctl n0 region create probe 2M --on $M3 >/dev/null
head -c 2M /dev/urandom | ctl n0 region write probe
ctl n0 region create storm 4M --on $M3 >/dev/null
SAMPLES=$T/samples
: >"$SAMPLES"
first=1
for r in $(seq 1 "$ROUNDS"); do
	for mode in on off fifo1; do
		[ "$first" = 1 ] || start $mode
		first=0
		for _ in 1 2 3; do echo "$mode idle $(probe)" >>"$SAMPLES"; done
		storm_start
		for _ in 1 2 3; do echo "$mode storm $(probe)" >>"$SAMPLES"; done
		storm_stop
		read -r passes secs <"$T/storm.out"
		echo "$mode rate $($PY -c "print($passes * 4.194304 / $secs)") 0" >>"$SAMPLES"
		echo "round $r, qdisc $mode: $(tail -n 7 "$SAMPLES" | tr '\n' ' ')"
		stop
	done
done

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
$PY - "$SAMPLES" "$ROUNDS" "$LOAD" "$MBIT" <<'PY' | tee "$OUT"
import statistics, sys
path, rounds, load, mbit = sys.argv[1:5]
s = {}
for line in open(path):
    mode, phase, p50, p99 = line.split()
    s.setdefault((mode, phase), []).append((float(p50), float(p99)))
med = lambda mode, phase, i: statistics.median(x[i] for x in s[(mode, phase)])
print("mesh qos: demand-fault latency over 3 hops, every link shaped to %s Mbit/s, idle and" % mbit)
print("during a write-back storm from the same pager (4 MiB rewritten and msynced, over and")
print("over: bulk class, CS1). qdisc on: memfedd's DSCP priority qdisc (htb + u32); off: one")
print("FIFO at the same rate. Medians over %s rounds x 3 probe runs of 256 random faults;" % rounds)
print("load average %s. Target: storm p99 <= 1.5x idle p99 with the qdisc on." % load)
print("fifo1: one FIFO, one segment per packet (as the qdisc sets it). storm: its write-back")
print("rate in MB/s (4 MiB passes msynced, over the whole storm).")
print("%6s %11s %11s %12s %12s %10s %8s %10s" % ("qdisc", "idle p50", "idle p99", "storm p50",
                                               "storm p99", "p99 ratio", "target", "storm"))
for mode in ("on", "off", "fifo1"):
    ratio = med(mode, "storm", 1) / med(mode, "idle", 1)
    target = ("met" if ratio <= 1.5 else "MISSED") if mode == "on" else "-"
    print("%6s %8.0f us %8.0f us %9.0f us %9.0f us %9.2fx %8s %5.2f MB/s" % (
        mode, med(mode, "idle", 0), med(mode, "idle", 1), med(mode, "storm", 0),
        med(mode, "storm", 1), ratio, target, med(mode, "rate", 0)))
PY
