# Helpers of the replication tests and bench (sourced after lib.sh and
# client_lib.sh): a replicated region's state as a node's `region show -j`
# gives it. REPL_NODE names the node asked (default: client).

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
