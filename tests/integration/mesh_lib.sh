# Helpers for the mesh tests: nodes are network namespaces joined by veth
# links, each running its own memfedd (and so its own babeld). Source it
# after lib.sh. Everything is torn down at exit: daemons, then namespaces.
#
#   mesh_node n1                 a namespace for node n1 (lo up)
#   mesh_link n1 n2              a veth link between them (n1-n2 / n2-n1)
#   mesh_daemon n1 ARGS...       memfedd in n1's namespace, in the mesh on
#                                every link n1 has, state and socket in $T/n1
#                                (mesh_daemon_start, then mesh_daemon_ready)
#   wait_for DESC SECONDS CMD... polls CMD until it succeeds or time is up
#   route_if NODE MODULE         the interface of NODE's route to MODULE as
#                                `memfedctl route ls` shows it ("none")
#   kernel_if NODE ADDR          the interface of NODE's kernel route to ADDR
#   kernel_if_moved NODE ADDR IF that route is on an interface other than IF
#   mesh_line_of_three, mesh_ring_of_four
#                                the topologies most tests start from (below)
#   mesh_reader NODE REGION      an unmodified program (sha256sum) reading
#                                REGION's file on NODE, again and again, one
#                                hash a line in $T/hashes, until $T/stop
#   hashes_all WANT              every hash in $T/hashes is WANT
#   mesh_kill_node NODE          the node dies: its processes killed, its
#                                namespace (and so its links) gone

[ "$(id -u)" -eq 0 ] || { echo "SKIP: the mesh tests need root (network namespaces)"; exit 77; }
command -v babeld >/dev/null || [ -x /usr/sbin/babeld ] ||
	fail "babeld is not installed (make deps installs it)"

MESH_NS_PREFIX="mf$$"
declare -A MESH_LINKS=()
MESH_NODES=()

mesh_cleanup() {
	local rc=$?
	for name in "${!DAEMON_PID[@]}"; do
		kill -TERM "${DAEMON_PID[$name]}" 2>/dev/null || true
	done
	sleep 0.3
	for name in "${!DAEMON_PID[@]}"; do
		kill -9 "${DAEMON_PID[$name]}" 2>/dev/null || true
	done
	for n in "${MESH_NODES[@]}"; do
		# babeld is a child of memfedd; if memfedd was SIGKILLed it lingers.
		ip netns pids "$MESH_NS_PREFIX-$n" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
		ip netns del "$MESH_NS_PREFIX-$n" 2>/dev/null || true
	done
	set +e
	(exit $rc)
	cleanup
}
trap mesh_cleanup EXIT

ns() { echo "$MESH_NS_PREFIX-$1"; }
in_ns() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }

mesh_node() {
	ip netns add "$(ns "$1")"
	MESH_NODES+=("$1")
	in_ns "$1" ip link set lo up
}

mesh_link() {
	local a=$1 b=$2
	ip link add "$a-$b" netns "$(ns "$a")" type veth peer name "$b-$a" netns "$(ns "$b")"
	in_ns "$a" ip link set "$a-$b" up
	in_ns "$b" ip link set "$b-$a" up
	MESH_LINKS[$a]="${MESH_LINKS[$a]:-}${MESH_LINKS[$a]:+,}$a-$b"
	MESH_LINKS[$b]="${MESH_LINKS[$b]:-}${MESH_LINKS[$b]:+,}$b-$a"
}

mesh_daemon() {
	mesh_daemon_start "$@"
	mesh_daemon_ready "$1"
}

# mesh_daemon_start NAME ARGS...: starts it without waiting, so that many
# nodes can start at once; mesh_daemon_ready NAME then waits for it.
mesh_daemon_start() {
	local name=$1; shift
	mkdir -p "$T/$name"
	[ -f "$T/$name/memfedd.json" ] || echo '{}' >"$T/$name/memfedd.json"
	# shellcheck disable=SC2046 # trust_flags prints whole words
	ip netns exec "$(ns "$name")" "$MEMFEDD" --config "$T/$name/memfedd.json" \
		--state-dir "$T/$name" --socket "$T/$name/sock" $(trust_flags "$name") \
		--kmod off --mesh "${MESH_LINKS[$name]}" --mesh-hello-ms 100 "$@" \
		>>"$T/$name.log" 2>&1 &
	DAEMON_PID[$name]=$!
}

mesh_daemon_ready() {
	local name=$1 deadline=$((SECONDS + 30))
	while [ $SECONDS -lt $deadline ]; do
		"$MEMFEDCTL" --socket "$T/$name/sock" status >/dev/null 2>&1 && return 0
		kill -0 "${DAEMON_PID[$name]}" 2>/dev/null ||
			fail "memfedd '$name' exited: $(tail -n 3 "$T/$name.log")"
		sleep 0.05
	done
	fail "memfedd '$name' did not answer on $T/$name/sock within 30 s"
}

wait_for() {
	local desc=$1 secs=$2; shift 2
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		[ $SECONDS -lt $deadline ] || fail "$desc: not within ${secs} s"
		sleep 0.1
	done
}

# mesh_line_of_three [PAGER FLAGS...]: the line most mesh tests start from,
#     n1 (module $M1) --- n2 (relay) --- n3 (pager, with these flags)
# once n3 has found the module through n2. Call trust_all with n1 n2 n3 first.
M1=02:00:00:00:00:01
A1=fd6d:6564::ff:fe00:1 # $M1's mesh address, as the kernel routes it
mesh_line_of_three() {
	mesh_node n1; mesh_node n2; mesh_node n3
	mesh_link n1 n2; mesh_link n2 n3
	mesh_daemon n1 --roles module --module-id $M1 --pool-size 64M
	mesh_daemon n2 --roles relay
	mesh_daemon n3 --roles pager "$@"
	wait_for "n3 discovers $M1 through n2" 15 module_is n3 $M1 up
}

# mesh_ring_of_four [PAGER FLAGS...]: the ring the relay-death tests start
# from, the pager two hops from the module either way round,
#        n2 (relay)
#       /          \
#     n1 (module $M1)   n3 (pager, with these flags)
#       \          /
#        n4 (relay)
# once n3 has found the module. Call trust_all with n1 n2 n3 n4 first.
mesh_ring_of_four() {
	local n
	for n in n1 n2 n3 n4; do mesh_node $n; done
	mesh_link n1 n2; mesh_link n2 n3; mesh_link n3 n4; mesh_link n4 n1
	mesh_daemon n1 --roles module --module-id $M1 --pool-size 64M
	mesh_daemon n2 --roles relay
	mesh_daemon n4 --roles relay
	mesh_daemon n3 --roles pager "$@"
	wait_for "n3 discovers $M1" 15 module_is n3 $M1 up
}

# ring_relay: the relay (n2 or n4) that n3's route to $M1 crosses in the ring.
ring_relay() {
	local r
	r=$(route_if n3 $M1)
	case "$r" in
	n3-n2) echo n2 ;;
	n3-n4) echo n4 ;;
	*) fail "no route from n3 to $M1 in the ring: $r" ;;
	esac
}

# module_state NODE MODULE: "up", "down" or "absent" in NODE's module table.
module_state() {
	ctl "$1" -j module ls | python3 -c '
import json, sys
mods = [m for m in json.load(sys.stdin) if m["module"] == sys.argv[1]]
print("absent" if not mods else ("up" if mods[0]["reachable"] else "down"))' "$2"
}
module_is() { [ "$(module_state "$1" "$2")" = "$3" ]; }

route_if() {
	ctl "$1" -j route ls | python3 -c '
import json, sys
r = [x for x in json.load(sys.stdin)["routes"] if x["dest"] == sys.argv[1]]
print(r[0]["interface"] if r else "none")' "$2"
}

kernel_if() { in_ns "$1" ip -6 route show "$2/128" | sed -n 's/.* dev \([^ ]*\).*/\1/p'; }
# kernel_if_moved NODE ADDR FROM: NODE's kernel route to ADDR is on an
# interface, and not on FROM.
kernel_if_moved() { local r; r=$(kernel_if "$1" "$2"); [ -n "$r" ] && [ "$r" != "$3" ]; }

mesh_reader() {
	local node=$1 region=$2 out
	while [ ! -e "$T/stop" ]; do
		if out=$("$MEMFEDCTL" --socket "$T/$node/sock" run --map "$region=$T/$region.file" -- \
			sha256sum "$T/$region.file" 2>"$T/reader.err"); then
			echo "${out%% *}" >>"$T/hashes"
		else
			echo "failed: $(tail -n 2 "$T/reader.err")" >>"$T/hashes"
			touch "$T/stop"
		fi
	done
}
# passes_since N BEFORE: N more passes than BEFORE are in $T/hashes.
passes() { if [ -e "$T/hashes" ]; then wc -l <"$T/hashes"; else echo 0; fi; }
passes_since() { [ "$(passes)" -ge $(($2 + $1)) ]; }

hashes_all() {
	local bad total
	bad=$(grep -vc "^$1$" "$T/hashes" || true)
	total=$(wc -l <"$T/hashes")
	[ "$bad" -eq 0 ] || fail "$bad of $total passes read wrong bytes: $(sort "$T/hashes" | uniq -c)"
}

mesh_kill_node() {
	ip netns pids "$(ns "$1")" | xargs -r kill -9
	unset "DAEMON_PID[$1]"
	ip netns del "$(ns "$1")"
}
