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
 * Errors: every function that can fail returns 0 (or a count) on success and
 * a negative enum memfed_code on failure; memfed_errmsg() then gives a
 * one-line message naming the thing that failed and, where there is one, the
 * fix. Nothing is reported through errno.
 *
 * Thread-safety: a struct memfed_conn may be used by several threads at once
 * (calls are serialised inside). struct memfed_region handles are immutable
 * after memfed_region_open() and may be shared between threads. Each process
 * has at most one connection that maps memory (its userfaultfd is per
 * process); further connections may still manage regions.
 *
 * Daemon restarts: if memfedd stops while regions are mapped, threads that
 * touch a page that is not resident wait in the kernel; the library reconnects
 * on its own when memfedd comes back and the program continues. No page is
 * ever replaced by zeroes because the daemon was gone.
 *
 * Link with `pkg-config --libs memfed` or CMake `find_package(memfed)` and
 * target memfed::memfed.
 */
#ifndef MEMFED_H
#define MEMFED_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MEMFED_API __attribute__((visibility("default")))

/* Version of this header; memfed_version() gives the library's. */
#define MEMFED_VERSION_MAJOR 0
#define MEMFED_VERSION_MINOR 1

/* Failure codes, returned negated. The values match memfedd's JSON "code"
 * names (memfed_code_name()) and memfedctl's exit codes. */
enum memfed_code {
	MEMFED_OK = 0,
	MEMFED_EINVAL = 2,	 /* bad argument ("invalid_argument") */
	MEMFED_ENOTFOUND = 3,	 /* no such region or window */
	MEMFED_EEXIST = 4,	 /* a region of that name exists */
	MEMFED_ENOSPC = 5,	 /* no module has room */
	MEMFED_EPERM = 6,	 /* the region's owner or mode forbids it */
	MEMFED_ECORRUPT = 7,	 /* data on a module failed its check */
	MEMFED_EIO = 8,		 /* a system call failed */
	MEMFED_EBUSY = 9,	 /* held by someone else */
	MEMFED_EUNAVAILABLE = 10, /* memfedd not running, module unreachable */
	MEMFED_EPROTO = 11,	 /* memfedd broke the control protocol */
	MEMFED_ERANGE = 12,	 /* access past the end of a region */
	MEMFED_EINTERNAL = 13,	 /* a bug; the message says where */
};

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

/* Library version as "0.1.0". Never fails. */
MEMFED_API const char *memfed_version(void);

/* The message of the calling thread's last failed memfed call ("" if none).
 * Valid until the thread's next memfed call. Never fails. */
MEMFED_API const char *memfed_errmsg(void);

/* Stable lower-case name of a code ("not_found"); accepts a negated code too.
 * Never fails: unknown values give "unknown". */
MEMFED_API const char *memfed_code_name(int code);

/* Connects to memfedd's control socket at `socket_path`, or, if NULL, at
 * $MEMFED_SOCKET or /run/memfed/memfedd.sock. On success stores the
 * connection in *out and returns 0. Fails -MEMFED_EUNAVAILABLE when no
 * daemon listens there. */
MEMFED_API int memfed_connect(const char *socket_path, struct memfed_conn **out);

/* Unmaps every mapping made through `m` (writing back dirty pages, as
 * memfed_unmap()), then closes the connection and frees `m`. Regions opened
 * through `m` must be closed first or are closed here. NULL is ignored. */
MEMFED_API void memfed_close(struct memfed_conn *m);

/* Creates a region of `size` bytes (rounded up to the page size) owned by
 * the caller's uid, with permission `mode` (0 means 0600), on a module
 * chosen by memfedd. Its content reads as zeroes. If `info` is not NULL it
 * receives the new region's description. -MEMFED_EEXIST if the name is
 * taken, -MEMFED_ENOSPC if no module has room. Names: 1..63 bytes of
 * [A-Za-z0-9._-]. */
MEMFED_API int memfed_region_create(struct memfed_conn *m, const char *name, uint64_t size,
				    uint32_t mode, struct memfed_region_info *info);

/* Deletes region `name`. Fails -MEMFED_EBUSY while a process maps it. */
MEMFED_API int memfed_region_delete(struct memfed_conn *m, const char *name);

/* Calls `fn(info, arg)` for every region the daemon knows of, in name order,
 * and returns how many there were. Stops early (returning the count so far)
 * if `fn` returns non-zero. */
MEMFED_API int memfed_region_list(struct memfed_conn *m,
				  int (*fn)(const struct memfed_region_info *info, void *arg),
				  void *arg);

/* Looks up region `name` and returns a handle in *out. -MEMFED_ENOTFOUND if
 * no module holds it. */
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
 * the end of the region) or a negative code. */
MEMFED_API int64_t memfed_region_read(struct memfed_region *r, uint64_t offset, void *buf,
				      uint64_t length);

/* Copies `length` bytes from `buf` to `offset` of the region through the
 * daemon (like pwrite); durable on return. Returns the bytes written or a
 * negative code (-MEMFED_ERANGE past the end). */
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
 * at `addr`. -MEMFED_ENOTFOUND if `addr` is not the start of a mapping of
 * `m`. */
MEMFED_API int memfed_unmap(struct memfed_conn *m, void *addr);

/* Makes every byte of [addr, addr+length) that was written before the call
 * durable on its module (msync semantics). The range must lie in one
 * mapping; length 0 means the whole mapping. */
MEMFED_API int memfed_sync(struct memfed_conn *m, void *addr, size_t length);

/* The region and the offset in it that the mapped address `addr` shows.
 * -MEMFED_ENOTFOUND if no mapping of `m` contains `addr`. */
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
 * (writable if the caller may write it) on first use. -MEMFED_ENOTFOUND if
 * no window has that index, -MEMFED_ERANGE past the window's end. */
MEMFED_API int memfed_eva_to_ptr(struct memfed_conn *m, uint64_t eva, void **ptr);

/* The inverse: the EVA of `ptr` if it lies in a window mapped by
 * memfed_eva_to_ptr(), else `ptr` itself as a plain EVA. */
MEMFED_API int memfed_ptr_to_eva(struct memfed_conn *m, const void *ptr, uint64_t *eva);

#ifdef __cplusplus
}
#endif

#endif /* MEMFED_H */
