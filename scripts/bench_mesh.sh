#!/usr/bin/env bash
# make bench, section "mesh": what a hop costs a demand fault (issue 11,
# item 9). A line of network namespaces joined by veth links, each node a
# memfedd in the mesh (babeld routing):
#
#     n0 (pager only) --- n1 (module) --- n2 (module) --- n3 (module) --- n4 (module)
#
# so n0 reaches the module of node k over k hops (IP forwarding in n1..n(k-1)).
#   1. memfed at k hops: memfed_fault_probe (tests/qemu/fault_probe.c) under
#      `memfedctl run --map` on n0 touches every page of one half of a 16 MiB
#      region on node k's module once, in a random order, prefetch off
#      (--pager-prefetch 0): each touch a demand fault served over k hops
#      (userfaultfd, TLS 1.3 on every link); p50 and p99.
#   2. raw at k hops, same run: memfed-bench-hops (tools/bench/hops_bench.cc),
#      a 64-byte request and a 4096-byte answer over plain TCP from n0's mesh
#      address to node k's, the route babeld installed for memfed; p50, p99.
#   3. raw-uffd at k hops, same run: the same raw fetch, each one serving a
#      userfaultfd miss of a fresh page and installed with UFFDIO_COPY
#      (memfed-bench-hops --uffd): the floor of any userfaultfd pager over
#      those hops, this kernel's fault cost included, which raw leaves out.
#   Raw and memfed alternate for each k, for several rounds, so the machine's
#   drift hits both; the table has the medians over rounds of each p50/p99.
#   3. convergence on the line: n1's link to n2 set down, the time until n0's
#      `memfedctl route ls` no longer has a route to n4's module (polled every
#      10 ms); set up again, the time until it has it back. Then on a ring (a
#      link n1 - n4 added): that link down, the time until n0's route to n4's
#      module has the metric of the four hops round, and of two when it is up.
#      Several repeats, medians; babeld's hello interval is memfedd's
#      --mesh-hello-ms 100 (mesh_lib.sh).
# Every process runs on one vCPU (MESH_BENCH_CPU, default 0; "any" for no
# pinning), as in the pager section: a round trip that wakes another vCPU
# pays 20-25 us more.
#
# Usage: scripts/bench_mesh.sh BUILD_DIR RESULTS_DIR   (as root)
set -euo pipefail
BUILD_BIN=$(cd "$1/bin" && pwd)
RESULTS=$2
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
ROUNDS=${MESH_BENCH_ROUNDS:-3}
REPEATS=${MESH_BENCH_REPEATS:-5}
# On the ring the way back to the short route takes babeld tens of seconds.
RING_REPEATS=${MESH_BENCH_RING_REPEATS:-3}
PORT=7788
PY=/usr/bin/python3
OUT=$RESULTS/mesh-hops.txt
CONV=$RESULTS/mesh-convergence.txt
if [ "$(id -u)" -ne 0 ]; then
	# No table: bench_plot.py skips a section whose table is missing.
	echo "mesh: SKIPPED, it needs root (network namespaces)"
	exit 0
fi
for b in memfed-bench-hops memfed_fault_probe; do
	[ -x "$BUILD_BIN/$b" ] || { echo "mesh: $BUILD_BIN/$b is missing (make release)" >&2; exit 1; }
done
# MESH_BENCH_CPU=any: no pinning, the scheduler places every thread.
[ "${MESH_BENCH_CPU:-0}" = any ] || taskset -p -c "${MESH_BENCH_CPU:-0}" $$ >/dev/null
export MEMFEDD=$BUILD_BIN/memfedd MEMFEDCTL=$BUILD_BIN/memfedctl
# The integration tests' helpers: nodes, links, daemons in the mesh with keys
# that trust each other; all of it torn down at exit.
. "$(dirname "$0")/../tests/integration/lib.sh"
. "$(dirname "$0")/../tests/integration/mesh_lib.sh"

trust_all n0 n1 n2 n3 n4
for n in n0 n1 n2 n3 n4; do mesh_node $n; done
mesh_link n0 n1; mesh_link n1 n2; mesh_link n2 n3; mesh_link n3 n4
declare -A MOD ADDR RID FA
for k in 1 2 3 4; do
	MOD[$k]=02:00:00:00:00:0$k
	ADDR[$k]=fd6d:6564::ff:fe00:$k
	mesh_daemon n$k --roles module --module-id "${MOD[$k]}" --pool-size 64M --log-level warn
done
mesh_daemon n0 --roles pager --pager-prefetch 0 --log-level warn

# hops_to MODULE: the hops n0 measured to MODULE (module ls), "-" before it has.
hops_to() {
	ctl n0 -j module ls | $PY -c '
import json, sys
m = [m for m in json.load(sys.stdin) if m["module"] == sys.argv[1] and m["reachable"]]
print(m[0]["hops"] if m else "-")' "$1"
}
hops_are() { [ "$(hops_to "$1")" = "$2" ]; }
for k in 1 2 3 4; do
	wait_for "n0 reaches ${MOD[$k]} over $k hops" 30 hops_are "${MOD[$k]}" $k
done
# n0's own mesh address, the raw client's source (the far side routes back to it).
SRC=$(in_ns n0 ip -6 -o addr show dev lo scope global | awk '{sub("/.*", "", $4); print $4; exit}')
[ -n "$SRC" ] || fail "n0 has no global address on lo to send from"
# Every mesh node listens on the port of --listen, on its module address.
MPORT=$(listen_of n1)
MPORT=${MPORT##*:}

for k in 1 2 3 4; do
	ctl n0 region create "hop$k" 16M --on "${MOD[$k]}" >/dev/null
	head -c 16M /dev/urandom | ctl n0 region write "hop$k"
	RID[$k]=$(ctl n0 -j region show "hop$k" | $PY -c 'import json,sys; print(json.load(sys.stdin)["id"])')
	FA[$k]=$(ctl n0 -j region show "hop$k" | $PY -c 'import json,sys; print(json.load(sys.stdin)["fa"])')
	FA[$k]=0x${FA[$k]##*/0x}
	# Not a child of this shell (nor of a function's subshell, which would say
	# "Killed"): killed with n$k's namespace at exit.
	(exec ip netns exec "$(ns n$k)" "$BUILD_BIN/memfed-bench-hops" --serve $PORT &)
done
# The servers listen once they answer.
for k in 1 2 3 4; do
	wait_for "the raw server on n$k" 10 in_ns n0 "$BUILD_BIN/memfed-bench-hops" \
		--client "[${ADDR[$k]}]:$PORT" --bind "$SRC" --count 1 --warmup 0
done

# One row of samples a line: k kind p50 p99.
SAMPLES=$T/samples
: >"$SAMPLES"
for r in $(seq 1 "$ROUNDS"); do
	for k in 1 2 3 4; do
		line=$(in_ns n0 "$BUILD_BIN/memfed-bench-hops" --client "[${ADDR[$k]}]:$PORT" --bind "$SRC" \
			--count 2000)
		echo "$k raw $(echo "$line" | awk '{print $6, $9}')" >>"$SAMPLES"
		line=$(in_ns n0 "$BUILD_BIN/memfed-bench-hops" --client "[${ADDR[$k]}]:$PORT" --bind "$SRC" \
			--count 2000 --uffd)
		echo "$k uffd $(echo "$line" | awk '{print $5, $8}')" >>"$SAMPLES"
		# Every run maps the region anew and its first touches fault: rounds
		# after the first measure as the first did (nothing stays on n0).
		line=$(ctl n0 run --map "hop$k=$T/hop$k.file" -- "$BUILD_BIN/memfed_fault_probe" "$T/hop$k.file" | grep "^fault_probe:")
		echo "$k memfed $(echo "$line" | awk '{print $5, $8}')" >>"$SAMPLES"
		# memfed's wire alone: READs of one page from the module, TLS 1.3, no pager.
		line=$(in_ns n0 "$BUILD_BIN/memfed-bench-wire" --target "[${ADDR[$k]}]:$MPORT" \
			--key-file "$T/keys/n0.key" --trust "$(key_of n$k)" --region-id "${RID[$k]}" \
			--fa-offset "${FA[$k]}" --span 4096 --depth 1 --only memfed --seconds 1 --repeat 1 |
			grep -E '^  memfed TcpChannel READ +1 ')
		echo "$k wire $(echo "$line" | awk '{print $5, $6}')" >>"$SAMPLES"
		echo "round $r, $k hops: $(tail -n 4 "$SAMPLES" | tr '\n' ' ')"
	done
done

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
$PY - "$SAMPLES" "$ROUNDS" "$LOAD" "${MESH_BENCH_CPU:-0}" <<'PY' | tee "$OUT"
import statistics, sys
path, rounds, load, cpu = sys.argv[1:5]
s = {}
for line in open(path):
    k, kind, p50, p99 = line.split()
    s.setdefault((int(k), kind), []).append((float(p50), float(p99)))
med = lambda k, kind, i: statistics.median(x[i] for x in s[(k, kind)])
print("mesh hops: a 4 KiB demand fault from n0's pager on a module k hops away (TLS 1.3 on")
print("every link, userfaultfd, prefetch off) vs raw: 64 B request, 4096 B answer over plain")
print("TCP between the same two mesh addresses. Medians over %s rounds, raw and memfed" % rounds)
print("alternating; vCPU %s; load average %s. Target: memfed p50 <= 1.3x raw p50." % (cpu, load))
print("wire: memfed-bench-wire's READ of one page from the same module over the same")
print("hops, TLS 1.3, no pager: how much of a fault is the wire and how much the pager.")
print("uffd: raw's fetch serving a userfaultfd miss (UFFDIO_COPY), no memfed code: the floor")
print("of any userfaultfd pager over those hops; memfed/uffd is memfed's own cost over it.")
print("%4s %10s %13s %7s %8s %11s %11s %8s %10s %13s %11s" % (
    "hops", "raw p50", "memfed p50", "ratio", "target", "uffd p50", "wire p50",
    "mf/uffd", "raw p99", "memfed p99", "uffd p99"))
for k in sorted({k for k, _ in s}):
    raw, mem, uf = med(k, "raw", 0), med(k, "memfed", 0), med(k, "uffd", 0)
    ratio = mem / raw
    print("%4d %7.1f us %10.1f us %6.2fx %8s %8.1f us %8.1f us %7.2fx %7.1f us %10.1f us %8.1f us" % (
        k, raw, mem, ratio, "met" if ratio <= 1.3 else "MISSED", uf, med(k, "wire", 0),
        mem / uf, med(k, "raw", 1), med(k, "memfed", 1), med(k, "uffd", 1)))
PY

# Convergence. From the moment `ip link set` returns, n0's `route ls` is polled
# every 10 ms until its route to n4's module is as wanted.
# route_poll WANT T0: ms from T0 (a unix time) to the first poll whose answer
# has no route to n4's module (WANT=absent), has one (present), or has one of
# babeld metric N (WANT=metric:N; a wired hop costs 96).
route_poll() {
	$PY - "$MEMFEDCTL" "$T/n0/sock" "${MOD[4]}" "$@" <<'PY'
import json, subprocess, sys, time
ctl, sock, module, want, t0 = sys.argv[1:]
for _ in range(3000):
    out = subprocess.run([ctl, "--socket", sock, "-j", "route", "ls"], capture_output=True,
                         check=True).stdout
    r = [r for r in json.loads(out)["routes"] if r["dest"] == module]
    got = "absent" if not r else "metric:%d" % r[0]["metric"]
    if got == want or (want == "present" and r):
        print("%.0f" % ((time.time() - float(t0)) * 1000))
        sys.exit(0)
    time.sleep(0.01)
sys.exit("route to %s still not %s after 3000 polls" % (module, want))
PY
}
# flap NAME NODE IFACE GONE BACK N: IFACE of NODE down, then up, N times;
# the ms until n0's route to n4's module is GONE, then BACK, one line each in
# $T/conv.NAME.
flap() {
	local name=$1 node=$2 iface=$3 gone=$4 back=$5 n=$6 r down up
	: >"$T/conv.$name"
	for r in $(seq 1 "$n"); do
		in_ns "$node" ip link set "$iface" down
		down=$(route_poll "$gone" "$(date +%s.%N)")
		in_ns "$node" ip link set "$iface" up
		up=$(route_poll "$back" "$(date +%s.%N)")
		echo "$down $up" >>"$T/conv.$name"
		echo "$name, $iface down $r: route $gone after $down ms, $back after $up ms"
		wait_for "n0 reaches ${MOD[4]} again" 30 module_is n0 "${MOD[4]}" up
		sleep 0.5
	done
}
# The line: n1's link to n2 goes; n4's module has no other path.
flap line n1 n1-n2 absent present "$REPEATS"
# The ring: a link n1 - n4 closes n1..n4 into a ring, n0 hanging off n1; n0
# reaches n4's module through n1 in two hops, and in four the way round when
# that link goes. The daemons at its ends learn of a new link only at start:
# both restart (modules only: n0's pager keeps running).
mesh_link n1 n4
for k in 4 1; do
	stop_daemon n$k
	mesh_daemon n$k --roles module --module-id "${MOD[$k]}" --pool-size 64M --log-level warn
done
wait_for "n0 reaches ${MOD[4]} in two hops" 30 route_poll metric:192 "$(date +%s.%N)"
flap ring n1 n1-n4 metric:384 metric:192 "$RING_REPEATS"

$PY - "$T/conv.line" "$T/conv.ring" <<'PY' | tee "$CONV"
import statistics, sys
print("mesh convergence (babeld hello 100 ms): a link set down, then up; n0's `memfedctl")
print("route ls` polled every 10 ms for its route to n4's module; median (min, max, runs).")
what = {
    0: (["line n0-n1-n2-n3-n4, n1-n2 down: route gone",
         "line n0-n1-n2-n3-n4, n1-n2 up:   route back"]),
    1: (["ring n1-n2-n3-n4-n1, n1-n4 down: route 4 hops round",
         "ring n1-n2-n3-n4-n1, n1-n4 up:   route 2 hops again"]),
}
for f, path in enumerate(sys.argv[1:3]):
    rows = [list(map(float, l.split())) for l in open(path)]
    for i in (0, 1):
        v = [r[i] for r in rows]
        print("  %-55s %6.0f ms  (%.0f, %.0f, %d)" % (what[f][i], statistics.median(v), min(v),
                                                       max(v), len(v)))
PY
