# heap_grow.py CHUNKS STRIDE: mallocs CHUNKS blocks of 64 MiB (the heap grows
# by CHUNKS * 64 MiB), writes one byte of a pattern every STRIDE bytes of
# each, reads them all back, and prints the span of the blocks' addresses in
# MiB and the sum of the bytes read. Exit 1 if a byte read back differs. The
# heap that grows past a size of the host tests (tests/integration/
# thin_heaps_test.sh); the bytes written, not the size, set its memory.
import ctypes, sys

chunks, stride = int(sys.argv[1]), int(sys.argv[2])
CHUNK = 64 << 20
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
blocks = []
for i in range(chunks):
    p = libc.malloc(CHUNK)
    if not p:
        sys.exit("malloc of 64 MiB failed at block %d" % i)
    blocks.append(p)
    for k, off in enumerate(range(0, CHUNK, stride)):
        ctypes.memset(p + off, (i * 31 + k) % 255 + 1, 1)
total = 0
for i, p in enumerate(blocks):
    for k, off in enumerate(range(0, CHUNK, stride)):
        b = ctypes.string_at(p + off, 1)[0]
        if b != (i * 31 + k) % 255 + 1:
            sys.exit("block %d offset %d reads %d" % (i, off, b))
        total += b
span = max(blocks) + CHUNK - min(blocks)
print(span >> 20, total)
