#!/bin/busybox sh
# Mesh tests of the QEMU tier, run by init.sh with memfed.ko loaded when the
# runner found babeld and veth.ko: memfed.ko mirrors the mesh.
#
#     a (pager, initial netns) --- b (module ...:02) --- c (module ...:03)
#       \_______________________________________________/
#
# Each node is a memfedd --mesh with its own babeld; b and c live in network
# namespaces joined to a and each other by veth links. memfed.ko is one per
# kernel and its family exists only in the initial network namespace, so a's
# memfedd is the one that mirrors into it. a's route to c is first the direct
# link; when that link is cut it must move to the relay b (next hop b's
# module, 2 hops, b's link-local address, a's interface to b), and the
# kmod's "events" group must announce it; when c stops, its routes must
# leave the kmod and c be marked down with the reason. a's memfedd syncs
# with the kmod on the mesh's events only: its periodic refresh is set to an
# hour, so no change here can come from it.
# The runner expects these markers:
# expect: mesh-kmod-routes-follow-babeld
# expect: mesh-kmod-route-moves-on-link-cut
# expect: mesh-kmod-announces-routes
# expect: mesh-kmod-drops-departed-module
D=/tmp/mesh
B_ID=02:00:00:00:00:02
C_ID=02:00:00:00:00:03
IP=/usr/sbin/ip
SYS=/sys/kernel/memfed
ROUTES=/sys/kernel/debug/memfed/routes
mkdir -p $D/a $D/b $D/c

. /bin/memfed_guest_lib.sh

# Every node trusts the others' keys.
for n in a b c; do
	memfedctl key generate $D/$n.key >$D/$n.pub
done
trust() {
	for n in a b c; do
		[ $n = $1 ] || echo "--trust $(cat $D/$n.pub)"
	done
}

insmod /rdma/veth.ko 2>/dev/null
$IP netns add mb && $IP netns add mc &&
	$IP link add a-b type veth peer name b-a netns mb &&
	$IP -n mb link add b-c type veth peer name c-b netns mc &&
	$IP link add a-c type veth peer name c-a netns mc &&
	$IP link set a-b up && $IP -n mb link set b-a up && $IP -n mb link set b-c up &&
	$IP -n mc link set c-b up && $IP link set a-c up && $IP -n mc link set c-a up &&
	$IP -n mb link set lo up && $IP -n mc link set lo up ||
	detail "mesh links not set up: $($IP link 2>&1 | head -5)"

# node NAME NETNS LINKS ARGS...: memfedd in the mesh on LINKS.
node() {
	name=$1 netns=$2 links=$3
	shift 3
	run=""
	[ -n "$netns" ] && run="$IP netns exec $netns"
	# shellcheck disable=SC2046 # trust prints whole words
	$run memfedd --state-dir $D/$name --socket $D/$name/sock --key-file $D/$name.key \
		$(trust $name) --mesh $links --mesh-hello-ms 100 "$@" >>$D/$name.log 2>&1 &
	eval "PID_$name=$!"
	wait_for 60 memfedctl --socket $D/$name/sock status
}

# route DEST: a's kmod route to DEST in the fault class, as debugfs prints it.
route() { grep "^$1 fault " $ROUTES; }
field() { route $1 | cut -d' ' -f$2; }
direct_route_ok() {
	[ "$(field $C_ID 3)" = $C_ID ] && [ "$(field $C_ID 5)" = 1 ] &&
		[ "$(field $C_ID 8)" = a-c ] && [ "$(field $B_ID 3)" = $B_ID ] &&
		[ "$(field $B_ID 5)" = 1 ] && [ "$(field $B_ID 8)" = a-b ]
}
relayed_route_ok() {
	[ "$(field $C_ID 3)" = $B_ID ] && [ "$(field $C_ID 5)" = 2 ] &&
		[ "$(field $C_ID 8)" = a-b ]
}
show_routes() {
	detail "kmod routes: $(tr '\n' ';' <$ROUTES)"
	detail "a's mesh routes: $(memfedctl --socket $D/a/sock route ls 2>&1 | tr '\n' ';')"
}
start=$(date +%s)

# 1. a's kmod holds the mesh's routes as babeld has them: b and c each over
# its own link, one hop.
ok=0
node c mc c-b,c-a --kmod off --roles module --module-id $C_ID --pool-size 16M ||
	{ detail "node c did not start: $(tail -3 $D/c.log)"; ok=1; }
node b mb b-a,b-c --kmod off --roles module --module-id $B_ID --pool-size 16M ||
	{ detail "node b did not start: $(tail -3 $D/b.log)"; ok=1; }
memfedctl watch >$D/watch.out 2>&1 &
WATCH_PID=$!
echo '{"kmod_refresh_ms": 3600000}' >$D/a.json
node a "" a-b,a-c --config $D/a.json --roles pager || { detail "node a did not start: $(tail -3 $D/a.log)"; ok=1; }
wait_for 60 direct_route_ok || { show_routes; ok=1; }
[ "$(grep -c "^$C_ID " $ROUTES)" = 3 ] || { detail "not one route per class to $C_ID"; ok=1; }
[ "$(cat $SYS/modules/$C_ID/state)" = up ] || { detail "module $C_ID not up in the kmod"; ok=1; }
result mesh-kmod-routes-follow-babeld $ok
echo "MEMFED-INFO mesh-kmod-routes-follow-babeld: at $(($(date +%s) - start)) s"

# 1b. The direct link is cut: the route to c moves to the relay b.
ok=0
$IP link set a-c down
$IP -n mc link set c-a down
wait_for 60 relayed_route_ok || { show_routes; ok=1; }
# The next hop's address is b's link-local address on b-a.
b_ll=$($IP -n mb -6 addr show dev b-a scope link | sed -n 's/.*inet6 \([^/]*\).*/\1/p')
[ -n "$b_ll" ] && [ "$(field $C_ID 7)" = "$b_ll" ] ||
	{ detail "route to $C_ID via '$(field $C_ID 7)', b's link-local is '$b_ll'"; ok=1; }
[ "$(cat $SYS/modules/$C_ID/state)" = up ] || { detail "module $C_ID not up after the move"; ok=1; }
result mesh-kmod-route-moves-on-link-cut $ok
echo "MEMFED-INFO mesh-kmod-route-moves-on-link-cut: at $(($(date +%s) - start)) s"

# 2. The route was announced on the kmod's multicast group as it was set.
ok=0
wait_for 10 grep -q "^route-set .*\"dest\":\"$C_ID\".*\"hops\":2.*\"next_hop\":\"$B_ID\"" \
	$D/watch.out || { detail "watch: $(tr '\n' ';' <$D/watch.out | head -c 1500)"; ok=1; }
result mesh-kmod-announces-routes $ok

# 3. c stops: babeld withdraws its route, a's memfedd deletes the kmod's
# routes to c (announced) and marks c down with the reason.
ok=0
kill $PID_c
wait $PID_c
c_gone() { ! grep -q "^$C_ID " $ROUTES && [ "$(cat $SYS/modules/$C_ID/state)" = down ]; }
wait_for 30 c_gone || { detail "after c stopped: $(cat $ROUTES | tr '\n' ';'), c is $(cat $SYS/modules/$C_ID/state)"; ok=1; }
reason=$(cat $SYS/modules/$C_ID/reason)
case "$reason" in *route*) ;; *) detail "module $C_ID down for '$reason'"; ok=1 ;; esac
route $B_ID >/dev/null || { detail "the route to b went too"; ok=1; }
wait_for 10 grep -q "^route-del .*\"dest\":\"$C_ID\"" $D/watch.out ||
	{ detail "no route-del for $C_ID: $(tail -5 $D/watch.out | tr '\n' ';')"; ok=1; }
result mesh-kmod-drops-departed-module $ok
echo "MEMFED-INFO mesh-kmod-drops-departed-module: at $(($(date +%s) - start)) s"
echo "MEMFED-INFO module $C_ID down in memfed.ko: $reason"
echo "MEMFED-INFO mesh: the cases took $(($(date +%s) - start)) s"

kill $WATCH_PID $PID_a $PID_b
wait $WATCH_PID $PID_a $PID_b 2>/dev/null
for n in a b c; do
	grep -E ' (warn|error) ' $D/$n.log | sed "s|^|MEMFED-INFO mesh $n.log: |"
done
$IP netns del mb
$IP netns del mc
# Leave the tables as the daemon left them to the leak check.
memfed_kmod_test empty
