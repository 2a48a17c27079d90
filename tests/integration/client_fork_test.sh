#!/usr/bin/env bash
# Fork under `memfedctl run`: the child gets a private copy of a heap that is
# mostly evicted to remote memory, and parent and child diverge without
# seeing each other's writes; threads allocate concurrently meanwhile.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/client_lib.sh"

start_pager a 16G

cat >"$T/fork.py" <<'PY'
import hashlib, os, sys, threading
n = int(sys.argv[1])
# Threads that have come and gone leave their stacks in glibc's cache, in
# the remote heap; the heap built next may evict them, and the child's first
# thread reuses one: its pages must come from the pager, not read as zeroes
# (seen as a hang, then zeroes, when the child started a thread before its
# map reached the pager).
gone = [threading.Thread(target=lambda: None) for _ in range(6)]
for t in gone: t.start()
for t in gone: t.join()
data = [("v%d" % (i * 7919)) * 4 for i in range(n)]   # far more than the budget

def digest(xs):
    h = hashlib.sha256()
    for x in xs:
        h.update(x.encode())
    return h.hexdigest()

def churn(seed, out):
    # Threads allocate and free while the fork happens.
    junk = [bytearray(4096) for _ in range(2000)]
    out.append(sum(len(j) for j in junk) + seed)

outs = []
threads = [threading.Thread(target=churn, args=(k, outs)) for k in range(3)]
for t in threads: t.start()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    for i in range(0, n, 2):
        data[i] = "child"
    os.write(w, digest(data).encode())
    os._exit(0)
os.close(w)
for i in range(1, n, 2):
    data[i] = "parent"
child = os.read(r, 64).decode()
_, status = os.waitpid(pid, 0)
for t in threads: t.join()
print(os.WEXITSTATUS(status), child, digest(data), len(outs))
PY
N=150000
want=$($PY - "$N" <<'PY'
import hashlib, sys
n = int(sys.argv[1])
def digest(xs):
    h = hashlib.sha256()
    for x in xs: h.update(x.encode())
    return h.hexdigest()
base = [("v%d" % (i * 7919)) * 4 for i in range(n)]
c = list(base); p = list(base)
for i in range(0, n, 2): c[i] = "child"
for i in range(1, n, 2): p[i] = "parent"
print(0, digest(c), digest(p), 3)
PY
)
got=$(run_on a --heap-budget 8M --heap-size 1G -- $PY "$T/fork.py" "$N") || fail "fork.py failed: $got"
[ "$got" = "$want" ] || fail "fork.py printed '$got', expected '$want'"
ok "parent and child each see their own heap after fork (heap budget 8M, threads running)"
# The child's heap was a copy-on-write clone of its parent's at the module,
# not a copy of its pages.
grep -q "cloned region 'heap\..*' as 'heap\." "$T/a.log" ||
	fail "the child's heap was not cloned from its parent's: $(grep -i 'clone\|copy' "$T/a.log" | tail -n 3)"
ok "the forked child's heap is a copy-on-write clone of its parent's"

# Nothing of the run is left behind.
left=$(ctl a region ls | grep -c '^heap\.' || true)
[ "$left" -eq 0 ] || fail "$left heap regions left after the run: $(ctl a region ls)"
ok "memfedctl run deletes every heap region of the run"
