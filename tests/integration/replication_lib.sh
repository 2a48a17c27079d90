# Helpers of the replication tests and bench (sourced after lib.sh and
# client_lib.sh): three modules to place copies on, and a replicated region's
# state as a node's `region show -j` gives it (REPL_NODE names the node
# asked; default: client).

# show_field NAME EXPR: a python expression over region NAME's JSON (r).
show_field() {
	ctl "${REPL_NODE:-client}" -j region show "$1" |
		$PY -c "import json,sys; r=json.load(sys.stdin); print($2)"
}
# wait_in_sync NAME N: until N copies of NAME are in sync (60 s at most).
wait_in_sync() {
	for _ in $(seq 1 600); do
		[ "$(show_field "$1" 'r["in_sync"]')" = "$2" ] && return 0
		sleep 0.1
	done
	fail "region '$1' has $(show_field "$1" 'r["in_sync"]') copies in sync, not $2: $(ctl "${REPL_NODE:-client}" region show "$1")"
}

# start_modules: modules a, b and c on loopback, each on its own 512M pool
# (module IDs 02:00:00:00:00:0a, 0b, 0c in ID[], endpoints in EP[]), and
# trust among them and a node called client.
declare -A EP ID=([a]=02:00:00:00:00:0a [b]=02:00:00:00:00:0b [c]=02:00:00:00:00:0c)
start_modules() {
	trust_all a b c client
	local m
	for m in a b c; do
		restart $m 127.0.0.1:0
		EP[$m]=$(listen_of $m)
	done
}
# restart NAME [ENDPOINT]: memfedd NAME (again), on its pool (a fresh one if
# its file is gone) and its endpoint.
restart() {
	start_daemon "$1" --roles module --listen "${2:-${EP[$1]}}" --pool-size 512M \
		--module-id "${ID[$1]}"
}
