#!/usr/bin/env bash
# A module that stops answering but keeps its connections open (SIGSTOP: a
# hung process, a path that drops everything) is cut off after the client's
# request timeout (memfedd --request-timeout), never waited on for good:
# - a replicated region's writes go on with the other copy, the stopped copy
#   is taken out as lost with the reason, stays lost while its idle
#   connections still look open, and catches up once the module answers;
# - a program whose heap lives on a stopped module waits for it while the
#   pager dials it again, and ends with the native output once it resumes.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/client_lib.sh"
. "$(dirname "$0")/replication_lib.sh"

trust_all a b client solo
for m in a b; do
	restart $m 127.0.0.1:0
	EP[$m]=$(listen_of $m)
done
start_daemon client --roles pager --listen 127.0.0.1:0 --replicas 2 --request-timeout 1000 \
	--peer "${EP[a]}" --peer "${EP[b]}"

ctl client region create data 4M >/dev/null
head -c 4M /dev/urandom >"$T/v1.bin"
ctl client region write data <"$T/v1.bin"
wait_in_sync data 2

# Module a stops: the write must not wait for it.
kill -STOP "${DAEMON_PID[a]}"
head -c 4M /dev/urandom >"$T/v2.bin"
timeout 60 "$MEMFEDCTL" --socket "$T/client/sock" region write data <"$T/v2.bin" ||
	fail "a write with module a stopped did not complete (exit $?)"
ctl client region read data | cmp - "$T/v2.bin" || fail "a write with module a stopped is not read back"
# Its copy is lost because module a did not answer (the control path's
# "no reply ... in time", or a channel's "no answer for N ms"), and stays
# lost: the copy's idle connections still look open, but only an answer
# brings a copy back.
copy_a='[c for c in r["copies"] if c["module"].endswith("0a")][0]'
for _ in 1 2 3; do
	[ "$(show_field data "$copy_a[\"state\"]")" = lost ] ||
		fail "module a's copy is not lost while a is stopped: $(ctl client region show data)"
	sleep 1
done
show_field data "$copy_a[\"why\"]" | grep -Eq "no reply from .* in time|no answer for" ||
	fail "the lost copy does not say module a did not answer: $(ctl client region show data)"
ok "module a stopped: the write completes on b, a's copy is lost because a did not answer, and stays lost"

kill -CONT "${DAEMON_PID[a]}"
wait_in_sync data 2
ctl client region read "data@${ID[a]}" | cmp - "$T/v2.bin" || fail "module a's copy did not catch up after it resumed"
ok "module a resumed: its copy caught up and equals what was written"

# One copy only: a program's heap on module b, which stops for 3 s under it.
start_daemon solo --roles pager --listen 127.0.0.1:0 --request-timeout 1000 --peer "${EP[b]}"
seq 1 400000 | shuf >"$T/in.txt"
sort -n "$T/in.txt" >"$T/want.txt"
run_on solo --heap-budget 4M --heap-size 128M -- sort -n -S 40M "$T/in.txt" >"$T/out.txt" &
RUN=$!
for _ in $(seq 1 200); do
	ctl solo region ls | grep -q '^heap' && break
	sleep 0.05
done
sleep 0.5
kill -0 $RUN 2>/dev/null || fail "sort ended before module b could be stopped under it"
kill -STOP "${DAEMON_PID[b]}"
sleep 3
kill -CONT "${DAEMON_PID[b]}"
wait $RUN || fail "sort exited $? with its module stopped for 3 s under it"
cmp "$T/want.txt" "$T/out.txt" || fail "sort with its module stopped under it: output differs from native"
grep -q "no answer for .* ms while" "$T/solo.log" ||
	fail "the pager did not give up on the stopped module's connection: $(grep -i 'lost' "$T/solo.log" | tail -n 3)"
ok "sort under a 4M budget, its module stopped for 3 s: the pager's connection is cut and dialled again, and the output equals native"

echo "$PASSED passed, 0 failed"
