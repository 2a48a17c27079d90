/*
 * memfed.h: the C API of libmemfed, the client library of memfed.
 *
 * A program connects to the local memfedd, creates or opens regions of
 * federated memory (which live in the NVM pool of some memory module, maybe
 * several hops away) and maps them into its address space. Pages of a mapping
 * are fetched on demand by the daemon's pager through a userfaultfd that this
 * library creates and hands over; dirty pages are written back to the module,
 * and memfed_sync() makes them durable. A mapping is coherent between every
 * process of the node that maps the same region, like a shared file mapping.
 *
 * Extended virtual addresses (EVAs) are 64-bit pointers whose bits above the
 * CPU's virtual-address width name a window of the node's window table; such
 * a pointer can be stored in federated memory and turned into a local pointer
 * by any process of the node with memfed_eva_to_ptr().
 *
 * Errors follow liburing: every function that can fail returns 0 (or a
 * count) on success and a negative errno value on failure; nothing is
 * reported through errno (its value after a call means nothing). <errno.h> is
 * included for the E* names. memfed_strerror() turns that value into memfed's one-line message
 * naming the thing that failed and, where there is one, the fix. Each class of
 * failure has one errno value, the same in every function:
 *
 *   -EINVAL          a bad argument (NULL pointer, bad name, unaligned offset)
 *   -ENOENT          no such region, window or mapping
 *   -EEXIST          a region of that name exists
 *   -ENOSPC          no module has room (or the window table is full)
 *   -EACCES          the region's owner or mode forbids it, as a file's mode
 *                    bits do for open(2); memfed has no privileged operation
 *                    that would call for -EPERM
 *   -EBADMSG         data on a module failed its checksum: what Linux
 *                    filesystems return for a bad checksum (the kernel's
 *                    EFSBADCRC is EBADMSG); -EUCLEAN would claim the whole
 *                    structure needs repair, and the pool's structure is
 *                    checked when memfedd opens it, not by these calls
 *   -EIO             a system call failed in memfedd or a module
 *   -EBUSY           held by someone else
 *   -ECONNREFUSED    nobody answered: memfedd is not running at the socket, it
 *                    went away, or the module holding the region is
 *                    unreachable; the one value for every "not there right
 *                    now" case, worth retrying later
 *   -EPROTO          memfedd broke the control protocol (a version mismatch)
 *   -ERANGE          an access past the end of a region or window
 *   -EDQUOT          creating the region would put the calling user over
 *                    their quota on the module (memfedctl quota shows it)
 *   -ENOTRECOVERABLE a bug in memfed; the message says where
 *
 * The ERRORS section of each function's man page lists the values it returns.
 * (libmemfed.so.0 returned small MEMFED_E* codes that read as unrelated errno
 * values; they, memfed_errmsg() and memfed_code_name() are gone since .so.1.)
 *
 * Thread-safety: every function may be called from any thread. The message of
 * a failure is kept per thread (memfed_strerror()). A struct memfed_conn may
 * be used by several threads at once (calls are serialised inside). struct
 * memfed_region handles are immutable after memfed_region_open() and may be
 * shared between threads. Each process has at most one connection that maps
 * memory (its userfaultfd is per process); further connections may still
 * manage regions.
 *
 * Daemon restarts: if memfedd stops while regions are mapped, threads that
 * touch a page that is not resident wait in the kernel; the library reconnects
 * on its own when memfedd comes back and the program continues. No page is
 * ever replaced by zeroes because the daemon was gone.
 *
 * Link with `pkg-config --libs memfed` or CMake `find_package(memfed 1)` and
 * target memfed::memfed. Man pages: libmemfed(3), and one per function
 * (memfed_region_create(3), ...).
 */
#ifndef MEMFED_H
#define MEMFED_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MEMFED_API __attribute__((visibility("default")))

/* Version of this header; memfed_version() gives the library's. The major
 * version is the library's soname (libmemfed.so.1). */
#define MEMFED_VERSION_MAJOR 1
#define MEMFED_VERSION_MINOR 0

/* An open connection to memfedd. */
struct memfed_conn;
/* A region opened by name; see memfed_region_open(). */
struct memfed_region;

/* What memfed knows of a region. Strings are NUL-terminated. */
struct memfed_region_info {
	char name[64];	   /* at most 63 bytes */
	uint64_t id;	   /* region id on its module */
	char module[24];   /* module id, "02:00:00:00:00:01" */
	char fa[48];	   /* federated address of byte 0, "<module>/0x<offset>" */
	uint64_t size;	   /* bytes, a multiple of the page size */
	uint32_t owner_uid;
	uint32_t mode;	   /* permission bits like a file's (0600) */
	uint64_t ctime_ns; /* creation time, CLOCK_REALTIME */
	uint64_t length;   /* as a file (memfedctl run): bytes before end of file */
};

/* Flags of memfed_map(). */
#define MEMFED_MAP_WRITE 0x1u	 /* writable mapping (else read-only) */
#define MEMFED_MAP_PREFETCH 0x2u /* let the pager fetch ahead of faults */

/* Options of memfed_map_ex(); zero-initialise, then set what you need. */
struct memfed_map_opts {
	unsigned flags;	  /* MEMFED_MAP_* */
	uint64_t budget;  /* bytes of this mapping kept resident; 0: daemon default */
	void *addr_hint;  /* where to map; NULL: anywhere (never MAP_FIXED) */
};

/* Library version as "1.0.0". Never fails. */
MEMFED_API const char *memfed_version(void);

/* The text for `err`, a negative errno value returned by a memfed function.
 * If `err` equals what the calling thread's last failed memfed call returned,
 * that failure's own message, e.g. "region 'cfg' not found on any module
 * (memfedctl region ls)"; otherwise strerror(-err), e.g. "No such file or
 * directory". Each failing call replaces the thread's record; calls that
 * succeed leave it (like errno). The string belongs to the library and stays
 * valid until the calling thread's next failing memfed call or its next
 * memfed_strerror() call. Never fails; never changes the record. */
MEMFED_API const char *memfed_strerror(int err);

/* Connects to memfedd's control socket at `socket_path`, or, if NULL, at
 * $MEMFED_SOCKET or /run/memfed/memfedd.sock. On success stores the
 * connection in *out and returns 0. Fails -ECONNREFUSED when no daemon
 * listens there. */
MEMFED_API int memfed_connect(const char *socket_path, struct memfed_conn **out);

/* Unmaps every mapping made through `m` (writing back dirty pages, as
 * memfed_unmap()), then closes the connection and frees `m`. Close the
 * region handles opened through `m` first: a handle is not usable after its
 * connection is closed. NULL is ignored. */
MEMFED_API void memfed_close(struct memfed_conn *m);

/* Creates a region of `size` bytes (rounded up to the page size) owned by
 * the caller's uid, with permission `mode` (0 means 0600), on a module
 * chosen by memfedd. Its content reads as zeroes. If `info` is not NULL it
 * receives the new region's description. -EEXIST if the name is taken,
 * -ENOSPC if no module has room. Names: 1..63 bytes of
 * [A-Za-z0-9._-]. */
MEMFED_API int memfed_region_create(struct memfed_conn *m, const char *name, uint64_t size,
				    uint32_t mode, struct memfed_region_info *info);

/* Deletes region `name` and its bytes. Only its owner (or root) may. */
MEMFED_API int memfed_region_delete(struct memfed_conn *m, const char *name);

/* Calls `fn(info, arg)` for every region the daemon knows of, in name order,
 * and returns how many there were. Stops early (returning the count so far)
 * if `fn` returns non-zero. */
MEMFED_API int memfed_region_list(struct memfed_conn *m,
				  int (*fn)(const struct memfed_region_info *info, void *arg),
				  void *arg);

/* Looks up region `name` and returns a handle in *out. -ENOENT if no
 * module holds it, -EACCES if the caller may not read it. */
MEMFED_API int memfed_region_open(struct memfed_conn *m, const char *name,
				  struct memfed_region **out);

/* Frees a handle from memfed_region_open(). Mappings of the region stay
 * valid. NULL is ignored. */
MEMFED_API void memfed_region_close(struct memfed_region *r);

/* Fills *info with the region's current description, asked afresh from the
 * daemon. */
MEMFED_API int memfed_region_stat(struct memfed_region *r, struct memfed_region_info *info);

/* Copies `length` bytes at `offset` of the region into `buf` through the
 * daemon, without mapping (like pread). Returns the bytes read (short at
 * the end of the region) or a negative errno value. */
MEMFED_API int64_t memfed_region_read(struct memfed_region *r, uint64_t offset, void *buf,
				      uint64_t length);

/* Copies `length` bytes from `buf` to `offset` of the region through the
 * daemon (like pwrite); durable on return. Returns the bytes written or a
 * negative errno value (-ERANGE past the end). */
MEMFED_API int64_t memfed_region_write(struct memfed_region *r, uint64_t offset,
				       const void *buf, uint64_t length);

/* Maps `length` bytes of the region from `offset` (both multiples of the page
 * size; length 0 means "to the end") and stores the address in *addr. Read-
 * only unless flags has MEMFED_MAP_WRITE. The mapping is shared: every
 * process mapping the region sees the same bytes. */
MEMFED_API int memfed_map(struct memfed_region *r, uint64_t offset, uint64_t length,
			  unsigned flags, void **addr);

/* memfed_map() with more options (resident budget, address hint). */
MEMFED_API int memfed_map_ex(struct memfed_region *r, uint64_t offset, uint64_t length,
			     const struct memfed_map_opts *opts, void **addr);

/* Writes back the mapping's dirty pages and removes the mapping that starts
 * at `addr`. -ENOENT if `addr` is not the start of a mapping of `m`. */
MEMFED_API int memfed_unmap(struct memfed_conn *m, void *addr);

/* Makes every byte of [addr, addr+length) that was written before the call
 * durable on its module (msync semantics). The range must lie in one
 * mapping; length 0 means the whole mapping. */
MEMFED_API int memfed_sync(struct memfed_conn *m, void *addr, size_t length);

/* The region and the offset in it that the mapped address `addr` shows.
 * -ENOENT if no mapping of `m` contains `addr`. */
MEMFED_API int memfed_addr_info(struct memfed_conn *m, const void *addr,
				struct memfed_region_info *info, uint64_t *offset);

/* Number of low bits of an EVA that are a CPU virtual address (47 on x86-64
 * with 4-level paging); the bits above are the window index. */
MEMFED_API int memfed_eva_bits(struct memfed_conn *m);

/* Gives region `name` a window in the node's window table (or finds the one
 * it has) and stores the EVA of the region's first byte in *eva. */
MEMFED_API int memfed_window_open(struct memfed_conn *m, const char *name, uint64_t *eva);

/* Turns an EVA into a pointer in this process. A plain pointer (window index
 * 0) is returned unchanged; otherwise the window's region is mapped
 * (writable if the caller may write it) on first use. -ENOENT if no
 * window has that index, -ERANGE past the window's end. */
MEMFED_API int memfed_eva_to_ptr(struct memfed_conn *m, uint64_t eva, void **ptr);

/* The inverse: the EVA of `ptr` if it lies in a window mapped by
 * memfed_eva_to_ptr(), else `ptr` itself as a plain EVA. */
MEMFED_API int memfed_ptr_to_eva(struct memfed_conn *m, const void *ptr, uint64_t *eva);

#ifdef __cplusplus
}
#endif

#endif /* MEMFED_H */
