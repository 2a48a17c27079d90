#!/usr/bin/env bash
# Pager restart under pressure: real programs run under tight heap budgets
# while memfedd (module + pager) is SIGKILLed at random instants and started
# again on the same pool and socket. Every program must finish with the
# output of a native run, and none may hang.
#
# First the probe's scenario (issue 14), scaled to seconds: GNU sort under
# eviction, memfedd killed in the middle, started again 3 s later
# (MEMFED_RESTART_PROBE=full: at the probe's size, 3 M numbers, a 64 MiB
# budget of a 768 MiB heap, sort -S 256M, killed 10 s in). Then each
# program (sort, the python heap hash, stress-ng's self-verifying vm
# stressor, which forks its workers) with up to MEMFED_RESTART_KILLS kills
# per run (default 2). MEMFED_RESTART_TOTAL=N (the soak, scripts/soak.sh)
# keeps cycling through the programs until N kills have landed in a row.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/client_lib.sh"
source "$(dirname "$0")/restart_lib.sh"

KILLS=${MEMFED_RESTART_KILLS:-2}
TOTAL=${MEMFED_RESTART_TOTAL:-0}
DAEMON_FLAGS=(--pool-size 8G --listen 127.0.0.1:0)
# Each program is sized to run about a second under memfedd here, so that
# the kills (0 to 0.9 s apart, restart_lib.sh) land while it runs: sort's
# descending merge passes are prefetched now, and a populate of more than
# the budget is skipped (stress-ng's), which made the older sizes finish
# in 0.2 and 0.07 s.
SORT_LINES=${MEMFED_RESTART_SORT_LINES:-600000}
HASH_N=${MEMFED_RESTART_HASH_N:-200000}
STRESS_OPS=3000

numbers() {
	$PY -c "
import random
r = random.Random(14)
v = list(range(1, $1 + 1))
r.shuffle(v)
print('\n'.join(map(str, v)))"
}
numbers "$SORT_LINES" >"$T/numbers"
sort_want=$(sort -n -S 32M "$T/numbers" | md5sum)
hash_want=$($PY "$HASH_PY" "$HASH_N")

# run_program KIND: starts program KIND under memfedctl run in the
# background (PROG = its pid), output in $T/out, stderr in $T/err.
run_program() {
	case $1 in
	sort)
		run_on a --heap-budget 8M --heap-size 256M -- \
			sort -n -S 32M "$T/numbers" >"$T/out" 2>"$T/err" &
		;;
	hash)
		run_on a --heap-budget 8M --heap-size 512M -- \
			$PY "$HASH_PY" "$HASH_N" >"$T/out" 2>"$T/err" &
		;;
	stress)
		run_on a --heap-budget 8M --heap-size 256M -- \
			stress-ng --vm 1 --vm-bytes 24M --vm-method rand-set --verify \
			--vm-ops $STRESS_OPS --timeout 300s --metrics-brief >"$T/out" 2>&1 &
		;;
	esac
	PROG=$!
}

# check_program KIND RC WHAT: the program's exit code and output against
# the native run's.
check_program() {
	local kind=$1 rc=$2 what=$3
	[ "$rc" -eq 0 ] || fail "$what: exited $rc: $(tail -n 5 "$T/err" "$T/out" 2>/dev/null)"
	case $kind in
	sort)
		[ "$(md5sum <"$T/out")" = "$sort_want" ] ||
			fail "$what: sorted output differs from the native run's ($(wc -l <"$T/out") lines)"
		;;
	hash)
		[ "$(cat "$T/out")" = "$hash_want" ] ||
			fail "$what: hash '$(cat "$T/out")', native '$hash_want'"
		;;
	stress)
		grep -qE "\] successful run completed" "$T/out" ||
			fail "$what: stress-ng did not report success: $(tail -n 5 "$T/out")"
		# stress-ng's own lines (libmemfed's log lines share the stream).
		! grep '^stress-ng:' "$T/out" | grep -qiE "fail|bit errors|detected" ||
			fail "$what: stress-ng's verification failed: $(grep -iE 'fail|error|detected' "$T/out")"
		local ops
		ops=$(awk '/metrc:.* vm /{print $5}' "$T/out")
		[ "${ops:-0}" -ge $STRESS_OPS ] ||
			fail "$what: only ${ops:-0} of $STRESS_OPS verified ops: $(cat "$T/out")"
		;;
	esac
}

start_daemon a "${DAEMON_FLAGS[@]}"

# The probe's scenario: killed mid-run, back 3 s later.
if [ "${MEMFED_RESTART_PROBE:-small}" = full ]; then
	numbers 3000000 >"$T/probe"
	probe_want=$(sort -n -S 256M "$T/probe" | md5sum)
	run_on a --heap-budget 64M --heap-size 768M -- \
		sort -n -S 256M "$T/probe" >"$T/out" 2>"$T/err" &
	PROG=$!
	sleep 10
else
	probe_want=$sort_want
	run_program sort
	for _ in $(seq 1 100); do
		[ "$(ctl a -j stats 2>/dev/null | $PY -c 'import json,sys; print(sum(p["evictions"] for p in json.load(sys.stdin)["pager"]["processes"]))' 2>/dev/null || echo 0)" -gt 500 ] && break
		sleep 0.1
	done
fi
kill -0 $PROG 2>/dev/null || fail "sort finished before memfedd could be killed; the test proves nothing"
stop_daemon a KILL
sleep 3
start_daemon a "${DAEMON_FLAGS[@]}"
rc=0
await_program $PROG a "sort, memfedd killed once and back 3 s later" || rc=$?
[ $rc -eq 0 ] || fail "sort, memfedd killed once: exited $rc: $(tail -n 5 "$T/err")"
[ "$(md5sum <"$T/out")" = "$probe_want" ] ||
	fail "sort, memfedd killed once: output differs from the native run's ($(wc -l <"$T/out") lines)"
grep -q "reattached" "$T/err" || fail "libmemfed did not report reattaching: $(cat "$T/err")"
ok "sort killed under eviction and restarted 3 s later prints the native output"

landed=0
round=0
while :; do
	for kind in sort hash stress; do
		round=$((round + 1))
		run_program $kind
		kill_while_running $PROG a "$KILLS" "${DAEMON_FLAGS[@]}"
		rc=0
		await_program $PROG a "$kind (round $round, $KILLED kills)" || rc=$?
		check_program $kind $rc "$kind (round $round, $KILLED kills)"
		landed=$((landed + KILLED))
		ok "$kind with memfedd killed $KILLED times matches the native run ($landed kills so far)"
	done
	# A program may finish before a kill lands (the instants are random):
	# go round again until enough kills have landed, within a bound.
	[ "$landed" -ge "$TOTAL" ] && [ "$landed" -ge 2 ] && break
	[ "$round" -ge 30 ] && break
done
[ "$landed" -ge 2 ] || fail "only $landed kills landed while programs ran; the test proves nothing"
ok "$landed kills of memfedd under running programs: none hung, none wrong"
