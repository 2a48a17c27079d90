#!/usr/bin/env bash
# A ring of four: the module on n1, relays on n2 and n4, the car's pager on
# n3, two hops from the module either way round.
#
#        n2 (relay)
#       /          \
#     n1 (module)   n3 (pager)
#       \          /
#        n4 (relay)
#
# An unmodified program on n3 reads a region file over and over, under a
# budget so small that every read fetches the pages again, while the link
# its pages travel over is cut (or, run as mesh_relay_kill_test.sh with
# MESH_RING_BREAK=relay, while the relay they cross dies: its processes
# killed, its namespace and links gone). Babel moves the route the other way
# round; the program never sees a wrong byte, and goes on.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mesh_lib.sh"

trust_all n1 n2 n3 n4
mesh_ring_of_four --pager-budget 1M

head -c 8M /dev/urandom >"$T/data"
want=$(sha256sum <"$T/data" | cut -d' ' -f1)
ctl n3 region create ring 8M >/dev/null
ctl n3 region write ring <"$T/data"
ok "an 8 MiB region on n1, written from n3 across the ring"

# The reader: sha256sum of the region file, again and again, until told to stop.
mesh_reader n3 ring &
READER=$!
wait_for "the reader's first pass" 30 test -s "$T/hashes"

peer=$(ring_relay)
before=n3-$peer
t0=$(date +%s%N)
case "${MESH_RING_BREAK:-link}" in
link)
	in_ns n3 ip link set "$before" down
	in_ns $peer ip link set "$peer-n3" down
	what="the cut link"
	;;
relay)
	mesh_kill_node $peer
	what="the relay's death ($peer)"
	;;
*) fail "MESH_RING_BREAK=$MESH_RING_BREAK: link or relay" ;;
esac
# Convergence, read from the kernel's table (memfedctl route ls shows the same).
for _ in $(seq 1 1500); do kernel_if_moved n3 $A1 "$before" && break; sleep 0.01; done
kernel_if_moved n3 $A1 "$before" || fail "the route to $M1 did not move off $before within 15 s after $what"
t1=$(date +%s%N)
after=$(kernel_if n3 $A1)
route_ls_follows() { [ "$(route_if n3 $M1)" = "$after" ]; }
wait_for "route ls follows the kernel's route" 10 route_ls_follows
[ "$after" != "$before" ] && [ "$after" != none ] || fail "the route did not move: $before -> $after"
passes_before=$(passes)
wait_for "two more passes over the new path" 60 passes_since 2 $passes_before
touch "$T/stop"
wait $READER
echo "# the kernel's route moved $before -> $after $(( (t1 - t0) / 1000000 )) ms after $what (polled every 10 ms)"

hashes_all "$want"
ok "$what moved the route the other way round ($before -> $after); all $(passes) passes of sha256sum read the right bytes"

echo "$PASSED passed, 0 failed"
