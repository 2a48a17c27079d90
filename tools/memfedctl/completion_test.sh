#!/usr/bin/env bash
# memfedctl's bash completion, as bash runs it: the generated script is
# sourced, COMP_WORDS/COMP_CWORD are set as bash would for a line typed up to
# the cursor, _memfedctl is called, and COMPREPLY is checked against the
# command table (`memfedctl __commands`).
#
#   completion_test.sh table     commands, subcommands, options, files (no daemon)
#   completion_test.sh regions   region names, asked of a running memfedd
set -euo pipefail
: "${MEMFEDCTL:?set MEMFEDCTL to the memfedctl binary}"
: "${MEMFEDCTL_BASH:?set MEMFEDCTL_BASH to the generated completion script}"
mode=${1:-table}

if [ "$mode" = regions ]; then
	: "${MEMFEDD:?set MEMFEDD to the memfedd binary}"
	source "$(dirname "$0")/../../tests/integration/lib.sh"
else
	fail() { echo "FAIL: $*" >&2; exit 1; }
	PASSED=0
	ok() { PASSED=$((PASSED + 1)); echo "ok $PASSED - $*"; }
fi

[ -s "$MEMFEDCTL_BASH" ] || fail "$MEMFEDCTL_BASH is missing or empty (built by 'memfedctl completion bash')"
# The script on disk is what `memfedctl completion bash` prints now.
diff <("$MEMFEDCTL" completion bash) "$MEMFEDCTL_BASH" >/dev/null ||
	fail "$MEMFEDCTL_BASH differs from 'memfedctl completion bash': rebuild"
source "$MEMFEDCTL_BASH"
complete -p memfedctl | grep -q -- '-F _memfedctl' || fail "the script does not register _memfedctl"

# complete LINE: the candidates bash offers for LINE (the cursor at its end;
# a trailing space starts a new, empty word), sorted, one per line.
complete_line() {
	local line=$1
	read -r -a COMP_WORDS <<<"$line"
	[[ $line == *" " ]] && COMP_WORDS+=("")
	COMP_WORDS[0]=$MEMFEDCTL
	COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
	COMP_LINE=$line
	COMP_POINT=${#line}
	COMPREPLY=()
	_memfedctl
	printf '%s\n' "${COMPREPLY[@]}" | sed '/^$/d' | sort
}

# expect LINE WORD...: completing LINE offers exactly the WORDs.
expect() {
	local line=$1; shift
	local got want
	got=$(complete_line "$line")
	want=$(printf '%s\n' "$@" | sed '/^$/d' | sort)
	[ "$got" = "$want" ] || fail "completing '$line': expected [$(echo $want)], got [$(echo $got)]"
	ok "'$line<TAB>' offers [$(echo $want)]"
}

table=$("$MEMFEDCTL" __commands)
subcommands() { awk -F'\t' -v c="$1" '$1 == "command" { split($2, w, " "); if (w[1] == c && w[2] != "") print w[2] }' <<<"$table"; }
options_of() { awk -F'\t' -v v="$1" '$1 == "option" && $2 == v { print $3 }' <<<"$table"; }
commands=$(awk -F'\t' '$1 == "command" { split($2, w, " "); print w[1] }' <<<"$table" | sort -u)

if [ "$mode" = table ]; then
	expect "memfedctl re" region
	expect "memfedctl ro" route
	# shellcheck disable=SC2086 # word lists
	expect "memfedctl " $commands
	[ "$(subcommands region | wc -l)" -ge 8 ] || fail "the table has too few region subcommands: $(subcommands region)"
	# shellcheck disable=SC2086
	expect "memfedctl region " $(subcommands region) --help
	# shellcheck disable=SC2086
	expect "memfedctl -j region " $(subcommands region) --help
	# shellcheck disable=SC2086
	expect "memfedctl pool " $(subcommands pool) --help
	expect "memfedctl region cr" create
	# shellcheck disable=SC2086
	expect "memfedctl region copy a b --" $(options_of "region copy") --help
	expect "memfedctl region copy a b --to" --to-offset
	expect "memfedctl region read x --of" --offset
	expect "memfedctl --so" --socket
	# shellcheck disable=SC2086
	expect "memfedctl top -" $(options_of top) -j --help
	expect "memfedctl completion " bash --help
	expect "memfedctl region create notes " # SIZE: nothing to offer
	expect "memfedctl status " # no arguments

	# Paths complete as files, programs as commands, after `run --`.
	dir=$(mktemp -d)
	trap 'rm -rf "$dir"' EXIT
	touch "$dir/pool-a.mfp" "$dir/pool-b.mfp"
	expect "memfedctl pool check $dir/pool-" "$dir/pool-a.mfp" "$dir/pool-b.mfp"
	expect "memfedctl --socket $dir/pool-a" "$dir/pool-a.mfp"
	expect "memfedctl run --preload $dir/pool-b" "$dir/pool-b.mfp"
	complete_line "memfedctl run -- bas" | grep -qx bash || fail "'run -- bas' does not offer bash"
	ok "'memfedctl run -- bas<TAB>' offers bash"
	expect "memfedctl run --keep-heaps -- cat $dir/pool-a" "$dir/pool-a.mfp"
	# After the program, its own options are not memfedctl's.
	expect "memfedctl run -- cat --"
	# The hidden table dump is not offered.
	complete_line "memfedctl __" | grep -q . && fail "'memfedctl __<TAB>' offers the hidden __commands"
	ok "hidden commands are not offered"

	# The CLI parses with the same table: an option listed for another
	# subcommand is refused, and a subcommand's --help lists its options.
	set +e
	err=$("$MEMFEDCTL" region rm notes --mode 0644 2>&1)
	rc=$?
	set -e
	[ $rc -eq 2 ] && grep -q -- "unknown option '--mode' for 'memfedctl region rm'" <<<"$err" ||
		fail "'region rm notes --mode 0644' exited $rc: $err"
	ok "'region rm --mode' is refused with exit 2, naming the option"
	help=$("$MEMFEDCTL" region copy --help)
	for o in $(options_of "region copy"); do
		grep -q -- "$o" <<<"$help" || fail "'region copy --help' lacks $o: $help"
	done
	ok "'region copy --help' lists every option of the table"
else
	start_daemon a --roles module --listen 127.0.0.1:0 --pool-size 16M
	ctl a region create notes 1M >/dev/null
	ctl a region create backup 1M >/dev/null
	ctl a region create other 1M >/dev/null
	expect "memfedctl --socket $T/a/sock region show " backup notes other
	expect "memfedctl --socket $T/a/sock region read n" notes
	expect "memfedctl --socket=$T/a/sock -j region rm ba" backup
	expect "memfedctl --socket $T/a/sock region copy notes b" backup
	expect "memfedctl --socket $T/a/sock window open o" other
	expect "memfedctl --socket $T/a/sock region create " # a new name: nothing to offer
	# Without a daemon there is nothing to offer, and no error on the terminal.
	expect "memfedctl --socket $T/none/sock region show "
fi
echo "PASS: $PASSED checks"
