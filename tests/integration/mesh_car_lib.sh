# The road of the mobility benchmark and test (issue 11, item 7): lamp posts
# in a line, each a memory module, and a car with a radio link to every lamp
# post, which memfed-bench-car (tools/bench/car_bench.cc) brings up and down
# as the car drives past. Source after lib.sh and mesh_lib.sh.
#
#     l0 (module) --- l1 (module) --- ... --- l(N-1) (module)
#       \              |                     /
#        +------------ car (pager only) ----+    car-l0 ... car-l(N-1)
#
#   road_build N                 namespaces and links for N lamp posts
#   road_start [FLAGS...]        memfedd on every node with FLAGS (e.g. the
#                                hello interval), waits until the car reaches
#                                every module; again after road_stop
#   road_reachable               waits until the car reaches every module
#   road_stop                    stops every daemon (the pools stay)
#   road_regions                 region obst<i> on lamp post i's module, filled
#                                with its obstacle records (memfed-bench-car)
# After road_build: ROAD_LINKS (the car's links, comma-separated, in road
# order), ROAD_REGIONS (likewise), ROAD_AT (the same regions as NAME@MODULE,
# which is how the car reads them: it knows which lamp post holds which
# obstacles, and a plain name has memfedd ask the modules in turn, the lamp
# post just left behind among them, which for a moment has no route back to
# the car), ROAD_MOD[i], and after road_start
# ROAD_ADDR[i] (lamp post i's module address) and ROAD_SRC (the car's).
: "${CAR_BIN:?set CAR_BIN to memfed-bench-car}"
declare -A ROAD_MOD=() ROAD_ADDR=()
ROAD_N=0
ROAD_LINKS=
ROAD_REGIONS=
ROAD_AT=
ROAD_SRC=

road_build() {
	ROAD_N=$1
	local i
	trust_all car $(for i in $(seq 0 $((ROAD_N - 1))); do echo "l$i"; done)
	mesh_node car
	for i in $(seq 0 $((ROAD_N - 1))); do
		mesh_node "l$i"
		ROAD_MOD[$i]=02:00:00:00:01:$(printf %02x "$i")
		ROAD_LINKS="$ROAD_LINKS${ROAD_LINKS:+,}car-l$i"
		ROAD_REGIONS="$ROAD_REGIONS${ROAD_REGIONS:+,}obst$i"
		ROAD_AT="$ROAD_AT${ROAD_AT:+,}obst$i@${ROAD_MOD[$i]}"
	done
	for i in $(seq 1 $((ROAD_N - 1))); do mesh_link "l$((i - 1))" "l$i"; done
	for i in $(seq 0 $((ROAD_N - 1))); do road_radio "$i"; done
}

# road_radio I: the car's link to lamp post I, as mesh_link makes links but
# with interface indexes of their own (100 + I in the car, 200 + I on the lamp
# post). The kernel holds back the carrier change of a device whose index
# equals its peer's (linkwatch takes it for a non-stacked device and batches
# its events, up to 1 s), and in namespaces built alike the two ends of a veth
# often have the same index: then a lamp post saw the car arrive and leave up
# to a second late, which no radio does.
road_radio() {
	local i=$1
	ip link add "car-l$i" index $((100 + i)) netns "$(ns car)" type veth \
		peer name "l$i-car" index $((200 + i)) netns "$(ns "l$i")"
	in_ns car ip link set "car-l$i" up
	in_ns "l$i" ip link set "l$i-car" up
	MESH_LINKS[car]="${MESH_LINKS[car]:-}${MESH_LINKS[car]:+,}car-l$i"
	MESH_LINKS[l$i]="${MESH_LINKS[l$i]:-}${MESH_LINKS[l$i]:+,}l$i-car"
}

road_module_address() {
	ctl car -j route ls | python3 -c '
import json, sys
r = [x for x in json.load(sys.stdin)["routes"] if x["dest"] == sys.argv[1]]
print(r[0]["address"] if r else "")' "$1"
}

road_start() {
	local i
	for i in $(seq 0 $((ROAD_N - 1))); do
		mesh_daemon "l$i" --roles module --module-id "${ROAD_MOD[$i]}" --pool-size 16M \
			--log-level warn "$@"
	done
	mesh_daemon car --roles pager --log-level warn "$@"
	road_reachable
	for i in $(seq 0 $((ROAD_N - 1))); do
		ROAD_ADDR[$i]=$(road_module_address "${ROAD_MOD[$i]}")
		[ -n "${ROAD_ADDR[$i]}" ] || fail "the car has no route to ${ROAD_MOD[$i]}"
	done
	ROAD_SRC=$(in_ns car ip -6 -o addr show dev lo scope global | awk '{sub("/.*", "", $4); print $4; exit}')
	[ -n "$ROAD_SRC" ] || fail "the car has no mesh address on lo"
}

road_reachable() {
	local i
	for i in $(seq 0 $((ROAD_N - 1))); do
		wait_for "the car reaches ${ROAD_MOD[$i]}" 30 module_is car "${ROAD_MOD[$i]}" up
	done
}

road_stop() {
	local n
	for n in car $(for i in $(seq 0 $((ROAD_N - 1))); do echo "l$i"; done); do
		stop_daemon "$n"
	done
}

road_regions() {
	local i
	for i in $(seq 0 $((ROAD_N - 1))); do
		ctl car region create "obst$i" 64K --on "${ROAD_MOD[$i]}" >/dev/null
	done
	"$CAR_BIN" --write --socket "$T/car/sock" --regions "$ROAD_REGIONS"
}
