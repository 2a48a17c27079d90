#!/usr/bin/env bash
# A larger mesh, checked whole: every module reachable from every node,
# every route loop-free, and `memfedctl route ls` equal to the kernel's
# routes to module addresses, with the hop counts memfedd measured equal to
# the paths the kernel's routes really take.
#
#   MESH_TOPOLOGY=grid    a 4 x 4 grid, a module on every node
#
#       n1 -- n2 -- n3 -- n4
#       |     |     |     |
#       n5 -- n6 -- n7 -- n8
#       |     |     |     |
#       n9 -- n10 - n11 - n12
#       |     |     |     |
#       n13 - n14 - n15 - n16
#
#   MESH_TOPOLOGY=random  32 nodes, a random connected graph from
#                         MESH_SEED (printed, so a failure can be replayed):
#                         a module on every fourth node, n32 a pager, the
#                         rest relays
#
# Then a region is placed on the module farthest from the first node, written
# from there across the mesh and read back.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mesh_lib.sh"
TOPOLOGY_PY="$(dirname "$0")/mesh_topology.py"

case "${MESH_TOPOLOGY:-grid}" in
grid)
	N=16
	"$TOPOLOGY_PY" grid 4 >"$T/links"
	is_module() { true; }
	FROM=n1
	;;
random)
	N=32
	SEED=${MESH_SEED:-7}
	echo "# random topology from MESH_SEED=$SEED"
	"$TOPOLOGY_PY" random $N "$SEED" >"$T/links"
	is_module() { [ $((${1#n} % 4)) -eq 1 ]; }
	FROM=n32
	;;
*) fail "MESH_TOPOLOGY=$MESH_TOPOLOGY: grid or random" ;;
esac
NODES=()
for i in $(seq 1 $N); do NODES+=("n$i"); done
module_id() { printf '02:00:00:00:00:%02x\n' "${1#n}"; }
module_addr() { printf 'fd6d:6564::ff:fe00:%x\n' "${1#n}"; }

trust_all "${NODES[@]}"
for n in "${NODES[@]}"; do mesh_node "$n"; done
while read -r a b; do mesh_link "$a" "$b"; done <"$T/links"
: >"$T/modules"
MODULES=()
for n in "${NODES[@]}"; do
	if is_module "$n"; then
		mesh_daemon_start "$n" --roles module --module-id "$(module_id "$n")" --pool-size 16M
		echo "$n $(module_id "$n") $(module_addr "$n")" >>"$T/modules"
		MODULES+=("$n")
	elif [ "$n" = "$FROM" ]; then
		mesh_daemon_start "$n" --roles pager
	else
		mesh_daemon_start "$n" --roles relay
	fi
done
for n in "${NODES[@]}"; do mesh_daemon_ready "$n"; done
ok "$N nodes, $(wc -l <"$T/links") links, ${#MODULES[@]} modules, each node with its own memfedd and babeld"

# Every node has a kernel route to every module address but its own; the
# routes missing are left in $T/missing.
routes_everywhere() {
	local n m
	: >"$T/missing"
	for n in "${NODES[@]}"; do
		in_ns "$n" ip -6 route show proto babel >"$T/kernel.$n"
		for m in "${MODULES[@]}"; do
			[ "$n" = "$m" ] || grep -q "^$(module_addr "$m") via" "$T/kernel.$n" ||
				echo "$n to $m" >>"$T/missing"
		done
	done
	[ ! -s "$T/missing" ]
}
t0=$SECONDS
until routes_everywhere; do
	[ $((SECONDS - t0)) -lt 90 ] ||
		fail "no kernel route after 90 s from: $(paste -sd, "$T/missing")"
	sleep 0.5
done
echo "# every node had a route to every module $((SECONDS - t0)) s after every daemon answered"

# The module table: every module reachable from the first node.
all_modules_up() {
	ctl "$FROM" -j module ls | python3 -c '
import json, sys
up = {m["module"] for m in json.load(sys.stdin) if m["reachable"]}
sys.exit(0 if set(sys.argv[1:]) <= up else 1)' $(for m in "${MODULES[@]}"; do [ "$m" = "$FROM" ] || module_id "$m"; done)
}
wait_for "every module up in $FROM's module table" 60 all_modules_up
ok "every module reachable from $FROM (memfedctl module ls)"

# A snapshot of every node's routes; the routing is settled when two taken
# a second apart are equal (ages aside). A snapshot of 16 or 32 namespaces
# is not taken in one instant, so only a settled one says something.
snapshot() {
	local dir=$1 n
	mkdir -p "$dir"
	cp "$T/links" "$T/modules" "$dir/"
	for n in "${NODES[@]}"; do
		in_ns "$n" ip -6 route show proto babel >"$dir/$n.kernel"
		ctl "$n" -j route ls >"$dir/$n.routes.json"
	done
}
# same_routes A B: the snapshots are equal (ages aside), else says where
# they differ, in $T/unsettled.
same_routes() { "$TOPOLOGY_PY" same "$1" "$2" >"$T/unsettled"; }
snapshot "$T/snap.a"
t0=$SECONDS
until sleep 1 && snapshot "$T/snap.b" && same_routes "$T/snap.a" "$T/snap.b"; do
	[ $((SECONDS - t0)) -lt 60 ] ||
		fail "the routes did not settle: snapshots a second apart still differed after 60 s: $(cat "$T/unsettled")"
	rm -rf "$T/snap.a" && mv "$T/snap.b" "$T/snap.a"
done
"$TOPOLOGY_PY" check "$T/snap.b" || fail "the settled routes are wrong (snapshot above)"
ok "every route loop-free and equal in the kernel and in memfedctl route ls, hops included"

# The far module: the most hops from $FROM.
far=$(ctl "$FROM" -j route ls | python3 -c '
import json, sys
mods = set(sys.argv[1:])
r = max((x for x in json.load(sys.stdin)["routes"] if x["dest"] in mods), key=lambda x: x["hops"])
print(r["dest"], r["hops"])' $(for m in "${MODULES[@]}"; do [ "$m" = "$FROM" ] || module_id "$m"; done))
read -r far_id far_hops <<<"$far"
head -c 1M /dev/urandom >"$T/data"
ctl "$FROM" region create far 1M --on "$far_id" >/dev/null
ctl "$FROM" region write far <"$T/data"
ctl "$FROM" region read far >"$T/back"
cmp -s "$T/data" "$T/back" || fail "region 'far' on $far_id read back different bytes"
ok "a region on $far_id, $far_hops hops from $FROM, written and read back across the mesh"

echo "$PASSED passed, 0 failed"
