#!/usr/bin/env bash
# The man pages cover what the programs themselves say they accept:
#   memfedd(8)       every option `memfedd --help` lists, as *--option*
#   memfed.json(5)   every key of `memfedd --print-config` (the config file's
#                    schema: memfedd rejects any other key), as *key* / *pool.size*
#   memfedctl(8)     every command and subcommand of memfedctl's command table
#                    (`memfedctl __commands`) as *region create*, and every
#                    option as *--option*
# and every page source was built to a roff page that groff renders without
# warnings.
set -euo pipefail
: "${MEMFEDD:?set MEMFEDD to the memfedd binary}"
: "${MEMFEDCTL:?set MEMFEDCTL to the memfedctl binary}"
: "${MAN_SOURCES:?set MAN_SOURCES to doc/man}"
: "${MAN_PAGES:?set MAN_PAGES to the built pages}"

missing=()
checked=0
# covers PAGE WORD WHAT: PAGE's source has *WORD* (bold, as the pages write
# every option, key and command), or WHAT is reported missing.
covers() {
	local page=$1 word=$2 what=$3
	checked=$((checked + 1))
	grep -qF -- "*$word*" "$MAN_SOURCES/$page.scd" || missing+=("$page.scd lacks *$word* ($what)")
}

help=$("$MEMFEDD" --help)
opts=$(grep -oE '^ +--[a-z][a-z-]*' <<<"$help" | tr -d ' ')
[ "$(wc -l <<<"$opts")" -ge 15 ] || { echo "FAIL: found too few options in memfedd --help:"; echo "$help"; exit 1; }
for o in $opts; do covers memfedd.8 "$o" "memfedd --help"; done

config=$("$MEMFEDD" --print-config --state-dir /var/lib/memfed)
keys=$(python3 -c '
import json, sys
doc = json.load(sys.stdin)
for k, v in doc.items():
    if isinstance(v, dict):
        for s in v:
            print(k + "." + s)
    else:
        print(k)' <<<"$config")
[ "$(wc -l <<<"$keys")" -ge 15 ] || { echo "FAIL: too few keys in memfedd --print-config:"; echo "$config"; exit 1; }
for k in $keys; do covers memfed.json.5 "$k" "a key of memfedd --print-config"; done

table=$("$MEMFEDCTL" __commands)
while IFS=$'\t' read -r kind verb opt; do
	if [ "$kind" = command ]; then
		covers memfedctl.8 "$verb" "a memfedctl command"
	else
		covers memfedctl.8 "$opt" "an option of memfedctl ${verb/global/}"
	fi
done <<<"$table"
[ "$(grep -c '^command' <<<"$table")" -ge 20 ] || { echo "FAIL: too few commands in memfedctl __commands"; exit 1; }

if [ ${#missing[@]} -gt 0 ]; then
	echo "FAIL: the man pages miss what the programs accept (document each in doc/man/):"
	printf '  %s\n' "${missing[@]}"
	exit 1
fi
echo "ok - $checked options, keys and commands are in their pages"

for src in "$MAN_SOURCES"/*.scd; do
	page=$MAN_PAGES/$(basename "$src" .scd)
	[ -s "$page" ] || { echo "FAIL: $src was not built to $page"; exit 1; }
	if command -v groff >/dev/null; then
		warnings=$(groff -man -ww -z -Tutf8 "$page" 2>&1)
		[ -z "$warnings" ] || { echo "FAIL: groff warns about $page:"; echo "$warnings"; exit 1; }
	fi
done
command -v groff >/dev/null && echo "ok - every page renders without groff warnings" ||
	echo "SKIPPED: groff is not installed, so the pages were not rendered"
echo PASS
