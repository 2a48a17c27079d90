#!/usr/bin/env bash
# DSCP marks on the wire (daemon/transport/dscp.h): each connection's packets
# carry the code point of its traffic class, both ways, so every hop can
# queue by class. A line of three; the relay in the middle counts what it
# forwards per code point, with an htb whose classes are chosen by u32
# filters on the IPv6 traffic-class byte (the only classifier this kernel
# has; ../shared/notes/mesh.md):
#
#     n1 (module) --- n2 (relay: htb on both links) --- n3 (pager)
#
#   class 1:10  EF  (46, 0xb8)  faults: the pager's data connection
#   class 1:20  CS2 (16, 0x40)  control: region create/write/read, stat, hello
#   class 1:40  anything else   (babel, hop probes)
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mesh_lib.sh"

trust_all n1 n2 n3
mesh_line_of_three --pager-budget 1M

for dev in n2-n1 n2-n3; do
	in_ns n2 tc qdisc add dev $dev root handle 1: htb default 40 r2q 1000
	for c in 10 20 40; do in_ns n2 tc class add dev $dev parent 1: classid 1:$c htb rate 10gbit; done
	in_ns n2 tc filter add dev $dev parent 1: protocol ipv6 prio 1 u32 match ip6 priority 0xb8 0xfc classid 1:10
	in_ns n2 tc filter add dev $dev parent 1: protocol ipv6 prio 2 u32 match ip6 priority 0x40 0xfc classid 1:20
done
# sent DEV CLASS: bytes the relay forwarded out of DEV in htb class 1:CLASS.
sent() { in_ns n2 tc -s class show dev "$1" | awk -v c="1:$2" '$1 == "class" && $3 == c { getline; print $2 }'; }

# Control: 2 MiB written through memfedctl (SyncClient) crosses as CS2
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

# Faults: an unmodified program reads the region through the pager; its
# pages come back marked EF, its requests go out EF.
ef_back0=$(sent n2-n3 10)
got=$("$MEMFEDCTL" --socket "$T/n3/sock" run --map marks="$T/marks.file" -- sha256sum "$T/marks.file")
[ "${got%% *}" = "$(sha256sum <"$T/data" | cut -d' ' -f1)" ] || fail "the program read other bytes"
ef_back=$(( $(sent n2-n3 10) - ef_back0 ))
[ "$ef_back" -ge $((4 * 1024 * 1024)) ] ||
	fail "only $ef_back bytes of the 4 MiB the program faulted in crossed the relay marked EF"
[ "$(sent n2-n1 10)" -gt 0 ] || fail "no EF requests crossed the relay toward the module"
ok "the pager's fault traffic is marked EF both ways ($ef_back bytes of pages toward the pager)"

echo "$PASSED passed, 0 failed"
