#!/usr/bin/env bash
# memfedd run the way its systemd unit runs it (MEMFED_UNIT: Type=notify,
# the unit's capability bounding set, no_new_privs), with a test listener on
# NOTIFY_SOCKET in place of systemd, since these machines have no systemd as
# PID 1:
#   - READY=1 comes only once `memfedctl status` answers;
#   - the daemon, holding only the unit's capabilities, serves a program's
#     page faults and writes its dirty pages back;
#   - SIGHUP (systemctl reload) sends RELOADING=1 then READY=1, applies a new
#     log_level, names keys that need a restart, and survives a broken file,
#     with one log line per reload;
#   - SIGTERM sends STOPPING=1 and memfedd exits 0.
source "$(dirname "$0")/lib.sh"
: "${MEMFED_UNIT:?set MEMFED_UNIT to packaging/systemd/memfedd.service.in}"

# The unit's capabilities in setpriv's form: CAP_SYS_PTRACE -> +sys_ptrace.
caps=$(sed -n 's/^CapabilityBoundingSet=//p' "$MEMFED_UNIT")
[ -n "$caps" ] || fail "no CapabilityBoundingSet= in $MEMFED_UNIT"
bset=-all
for c in $caps; do
	c=${c#CAP_}
	bset+=",+${c,,}"
done
grep -q '^NoNewPrivileges=yes$' "$MEMFED_UNIT" || fail "the unit lost NoNewPrivileges=yes"
sandbox=(setpriv --no-new-privs --inh-caps=-all --bounding-set="$bset" --)
if ! "${sandbox[@]}" true 2>/dev/null; then
	echo "NOTE: setpriv cannot drop capabilities here; memfedd runs with this shell's" >&2
	sandbox=()
fi

# The listener plays systemd's part: it logs each notification and, at
# READY=1, whether memfedctl status answers at that moment.
cat >"$T/listen.py" <<'PY'
import socket, subprocess, sys
path, log, ctl, sock = sys.argv[1:5]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
with open(log, "a", buffering=1) as out:
    out.write("LISTENING\n")
    while True:
        fields = s.recv(4096).decode().split("\n")
        for f in fields:
            if f and not f.startswith("MONOTONIC_USEC="):
                out.write(f + "\n")
        if "READY=1" in fields:
            r = subprocess.run([ctl, "--socket", sock, "status"], capture_output=True)
            out.write("status-at-ready=%s\n" % ("ok" if r.returncode == 0 else "failed"))
        if "STOPPING=1" in fields:
            break
PY
python3 "$T/listen.py" "$T/notify" "$T/notify.log" "$MEMFEDCTL" "$T/d/sock" &
DAEMON_PID[listener]=$!
wait_for() { # wait_for WHAT CMD...: polls CMD for up to 20 s
	local what=$1; shift
	for _ in $(seq 1 400); do "$@" && return 0; sleep 0.05; done
	fail "$what (notifications: $(tr '\n' ' ' <"$T/notify.log" 2>/dev/null))"
}
count() { grep -cx "$1" "$T/notify.log" || true; }
# count_is LINE N: the log holds LINE exactly N times (evaluated at each poll
# of wait_for, which a "$(count ...)" argument would not be).
count_is() { [ "$(count "$1")" -eq "$2" ]; }
wait_for "listener did not start" grep -qsx LISTENING "$T/notify.log"

conf=$T/memfedd.json
write_conf() {
	cat >"$conf" <<JSON
{"state_dir": "$T/d", "socket": "$T/d/sock", "listen": "127.0.0.1:0", "kmod": "off",
 "pool": {"size": "128M"}, "log_level": "$1", "pager": {"threads": $2}}
JSON
}
mkdir -p "$T/d"
write_conf info 1
NOTIFY_SOCKET=$T/notify "${sandbox[@]}" "$MEMFEDD" --config "$conf" >>"$T/d.log" 2>&1 &
DAEMON_PID[d]=$!
pid=${DAEMON_PID[d]}

started() { grep -qx 'READY=1' "$T/notify.log" || { kill -0 "$pid" 2>/dev/null || fail "memfedd exited: $(tail -n 3 "$T/d.log")"; false; }; }
wait_for "no READY=1 from memfedd" started
[ "$(sed -n 2p "$T/notify.log")" = READY=1 ] || fail "first notification is not READY=1: $(cat "$T/notify.log")"
wait_for "listener did not check status" grep -q '^status-at-ready=' "$T/notify.log"
grep -qx 'status-at-ready=ok' "$T/notify.log" || fail "memfedctl status failed when READY=1 arrived"
ok "READY=1 arrives once memfedctl status answers"

if [ ${#sandbox[@]} -gt 0 ]; then
	want=$("${sandbox[@]}" sed -n 's/^CapEff:\t*//p' /proc/self/status)
	got=$(sed -n 's/^CapEff:\t*//p' "/proc/$pid/status")
	[ "$got" = "$want" ] || fail "memfedd holds capabilities $got, the unit gives $want"
	grep -q '^NoNewPrivs:.*1' "/proc/$pid/status" || fail "memfedd runs without no_new_privs"
	ok "memfedd runs with the unit's capabilities only ($caps) and no_new_privs"
fi

# A program on remote memory with a budget small enough to force eviction:
# the pager probes userfaultfd, reads dirty pages back with
# process_vm_readv and evicts, all with the unit's capabilities.
# The heap's counters go with the heap when the program ends, so they are
# read while it runs.
"$MEMFEDCTL" --socket "$T/d/sock" run --heap-budget 1M --heap-size 64M -- sqlite3 :memory: \
	"CREATE TABLE t(x); WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c LIMIT 200000)
	 INSERT INTO t SELECT randomblob(100) FROM c; SELECT count(*) FROM t; PRAGMA integrity_check;" \
	>"$T/sqlite.out" &
RUN=$!
wb=0
while kill -0 $RUN 2>/dev/null && [ "$wb" -eq 0 ]; do
	wb=$("$MEMFEDCTL" --socket "$T/d/sock" -j stats |
		python3 -c 'import json, sys; print(sum(r["writebacks"] for r in json.load(sys.stdin)["pager"]["regions"]))')
	sleep 0.1
done
wait $RUN || fail "sqlite3 on remote memory exited $?"
out=$(cat "$T/sqlite.out")
[ "$out" = $'200000\nok' ] || fail "sqlite3 on remote memory printed '$out'"
[ "$wb" -gt 0 ] || fail "no pages written back under a 1M budget while sqlite3 ran"
ok "under the unit's capabilities the pager serves faults and writes back ($wb)"

# Reload: a new log level applies at once.
grep -q ' debug control:' "$T/d.log" && fail "debug lines before the reload"
write_conf debug 1
kill -HUP "$pid"
wait_for "no READY=1 after the first reload" count_is READY=1 2
[ "$(grep -x 'RELOADING=1\|READY=1\|STOPPING=1' "$T/notify.log" | tr '\n' ' ')" = "READY=1 RELOADING=1 READY=1 " ] ||
	fail "notifications around a reload: $(tr '\n' ' ' <"$T/notify.log")"
grep -q "reload from $conf: log_level info -> debug$" "$T/d.log" || fail "no reload line: $(tail -n 3 "$T/d.log")"
ctl d status >/dev/null
grep -q ' debug control:' "$T/d.log" || fail "log_level debug did not apply: no debug lines after the reload"
ok "SIGHUP: RELOADING=1, READY=1, log_level info -> debug applied"

# A key that cannot change at run time is named, and waits for a restart.
write_conf debug 2
kill -HUP "$pid"
wait_for "no READY=1 after the second reload" count_is READY=1 3
grep -q "reload from $conf: nothing to apply; changed but waiting for a restart: pager.threads$" "$T/d.log" ||
	fail "pager.threads not reported as needing a restart: $(grep reload "$T/d.log")"
ok "SIGHUP: a changed pager.threads is logged as waiting for a restart"

# A broken file: an error names it, the daemon keeps its config and serves.
echo '{"log_level": ' >"$conf"
kill -HUP "$pid"
wait_for "no READY=1 after a broken config" count_is READY=1 4
grep -q "error memfedd: reload: $conf: not valid JSON; kept the running config" "$T/d.log" ||
	fail "broken config not reported: $(grep reload "$T/d.log")"
ctl d status >/dev/null || fail "memfedd stopped answering after a broken reload"
[ "$(grep -c 'memfedd: reload' "$T/d.log")" -eq 3 ] || fail "not one log line per reload: $(grep reload "$T/d.log")"
ok "SIGHUP with a broken file: one error line, old config kept, still serving"

kill -TERM "$pid"
set +e
wait "$pid"
rc=$?
set -e
unset "DAEMON_PID[d]"
[ $rc -eq 0 ] || fail "memfedd exited $rc on SIGTERM"
wait_for "no STOPPING=1" grep -qx 'STOPPING=1' "$T/notify.log"
ok "SIGTERM: STOPPING=1 and exit 0"
echo "service_notify: $PASSED passed"
