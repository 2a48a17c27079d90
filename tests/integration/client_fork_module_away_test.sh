#!/usr/bin/env bash
# A program under `memfedctl run` on a pager node forks while the module
# node holding its heap is away (its daemon killed, started again 11 s
# later). The child's copy of its private memory must wait for the module,
# as the hard mode waits for memfedd, not end the child ("unavailable:
# cannot connect to memfed module": exit 70, seen in the soak), and parent
# and child must both see the heap they had at the fork.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/client_lib.sh"

trust_all module pager
start_daemon module --roles module --listen 127.0.0.1:0 --pool-size 2G --module-id 02:00:00:00:00:01
EP=$(listen_of module)
start_daemon pager --roles pager --listen 127.0.0.1:0 --peer "$EP"

cat >"$T/fork.py" <<'PY'
import hashlib, os, sys, time
data = [bytes([i % 251]) * 4096 for i in range(4096)]  # 16 MiB, all resident: the parent must not fault while the module is away
want = hashlib.sha256(b"".join(data)).hexdigest()
print("ready", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
pid = os.fork()
got = hashlib.sha256(b"".join(data)).hexdigest()
if pid == 0:
    os._exit(0 if got == want else 3)
_, status = os.waitpid(pid, 0)
print("parent", "same" if got == want else "differs", "child", os.waitstatus_to_exitcode(status), flush=True)
PY
run_on pager --heap-budget 96M --heap-size 256M -- $PY "$T/fork.py" "$T/go" >"$T/out" 2>"$T/err" &
PROG=$!
for _ in $(seq 1 400); do
	grep -q ready "$T/out" && break
	kill -0 $PROG 2>/dev/null || fail "the program ended before forking: $(cat "$T/err")"
	sleep 0.05
done
grep -q ready "$T/out" || fail "the program did not get ready in 20 s: $(cat "$T/err")"
# Let the waiting loop's few pages settle in memory: a fault of the parent
# while the module is away would wait (rightly) and fork only after it.
sleep 3

stop_daemon module KILL
touch "$T/go"
sleep 11 # past libmemfed's 10 s "waits for memfedd" log interval
kill -0 $PROG 2>/dev/null || fail "the program ended while the module was away: $(cat "$T/out" "$T/err")"
start_daemon module --roles module --listen "$EP" --pool-size 2G --module-id 02:00:00:00:00:01
rc=0
wait $PROG || rc=$?
[ $rc -eq 0 ] || fail "the program exited $rc: $(cat "$T/out" "$T/err")"
[ "$(tail -n 1 "$T/out")" = "parent same child 0" ] ||
	fail "after the module came back: '$(tail -n 1 "$T/out")' $(cat "$T/err")"
grep -q "forked child .* waits for memfedd .* to copy its memory" "$T/err" ||
	fail "the fork did not wait for the module (the test proves nothing): $(cat "$T/err")"
ok "a fork while the module is away waits for it; parent and child see the heap of the fork"
echo "$PASSED passed, 0 failed"
