#!/usr/bin/env bash
# The duration-bound phase of `make soak` (scripts/soak.sh; not a ctest: it
# runs for MEMFED_SOAK_SECONDS, default 3600). Two nodes on loopback: a
# module-only memfedd holding the pool ("module") and a pager-only memfedd
# using it as its peer ("pager"). For the whole duration:
#   - MEMFED_SOAK_WORKERS (default 2) workers loop real programs under tight
#     heap budgets on the pager node: GNU sort, the python heap hash and
#     stress-ng's self-verifying vm stressor; each output is compared with
#     a native run's;
#   - one worker keeps idle regions with data on the module (regions no
#     program maps): writes them, reads them back, deletes them with
#     `region rm --force` at random and creates them again;
#   - the main shell SIGKILLs the module daemon or the pager daemon at
#     random instants (every 5..MEMFED_SOAK_KILL_GAP s, default 40) and
#     starts it again with the same flags after up to 1 s.
# A kill never lands while a program is starting (a program that cannot
# reach memfedd as it starts is refused, which is not what is tested): the
# workers hold a shared lock from launch until the shim has attached, the
# killer takes it exclusively.
# A program whose process tree uses no CPU time for MEMFED_STALL_S (60) s is
# a hang: its kernel stacks are dumped and it counts as one.
# At the end: programs run, kills survived per daemon kind, wrong outputs
# (must be 0), hangs (must be 0) and each daemon's RSS at the start and the
# end; the anonymous RSS at the end (and at its peak) must stay within
# MEMFED_SOAK_RSS_BOUND_MB (64) of the start. Exits non-zero on any failure.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/client_lib.sh"
source "$(dirname "$0")/restart_lib.sh"

SECONDS_TOTAL=${MEMFED_SOAK_SECONDS:-3600}
WORKERS=${MEMFED_SOAK_WORKERS:-2}
KILL_GAP=${MEMFED_SOAK_KILL_GAP:-40}
RSS_BOUND_MB=${MEMFED_SOAK_RSS_BOUND_MB:-64}
IDLE_REGIONS=${MEMFED_SOAK_IDLE_REGIONS:-8}
SORT_LINES=${MEMFED_SOAK_SORT_LINES:-200000}
HASH_N=${MEMFED_SOAK_HASH_N:-100000}
MODULE_ID=02:00:00:00:00:01

# --- the two nodes ---------------------------------------------------------
trust_all module pager
start_daemon module --roles module --listen 127.0.0.1:0 --pool-size 16G --module-id $MODULE_ID
MODULE_EP=$(listen_of module)
MODULE_FLAGS=(--roles module --listen "$MODULE_EP" --pool-size 16G --module-id $MODULE_ID)
PAGER_FLAGS=(--roles pager --listen 127.0.0.1:0 --peer "$MODULE_EP")
start_daemon pager "${PAGER_FLAGS[@]}"

# module_up: the pager node sees the module as up (after a restart of
# either, the pager reconnects by itself).
module_up() { ctl pager module ls 2>/dev/null | grep -q "$MODULE_ID.*up"; }
wait_module_up() {
	for _ in $(seq 1 600); do
		module_up && return 0
		sleep 0.1
	done
	return 1
}
wait_module_up || fail "the pager node does not see the module: $(ctl pager module ls 2>&1)"

# --- native outputs ----------------------------------------------------------
$PY -c "
import random
r = random.Random(14)
v = list(range(1, $SORT_LINES + 1))
r.shuffle(v)
print('\n'.join(map(str, v)))" >"$T/numbers"
sort_want=$(sort -n -S 32M "$T/numbers" | md5sum)
hash_want=$($PY "$HASH_PY" "$HASH_N")

R=$T/results # one line per event: "KIND OUTCOME detail"
mkdir -p "$R"
STOP=$T/stop
LOCK=$T/start.lock
touch "$LOCK"

# rss NAME: "VmRSS RssAnon" (kB) of daemon NAME's current process.
rss() {
	awk '/^VmRSS:/ {v=$2} /^RssAnon:/ {a=$2} END {print v+0, a+0}' \
		"/proc/${DAEMON_PID[$1]}/status" 2>/dev/null || echo "0 0"
}

# soak_await PID LOG: waits for program PID; a hang (no CPU time for STALL_S
# s, or still running after PROGRAM_MAX_S s: libmemfed's reconnecting thread
# uses a little CPU at every daemon restart, so a program frozen in
# handle_userfault under kills every few seconds never stalls for STALL_S;
# the first hour-long soak ran into exactly that) dumps the stacks into LOG,
# kills the tree and returns 124.
PROGRAM_MAX_S=${MEMFED_SOAK_PROGRAM_MAX_S:-600}
soak_await() {
	local pid=$1 log=$2 last="" now still=0 began=$SECONDS
	while kill -0 "$pid" 2>/dev/null; do
		now=$(tree_cpu "$pid")
		if [ $((SECONDS - began)) -ge "$PROGRAM_MAX_S" ]; then
			echo "--- still running after $PROGRAM_MAX_S s" >>"$log"
			dump_stuck "$pid" pager 2>>"$log"
			kill -9 $(tree_pids "$pid") 2>/dev/null || true
			wait "$pid" 2>/dev/null || true
			return 124
		fi
		if [ "$now" = "$last" ]; then
			still=$((still + 1))
			if [ $still -ge "$STALL_S" ]; then
				dump_stuck "$pid" pager 2>>"$log"
				kill -9 $(tree_pids "$pid") 2>/dev/null || true
				wait "$pid" 2>/dev/null || true
				return 124
			fi
		else
			still=0
			last=$now
		fi
		sleep 1
	done
	local rc=0
	wait "$pid" || rc=$?
	return $rc
}

# program_ok KIND DIR RC: true if the program's output matches the native
# run's; says why not otherwise.
program_ok() {
	local kind=$1 d=$2 rc=$3
	[ "$rc" -eq 0 ] || { echo "exited $rc: $(tail -n 3 "$d/err" "$d/out" 2>/dev/null | tr '\n' ' ')"; return 1; }
	case $kind in
	sort)
		[ "$(md5sum <"$d/out")" = "$sort_want" ] ||
			{ echo "sorted output differs ($(wc -l <"$d/out") lines)"; return 1; }
		;;
	hash)
		[ "$(cat "$d/out")" = "$hash_want" ] || { echo "hash '$(cat "$d/out")'"; return 1; }
		;;
	stress)
		grep -qE "\] successful run completed" "$d/out" ||
			{ echo "stress-ng did not report success: $(tail -n 3 "$d/out" | tr '\n' ' ')"; return 1; }
		! grep '^stress-ng:' "$d/out" | grep -qiE "fail|bit errors|detected" ||
			{ echo "stress-ng verification failed: $(grep -iE 'fail|error|detected' "$d/out" | tr '\n' ' ')"; return 1; }
		;;
	esac
}

# worker N: loops the programs until $STOP exists.
worker() {
	local n=$1 d=$T/w$1 kinds=(sort hash stress) i=$1 kind pid rc why fd
	mkdir -p "$d"
	while [ ! -e "$STOP" ]; do
		kind=${kinds[$((i % 3))]}
		i=$((i + 1))
		exec {fd}>"$LOCK"
		flock -s $fd
		case $kind in
		sort)
			run_on pager --heap-budget 8M --heap-size 256M -- \
				sort -n -S 32M "$T/numbers" >"$d/out" 2>"$d/err" &
			;;
		hash)
			run_on pager --heap-budget 8M --heap-size 512M -- \
				$PY "$HASH_PY" "$HASH_N" >"$d/out" 2>"$d/err" &
			;;
		stress)
			run_on pager --heap-budget 8M --heap-size 256M -- \
				stress-ng --vm 1 --vm-bytes 24M --vm-method rand-set --verify \
				--vm-ops 6 --timeout 600s --metrics-brief >"$d/out" 2>&1 &
			;;
		esac
		pid=$!
		for _ in $(seq 1 400); do
			attached $pid && break
			kill -0 $pid 2>/dev/null || break
			sleep 0.05
		done
		touch "$d/running"
		flock -u $fd
		exec {fd}>&-
		rc=0
		soak_await $pid "$d/hangs.log" || rc=$?
		rm -f "$d/running"
		if [ $rc -eq 124 ]; then
			echo "program hang $kind worker $n" >>"$R/events"
			cp "$d/err" "$d/hang-$i.err" 2>/dev/null || true
		elif why=$(program_ok $kind "$d" $rc); then
			echo "program ok $kind" >>"$R/events"
		else
			echo "program wrong $kind worker $n: $why" >>"$R/events"
			cp "$d/out" "$d/wrong-$i.out" 2>/dev/null || true
			cp "$d/err" "$d/wrong-$i.err" 2>/dev/null || true
		fi
	done
}

# retry CMD...: runs CMD until it succeeds (a daemon may be down for a
# moment), at most 120 times, 0.5 s apart.
retry() {
	for _ in $(seq 1 120); do
		"$@" 2>/dev/null && return 0
		sleep 0.5
	done
	return 1
}

# ictl ARGS...: memfedctl against the pager node for the idle regions; a
# call that does not return in 120 s counts as a hang.
ictl() {
	local rc=0
	timeout 120 "$MEMFEDCTL" --socket "$T/pager/sock" "$@" || rc=$?
	[ $rc -ne 124 ] || echo "idle hang memfedctl $*" >>"$R/events"
	return $rc
}

write_idle() { ictl region write "$1" <"$2"; }

# idle_regions: regions with data no program uses; written, read back,
# deleted with --force at random and created again.
idle_regions() {
	local k name f got
	declare -A known=()
	while [ ! -e "$STOP" ]; do
		k=$((RANDOM % IDLE_REGIONS))
		name=idle-$k
		f=$T/idle-$k.bin
		if [ -n "${known[$k]:-}" ]; then
			# Read it back: what was written must be there, across any kill.
			if ictl region read "$name" >"$T/idle-read.bin" 2>"$T/idle-read.err"; then
				if cmp -s "$f" "$T/idle-read.bin"; then
					echo "idle ok read $name" >>"$R/events"
				else
					echo "idle wrong $name: read back differs from what was written" >>"$R/events"
				fi
			fi
			if [ $((RANDOM % 2)) -eq 0 ]; then
				if retry ictl region rm --force "$name"; then
					echo "idle ok rm $name" >>"$R/events"
					unset "known[$k]"
				fi
			fi
		else
			# Gone or unknown: make it anew (a create interrupted by a
			# kill may have left it; delete that first).
			ictl region rm --force "$name" >/dev/null 2>&1 || true
			head -c $(((RANDOM % 64 + 1) * 16384)) /dev/urandom >"$f"
			if retry ictl region create "$name" "$(stat -c %s "$f")" >/dev/null &&
				retry write_idle "$name" "$f"; then
				known[$k]=1
				echo "idle ok create $name" >>"$R/events"
			fi
		fi
		sleep "0.$((RANDOM % 10))"
	done
}

# --- run ---------------------------------------------------------------------
BG=()
stop_all() {
	touch "$STOP"
	local p
	for p in "${BG[@]}"; do
		kill -9 $(tree_pids "$p" | grep -v "^$p\$") 2>/dev/null || true
		kill -9 "$p" 2>/dev/null || true
	done
}
trap 'rc=$?; stop_all; (exit $rc); cleanup' EXIT

for n in $(seq 1 "$WORKERS"); do
	worker "$n" &
	BG+=($!)
done
idle_regions &
BG+=($!)

declare -A KILLS=([module]=0 [pager]=0)
declare -A KILLS_BUSY=([module]=0 [pager]=0)
declare -A RSS_START=() RSS_PEAK=([module]=0 [pager]=0) RSS_END=()
echo "time module_vmrss module_anon pager_vmrss pager_anon" >"$R/rss"

# sample: records both daemons' RSS; the first sample after the programs
# started is the start, every sample keeps the peak (anonymous RSS).
sample() {
	local name v a line="$(date +%s)"
	for name in module pager; do
		read -r v a < <(rss $name)
		line="$line $v $a"
		[ -n "${RSS_START[$name]:-}" ] || RSS_START[$name]="$v $a"
		RSS_END[$name]="$v $a"
		[ "$a" -gt "${RSS_PEAK[$name]}" ] && RSS_PEAK[$name]=$a
	done
	echo "$line" >>"$R/rss"
}

# Let every worker start its first program before the first sample.
sleep 20
sample
START=$(date +%s)
END=$((START + SECONDS_TOTAL))
echo "# soak: $SECONDS_TOTAL s, $WORKERS program workers, $IDLE_REGIONS idle regions, a kill every 5..$KILL_GAP s"
next_kill=$((START + 5 + RANDOM % (KILL_GAP - 4)))
last_report=$START
while [ "$(date +%s)" -lt $END ]; do
	sleep 1
	now=$(date +%s)
	[ $(((now - START) % 5)) -eq 0 ] && sample
	for p in "${BG[@]}"; do
		kill -0 "$p" 2>/dev/null || fail "a soak worker (pid $p) ended early"
	done
	if [ $((now - last_report)) -ge 300 ]; then
		last_report=$now
		echo "# $((now - START)) s: $(grep -c '^program ok' "$R/events" || true) programs ok," \
			"kills module ${KILLS[module]} pager ${KILLS[pager]}," \
			"wrong $(grep -c ' wrong ' "$R/events" || true), hangs $(grep -c '^[a-z]* hang ' "$R/events" || true)"
	fi
	[ "$now" -ge $next_kill ] || continue
	victim=module
	[ $((RANDOM % 2)) -eq 0 ] && victim=pager
	exec {lockfd}>"$LOCK"
	flock -x -w 300 $lockfd || fail "no program attached within 300 s (start lock held)"
	ls "$T"/w*/running >/dev/null 2>&1 && KILLS_BUSY[$victim]=$((KILLS_BUSY[$victim] + 1))
	sample
	stop_daemon $victim KILL
	KILLS[$victim]=$((KILLS[$victim] + 1))
	sleep "0.$((RANDOM % 10))"
	if [ $victim = module ]; then
		start_daemon module "${MODULE_FLAGS[@]}"
	else
		start_daemon pager "${PAGER_FLAGS[@]}"
	fi
	wait_module_up || fail "the pager node does not see the module 60 s after a restart of the $victim daemon"
	flock -u $lockfd
	exec {lockfd}>&-
	next_kill=$(($(date +%s) + 5 + RANDOM % (KILL_GAP - 4)))
done
sample
ELAPSED=$(($(date +%s) - START))

# Let the programs in flight finish (each is still watched for hangs).
touch "$STOP"
for p in "${BG[@]}"; do
	wait "$p" || true
done
BG=()
sample

programs=$(grep -c '^program ' "$R/events" || true)
ok_programs=$(grep -c '^program ok' "$R/events" || true)
wrong=$(grep -c ' wrong ' "$R/events" || true)
hangs=$(grep -c '^[a-z]* hang ' "$R/events" || true)
idle_ops=$(grep -c '^idle ok' "$R/events" || true)
idle_rm=$(grep -c '^idle ok rm' "$R/events" || true)
echo "== soak results (two nodes, $ELAPSED s)"
for k in sort hash stress; do
	echo "programs $k: $(grep -c "^program ok $k" "$R/events" || true) ok of $(grep -c "^program [a-z]* $k" "$R/events" || true)"
done
echo "programs run: $programs ($ok_programs ok)"
echo "kills survived: module daemon ${KILLS[module]} (${KILLS_BUSY[module]} with programs running), pager daemon ${KILLS[pager]} (${KILLS_BUSY[pager]} with programs running)"
echo "idle regions: $idle_ops operations ok, $idle_rm forced deletes"
echo "wrong outputs: $wrong"
echo "hangs: $hangs"
failed=0
for name in module pager; do
	read -r sv sa <<<"${RSS_START[$name]}"
	read -r ev ea <<<"${RSS_END[$name]}"
	echo "rss $name: start ${sv} kB (anon ${sa} kB), end ${ev} kB (anon ${ea} kB), peak anon ${RSS_PEAK[$name]} kB;" \
		"bound: anon end and peak <= start + ${RSS_BOUND_MB} MiB"
	if [ "$ea" -gt $((sa + RSS_BOUND_MB * 1024)) ] || [ "${RSS_PEAK[$name]}" -gt $((sa + RSS_BOUND_MB * 1024)) ]; then
		echo "FAIL: the $name daemon's anonymous RSS grew beyond the bound" >&2
		failed=1
	fi
done
if [ "$wrong" -gt 0 ] || [ "$hangs" -gt 0 ]; then
	grep -E ' wrong | hang ' "$R/events" | head -n 20 >&2
	for f in "$T"/w*/hangs.log; do
		[ -s "$f" ] && { echo "--- $f" >&2; head -n 200 "$f" >&2; }
	done
	failed=1
fi
[ "$programs" -gt 0 ] || { echo "FAIL: no program ran" >&2; failed=1; }
[ $((KILLS[module] + KILLS[pager])) -gt 0 ] || { echo "FAIL: no kill landed" >&2; failed=1; }
if [ -n "${MEMFED_SOAK_KEEP:-}" ]; then
	mkdir -p "$MEMFED_SOAK_KEEP"
	cp -r "$R" "$T"/*.log "$MEMFED_SOAK_KEEP"/ 2>/dev/null || true
	cp "$T"/w*/*.err "$T"/w*/*.out "$T"/w*/hangs.log "$MEMFED_SOAK_KEEP"/ 2>/dev/null || true
fi
[ $failed -eq 0 ] || fail "the soak failed (see above)"
ok "soak: $programs programs, $((KILLS[module] + KILLS[pager])) kills, 0 wrong, 0 hangs, RSS within bound"
