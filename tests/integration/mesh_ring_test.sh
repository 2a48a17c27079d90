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
# its pages travel over is cut. Babel moves the route the other way round;
# the program never sees a wrong byte, and goes on.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mesh_lib.sh"

M1=02:00:00:00:00:01
trust_all n1 n2 n3 n4
for n in n1 n2 n3 n4; do mesh_node $n; done
mesh_link n1 n2; mesh_link n2 n3; mesh_link n3 n4; mesh_link n4 n1

mesh_daemon n1 --roles module --module-id $M1 --pool-size 64M
mesh_daemon n2 --roles relay
mesh_daemon n4 --roles relay
mesh_daemon n3 --roles pager --pager-budget 1M
wait_for "n3 discovers $M1" 15 module_is n3 $M1 up

route_if() {
	ctl n3 -j route ls | python3 -c '
import json, sys
r = [x for x in json.load(sys.stdin)["routes"] if x["dest"] == sys.argv[1]]
print(r[0]["interface"] if r else "none")' "$M1"
}

head -c 8M /dev/urandom >"$T/data"
want=$(sha256sum <"$T/data" | cut -d' ' -f1)
ctl n3 region create ring 8M >/dev/null
ctl n3 region write ring <"$T/data"
ok "an 8 MiB region on n1, written from n3 across the ring"

# The reader: sha256sum of the region file, again and again, until told to stop.
reader() {
	local out
	while [ ! -e "$T/stop" ]; do
		if out=$("$MEMFEDCTL" --socket "$T/n3/sock" run --map ring="$T/ring.file" -- \
			sha256sum "$T/ring.file" 2>"$T/reader.err"); then
			echo "${out%% *}" >>"$T/hashes"
		else
			echo "failed: $(tail -n 2 "$T/reader.err")" >>"$T/hashes"
			touch "$T/stop"
		fi
	done
}
reader &
READER=$!
wait_for "the reader's first pass" 30 test -s "$T/hashes"

before=$(route_if)
case "$before" in n3-n2) peer=n2 ;; n3-n4) peer=n4 ;; *) fail "no route from n3 to $M1: $before" ;; esac
t0=$(date +%s%N)
in_ns n3 ip link set "$before" down
in_ns $peer ip link set "$peer-n3" down
# Convergence, read from the kernel's table (memfedctl route ls shows the same).
kernel_if() { in_ns n3 ip -6 route show fd6d:6564::ff:fe00:1/128 | sed -n 's/.* dev \([^ ]*\).*/\1/p'; }
moved() { local r; r=$(kernel_if); [ -n "$r" ] && [ "$r" != "$before" ]; }
for _ in $(seq 1 1500); do moved && break; sleep 0.01; done
moved || fail "the route to $M1 did not move off $before within 15 s"
t1=$(date +%s%N)
after=$(kernel_if)
route_ls_follows() { [ "$(route_if)" = "$after" ]; }
wait_for "route ls follows the kernel's route" 10 route_ls_follows
[ "$after" != "$before" ] && [ "$after" != none ] || fail "the route did not move: $before -> $after"
passes_before=$(wc -l <"$T/hashes")
passes_since() { [ "$(wc -l <"$T/hashes")" -ge $((passes_before + $1)) ]; }
wait_for "two more passes over the new path" 60 passes_since 2
touch "$T/stop"
wait $READER
echo "# the kernel's route moved $before -> $after $(( (t1 - t0) / 1000000 )) ms after the cut (polled every 10 ms)"

bad=$(grep -vc "^$want$" "$T/hashes" || true)
total=$(wc -l <"$T/hashes")
[ "$bad" -eq 0 ] || fail "$bad of $total passes read wrong bytes: $(sort "$T/hashes" | uniq -c)"
ok "the cut link moved the route the other way round; all $total passes of sha256sum read the right bytes"

echo "$PASSED passed, 0 failed"
