#!/usr/bin/env bash
# A program's own drop (MADV_DONTNEED of its heap) must read as zero after
# memfedd restarts, even when that memfedd died before the drop's zeroes
# reached the module. The program's madvise returns once the pager has read
# the drop's REMOVE event; the zeroes go to the module asynchronously. Here
# the module node is away (killed) from just before the drop until after the
# pager node was SIGKILLed and started again, so those zeroes are never
# written: only the client can still tell the new pager about the drop. A
# new pager that is not told fetches the module's old bytes (the evicted
# pattern) where the program reads zeroes natively: mimalloc and calloc rely
# on purged memory reading zero, and python crashed on such a page. The
# program is a small C one (drop_probe.c) that touches no other heap page
# while the module is away, where a fault would wait.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/client_lib.sh"
# drop_probe.c: fills 32 MiB of heap, drops it at go1, reads it at go2.
PROBE=${MEMFED_DROP_PROBE:?set MEMFED_DROP_PROBE to memfed-test-drop-probe}

trust_all module pager
start_daemon module --roles module --listen 127.0.0.1:0 --pool-size 2G --module-id 02:00:00:00:00:01
EP=$(listen_of module)
start_daemon pager --roles pager --listen 127.0.0.1:0 --peer "$EP"

run_on pager --heap-budget 16M --heap-size 256M -- "$PROBE" "$T/go1" "$T/go2" >"$T/out" 2>"$T/err" &
PROG=$!
for _ in $(seq 1 400); do
	grep -q ready "$T/out" && break
	kill -0 $PROG 2>/dev/null || fail "the program ended before its drop: $(cat "$T/err")"
	sleep 0.05
done
grep -q ready "$T/out" || fail "the program did not get ready in 20 s: $(cat "$T/err")"
wait_evicting pager 4000

stop_daemon module KILL
touch "$T/go1"
for _ in $(seq 1 200); do
	grep -q dropped "$T/out" && break
	sleep 0.05
done
grep -q "dropped 0" "$T/out" ||
	fail "the program did not drop its buffer while the module was away (out: $(cat "$T/out")): $(cat "$T/err")"
# The pager read the drop's event; its zeroes cannot reach the module.
stop_daemon pager KILL
start_daemon module --roles module --listen "$EP" --pool-size 2G --module-id 02:00:00:00:00:01
start_daemon pager --roles pager --listen 127.0.0.1:0 --peer "$EP"
for _ in $(seq 1 300); do
	grep -q "reattached" "$T/err" && break
	sleep 0.1
done
grep -q "reattached" "$T/err" || fail "the library did not reattach in 30 s: $(cat "$T/err")"
touch "$T/go2"
rc=0
wait $PROG || rc=$?
[ $rc -eq 0 ] || fail "the program exited $rc (128+N: signal N): $(cat "$T/out" "$T/err")"
grep -q "^nonzero 0 of" "$T/out" ||
	fail "the dropped buffer reads as the module's old bytes after the restart, not zeroes: $(tail -n 1 "$T/out")"
ok "a drop whose zeroes died with memfedd reads as zero after the restart"
echo "$PASSED passed, 0 failed"
