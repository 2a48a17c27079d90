#!/usr/bin/env bash
# Two daemons on loopback: a module on one, a pager-only client node on the
# other. Everything the client does reaches the module through the wire
# protocol. Covers item 8 of the server-side issue: 64 MiB written and read
# back, a module restart with data intact, and the error paths a user hits.
. "$(dirname "$0")/lib.sh"

trust_all module client
start_daemon module --roles module --listen 127.0.0.1:0 --pool-size 256M \
	--module-id 02:00:00:00:00:01
MODULE_EP=$(listen_of module)
start_daemon client --roles pager --listen 127.0.0.1:0 --peer "$MODULE_EP"
ok "module at $MODULE_EP, client node peered with it"

ctl client module ls | grep -q "02:00:00:00:00:01.*up" || fail "client does not see the module: $(ctl client module ls)"
ok "client lists the module as up"

ctl client region create data 64M >/dev/null
ctl client -j region show data | grep -q '"fa": "02:00:00:00:00:01/0x' || fail "region not on the module"
ok "region created on the remote module"

head -c 64M /dev/urandom >"$T/in.bin"
ctl client region write data <"$T/in.bin"
ctl client region read data >"$T/out.bin"
cmp "$T/in.bin" "$T/out.bin" || fail "64 MiB read back differs from what was written"
ok "64 MiB written and read back through the protocol"

# Unaligned access at both ends of a page.
printf 'hello memfed' | ctl client region write data --offset 4090
[ "$(ctl client region read data --offset 4090 --length 12)" = "hello memfed" ] || fail "unaligned write/read"
head -c 4090 "$T/in.bin" | cmp - <(ctl client region read data --length 4090) || fail "bytes before an unaligned write changed"
ok "unaligned writes keep neighbouring bytes"

# region copy: whole pages, module to module inside the daemon; --sparse leaves
# all-zero pages unwritten (what a forked process's copy of its heap uses).
ctl client region create copied 8M >/dev/null
ctl client region copy data copied --offset 1M --to-offset 2M --length 4M >/dev/null
ctl client region read copied --offset 2M --length 4M |
	cmp - <(tail -c +$((1048576 + 1)) "$T/in.bin" | head -c 4M) || fail "copied pages differ from their source"
[ "$(ctl client region read copied --length 2M | tr -d '\0' | wc -c)" -eq 0 ] || fail "region copy wrote before its range"
ctl client region create sparse-src 1M >/dev/null
ctl client region create sparse-dst 1M >/dev/null
printf 'x' | ctl client region write sparse-src --offset 12288
got=$(ctl client -j region copy sparse-src sparse-dst --sparse | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["copied"], r["written"])')
[ "$got" = "1048576 4096" ] || fail "sparse copy of one written page reported '$got'"
[ "$(ctl client region read sparse-dst --offset 12288 --length 1)" = "x" ] || fail "sparse copy lost the written page"
expect_exit 2 ctl client region copy data copied --offset 100 --length 4096
expect_exit 12 ctl client region copy data copied --to-offset 6M --length 4M
expect_exit 3 ctl client region copy data no-such-region --length 4096
expect_exit 2 ctl client region copy data data --offset 0 --to-offset 4096 --length 8192
ctl client region rm copied; ctl client region rm sparse-src; ctl client region rm sparse-dst
ok "region copy: a range lands where asked, --sparse writes only non-zero pages, bad ranges refused"

# region clone: copy-on-write, on the module's own node. It takes no space
# until its base changes a page it shares, keeps that page, and keeps every
# page when its base is deleted. The client node is told to copy instead.
used_of() { ctl module -j region show "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["used_bytes"])'; }
ctl module region create base 4M >/dev/null
head -c 4M /dev/urandom >"$T/base.bin"
ctl module region write base <"$T/base.bin"
want_snap() { tail -c +$((1048576 + 1)) "$T/base.bin" | head -c 2M; }
ctl module region clone base snap --offset 1M --length 2M >/dev/null
ctl module region ls | grep -q "^snap .*clone of base" || fail "region ls does not show snap as a clone: $(ctl module region ls)"
[ "$(used_of snap)" -eq 0 ] || fail "a new clone uses $(used_of snap) bytes"
printf 'changed' | ctl module region write base --offset 1M
ctl module region read snap --length 2M | cmp - <(want_snap) || fail "the clone saw its base's write"
[ "$(used_of snap)" -eq 4096 ] || fail "after one base write the clone uses $(used_of snap) bytes, not one page"
ctl module region rm base
ctl module region read snap --length 2M | cmp - <(want_snap) || fail "the clone lost pages when its base was deleted"
! ctl module -j region show snap | grep -q clone_of || fail "a clone whose base is gone still names it"
ctl module region rm snap
ctl client region create remote-base 1M >/dev/null
expect_exit 2 ctl client region clone remote-base snap
ctl client region rm remote-base
ok "region clone: free until its base writes, keeps its pages through a base write and delete; another node must copy"

# A region's length as a file, set on the remote module (REGION_SET_LENGTH):
# a shorter end zeroes what lies past it, and the length outlives a restart.
length_of() { ctl client -j region show "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["length"])'; }
ctl client region create f 64K >/dev/null
[ "$(length_of f)" -eq 65536 ] || fail "a new region's length is $(length_of f), not its size"
printf 'abcdefgh' | ctl client region write f --offset 8190
ctl client region truncate f 8193 >/dev/null
[ "$(length_of f)" -eq 8193 ] || fail "length after truncate is $(length_of f)"
ctl client region truncate f 20000 >/dev/null
got=$(ctl client region read f --offset 8190 --length 8 | od -An -c | tr -d ' \n')
[ "$got" = 'abc\0\0\0\0\0' ] || fail "past the truncated end the region holds '$got'"
expect_exit 12 ctl client region truncate f 65537
expect_exit 3 ctl client region truncate nosuch 0
expect_exit 2 ctl client region truncate f lots
[ "$(length_of f)" -eq 20000 ] || fail "refused truncates changed the length to $(length_of f)"
ok "region truncate on a remote module: zeros past a shorter end, bad lengths refused"

stop_daemon module TERM
start_daemon module --roles module --listen "$MODULE_EP" --pool-size 256M
[ "$(length_of f)" -eq 20000 ] || fail "the length after a module restart is $(length_of f)"
dd if="$T/in.bin" bs=4090 count=1 status=none >"$T/expect.bin"
printf 'hello memfed' >>"$T/expect.bin"
tail -c +$((4090 + 12 + 1)) "$T/in.bin" >>"$T/expect.bin"
ctl client region read data >"$T/out2.bin"
cmp "$T/expect.bin" "$T/out2.bin" || fail "data changed across a module restart"
ok "module restarted (clean stop), data intact, client reconnected by itself"

stop_daemon module KILL
start_daemon module --roles module --listen "$MODULE_EP" --pool-size 256M
ctl client region read data | cmp - "$T/expect.bin" || fail "data changed across SIGKILL"
ok "module SIGKILLed and restarted, data intact"

# --- errors that name the thing and change nothing ---
expect_exit 4 ctl client region create data 4K
echo "$ERR" | grep -q "data" || fail "duplicate error does not name the region: $ERR"
# Past the pool's address space (4 TiB: a thin pool's region costs nothing
# until written, so only the address space can refuse a create).
expect_exit 5 ctl client region create huge 8T
echo "$ERR" | grep -qiE "free|capacity" || fail "no-space error does not say what room there is: $ERR"
expect_exit 2 ctl client region create 'bad/name' 4K
expect_exit 2 ctl client region create "$(printf 'n%.0s' $(seq 1 64))" 4K
expect_exit 12 ctl client region read data --offset 65M --length 1
expect_exit 12 sh -c "printf x | '$MEMFEDCTL' --socket '$T/client/sock' region write data --offset 67108864"
expect_exit 3 ctl client region show nosuch
echo "$ERR" | grep -q "nosuch" || fail "not-found error does not name the region: $ERR"
ctl client region read data | cmp - "$T/expect.bin" || fail "a refused request changed data"
ok "bad region requests refused with distinct exit codes, nothing changed"

# A second daemon on the same pool, and on a port in use.
expect_exit 9 "$MEMFEDD" --state-dir "$T/module" --socket "$T/second.sock" --roles module \
	--listen 127.0.0.1:0 --pool-size 256M --kmod off
echo "$ERR" | grep -q "in use" || fail "second daemon on one pool: $ERR"
expect_exit 9 "$MEMFEDD" --state-dir "$T/other" --socket "$T/third.sock" --roles module \
	--listen "$MODULE_EP" --pool-size 64M --kmod off
echo "$ERR" | grep -q "in use" || fail "port in use: $ERR"
expect_exit 2 "$MEMFEDD" --state-dir "$T/other" --pool-size 256M --kmod off --bogus
echo '{"pool": {"size": "64M", "colour": "red"}}' >"$T/bad.json"
expect_exit 2 "$MEMFEDD" --config "$T/bad.json" --state-dir "$T/other"
echo "$ERR" | grep -q '"pool.colour"' || fail "unknown config key not named: $ERR"
expect_exit 9 "$MEMFEDCTL" pool check "$T/module/pool.mfp"
ok "second daemon on a pool, fsck of a live pool, port in use, unknown flag/key: refused"

# Deleting frees the space for reuse, and reused space reads as zeros.
ctl client region rm data
ctl client region create fresh 64M >/dev/null
[ "$(ctl client region read fresh | tr -d '\0' | wc -c)" -eq 0 ] || fail "reused space is not zeroed"
ok "deleted space is reused and reads as zeros"

# A page damaged on the module's media fails the reads that cover it, with
# "corrupt" (7) naming the fix; the connection and every other page are fine.
head -c 12288 /dev/urandom >"$T/three.bin"
ctl client region write fresh --offset 8192 <"$T/three.bin"
FA_HEX=$(ctl client -j region show fresh | python3 -c 'import json,sys; print(json.load(sys.stdin)["fa"].split("/")[1])')
AT=$((FA_HEX + 3 * 4096 + 100))
orig=$(dd if="$T/module/pool.mfp" bs=1 skip=$AT count=1 status=none | od -An -tu1 | tr -d ' ')
printf "\\$(printf %03o $(((orig + 1) % 256)))" | dd of="$T/module/pool.mfp" bs=1 seek=$AT conv=notrunc status=none
expect_exit 7 "$MEMFEDCTL" --socket "$T/client/sock" region read fresh --offset 12288 --length 4096
echo "$ERR" | grep -q "damaged" && echo "$ERR" | grep -q "pool check" ||
	fail "a damaged page's error does not say so and name the fix: $ERR"
ctl client region read fresh --offset 8192 --length 4096 | cmp - <(head -c 4096 "$T/three.bin") ||
	fail "the page before the damaged one reads wrong"
ctl client region read fresh --offset 16384 --length 4096 | cmp - <(tail -c 4096 "$T/three.bin") ||
	fail "the page after the damaged one reads wrong"
printf "\\$(printf %03o "$orig")" | dd of="$T/module/pool.mfp" bs=1 seek=$AT conv=notrunc status=none
ctl client region read fresh --offset 8192 --length 12288 | cmp - "$T/three.bin" || fail "repaired page reads wrong"
ok "a page damaged on the module fails its reads alone with 'corrupt'"

stop_daemon client TERM
stop_daemon module TERM
"$MEMFEDCTL" pool check "$T/module/pool.mfp" >/dev/null || fail "pool check after the test: $("$MEMFEDCTL" pool check "$T/module/pool.mfp")"
ok "pool check is clean"

expect_exit 2 "$MEMFEDD" --state-dir "$T/module" --socket "$T/x.sock" --pool-size 128M \
	--roles module --listen 127.0.0.1:0 --kmod off
echo "$ERR" | grep -q "128M\|134217728" || fail "wrong pool size error does not name the sizes: $ERR"
# The pool's first 64 MiB (header, region table, logs, the start of the page
# metadata): what an open writes first. The whole file is a sparse 4 TiB.
head -c 64M "$T/module/pool.mfp" >"$T/copy.mfp"
printf 'XXXX' | dd of="$T/module/pool.mfp" bs=1 seek=0 conv=notrunc status=none
expect_exit 7 "$MEMFEDD" --state-dir "$T/module" --socket "$T/x.sock" --pool-size 256M \
	--roles module --listen 127.0.0.1:0 --kmod off
expect_exit 7 "$MEMFEDCTL" pool check "$T/module/pool.mfp"
cmp -s <(head -c 64M "$T/module/pool.mfp" | tail -c +5) <(tail -c +5 "$T/copy.mfp") ||
	fail "a refused open changed the pool"
ok "a pool of the wrong size or with a corrupt header is refused and left untouched"
echo "$PASSED passed, 0 failed"
