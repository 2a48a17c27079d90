#!/usr/bin/env bash
# make bench, section "meshscale" (BENCH=meshscale): what routing costs at 64 nodes (issue 11,
# item 9): babeld's route table and CPU in a mesh of 64 network namespaces, an
# 8 × 8 grid of veth links (112 links, up to 4 a node), babeld alone in each
# (no memfedd: the routing is all babeld's; memfed's own load is in the other
# sections). Each node's babeld config is what memfedd writes
# (daemon/mesh/babeld_config.cc, written out here): the node's one /128 on lo
# announced, nothing else, metric smoothing off, the hello interval of the
# run. For each hello interval (SCALE_HELLOS: memfedd's default 100 ms and
# the 20 ms the car section chooses): the time until every node has a route
# to every other node's address in its kernel table; then, at rest, the
# kernel routes (proto babel) and babeld's route entries (alternatives
# included: `dump` on its local socket) per node, and the CPU every babeld
# used over SCALE_SECONDS (utime + stime from /proc), per node and in all.
# Then convergence after a link down in the grid: node 0's first link on its
# route to the opposite corner goes down (SCALE_FLAPS times, up again in
# between), and the time until node 0's kernel route to that corner leaves
# the dead link is measured (polled every 10 ms), and after the link is up
# again, until every node again has a route to all others.
#
# Usage: scripts/bench_meshscale.sh BUILD_DIR RESULTS_DIR   (as root)
set -euo pipefail
RESULTS=$2
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
SIDE=${SCALE_SIDE:-8}
HELLOS=${SCALE_HELLOS:-100 20}
SECONDS_CPU=${SCALE_SECONDS:-20}
FLAPS=${SCALE_FLAPS:-3}
OUT=$RESULTS/mesh-scale.txt
PY=/usr/bin/python3
if [ "$(id -u)" -ne 0 ]; then
	echo "mesh-scale: SKIPPED, it needs root (network namespaces)"
	exit 0
fi
BABELD=$(command -v babeld || echo /usr/sbin/babeld)
[ -x "$BABELD" ] || { echo "mesh-scale: babeld is not installed (make deps)" >&2; exit 1; }
N=$((SIDE * SIDE))
P="mfs$$"
W=$(mktemp -d /tmp/memfed-mesh-scale.XXXXXX)
cleanup() {
	for i in $(seq 0 $((N - 1))); do
		ip netns pids "$P-$i" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
		ip netns del "$P-$i" 2>/dev/null || true
	done
	rm -rf "$W"
}
trap cleanup EXIT
in_ns() { local n=$1; shift; ip netns exec "$P-$n" "$@"; }
addr_of() { printf 'fd6d:6564::5:%x' "$1"; }

declare -A IFS_OF=()
for i in $(seq 0 $((N - 1))); do
	ip netns add "$P-$i"
	in_ns "$i" ip link set lo up
	in_ns "$i" sysctl -qw net.ipv6.conf.all.forwarding=1
	in_ns "$i" ip addr add "$(addr_of "$i")/128" dev lo
done
link() {
	ip link add "s$1-$2" netns "$P-$1" type veth peer name "s$2-$1" netns "$P-$2"
	in_ns "$1" sysctl -qw "net.ipv6.conf.s$1-$2.accept_dad=0"
	in_ns "$2" sysctl -qw "net.ipv6.conf.s$2-$1.accept_dad=0"
	in_ns "$1" ip link set "s$1-$2" up
	in_ns "$2" ip link set "s$2-$1" up
	IFS_OF[$1]="${IFS_OF[$1]:-} s$1-$2"
	IFS_OF[$2]="${IFS_OF[$2]:-} s$2-$1"
}
for r in $(seq 0 $((SIDE - 1))); do
	for c in $(seq 0 $((SIDE - 1))); do
		i=$((r * SIDE + c))
		[ "$c" -eq $((SIDE - 1)) ] || link "$i" $((i + 1))
		[ "$r" -eq $((SIDE - 1)) ] || link "$i" $((i + SIDE))
	done
done

# kernel_routes NODE: the node's routes installed by babeld.
kernel_routes() { in_ns "$1" ip -6 route show proto babel | grep -c . || true; }
babeld_routes() {
	$PY - "$W/$1/sock" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(5)
s.sendall(b"dump\n")
out = b""
# babeld greets with a header ending in "ok", then answers the dump with
# another "ok".
try:
    while out.count(b"ok\n") < 2:
        d = s.recv(65536)
        if not d:
            break
        out += d
except socket.timeout:
    pass
print(sum(1 for l in out.decode().splitlines() if l.startswith("add route ")))
PY
}
cpu_ticks() { # all babelds' utime + stime, in clock ticks
	local total=0 pid
	for i in $(seq 0 $((N - 1))); do
		pid=$(cat "$W/$i/pid")
		total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
	done
	echo "$total"
}

SAMPLES=$W/samples
: >"$SAMPLES"
for hello in $HELLOS; do
	t0=$(date +%s.%N)
	for i in $(seq 0 $((N - 1))); do
		mkdir -p "$W/$i"
		{
			echo "default hello-interval $(printf '%d.%03d' $((hello / 1000)) $((hello % 1000)))"
			echo "smoothing-half-life 0"
			for f in ${IFS_OF[$i]}; do echo "interface $f"; done
			echo "redistribute local ip $(addr_of "$i")/128 allow"
			echo "redistribute local deny"
			echo "redistribute deny"
		} >"$W/$i/babeld.conf"
		rm -f "$W/$i/pid" "$W/$i/sock"
		(exec ip netns exec "$P-$i" "$BABELD" -c "$W/$i/babeld.conf" -I "$W/$i/babeld.pid" \
			-S "$W/$i/state" -G "$W/$i/sock" >"$W/$i/log" 2>&1 &)
	done
	for i in $(seq 0 $((N - 1))); do
		for _ in $(seq 1 100); do [ -s "$W/$i/babeld.pid" ] && break; sleep 0.05; done
		cp "$W/$i/babeld.pid" "$W/$i/pid"
	done
	# Converged: every node has a route to each of the other N - 1.
	conv=""
	for _ in $(seq 1 600); do
		all=1
		for i in $(seq 0 $((N - 1))); do
			[ "$(kernel_routes "$i")" -ge $((N - 1)) ] || { all=0; break; }
		done
		if [ $all = 1 ]; then conv=$($PY -c "import time; print('%.1f' % (time.time() - $t0))"); break; fi
		sleep 0.2
	done
	[ -n "$conv" ] || { echo "mesh-scale: hello $hello ms: not every node has $((N - 1)) routes after 2 min" >&2; exit 1; }
	echo "hello $hello ms: every node has a route to all $((N - 1)) others after $conv s"
	sleep 2
	c0=$(cpu_ticks)
	sleep "$SECONDS_CPU"
	c1=$(cpu_ticks)
	kr=$(for i in $(seq 0 $((N - 1))); do kernel_routes "$i"; done | tr '\n' ' ')
	br=$(for i in $(seq 0 $((N - 1))); do babeld_routes "$i"; done | tr '\n' ' ')
	echo "$hello $conv $((c1 - c0)) $(getconf CLK_TCK) $SECONDS_CPU | $kr | $br" >>"$SAMPLES"
	# A link on the path from corner 0 to the far corner goes down.
	far=$(addr_of $((N - 1)))
	for f in $(seq 1 "$FLAPS"); do
		dev=$(in_ns 0 ip -6 route get "$far" | sed -n 's/.* dev \([^ ]*\).*/\1/p')
		[ -n "$dev" ] || { echo "mesh-scale: node 0 has no route to $far" >&2; exit 1; }
		t0=$(date +%s.%N)
		in_ns 0 ip link set "$dev" down
		moved=$($PY - "$P-0" "$far" "$dev" "$t0" <<'PY'
import subprocess, sys, time
ns, far, dead, t0 = sys.argv[1:]
for _ in range(3000):
    out = subprocess.run(["ip", "netns", "exec", ns, "ip", "-6", "route", "get", far],
                         capture_output=True, text=True).stdout
    if out and " dev %s " % dead not in out + " ":
        print("%.0f" % ((time.time() - float(t0)) * 1000))
        sys.exit(0)
    time.sleep(0.01)
sys.exit("route to %s still through %s after 3000 polls" % (far, dead))
PY
)
		in_ns 0 ip link set "$dev" up
		for _ in $(seq 1 600); do
			[ "$(kernel_routes 0)" -ge $((N - 1)) ] && break
			sleep 0.1
		done
		echo "hello $hello ms: $dev down, node 0's route to the far corner moved after $moved ms"
		echo "flap $hello $moved" >>"$SAMPLES"
		sleep 2
	done
	for i in $(seq 0 $((N - 1))); do kill "$(cat "$W/$i/pid")" 2>/dev/null || true; done
	sleep 1
done

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
$PY - "$SAMPLES" "$N" "$SIDE" "$LOAD" <<'PY' | tee "$OUT"
import statistics, sys
path, n, side, load = sys.argv[1:5]
n = int(n)
print("mesh scale: babeld alone in %d network namespaces, an %s x %s grid of veth links;" % (n, side, side))
print("each node announces one /128. Converged: every node has a kernel route to all %d others" % (n - 1))
print("(from babeld's start). At rest: kernel routes (proto babel) and babeld's route entries")
print("(alternatives included) per node, min/median/max; CPU of all babelds. Load average %s." % load)
print("%5s %10s %17s %17s %14s %14s" % ("hello", "converged", "kernel routes", "babeld routes",
                                        "CPU per node", "CPU all nodes"))
flaps = {}
for line in open(path):
    if line.startswith("flap "):
        _, hello, ms = line.split()
        flaps.setdefault(hello, []).append(float(ms))
        continue
    head, kr, br = line.split("|")
    hello, conv, ticks, hz, secs = head.split()
    kr = [int(x) for x in kr.split()]
    br = [int(x) for x in br.split()]
    cpu = int(ticks) / int(hz) / float(secs) * 100
    print("%3s ms %8s s %5d %5d %5d %5d %5d %5d %11.2f %% %11.1f %%" % (
        hello, conv, min(kr), statistics.median(kr), max(kr), min(br), statistics.median(br),
        max(br), cpu / n, cpu))
print("After a link down (node 0's first link towards the far corner): ms until node 0's")
print("kernel route to the far corner leaves it; median (min, max, runs).")
for hello, v in flaps.items():
    print("%3s ms %8.0f ms (%.0f, %.0f, %d)" % (hello, statistics.median(v), min(v), max(v), len(v)))
PY
