#!/usr/bin/env bash
# A module that stops answering but keeps its connections open (SIGSTOP: a
# hung process, a path that drops everything) is cut off after the client's
# request timeout (memfedd --request-timeout), never waited on for good: a
# program whose heap lives on a stopped module waits for it while the pager
# dials it again, and ends with the native output once it resumes.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/client_lib.sh"

trust_all b solo
declare -A EP ID=([b]=02:00:00:00:00:0b)
for m in b; do
	start_daemon $m --roles module --listen 127.0.0.1:0 --pool-size 512M --module-id "${ID[$m]}"
	EP[$m]=$(listen_of $m)
done

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
