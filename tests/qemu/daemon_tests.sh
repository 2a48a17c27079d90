#!/bin/busybox sh
# Daemon tests of the QEMU tier, run by init.sh with memfed.ko loaded when the
# runner found memfedd and memfedctl: a memory module daemon and a node daemon
# (pager role) on loopback, a program that reaches its region only through an
# extended address, and a SIGKILLed node daemon whose successor reads the
# tables back from memfed.ko and keeps serving the program's faults.
# The runner expects these markers:
# expect: daemon-mirrors-tables
# expect: daemon-serves-mapped-region
# expect: unmodified-program-maps-region
# expect: memfedctl-reads-kmod
# expect: daemon-restart-keeps-tables
# expect: daemon-restart-serves-faults
D=/tmp/daemons
MOD_ID=02:00:00:00:00:01
SYS=/sys/kernel/memfed
PAGES=64
mkdir -p $D
ip link set lo up

. /bin/memfed_guest_lib.sh

# The two nodes trust each other's keys: every connection between nodes is
# TLS with pinned keys.
mkdir -p $D/mod $D/node
MOD_KEY=$(memfedctl key generate $D/mod.key)
NODE_KEY=$(memfedctl key generate $D/node.key)

start_module() {
	memfedd --roles module --kmod off --state-dir $D/mod --socket $D/mod/sock \
		--key-file $D/mod.key --trust $NODE_KEY \
		--listen 127.0.0.1:7700 --pool-size 64M --module-id $MOD_ID >>$D/mod.log 2>&1 &
	MOD_PID=$!
	wait_for 60 memfedctl --socket $D/mod/sock status
}

start_node() {
	rm -f $D/node/sock
	memfedd --roles pager --state-dir $D/node --socket $D/node/sock \
		--key-file $D/node.key --trust $MOD_KEY \
		--peer 127.0.0.1:7700 >>$D/node.log 2>&1 &
	NODE_PID=$!
	wait_for 60 ctl status
}

module_up() { [ "$(cat $SYS/modules/$MOD_ID/state)" = up ]; }

# The sysfs directory of the window whose first EVA is $1.
window_dir() {
	for d in $SYS/windows/*; do
		[ "$(cat $d/eva 2>/dev/null)" = "$1" ] && echo $d && return 0
	done
	return 1
}

# 1. The node daemon mirrors its module and route tables into memfed.ko.
ok=0
start_module || { detail "module daemon did not start"; ok=1; }
start_node || { detail "node daemon did not start"; ok=1; }
wait_for 30 module_up || { detail "module $MOD_ID not up in $SYS/modules"; ok=1; }
grep -q "^$MOD_ID " /sys/kernel/debug/memfed/routes ||
	{ detail "no route to $MOD_ID in memfed.ko"; ok=1; }
grep -q "mirroring tables into memfed.ko" $D/node.log ||
	{ detail "node daemon did not say it mirrors into memfed.ko"; ok=1; }
result daemon-mirrors-tables $ok

# 2. A program maps a region through its EVA; the pager serves its faults
# from the module, and memfed.ko's window table shows the mapping.
ok=0
mkfifo $D/go
memfed_eva_test hold $D/node/sock data $PAGES <$D/go >$D/hold.out 2>&1 &
HOLD_PID=$!
exec 3>$D/go
wait_for 120 grep -q '^EVA ' $D/hold.out || { detail "program: $(cat $D/hold.out)"; ok=1; }
EVA=$(sed -n 's/^EVA //p' $D/hold.out)
WIN=$(window_dir "$EVA")
if [ -z "$WIN" ]; then
	detail "no window with EVA '$EVA' in $SYS/windows"
	ok=1
else
	case "$(cat $WIN/fa)" in $MOD_ID/0x*) ;; *) detail "window FA $(cat $WIN/fa)"; ok=1 ;; esac
	[ "$(cat $WIN/length)" = "$(printf '0x%x' $((PAGES * 4096)))" ] ||
		{ detail "window length $(cat $WIN/length)"; ok=1; }
	[ "$(cat $WIN/mapped)" = 1 ] && [ "$(cat $WIN/pid)" = "$HOLD_PID" ] ||
		{ detail "window mapped $(cat $WIN/mapped) by pid $(cat $WIN/pid), not $HOLD_PID"; ok=1; }
	FA=$(cat $WIN/fa)
fi
result daemon-serves-mapped-region $ok

# 2b. An unmodified, dynamically linked program (coreutils sha256sum) reads a
# region as a file through libmemfed-preload.so: its pages fault in from the
# module through the node daemon's pager.
ok=0
head -c 1048576 /dev/urandom >$D/file.in
ctl region create file 1M >/dev/null && ctl region write file <$D/file.in ||
	{ detail "region 'file' not written"; ok=1; }
want=$(sha256sum <$D/file.in | cut -d' ' -f1)
got=$(ctl run --map file=$D/file.bin -- /usr/bin/sha256sum $D/file.bin 2>$D/run.err | cut -d' ' -f1)
[ "$got" = "$want" ] || { detail "sha256sum through the shim: '$got' $(cat $D/run.err), want $want"; ok=1; }
faults=$(ctl stats | sed -n 's/^pager.regions.file.faults //p')
[ "${faults:-0}" -gt 0 ] || { detail "no page faults served for region 'file': $(ctl stats | grep regions.file)"; ok=1; }
result unmodified-program-maps-region $ok

# 3. memfedctl reads the kmod, says so, explains the EVA and watches changes.
ok=0
ctl window ls >$D/wls.out 2>&1
head -1 $D/wls.out | grep -q '^# source: memfed.ko' || { detail "window ls: $(cat $D/wls.out)"; ok=1; }
ctl addr "$EVA" >$D/addr.out 2>&1
grep -q "^fa *$FA" $D/addr.out && grep -q "^local *pid $HOLD_PID " $D/addr.out ||
	{ detail "addr: $(cat $D/addr.out)"; ok=1; }
ctl watch >$D/watch.out 2>&1 &
WATCH_PID=$!
sleep 1
ctl region create other 1M >/dev/null && ctl window open other >/dev/null ||
	{ detail "region/window for the watch failed"; ok=1; }
# Other events (the daemon refreshing its modules) may come first.
wait_for 30 grep -q '^window-set .*"fa":"'$MOD_ID'/0x' $D/watch.out ||
	{ detail "watch: $(cat $D/watch.out)"; ok=1; }
kill $WATCH_PID
wait $WATCH_PID 2>/dev/null
result memfedctl-reads-kmod $ok

# 4. SIGKILL the node daemon: memfed.ko keeps the tables meanwhile, and the
# next daemon reads the windows back, so the EVA still means the same range.
ok=0
ls $SYS/windows >$D/windows.before
kill -9 $NODE_PID
wait $NODE_PID 2>/dev/null
[ "$(cat $WIN/fa 2>/dev/null)" = "$FA" ] || { detail "window lost while no daemon ran"; ok=1; }
start_node || { detail "node daemon did not restart"; ok=1; }
ls $SYS/windows >$D/windows.after
cmp -s $D/windows.before $D/windows.after ||
	{ detail "windows before: $(cat $D/windows.before), after: $(cat $D/windows.after)"; ok=1; }
grep -q "read [1-9][0-9]* windows back from memfed.ko" $D/node.log ||
	{ detail "restarted daemon did not read the windows back"; ok=1; }
memfed_eva_test check $D/node/sock "$EVA" $PAGES >$D/check.out 2>&1 ||
	{ detail "new program through the old EVA: $(cat $D/check.out)"; ok=1; }
result daemon-restart-keeps-tables $ok

# 5. The program that mapped before the restart faults in the pages it never
# touched: the restarted daemon serves them.
ok=0
echo go >&3
exec 3>&-
wait_for 120 sh -c "! kill -0 $HOLD_PID" || { detail "program still waiting"; kill -9 $HOLD_PID; ok=1; }
wait $HOLD_PID
rc=$?
[ $rc -eq 0 ] && grep -q '^HOLD PASS' $D/hold.out || { detail "program rc $rc: $(tail -3 $D/hold.out)"; ok=1; }
result daemon-restart-serves-faults $ok

kill $NODE_PID $MOD_PID
wait $NODE_PID $MOD_PID 2>/dev/null
for f in $D/mod.log $D/node.log; do
	grep -E ' (warn|error) ' $f | sed "s|^|MEMFED-INFO $(basename $f): |"
done
# Leave the tables as the daemon left them to the leak check.
memfed_kmod_test empty
