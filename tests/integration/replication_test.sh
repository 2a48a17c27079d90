#!/usr/bin/env bash
# Replicated regions: three modules on loopback and a pager-only client node
# whose regions get three copies (memfedd --replicas 3). A module killed under
# a running program loses nothing and the program's output matches a native
# run; a second one killed, still right; a module that returns catches up by
# page version until its pages equal the others'; a damaged page on one copy
# is read from another and repaired; a create that cannot place its copies
# says how many modules were eligible.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/client_lib.sh"
. "$(dirname "$0")/replication_lib.sh"

start_modules
start_daemon client --roles pager --listen 127.0.0.1:0 --replicas 3 \
	--peer "${EP[a]}" --peer "${EP[b]}" --peer "${EP[c]}"
ok "three modules and a client whose regions get three copies"

ctl client region create data 8M >/dev/null
[ "$(show_field data 'sorted(c["module"] for c in r["copies"])')" = \
	"['02:00:00:00:00:0a', '02:00:00:00:00:0b', '02:00:00:00:00:0c']" ] ||
	fail "copies are not one per module: $(ctl client region show data)"
[ "$(show_field data 'r["in_sync"], r["degraded"], r["module"][:3]')" = "3 False 03:" ] ||
	fail "a new region is not 3 copies in sync behind its replica set: $(ctl client region show data)"
ok "region create: one copy on each module, all in sync, reached through its replica set"

expect_exit 5 ctl client region create big 1M --replicas 4
echo "$ERR" | grep -q "needs 4 copies on distinct nodes, but only 3 module(s) were eligible" ||
	fail "an impossible placement does not say how many modules were eligible: $ERR"
[ -z "$(ctl client region ls | grep '^big ')" ] || fail "a refused create left copies behind"
ctl client region create big 1M --replicas 4 --replicas-min 2 >/dev/null
[ "$(show_field big 'r["in_sync"], r["replicas"], r["degraded"]')" = "3 4 True" ] ||
	fail "--replicas-min: $(ctl client region show big)"
ctl client region ls | grep -q "^big .*3/4 copies in sync (degraded)" || fail "region ls: $(ctl client region ls)"
ctl client region rm big
ok "--replicas 4 on three modules: refused naming the 3 eligible; with --replicas-min 2, degraded from the start"

head -c 8M /dev/urandom >"$T/v1.bin"
ctl client region write data <"$T/v1.bin"
for m in a b c; do
	ctl client region read "data@${ID[$m]}" | cmp - "$T/v1.bin" || fail "the copy on $m differs from what was written"
done
printf x | expect_exit 2 ctl client region write "data@${ID[a]}"
ok "a write reaches every copy; one copy alone cannot be written"

# A module dies: reads and writes go on with the other two.
stop_daemon a KILL
ctl client region read data | cmp - "$T/v1.bin" || fail "a read after module a died differs"
head -c 4M /dev/urandom >"$T/half.bin"
ctl client region write data --offset 2M <"$T/half.bin"
{ head -c 2M "$T/v1.bin"; cat "$T/half.bin"; tail -c 2M "$T/v1.bin"; } >"$T/v2.bin"
ctl client region read data | cmp - "$T/v2.bin" || fail "a write with module a dead is not read back"
[ "$(show_field data '[c["state"] for c in r["copies"] if c["module"].endswith("0a")][0]')" = lost ] ||
	fail "module a's copy is not lost: $(ctl client region show data)"
[ "$(ctl client -j status | $PY -c 'import json,sys; print(json.load(sys.stdin)["regions_degraded"])')" -ge 1 ] ||
	fail "status does not count the degraded region"
ok "module a killed: reads and writes go on, its copy is lost, status counts the region degraded"

# It returns: the copy catches up by version, only the pages written meanwhile.
restart a
wait_in_sync data 3
ctl client region read "data@${ID[a]}" | cmp - "$T/v2.bin" || fail "module a's copy did not catch up"
copied=$(show_field data 'r["counters"]["pages_caught_up"]')
[ "$copied" -eq 1024 ] || fail "catch-up copied $copied pages, not the 1024 written while a was away"
ok "module a back: caught up by page version (1024 pages copied, not 2048), its copy equals the others"

# A damaged page on one copy: read from another, and rewritten. Copy a is
# the one reads try first (the first met; every peer is one hop away).
fa=$(ctl client -j region show "data@${ID[a]}" | $PY -c 'import json,sys; print(int(json.load(sys.stdin)["fa"].split("/")[1], 16))')
printf 'DAMAGE' | dd of="$T/a/pool.mfp" bs=1 seek=$((fa + 5 * 4096 + 100)) conv=notrunc status=none
expect_exit 7 ctl client region read "data@${ID[a]}" --offset 20480 --length 4096
ctl client region read data | cmp - "$T/v2.bin" || fail "a read with a damaged page on a differs"
ctl client region read "data@${ID[a]}" --offset 20480 --length 4096 | cmp - <(tail -c +20481 "$T/v2.bin" | head -c 4096) ||
	fail "the damaged page on a was not repaired"
[ "$(show_field data 'r["counters"]["pages_repaired"]')" -ge 1 ] || fail "no page counted as repaired"
ok "a page damaged in a's pool: kCorrupt read alone, read from another copy and repaired on a"

# A real program whose heap has three copies; modules b and then c killed
# under it: the output equals a native run. Each kill must land while it
# runs, so the input is big enough to take seconds at this budget.
seq 1 400000 | shuf >"$T/in.txt"
sort -n "$T/in.txt" >"$T/want.txt"
run_on client --heap-budget 4M --heap-size 128M -- sort -n -S 40M "$T/in.txt" >"$T/out.txt" &
RUN=$!
for _ in $(seq 1 200); do
	ctl client region ls | grep -q '^heap' && break
	sleep 0.05
done
for victim in b c; do
	sleep 0.5
	kill -0 $RUN 2>/dev/null || fail "sort ended before module $victim could be killed under it"
	stop_daemon $victim KILL
done
wait $RUN || fail "sort exited $? with modules b and c killed under it"
cmp "$T/want.txt" "$T/out.txt" || fail "sort with modules b and c killed under it: output differs from native"
ok "sort under a 4M heap budget: modules b and c killed under it, output equals native"

# Both return and catch up; every pool checks clean.
restart b
restart c
wait_in_sync data 3
for m in a b c; do
	ctl client region read "data@${ID[$m]}" | cmp - "$T/v2.bin" || fail "copy on $m differs after the kills"
done
# The heap's copies on b and c outlived its delete (they were down): gone now.
for _ in $(seq 1 100); do
	ctl client region ls | grep -q '^heap' || break
	sleep 0.1
done
[ -z "$(ctl client region ls | grep '^heap')" ] || fail "copies of a deleted heap came back: $(ctl client region ls)"
ctl client region rm data
for m in a b c; do
	ctl client region show "data@${ID[$m]}" >/dev/null 2>&1 && fail "region rm left the copy on $m"
	stop_daemon $m
	"$MEMFEDCTL" pool check "$T/$m/pool.mfp" >/dev/null || fail "pool check of $m: $("$MEMFEDCTL" pool check "$T/$m/pool.mfp")"
done
ok "b and c back and caught up, the heap copies they held deleted; region rm deletes every copy; all pools check clean"

echo "$PASSED passed, 0 failed"
