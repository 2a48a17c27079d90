#!/usr/bin/env bash
# The C and C++ APIs as a user meets them: the examples, run against a
# daemon whose pager serves their mappings.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/client_lib.sh"
: "${MEMFED_EXAMPLE_MAP:?}" "${MEMFED_EXAMPLE_EVA:?}"

start_pager a 1G

# map_region.c: create, map, write, sync, unmap, map again, verify.
out=$("$MEMFED_EXAMPLE_MAP" "$T/a/sock" apitest) || fail "map_region: $out"
grep -q "ok: 0 bad bytes" <<<"$out" || fail "map_region said: $out"
ok "C API: a mapping's writes survive unmap and read back through a new mapping"

# The synced bytes are on the module: memfedctl reads them without mapping.
got=$(ctl a region read apitest --offset 4096 --length 4 | od -An -tu1 | tr -s ' ')
want=$(python3 -c 'print(" " + " ".join(str((i * 31 + 7) % 256) for i in range(4096, 4100)))')
[ "$got" = "$want" ] || fail "region bytes after sync: got '$got', want '$want'"
ok "memfed_sync made the bytes durable on the module"

# Running it again finds the region (EEXIST is fine) and rewrites it.
"$MEMFED_EXAMPLE_MAP" "$T/a/sock" apitest >/dev/null || fail "second run of map_region"
ok "C API: an existing region is opened again"

# eva_list.cpp: a list whose links are EVAs across two regions' windows.
out=$("$MEMFED_EXAMPLE_EVA" "$T/a/sock") || fail "eva_list: $out"
grep -q "1000 hops, sum 332833500 (expected 332833500)" <<<"$out" || fail "eva_list said: $out"
ok "C++ API: EVAs stored in federated memory resolve to local pointers"

# Errors are values with messages naming the thing.
expect_exit 1 "$MEMFED_EXAMPLE_MAP" "$T/nowhere.sock" x
grep -qF "connect: memfedd is not running at $T/nowhere.sock" <<<"$ERR" || fail "no daemon: $ERR"
ok "connecting to a missing daemon reports memfedd's message naming the socket"
