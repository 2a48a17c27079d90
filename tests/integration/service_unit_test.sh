#!/usr/bin/env bash
# The systemd unit (packaging/systemd/memfedd.service.in) passes
# `systemd-analyze verify`: known keys, valid values, an executable ExecStart
# (this copy points at the build tree's memfedd). Needs no running systemd.
# Usage: service_unit_test.sh UNIT_FILE
set -euo pipefail
unit=$1
if ! command -v systemd-analyze >/dev/null; then
	echo "SKIPPED: systemd-analyze is not installed (apt-get install systemd); the unit was not verified" >&2
	exit 77
fi
out=$(systemd-analyze verify --man=no "$unit" 2>&1) || {
	echo "FAIL: systemd-analyze verify $unit:" >&2
	echo "$out" >&2
	exit 1
}
# verify exits 0 on some warnings; any line naming the unit is one.
if grep -F "$(basename "$unit")" <<<"$out" >&2; then
	echo "FAIL: systemd-analyze verify warns about the unit (above)" >&2
	exit 1
fi
grep -q '^Type=notify$' "$unit" || { echo "FAIL: $unit is not Type=notify" >&2; exit 1; }
echo "ok 1 - systemd-analyze verify $(basename "$unit"): clean"
