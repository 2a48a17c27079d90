#!/usr/bin/env bash
# Extended virtual addresses without memfed.ko: the daemon holds the window
# table. A region on a remote module gets a window; `memfedctl addr` explains
# an EVA inside it, says where the answer came from, and refuses EVAs that
# name no window or run past its end.
. "$(dirname "$0")/lib.sh"

trust_all module node
start_daemon module --roles module --listen 127.0.0.1:0 --pool-size 64M --module-id 02:00:00:00:00:0a
start_daemon node --roles pager --listen 127.0.0.1:0 --peer "$(listen_of module)"
ctl node region create win 1M >/dev/null
FA=$(ctl node -j region show win | python3 -c 'import json,sys; print(json.load(sys.stdin)["fa"])')

EVA=$(ctl node window open win)
[ "$(ctl node window open win)" = "$EVA" ] || fail "opening a region's window twice gave two windows"
VA_BITS=$(ctl node -j status | python3 -c 'import json,sys; print(json.load(sys.stdin)["va_bits"])')
[ $((EVA >> VA_BITS)) -ge 1 ] || fail "EVA $EVA has no extension bits above va_bits $VA_BITS"
[ $((EVA & ((1 << VA_BITS) - 1))) -eq 0 ] || fail "a window's first EVA has a non-zero offset: $EVA"
ok "region 'win' has window $((EVA >> VA_BITS)), EVA $EVA"

J=$(ctl node -j addr $((EVA + 0x3010)))
py() { python3 -c "import json,sys; j=json.loads(sys.argv[1]); print($2)" "$J"; }
[ "$(py "$J" 'j["source"]')" = "memfedd" ] || fail "addr does not say its source: $J"
[ "$(py "$J" 'j["offset"]')" = "$((0x3010))" ] || fail "offset wrong: $J"
MOD=${FA%%/*}; OFF=$((${FA##*/}))
[ "$(py "$J" 'j["fa"]')" = "$(printf '%s/0x%x' "$MOD" $((OFF + 0x3010)))" ] || fail "FA wrong: $J"
[ "$(py "$J" 'j["module"]["module"]')" = "02:00:00:00:00:0a" ] || fail "module wrong: $J"
[ "$(py "$J" 'j["route"]["hops"]')" = "1" ] || fail "route wrong: $J"
ctl node addr $((EVA + 0x3010)) | grep -q "^# source: memfedd" || fail "human output lacks the source"
ok "addr explains window, offset, FA, module and route"

expect_exit 12 ctl node addr $((EVA + (1 << 20)))
expect_exit 3 ctl node addr $(((EVA >> VA_BITS) + 1 << VA_BITS))
expect_exit 2 ctl node addr not-a-number
[ "$(ctl node -j addr 0x1000 | python3 -c 'import json,sys; print(json.load(sys.stdin)["kind"])')" = "local pointer" ] ||
	fail "a plain pointer is not reported as local"
ok "EVAs past the end or of unknown windows are refused; plain pointers are local"

expect_exit 10 ctl node watch --count 1
echo "$ERR" | grep -q "not loaded" || fail "watch without memfed.ko: $ERR"
ok "watch without memfed.ko says why it cannot"
echo "$PASSED passed, 0 failed"
