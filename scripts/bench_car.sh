#!/usr/bin/env bash
# make bench, section "car": mobility, the seed's car (issue 11, item 7).
# Lamp posts in a line, each a memory module in the mesh, and a car (a
# pager-only node) with a radio link to each lamp post (tests/integration/
# mesh_car_lib.sh):
#
#     l0 --- l1 --- l2 --- l3 --- l4       lamp posts 30 m apart (CAR_SPACING_M)
#       \     \     |     /     /
#        +-----+-- car --+-----+           radio range 20 m (CAR_RANGE_M)
#
# memfed-bench-car (tools/bench/car_bench.cc) drives the car up and down the
# road: a link is up while its lamp post is within range, so with range >
# spacing / 2 the car is attached to two lamp posts for 2 × range - spacing
# = 10 m between them (both links up, then the one behind goes down). Every
# lamp post holds a region of 1024 obstacle records of known content (a region
# per lamp post, placed on its module: the obstacles near a lamp post live on
# it, and the car reads those of the lamp post ahead, one or two hops away
# through the line); the car reads one record at a time through its memfedd
# (memfed_region_read: a 4 KiB READ from the module each time, nothing kept
# on the car) and checks every byte. It names each region NAME@MODULE: a
# plain name has memfedd ask the modules in turn, the lamp post just left
# behind among them, which has no route back to the car for a few hundred ms
# (babel's feasibility condition: its route through the next lamp post must
# wait for a new sequence number), and such a read waited out TCP's SYN
# retransmissions, 3 s. Per speed: reads/s, failed reads (wrong
# bytes or an error) and the worst stall (the longest time between two good
# reads). Each speed runs long enough to pass two lamp posts, 10 s at least.
#
# Convergence: the car attached to l1 alone, l2 comes into range (make before
# break), or attached to nothing (from nothing); the time from the link's up
# until the car's kernel route to l2's module goes out of that link (route),
# and until a TCP connection to l2's module is accepted (usable: the route
# back to the car is there too). CAR_REPEATS runs each, medians.
#
# Both for memfedd's default hello interval (100 ms) and for the chosen 20 ms
# (CAR_HELLOS); both with memfedd's mesh defaults otherwise (babeld's metric
# smoothing off, no DAD on mesh interfaces: daemon/mesh/babeld_config.h and
# node_addresses.h say why each is needed).
#
# Usage: scripts/bench_car.sh BUILD_DIR RESULTS_DIR   (as root)
set -euo pipefail
BUILD_BIN=$(cd "$1/bin" && pwd)
RESULTS=$2
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
LAMPS=${CAR_LAMPS:-5}
SPACING=${CAR_SPACING_M:-30}
RANGE=${CAR_RANGE_M:-20}
SPEEDS=${CAR_SPEEDS:-6 15 30 60 90 120}
HELLOS=${CAR_HELLOS:-100 20}
REPEATS=${CAR_REPEATS:-5}
PY=/usr/bin/python3
OUT=$RESULTS/car.txt
CONV=$RESULTS/car-convergence.txt
if [ "$(id -u)" -ne 0 ]; then
	echo "car: SKIPPED, it needs root (network namespaces)"
	exit 0
fi
[ -x "$BUILD_BIN/memfed-bench-car" ] || { echo "car: $BUILD_BIN/memfed-bench-car is missing (make release)" >&2; exit 1; }
export MEMFEDD=$BUILD_BIN/memfedd MEMFEDCTL=$BUILD_BIN/memfedctl CAR_BIN=$BUILD_BIN/memfed-bench-car
. "$(dirname "$0")/../tests/integration/lib.sh"
. "$(dirname "$0")/../tests/integration/mesh_lib.sh"
. "$(dirname "$0")/../tests/integration/mesh_car_lib.sh"

road_build "$LAMPS"
SAMPLES=$T/samples
: >"$SAMPLES"
for hello in $HELLOS; do
	road_start --mesh-hello-ms "$hello"
	[ -e "$T/filled" ] || { road_regions; touch "$T/filled"; }
	port=$(listen_of l2)
	port=${port##*:}
	# Make before break: on l1 alone, then l2 comes into range.
	for i in $(seq 0 $((LAMPS - 1))); do [ "$i" = 1 ] || in_ns car ip link set "car-l$i" down; done
	in_ns car "$CAR_BIN" --converge --link car-l2 --via car-l1 --addr "${ROAD_ADDR[2]}" \
		--bind "$ROAD_SRC" --port "$port" --repeat "$REPEATS" |
		sed "s/^/$hello mbb /" | tee -a "$SAMPLES"
	# From nothing: no lamp post in range, then l2.
	in_ns car ip link set car-l1 down
	in_ns car "$CAR_BIN" --converge --link car-l2 --addr "${ROAD_ADDR[2]}" \
		--bind "$ROAD_SRC" --port "$port" --repeat "$REPEATS" |
		sed "s/^/$hello nothing /" | tee -a "$SAMPLES"
	for i in $(seq 0 $((LAMPS - 1))); do in_ns car ip link set "car-l$i" up; done
	road_reachable
	for v in $SPEEDS; do
		in_ns car "$CAR_BIN" --drive --socket "$T/car/sock" --regions "$ROAD_AT" \
			--links "$ROAD_LINKS" --speed-kmh "$v" --spacing-m "$SPACING" --range-m "$RANGE" |
			sed "s/^/$hello /" | tee -a "$SAMPLES"
	done
	road_stop
done

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
$PY - "$SAMPLES" "$LAMPS" "$SPACING" "$RANGE" "$LOAD" "$OUT" "$CONV" <<'PY'
import statistics, sys
path, lamps, spacing, rng, load, out, conv = sys.argv[1:8]
drives, conv_rows = [], {}
for line in open(path):
    f = line.split()
    if f[1] in ("mbb", "nothing"):
        conv_rows.setdefault((int(f[0]), f[1]), []).append((float(f[4]), float(f[6])))
    elif f[1] == "car:":
        kv = dict(zip(f[4::2], f[5::2]))
        drives.append((int(f[0]), float(f[2]), kv))
with open(out, "w") as o:
    o.write("car: %s lamp posts %s m apart, radio range %s m (two lamp posts in range for\n"
            "%g m between them); the car reads 64-byte obstacle records of the lamp post ahead\n"
            "(a 4 KiB READ each through its memfedd, every byte checked) while it drives up and\n"
            "down the road. Worst stall: the longest time between two good reads. Load average %s.\n"
            % (lamps, spacing, rng, 2 * float(rng) - float(spacing), load))
    o.write("%5s %6s %9s %7s %6s %8s %12s %10s %10s\n" % (
        "hello", "km/h", "reads/s", "failed", "wrong", "unavail", "worst stall", "handovers",
        "read p50"))
    for hello, kmh, kv in drives:
        o.write("%3d ms %6.0f %9.0f %7s %6s %8s %9.1f ms %10s %7s us\n" % (
            hello, kmh, float(kv["reads/s"]), kv["failed"], kv["wrong"], kv["unavailable"],
            float(kv["stall_ms"]), kv["handovers"], kv["read_p50_us"]))
with open(conv, "w") as o:
    o.write("car convergence: from the car's link to l2 up until its kernel route to l2's module\n"
            "goes out of that link (route) and until a TCP connection to it is accepted\n"
            "(usable); median (min, max) of the runs. Target: under 100 ms.\n")
    what = {"mbb": "on l1, l2 comes into range", "nothing": "on none, l2 comes into range"}
    for (hello, kind), rows in sorted(conv_rows.items()):
        r = [x[0] for x in rows]; u = [x[1] for x in rows]
        o.write("  hello %3d ms, %-30s route %6.1f ms (%.1f, %.1f)  usable %6.1f ms (%.1f, %.1f)  %d runs\n"
                % (hello, what[kind], statistics.median(r), min(r), max(r),
                   statistics.median(u), min(u), max(u), len(r)))
PY
cat "$CONV" "$OUT"
