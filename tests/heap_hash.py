# heap_hash.py N: builds a dict of N strings on the heap (about 100 bytes
# each) and prints the sha256 of its values in key order. The python heap
# workload of the host tests (tests/integration/client_lib.sh) and of the
# QEMU guest's RDMA program test (tests/qemu/rdma_program_tests.sh).
import hashlib, sys
n = int(sys.argv[1])
d = {i: ("v%d" % (i * 7919)) * 3 for i in range(n)}
h = hashlib.sha256()
for k in sorted(d):
    h.update(d[k].encode())
print(h.hexdigest())
