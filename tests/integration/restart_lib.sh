# Helpers for the tests that SIGKILL memfedd under running programs (source
# after lib.sh and client_lib.sh).
#
# A hang is told from slowness by progress, not by a clock: a program whose
# processes have used no CPU time for $STALL_S seconds while it still runs is
# stuck (threads blocked in handle_userfault for good use none). Then the
# test fails with the kernel stacks of every thread of every process in the
# program's tree, the pager's counters and the daemon's log.

STALL_S=${MEMFED_STALL_S:-60}

# tree_cpu PID: utime+stime (ticks) summed over the tree; the set of pids is
# part of the answer, so a new process counts as progress.
tree_cpu() {
	local root=$1 total=0 p f
	for p in $(tree_pids "$root"); do
		f=$(cat "/proc/$p/stat" 2>/dev/null) || continue
		f=${f##*) }
		set -- $f
		total=$((total + ${12} + ${13}))
	done
	echo "$total:$(tree_pids "$root" | tr '\n' ,)"
}

# dump_stuck PID DAEMON: what every thread of the program's tree waits in.
dump_stuck() {
	local root=$1 name=$2 p t
	echo "--- threads of the program (pid $root and descendants)" >&2
	for p in $(tree_pids "$root"); do
		for t in /proc/"$p"/task/*; do
			[ -d "$t" ] || continue
			echo "pid $p tid ${t##*/} $(cat "$t/comm" 2>/dev/null)" \
				"state $(awk '{print $3}' "$t/stat" 2>/dev/null)" \
				"wchan $(cat "$t/wchan" 2>/dev/null)" >&2
			sed 's/^/    /' "$t/stack" >&2 2>/dev/null || true
		done
	done
	echo "--- pager counters" >&2
	ctl "$name" -j stats >&2 2>/dev/null || echo "(memfedd '$name' does not answer)" >&2
}

# await_program PID DAEMON WHAT: waits for background job PID; fails with a
# dump if it makes no progress for STALL_S seconds. Returns its exit code.
await_program() {
	local pid=$1 name=$2 what=$3 last="" now still=0
	while kill -0 "$pid" 2>/dev/null; do
		now=$(tree_cpu "$pid")
		if [ "$now" = "$last" ]; then
			still=$((still + 1))
			if [ $still -ge "$STALL_S" ]; then
				dump_stuck "$pid" "$name"
				kill -9 $(tree_pids "$pid") 2>/dev/null || true
				fail "$what: hung (no CPU time used for ${STALL_S} s, memfedd up); stacks above"
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

# attached PID: true once a process in PID's tree runs libmemfed's link
# (the preload is mapped and its monitor and evictor threads run).
attached() {
	local p
	for p in $(tree_pids "$1"); do
		grep -q libmemfed-preload "/proc/$p/maps" 2>/dev/null &&
			[ "$(ls "/proc/$p/task" 2>/dev/null | wc -l)" -ge 3 ] && return 0
	done
	return 1
}

# kill_while_running PID DAEMON KILLS START_FLAGS...: SIGKILLs memfedd NAME
# at random instants (0 to 0.9 s apart) while PID runs, KILLS times at most, restarting it
# (after a random pause of up to 1 s) with the same flags each time. The
# first kill waits until the program has attached (a program that cannot
# reach memfedd as it starts fails to start, which is not what is tested).
# Sets KILLED to the number of kills that landed while PID was running.
kill_while_running() {
	local pid=$1 name=$2 kills=$3
	shift 3
	KILLED=0
	for _ in $(seq 1 200); do
		attached "$pid" && break
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.05
	done
	while [ $KILLED -lt "$kills" ]; do
		sleep "0.$((RANDOM % 10))"
		kill -0 "$pid" 2>/dev/null || break
		stop_daemon "$name" KILL
		KILLED=$((KILLED + 1))
		sleep "0.$((RANDOM % 10))"
		start_daemon "$name" "$@"
	done
}
