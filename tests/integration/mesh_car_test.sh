#!/usr/bin/env bash
# The seed's car, small: three lamp posts 10 m apart, each a memory module,
# and a car that drives past at 6 km/h with a radio range of 8 m, so that it
# reaches l1 while still on l0 and leaves l0 3.6 s later (one handover).
#
#     l0 (module) --- l1 (module) --- l2 (module)
#        \            |            /
#         +-------- car (pager) --+
#
# The car reads obstacle records of the lamp post ahead (l1: two hops away
# through l0, then one) through its memfedd and checks every byte; not one
# read may fail or be wrong. Before that: a link that comes up carries the
# route to its lamp post's module (babeld with metric smoothing, as babeld's
# default has it, kept the two-hop route for tens of seconds), and memfedd
# switched duplicate address detection off on its mesh interfaces. Nothing
# here is timed; scripts/bench_car.sh measures the same road at 6-120 km/h.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mesh_lib.sh"
: "${CAR_BIN:?set CAR_BIN to memfed-bench-car (ctest does)}"
source "$(dirname "$0")/mesh_car_lib.sh"

road_build 3
road_start --mesh-hello-ms 20
road_regions
ok "three lamp posts, each holding its region of obstacle records; the car reaches all"

for i in 0 1 2; do
	dad=$(in_ns car cat "/proc/sys/net/ipv6/conf/car-l$i/accept_dad")
	[ "$dad" = 0 ] || fail "accept_dad on car-l$i is $dad: memfedd did not switch DAD off"
done
ok "no duplicate address detection on the car's mesh interfaces"

port=$(listen_of l1)
in_ns car ip link set car-l2 down
in_ns car "$CAR_BIN" --converge --link car-l1 --via car-l0 --addr "${ROAD_ADDR[1]}" \
	--bind "$ROAD_SRC" --port "${port##*:}" --repeat 1 >"$T/converge" ||
	fail "the route to l1 never went out of car-l1 after it came up: $(cat "$T/converge")"
ok "on l0, the car takes the direct route to l1 once l1 comes into range ($(cat "$T/converge"))"

in_ns car "$CAR_BIN" --drive --socket "$T/car/sock" --regions "$ROAD_AT" \
	--links "$ROAD_LINKS" --speed-kmh 6 --spacing-m 10 --range-m 8 --seconds 6 >"$T/drive" ||
	fail "the car's program failed: $(cat "$T/drive")"
cat "$T/drive"
python3 - "$(cat "$T/drive")" <<'PY' || fail "the drive: $(cat "$T/drive")"
import sys
f = sys.argv[1].split()
kv = dict(zip(f[3::2], f[4::2]))
assert int(kv["reads"]) > 0, "no good read"
assert int(kv["wrong"]) == 0, "wrong records"
assert int(kv["unavailable"]) == 0, "reads failed"
assert int(kv["handovers"]) == 1, "not one handover"
PY
ok "the car read its records through the handover from l0 to l1: none failed, none wrong"
