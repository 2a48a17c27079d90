#!/usr/bin/env bash
# Regions as files for programs that know nothing of memfed: /memfed/NAME and
# --map NAME=PATH, through open/read/write/pread/pwrite/lseek/fstat/mmap/
# msync/close, consistent between file I/O and mappings and across processes.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/client_lib.sh"

start_pager a 1G
ctl a region create notes 1M >/dev/null

cat >"$T/files.py" <<'PY'
import mmap, os, sys
p = sys.argv[1]
fd = os.open(p, os.O_RDWR)
size = os.fstat(fd).st_size
assert size == 1 << 20, size
assert os.pwrite(fd, b"hello memfed", 100) == 12
os.lseek(fd, 96, os.SEEK_SET)
assert os.read(fd, 16)[4:] == b"hello memfed"
assert os.lseek(fd, 0, os.SEEK_CUR) == 112
m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
assert m[100:112] == b"hello memfed"          # file write -> mapping
m[4096:4101] = b"abcde"
m.flush()                                     # msync
assert os.pread(fd, 5, 4096) == b"abcde"       # mapping -> file read
payload = bytes(range(256)) * 1024
m[8192:8192 + len(payload)] = payload
m.close()
try:
    os.ftruncate(fd, 12345)
    sys.exit("ftruncate to another size succeeded")
except OSError:
    pass
os.fsync(fd)
os.close(fd)
with open(p, "rb") as f:                      # buffered I/O on a new fd
    f.seek(8192)
    assert f.read(len(payload)) == payload
print("files ok")
PY
out=$(run_on a -- $PY "$T/files.py" /memfed/notes 2>&1) || fail "files.py: $out"
grep -q "files ok" <<<"$out" || fail "files.py said: $out"
ok "python: read/write/pread/pwrite/lseek/fstat/mmap/msync/fsync agree on /memfed/notes"

# Another process, another program, a --map path: sees the same bytes.
got=$(run_on a --map notes=/srv/data/notes.bin -- sh -c 'head -c 112 /srv/data/notes.bin | tail -c 12')
[ "$got" = "hello memfed" ] || fail "head through --map read '$got'"
size=$(run_on a --map notes=/srv/data/notes.bin -- sh -c 'wc -c < /srv/data/notes.bin')
[ "$size" -eq 1048576 ] || fail "wc -c gave $size"
ok "coreutils read the region through --map NAME=PATH (fstat size = region size)"

# The bytes reached the module.
got=$(ctl a region read notes --offset 100 --length 12)
[ "$got" = "hello memfed" ] || fail "module holds '$got'"
ok "written bytes are on the module"

# A region that does not exist is ENOENT, with a hint.
out=$(run_on a -- sh -c 'cat /memfed/absent' 2>&1) && fail "cat of a missing region succeeded"
grep -q "No such file" <<<"$out" || fail "missing region: $out"
ok "a missing region is ENOENT"
