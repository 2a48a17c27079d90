#!/usr/bin/env bash
# Two pools with one module ID. A module's identity is its module ID and the
# node key TLS authenticates for it (node_federation.h): whoever meets the ID
# served by a second key refuses that one at HELLO, logs it once, and shows
# the conflict in `memfedctl module ls`; it never takes one pool for the
# other.
#
#     n1 (module 02:00:00:00:00:01, pool A) --- n2 (pager) --- n3 (module 02:00:00:00:00:01, pool B)
#
# Both modules announce the same address. n2 meets pool A first; when its
# link to n1 goes, babel's route to the ID moves to n3, and n2's next HELLO
# there meets another key. Outside the mesh, a node whose own pool has the
# ID of the module it dials is refused by that module at HELLO.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mesh_lib.sh"

M=02:00:00:00:00:01
trust_all n1 n2 n3 s1 s2
# s3 trusts through its config file (peer add/rm), the others trust it.
"$MEMFEDCTL" key generate "$T/s3.key" >"$T/keys/s3.pub"
mesh_node n1; mesh_node n2; mesh_node n3
mesh_link n1 n2; mesh_link n2 n3

mesh_daemon n1 --roles module --module-id $M --pool-size 64M
mesh_daemon n2 --roles pager
wait_for "n2 discovers module $M" 15 module_is n2 $M up
ctl n2 region create road 1M >/dev/null
echo "pool A" | ctl n2 region write road
key_seen() { ctl n2 -j module ls | python3 -c '
import json, sys
m = [m for m in json.load(sys.stdin) if m["module"] == sys.argv[1]][0]
print(m.get("key", ""))' $M; }
[ "$(key_seen)" = "$(key_of n1)" ] || fail "n2 met $M with key '$(key_seen)', not n1's"
ok "n2 meets module $M served by n1's key, and writes to its pool"

# The second pool with the same ID joins beside the pager, and the first
# one's link to n2 goes: the route to the ID's address moves to n3.
mesh_daemon n3 --roles module --module-id $M --pool-size 64M
# n2, between the two, hears the address from two babel routers: a second
# node claims the ID even before anyone greets it.
two_originators() {
	ctl n2 -j route ls | python3 -c '
import json, sys
r = [x for x in json.load(sys.stdin)["routes"] if x["dest"] == sys.argv[1]]
assert r and len(r[0]["originators"]) == 2, r' $M
}
wait_for "n2's route ls shows two routers announcing $M" 15 two_originators
wait_for "n2 logs the two routers" 5 grep -q "announced by 2 babel routers" "$T/n2.log"
ok "n2 sees $M's address announced by two babel routers, and says so"
in_ns n1 ip link set n1-n2 down
in_ns n2 ip link set n2-n1 down
route_via_n3() { in_ns n2 ip -6 route show fd6d:6564::ff:fe00:1/128 | grep -q "dev n2-n3"; }
wait_for "n2's route to $M moves to n3" 15 route_via_n3

conflict_shown() {
	ctl n2 -j module ls | python3 -c '
import json, sys
m = [m for m in json.load(sys.stdin) if m["module"] == sys.argv[1]][0]
assert "conflict" in m and not m["reachable"], m
assert m["conflict"]["keys"] == [sys.argv[2], sys.argv[3]], m
print(m["error"])' $M "$(key_of n1)" "$(key_of n3)"
}
wait_for "n2 shows module $M in conflict" 15 conflict_shown
why=$(conflict_shown)
case "$why" in
*"two pools"*"$(key_of n1)"*"$(key_of n3)"*"--module-id"*) ;;
*) fail "the conflict does not name both keys and the fix: $why" ;;
esac
ok "n2 refuses the second pool of $M at HELLO; module ls shows both keys and the fix"
ctl n2 module ls | grep -q "^$M .* DUP " || fail "module ls (text) does not show DUP: $(ctl n2 module ls)"
ok "module ls (text) marks the module DUP"

# Never merged: the region in pool A is not read from pool B, however
# often it is asked for.
for _ in 1 2 3; do
	ctl n2 region read road --length 6 >/dev/null 2>&1 || true
	ctl n2 -j module ls >/dev/null
done
set +e
got=$(ctl n2 region read road --length 6 2>"$T/read.err")
rc=$?
set -e
[ $rc -ne 0 ] || fail "n2 read '$got' of region 'road' while $M is in conflict"
grep -q "two pools" "$T/read.err" || fail "the failed read does not say why: $(cat "$T/read.err")"
logged=$(grep -c "is served by two pools" "$T/n2.log" || true)
[ "$logged" -eq 1 ] || fail "the conflict was logged $logged times, not once"
ok "requests for $M fail with the conflict, never reach pool B; logged once"

# The first pool's link returns: the route may go back to n1 (equal
# metrics: babel keeps either), and while it does n2 is served by pool A
# again, with its bytes. Not asserted: which way babel settles.

# Outside the mesh: s2's own pool has the ID of the module it dials (s1).
# s1 refuses it at HELLO; s2 shows the conflict.
start_daemon s1 --roles module --module-id 02:00:00:00:00:09 --listen 127.0.0.1:0 --pool-size 64M
start_daemon s2 --module-id 02:00:00:00:00:09 --listen 127.0.0.1:0 --pool-size 64M \
	--peer "$(listen_of s1)"
refused_by_s1() {
	ctl s2 -j module ls | python3 -c '
import json, sys
m = [m for m in json.load(sys.stdin) if not m["local"]][0]
assert "conflict" in m and not m["reachable"], m
assert m["conflict"]["keys"] == [sys.argv[1], sys.argv[2]], m
print(m["error"])' "$(key_of s2)" "$(key_of s1)"
}
wait_for "s2 shows the conflict with s1" 15 refused_by_s1
why=$(refused_by_s1)
case "$why" in
*"02:00:00:00:00:09"*"$(key_of s1)"*"$(key_of s2)"*"--module-id"*) ;;
*) fail "s1's refusal does not name both keys and the fix: $why" ;;
esac
grep -q "two pools share one module ID" "$T/s1.log" || fail "s1 did not log the refusal"
ok "a module refuses, at HELLO, a node whose pool has its module ID; both keys named"

# A pager that met s1 finds s2's pool at s1's endpoint: the same ID, another
# key; refused. Once the operator no longer trusts s1's key (peer rm: the
# node was given a new key), the key answering now is the module.
S1_EP=$(listen_of s1)
start_daemon s3 --roles pager --peer "$S1_EP" --key-file "$T/s3.key"
ctl s3 peer add "$(key_of s1)" >/dev/null
ctl s3 peer add "$(key_of s2)" >/dev/null
wait_for "s3 meets s1" 15 module_is s3 02:00:00:00:00:09 up
stop_daemon s1
stop_daemon s2
start_daemon s2 --listen "$S1_EP" --pool-size 64M
s3_conflict() { ctl s3 -j module ls | grep -q '"conflict"'; }
wait_for "s3 refuses s2's pool at s1's endpoint" 15 s3_conflict
ctl s3 peer rm "$(key_of s1)" >/dev/null
wait_for "s3 takes s2's key for 02:00:00:00:00:09 once s1's is untrusted" 15 \
	module_is s3 02:00:00:00:00:09 up
ok "a second key at a module's endpoint is refused until the first key is no longer trusted"

echo "$PASSED passed, 0 failed"
