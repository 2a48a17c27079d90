#!/usr/bin/env bash
# Traffic classes at every hop (daemon/transport/dscp.h, class_channel.h,
# daemon/mesh/priority_qdisc.h). A pager reaches a module over one
# connection per class, each marked with its class's DSCP both ways, and
# every memfedd puts a strict-priority qdisc keyed on that mark on its mesh
# interfaces (htb classes with u32 filters on the IPv6 traffic-class byte:
# the only classifier this kernel has; ../shared/notes/mesh.md). The relay
# in the middle of a line of three counts what it forwards per class:
#
#     n1 (module) --- n2 (relay) --- n3 (pager)
#
#   class 6d66:10  EF  (46)  faults: the pager's fault connection
#   class 6d66:20  CS2 (16)  control: region create/write/read, stat, hello
#   class 6d66:30  CS1 (8)   bulk: the pager's bulk connection (write-back,
#                            prefetch)
#   class 6d66:40  anything else (babel, hop probes)
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mesh_lib.sh"

trust_all n1 n2 n3
mesh_line_of_three --pager-budget 1M

# The qdisc is there on every mesh interface of every node.
for nd in n1:n1-n2 n2:n2-n1 n2:n2-n3 n3:n3-n2; do
	in_ns "${nd%%:*}" tc qdisc show dev "${nd#*:}" | grep -q "^qdisc htb 6d66: root" ||
		fail "no priority qdisc on ${nd#*:}: $(in_ns "${nd%%:*}" tc qdisc show dev "${nd#*:}")"
done
gso_segs() { in_ns "$1" ip -d link show dev "$2" | sed -n 's/.* gso_max_segs \([0-9]*\).*/\1/p'; }
[ "$(gso_segs n2 n2-n1)" = 1 ] || fail "n2-n1 sends $(gso_segs n2 n2-n1) segments per packet, not 1"
ok "memfedd put its priority qdisc (htb 6d66:) on every mesh interface, one segment a packet"

# sent DEV CLASS: bytes the relay forwarded out of DEV in class 6d66:CLASS.
sent() { in_ns n2 tc -s class show dev "$1" | awk -v c="6d66:$2" '$1 == "class" && $3 == c { getline; print $2 }'; }

# Control: 4 MiB written through memfedctl (SyncClient) crosses as CS2
# toward the module; its replies come back CS2 too.
head -c 4M /dev/urandom >"$T/data"
ctl n3 region create marks 4M >/dev/null
cs2_out0=$(sent n2-n1 20)
ctl n3 region write marks <"$T/data"
cs2_out=$(( $(sent n2-n1 20) - cs2_out0 ))
[ "$cs2_out" -ge $((4 * 1024 * 1024)) ] ||
	fail "only $cs2_out bytes of the 4 MiB region write crossed the relay marked CS2"
[ "$(sent n2-n3 20)" -gt 0 ] || fail "no CS2 replies crossed the relay toward the pager"
ok "control traffic is marked CS2 both ways ($cs2_out bytes toward the module)"

# Reads: an unmodified program reads the region through the pager. Its
# demand faults come back EF, the pages the pager prefetches ahead of the
# stream come back CS1: two connections, two marks.
ef_back0=$(sent n2-n3 10); cs1_back0=$(sent n2-n3 30)
got=$("$MEMFEDCTL" --socket "$T/n3/sock" run --map marks="$T/marks.file" -- sha256sum "$T/marks.file")
[ "${got%% *}" = "$(sha256sum <"$T/data" | cut -d' ' -f1)" ] || fail "the program read other bytes"
ef_back=$(( $(sent n2-n3 10) - ef_back0 )); cs1_back=$(( $(sent n2-n3 30) - cs1_back0 ))
[ "$ef_back" -gt 0 ] || fail "no fault pages crossed the relay marked EF"
[ "$cs1_back" -gt 0 ] || fail "no prefetched pages crossed the relay marked CS1"
[ $((ef_back + cs1_back)) -ge $((4 * 1024 * 1024)) ] ||
	fail "only $((ef_back + cs1_back)) bytes of the 4 MiB read crossed the relay as EF or CS1"
[ "$(sent n2-n1 10)" -gt 0 ] || fail "no EF requests crossed the relay toward the module"
ok "demand faults travel EF ($ef_back bytes), prefetch CS1 ($cs1_back bytes)"

# Write-back: a program writes 12 MiB into a region mapped as a file, under
# the pager's 1 MiB budget; the pages it evicts go to the module on the
# bulk connection, marked CS1.
ctl n3 region create dirty 12M >/dev/null
cs1_out0=$(sent n2-n1 30); ef_out0=$(sent n2-n1 10)
"$MEMFEDCTL" --socket "$T/n3/sock" run --map dirty="$T/dirty.file" -- python3 -c '
import mmap, os, sys
with open(sys.argv[1], "r+b") as f:
    m = mmap.mmap(f.fileno(), 12 << 20)
    data = os.urandom(12 << 20)
    m[:] = data
    assert m[:] == data' "$T/dirty.file" || fail "the writing program failed"
cs1_out=$(( $(sent n2-n1 30) - cs1_out0 )); ef_out=$(( $(sent n2-n1 10) - ef_out0 ))
[ "$cs1_out" -ge $((4 * 1024 * 1024)) ] ||
	fail "only $cs1_out bytes of write-back crossed the relay marked CS1 (EF: $ef_out)"
[ "$ef_out" -lt $((cs1_out / 8)) ] ||
	fail "write-back rode the fault class: $ef_out bytes EF against $cs1_out CS1"
ok "write-back travels CS1 ($cs1_out bytes toward the module, $ef_out EF)"

# Two connections from the pager to the module's address, besides control.
mod=$(ctl n3 -j module ls | python3 -c '
import json, sys
print([m for m in json.load(sys.stdin) if m["module"] == sys.argv[1]][0]["endpoint"])' $M1)
conns=$(in_ns n3 ss -Htn state established | awk -v m="$mod" '$4 == m' | wc -l)
[ "$conns" -ge 2 ] || fail "the pager holds $conns connection(s) to $mod, not one per class"
ok "the pager holds $conns connections to the module ($mod)"

# The qdisc goes with memfedd.
stop_daemon n2
for dev in n2-n1 n2-n3; do
	! in_ns n2 tc qdisc show dev $dev | grep -q "6d66:" ||
		fail "the priority qdisc stayed on $dev after memfedd exited"
done
[ "$(gso_segs n2 n2-n1)" -gt 1 ] || fail "n2-n1 still sends one segment per packet after memfedd exited"
ok "the priority qdisc is removed when memfedd exits, and the GSO limit restored"

echo "$PASSED passed, 0 failed"
