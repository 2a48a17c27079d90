#!/usr/bin/env bash
# A line of three nodes: a module on a lamp post (n1), a relay (n2) that only
# forwards, and a car (n3) with a pager and no memory module of its own;
# later a second lamp post (n4) right beside the car.
#
#     n1 (module 02:00:00:00:00:01) --- n2 (relay) --- n3 (pager) --- n4 (module ...:04)
#
# n3 knows nothing of n1 beforehand: it finds the module by the route babeld
# installs to the module's address, and reaches it through n2. Losing the
# relay loses the route and marks the module unreachable, with the reason;
# the relay's return brings it back with its data.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mesh_lib.sh"

trust_all n1 n2 n3 n4
mesh_line_of_three
ok "the car discovers the lamp post's module through the relay, with no --peer"

hops_of() {
	ctl "$1" -j module ls | python3 -c '
import json, sys
print([m for m in json.load(sys.stdin) if m["module"] == sys.argv[1]][0]["hops"])' "$2"
}
hops_are() { [ "$(hops_of "$1" "$2")" = "$3" ]; }
wait_for "n3 measures 2 hops to $M1" 10 hops_are n3 $M1 2
ok "the hops to the module are measured: 2 (one relay between)"

# The route the data path uses is babeld's: out of n3's only link, next hop n2.
routes=$(ctl n3 -j route ls)
python3 - "$routes" "$M1" <<'PY' || fail "route ls on n3: $routes"
import json, sys
r = [x for x in json.loads(sys.argv[1])["routes"] if x["dest"] == sys.argv[2]]
assert len(r) == 1, r
assert r[0]["interface"] == "n3-n2", r
assert r[0]["next_hop"].startswith("fe80:"), r
assert r[0]["address"] == "fd6d:6564::ff:fe00:1", r
assert r[0]["metric"] > 96, r   # two links: more than one hop's cost
PY
in_ns n3 ip -6 route get fd6d:6564::ff:fe00:1 | grep -q "dev n3-n2" ||
	fail "n3's kernel has no route to the module through n2"
ok "route ls shows the kernel's route to the module: via n2's link-local address, two links' metric"

# A region created on the car lands on the only module, and its bytes cross
# the relay both ways. It belongs to the car's node: the lamp post's own
# users read it once the car grants them that.
ctl n3 region create road 1M >/dev/null
ctl n3 region grant road "$(key_of n1)" read >/dev/null
[ "$(ctl n1 -j region show road | python3 -c 'import json,sys; print(json.load(sys.stdin)["module"])')" = $M1 ] ||
	fail "region 'road' is not on $M1"
echo "obstacle at km 12" | ctl n3 region write road
got=$(ctl n1 region read road --length 17)
[ "$got" = "obstacle at km 12" ] || fail "n1 holds '$got'"
got=$(ctl n3 region read road --length 17)
[ "$got" = "obstacle at km 12" ] || fail "n3 reads '$got'"
ok "a region written from the car through the relay is on the module and reads back"

# The relay goes: the route is withdrawn and the module is marked down, with why.
ctl n3 -j watch >"$T/watch.out" 2>&1 &
WATCH=$!
sleep 0.5
stop_daemon n2 KILL
in_ns n2 ip link set n2-n1 down
in_ns n2 ip link set n2-n3 down
module_why() {
	ctl n3 -j module ls | python3 -c '
import json,sys
print([m for m in json.load(sys.stdin) if m["module"]==sys.argv[1]][0].get("error",""))' "$1"
}
gone_for_routing() { module_is n3 $M1 down && case "$(module_why $M1)" in *route*) true ;; *) false ;; esac; }
# Within the leave grace it is only unreachable; after it, gone for want of a route.
wait_for "n3 marks $M1 gone for want of a route" 15 gone_for_routing
why=$(module_why $M1)
ok "the relay's loss withdraws the route and marks the module unreachable ($why)"
kill $WATCH; wait $WATCH 2>/dev/null || true
grep -q "\"event\":\"leave\".*\"module\":\"$M1\"" "$T/watch.out" ||
	grep -q "\"module\":\"$M1\".*\"event\":\"leave\"" "$T/watch.out" ||
	fail "memfedctl watch did not print $M1 leaving: $(cat "$T/watch.out")"
ok "memfedctl watch printed the module leaving as it happened"

in_ns n2 ip link set n2-n1 up
in_ns n2 ip link set n2-n3 up
mesh_daemon n2 --roles relay
wait_for "n3 finds $M1 again" 15 module_is n3 $M1 up
got=$(ctl n3 region read road --length 17)
[ "$got" = "obstacle at km 12" ] || fail "after the relay's return n3 reads '$got'"
ok "the relay's return brings the module back, data intact"

# A second module joins right beside the car: new regions go to the nearest
# module with room, and a name is unique across the federation.
M4=02:00:00:00:00:04
mesh_node n4
mesh_link n3 n4
# n3's daemon learns of its new link only through its babeld config: restart it.
stop_daemon n3
mesh_daemon n3 --roles pager
mesh_daemon n4 --roles module --module-id $M4 --pool-size 64M
wait_for "n3 discovers $M4 one hop away" 15 module_is n3 $M4 up
wait_for "n3 still knows $M1" 15 module_is n3 $M1 up
wait_for "n3 measures 1 hop to $M4" 10 hops_are n3 $M4 1
ctl n3 region create nearby 1M >/dev/null
where=$(ctl n3 -j region show nearby | python3 -c 'import json,sys; print(json.load(sys.stdin)["module"])')
[ "$where" = $M4 ] || fail "region 'nearby' went to $where, not the nearest module $M4"
ok "a new region lands on the nearest module (lowest metric)"
expect_exit 4 ctl n3 region create road 1M
case "$ERR" in *"already exists on module $M1"*) ;; *) fail "duplicate name: $ERR" ;; esac
ok "a name held by a module two hops away is refused, naming that module"

# NAME@MODULE addresses a region on that module only.
got=$(ctl n3 region read "road@$M1" --length 17)
[ "$got" = "obstacle at km 12" ] || fail "road@$M1 reads '$got'"
expect_exit 3 ctl n3 region show "road@$M4"
expect_exit 2 ctl n3 region show "road@nonsense"
ok "NAME@MODULE reads a region from the module named, and only there"

# Clear errors for what an operator gets wrong.
mkdir -p "$T/bad"
expect_exit 3 in_ns n1 "$MEMFEDD" --state-dir "$T/bad" --socket "$T/bad/sock" --kmod off \
	--roles relay --mesh no-such-if
case "$ERR" in *"no-such-if"*"does not exist"*) ;; *) fail "missing interface: $ERR" ;; esac
expect_exit 3 in_ns n1 "$MEMFEDD" --state-dir "$T/bad" --socket "$T/bad/sock" --kmod off \
	--roles relay --mesh n1-n2 --babeld /nonexistent/babeld
case "$ERR" in *babeld*"apt-get install babeld"*) ;; *) fail "missing babeld: $ERR" ;; esac
expect_exit 2 "$MEMFEDD" --state-dir "$T/bad" --roles relay
case "$ERR" in *"--mesh"*) ;; *) fail "relay without a mesh: $ERR" ;; esac
ok "a missing interface, a missing babeld and a relay outside a mesh are refused with the fix"

echo "$PASSED passed, 0 failed"
