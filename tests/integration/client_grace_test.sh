#!/usr/bin/env bash
# What a program's fate is when memfedd dies and does not come back
# (memfedctl run --hard / --soft GRACE): never a silent hang.
#   hard (the default): the program waits, libmemfed says so every 10 s, and
#     it finishes with the native result once memfedd is back;
#   soft: once memfedd has been away for the grace, the thread that touches
#     remote memory gets SIGBUS (exit 135), with a log line saying why.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/client_lib.sh"
source "$(dirname "$0")/restart_lib.sh"

ulimit -c 0 # the soft-mode run ends in SIGBUS
N=100000
want=$($PY "$HASH_PY" $N)

# kill_when_evicting: SIGKILLs memfedd a once the program is under eviction.
kill_when_evicting() {
	for _ in $(seq 1 200); do
		[ "$(ctl a -j stats 2>/dev/null | $PY -c 'import json,sys; print(sum(p["evictions"] for p in json.load(sys.stdin)["pager"]["processes"]))' 2>/dev/null || echo 0)" -gt 200 ] && break
		sleep 0.1
	done
	kill -0 $prog 2>/dev/null || fail "the program finished before memfedd could be killed"
	stop_daemon a KILL
}

start_pager a 8G
run_on a --heap-budget 4M --heap-size 512M --hard -- $PY "$HASH_PY" $N >"$T/out" 2>"$T/err" &
prog=$!
kill_when_evicting
for _ in $(seq 1 120); do
	grep -q "wait until it is back (hard mode)" "$T/err" && break
	kill -0 $prog 2>/dev/null || fail "with memfedd gone, a hard-mode program ended: $(cat "$T/err")"
	sleep 0.5
done
grep -q "wait until it is back (hard mode)" "$T/err" ||
	fail "no log line while waiting for memfedd in hard mode: $(cat "$T/err")"
kill -0 $prog 2>/dev/null || fail "with memfedd gone, a hard-mode program ended: $(cat "$T/err")"
ok "hard mode: with memfedd gone the program waits, and libmemfed says so"

start_pager a 8G
rc=0
await_program $prog a "hard mode, after memfedd came back" || rc=$?
[ $rc -eq 0 ] || fail "hard mode: the program exited $rc after memfedd came back: $(cat "$T/err")"
[ "$(cat "$T/out")" = "$want" ] || fail "hard mode: hash '$(cat "$T/out")', native '$want'"
ok "hard mode: once memfedd is back the program finishes with the native result"

run_on a --heap-budget 4M --heap-size 512M --soft 2s -- $PY "$HASH_PY" $N >"$T/out" 2>"$T/err" &
prog=$!
kill_when_evicting
rc=0
await_program $prog a "soft mode with memfedd gone" || rc=$?
[ $rc -eq 135 ] || fail "soft mode: exit $rc, expected 135 (SIGBUS): $(cat "$T/err")"
grep -q "past the soft grace of 2.0 s" "$T/err" ||
	fail "soft mode: no log line saying the grace ran out: $(cat "$T/err")"
grep -q "SIGBUS to thread" "$T/err" || fail "soft mode: no log line naming the SIGBUS: $(cat "$T/err")"
ok "soft mode: memfedd away past the grace ends the program with SIGBUS, and says why"
