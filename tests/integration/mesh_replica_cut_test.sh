#!/usr/bin/env bash
# In the mesh, a relay failure that cuts one copy of a replicated region off
# is that copy's death: the pager on n3 reads a region with one copy on n1,
# its neighbour, and one on n4, reached only through the relay n2.
#
#     n1 (module) --- n3 (pager) --- n2 (relay) --- n4 (module)
#
# An unmodified program reads the region file again and again under a budget
# so small that every pass fetches its pages, while n2 dies (its processes
# killed, its namespace and links gone). The copy on n4 is marked lost, the
# reads go on from n1 with never a wrong byte, and writes go on degraded.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/mesh_lib.sh"

M4=02:00:00:00:00:04
trust_all n1 n2 n3 n4
for n in n1 n2 n3 n4; do mesh_node $n; done
mesh_link n1 n3; mesh_link n3 n2; mesh_link n2 n4

mesh_daemon n1 --roles module --module-id $M1 --pool-size 64M
mesh_daemon n4 --roles module --module-id $M4 --pool-size 64M
mesh_daemon n2 --roles relay
mesh_daemon n3 --roles pager --pager-budget 1M --request-timeout 2000
wait_for "n3 discovers $M1" 15 module_is n3 $M1 up
wait_for "n3 discovers $M4 through n2" 15 module_is n3 $M4 up

# field EXPR: EXPR of `region show rep -j` (as r) on n3.
field() {
	ctl n3 -j region show rep | python3 -c "import json,sys; r=json.load(sys.stdin); print($1)"
}
copy_state() { field "[c['state'] for c in r['copies'] if c['module'] == '$1'][0]"; }

head -c 4M /dev/urandom >"$T/data"
want=$(sha256sum <"$T/data" | cut -d' ' -f1)
ctl n3 region create rep 4M --replicas 2 --on "$M1,$M4" >/dev/null
ctl n3 region write rep <"$T/data"
[ "$(field 'r["in_sync"], len(r["copies"])')" = "2 2" ] || fail "rep: $(ctl n3 region show rep)"
ok "a 4 MiB region with copies on $M1 (next door) and $M4 (through the relay n2), both in sync"

mesh_reader n3 rep &
READER=$!
wait_for "the reader's first pass" 60 test -s "$T/hashes"

mesh_kill_node n2
for _ in $(seq 1 300); do
	[ "$(copy_state $M4)" = lost ] && break
	sleep 0.1
done
[ "$(copy_state $M4)" = lost ] ||
	fail "the copy on $M4 is not lost 30 s after the relay n2 died: $(ctl n3 region show rep)"
passes_before=$(passes)
wait_for "two more passes after the cut" 60 passes_since 2 $passes_before
touch "$T/stop"
wait $READER
hashes_all "$want"
[ "$(copy_state $M1)" = "in sync" ] || fail "the copy on $M1: $(ctl n3 region show rep)"
ok "the relay n2 died: the copy on $M4 is lost, $(passes) passes of sha256sum read the right bytes from $M1"

# Writes go on, degraded, to the copy that is left.
head -c 4M /dev/urandom >"$T/data2"
ctl n3 region write rep <"$T/data2"
[ "$(ctl n3 region read rep | sha256sum | cut -d' ' -f1)" = "$(sha256sum <"$T/data2" | cut -d' ' -f1)" ] ||
	fail "a write after the cut does not read back"
[ "$(field 'r["in_sync"], r["degraded"]')" = "1 True" ] || fail "rep: $(ctl n3 region show rep)"
ctl n3 region ls | grep -q "^rep .*1/2 copies in sync (degraded)" || fail "region ls: $(ctl n3 region ls)"
ok "a write after the cut lands on $M1 and reads back; the region shows 1/2 copies in sync (degraded)"

echo "$PASSED passed, 0 failed"
