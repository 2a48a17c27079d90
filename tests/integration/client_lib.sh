# Helpers for the client tests (source after lib.sh).

# start_pager NAME [POOL_SIZE]: a daemon with module and pager roles and a
# sparse pool big enough for several heap regions.
start_pager() {
	start_daemon "$1" --pool-size "${2:-16G}" --listen 127.0.0.1:0
}

# run_on NAME ARGS...: memfedctl run against daemon NAME.
run_on() { local name=$1; shift; "$MEMFEDCTL" --socket "$T/$name/sock" run "$@"; }

# rss_watch COMM_REGEX OUT: samples VmRSS (kB) of every process whose comm
# matches until killed; writes the largest seen to OUT. Start it with &.
rss_watch() {
	local re=$1 out=$2 max=0 comm rss
	echo 0 >"$out"
	trap 'echo $max >"$out"; exit 0' TERM
	while :; do
		for s in /proc/[0-9]*/status; do
			comm=$(awk '/^Name:/{print $2; exit}' "$s" 2>/dev/null) || continue
			[[ "$comm" =~ $re ]] || continue
			rss=$(awk '/^VmRSS:/{print $2; exit}' "$s" 2>/dev/null)
			[ -n "$rss" ] && [ "$rss" -gt "$max" ] && max=$rss && echo $max >"$out"
		done
		sleep 0.1
	done
}
