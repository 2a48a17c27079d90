#!/usr/bin/env bash
# Daemon restarts under a page-by-page check: memfedd is SIGKILLed six times
# at random points of hard eviction (a 4 MiB budget) and started again while
# page_verify.c writes, reads, drops, remaps and sweeps 64 MiB of heap, and
# every page the program reads is the version it last wrote there, or zeroes
# where it dropped it. A kill can land between a write-back and the client's drop
# of the page, between a program's own MADV_DONTNEED and the zeroes reaching
# the module, or with faults in flight: a page fetched from the module's old
# bytes, or served as zeroes where it had data, is a mismatch here, named
# with the page and the version found, not a python crash much later.
#
# In a loop, with the binaries of a build tree:
#   B=build/release/bin; MEMFEDD=$B/memfedd MEMFEDCTL=$B/memfedctl \
#   MEMFED_PAGE_VERIFY=$B/memfed-test-page-verify \
#   bash tests/integration/client_restart_verify_test.sh
# (MEMFED_SEED repeats a run's choices, MEMFED_KEEP_LOGS=DIR keeps the
# daemons' logs.) `make soak` runs it longer: MEMFED_VERIFY_KILLS kills
# (default 6) in MEMFED_VERIFY_SECONDS of the program (default 30).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/client_lib.sh"
VERIFY=${MEMFED_PAGE_VERIFY:?set MEMFED_PAGE_VERIFY to memfed-test-page-verify}

# Long enough for six kills and restarts on a loaded machine (each takes
# about a second here); the program then runs on, checking, until SECS.
KILLS=${MEMFED_VERIFY_KILLS:-6}
SECS=${MEMFED_VERIFY_SECONDS:-30}
SEED=${MEMFED_SEED:-$RANDOM}
echo "# seed $SEED (MEMFED_SEED=$SEED repeats the program's choices, not the kills')"

start_pager a 8G
run_on a --heap-budget 4M --heap-size 1G -- "$VERIFY" 64 $SECS 4 "$SEED" 1 >"$T/out" 2>"$T/err" &
prog=$!
# Its SECS of work and a final read of every page take well under 40 s more.
deadline=$((SECONDS + SECS + 40))
# Kills from the first eviction on: one before the program has attached
# would test memfedctl run's start-up, not a reattach. A program that ended
# before is told below, with what it printed.
wait_evicting a 0 $prog || true
kills=0
while kill -0 $prog 2>/dev/null && [ $kills -lt "$KILLS" ]; do
	# After a random amount of the program's work (pages this daemon
	# evicted), not of time. 1: it ended; 2: it stopped evicting for 30 s
	# (a hang, told below).
	wait_evicting a $((500 + RANDOM % 5000)) $prog || break
	stop_daemon a KILL
	kills=$((kills + 1))
	sleep 0.2
	start_pager a 8G
	# The library says so on every reattach.
	for _ in $(seq 1 300); do
		[ "$(grep -c "reattached" "$T/err")" -ge $kills ] && break
		kill -0 $prog 2>/dev/null || break
		sleep 0.1
	done
	kill -0 $prog 2>/dev/null || break
	[ "$(grep -c "reattached" "$T/err")" -ge $kills ] ||
		fail "the library did not reattach within 30 s of restart $kills: $(cat "$T/err")"
done
# A program that hangs after a reattach is reported with where its threads
# wait and what the pager holds.
page_verify_end $prog $deadline a "after $kills restarts"
[ $kills -ge 2 ] || fail "the program finished before two kills; the test proves nothing"
ok "killed $kills times while evicting: $(tail -n 1 "$T/out") (seed $SEED)"
echo "$PASSED passed, 0 failed"
