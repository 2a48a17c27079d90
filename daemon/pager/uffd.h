// Userfaultfd: feature detection and the ioctls the pager uses.
//
// Debian 12's uapi headers are Linux 6.1's; the host kernel is newer. The
// constants newer kernels added are defined here when the headers lack them,
// and probe_uffd() finds out at run time what this kernel really supports
// (UFFDIO_API reports the features; registering a scratch anonymous page and a
// scratch memfd page with MODE_WP proves write-protect works on each).
//
// The wrappers return negative errno (0 on success), because the fault path
// branches on specific errnos (EEXIST, EAGAIN, ESRCH) and must not allocate.
//
// Thread-safety: all functions are safe from any thread.
#pragma once

#include <linux/userfaultfd.h>

#include <cstdint>
#include <string>

#include "daemon/common/status.h"

#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef UFFDIO_POISON
struct uffdio_poison {
	struct uffdio_range range;
	__u64 mode;
	__s64 updated;
};
#define UFFDIO_POISON _IOWR(UFFDIO, 0x08, struct uffdio_poison)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16)
#endif
#ifndef UFFDIO_MOVE
struct uffdio_move {
	__u64 dst;
	__u64 src;
	__u64 len;
	__u64 mode;
	__s64 move;
};
#define UFFDIO_MOVE_MODE_DONTWAKE ((__u64)1 << 0)
#define UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES ((__u64)1 << 1)
#define UFFDIO_MOVE _IOWR(UFFDIO, 0x05, struct uffdio_move)
#endif

namespace memfed::pager
{

constexpr uint64_t kPageSize = 4096;

// What this kernel's userfaultfd offers, and what the pager asks clients for.
struct UffdCaps {
	uint64_t kernel_features = 0; // everything UFFDIO_API reported
	bool anon_wp = false;         // MODE_WP registers on private anonymous memory
	bool shmem_wp = false;        // MODE_WP registers on a memfd mapping
	bool minor_shmem = false;
	bool event_fork = false;
	// Writes to write-protected pages resolved by the kernel, found later
	// by PAGEMAP_SCAN (same kernel, 6.7): offered with MOVE (async_dirty.cc).
	bool wp_async = false;
	// The kernel refuses UFFDIO_MOVE issued from any process but the
	// uffd's own ("cross-mm", EINVAL; fs/userfaultfd.c userfaultfd_move;
	// uffd_move_test.cc), so the pager cannot move a client's page out.
	// Only a thread of the client can (doc/design/move-eviction.md): with
	// it, clients get the feature and map a staging area (map_protocol.h).
	bool move = false;
	bool poison = false;

	// Features a client requests in UFFDIO_API.
	uint64_t client_features() const;
	// Register modes for "private" and "shared" mappings.
	uint64_t private_register_mode() const;
	uint64_t shared_register_mode() const;
	// "WP_ASYNC MOVE ..." for logs and stats.
	std::string describe() const;
};

// Opens a scratch userfaultfd and probes the kernel. Fails with a hint when
// userfaultfd is unavailable (vm.unprivileged_userfaultfd, seccomp, ...).
Result<UffdCaps> probe_uffd();

// Creates a userfaultfd with `features` enabled (used by tests and the
// benchmark, which play the client).
Result<int> open_uffd(uint64_t features, bool user_mode_only);

// Resolves [dst, dst+len) with the bytes at src. `*copied` gets the bytes
// installed before any error (a page that exists already stops the copy
// with -EEXIST).
int uffd_copy(int uffd, uint64_t dst, const void *src, uint64_t len, bool wp, int64_t *copied);
// Sets (wp = true) or clears write-protection; clearing wakes waiters unless
// dontwake (the kernel rejects dontwake with wp = true).
int uffd_writeprotect(int uffd, uint64_t addr, uint64_t len, bool wp, bool dontwake);
int uffd_wake(int uffd, uint64_t addr, uint64_t len);
// Resolves [addr, addr+len) with poisoned entries: an access there raises
// SIGBUS, as a hardware memory error would (needs UFFD_FEATURE_POISON).
int uffd_poison(int uffd, uint64_t addr, uint64_t len);
// Moves the pages of [src, src+len) to [dst, dst+len) in the uffd's own
// process; only a thread of that process may call it (-EINVAL otherwise).
// `*moved` gets the bytes moved before any error. -EEXIST: a destination page
// is not empty; -EBUSY: a source page is shared (after fork) or pinned;
// -ENOENT: a source page is missing (unless ALLOW_SRC_HOLES); -EINVAL: a
// range not anonymous private memory registered on this uffd; -EAGAIN: it
// stopped part-way (`*moved` says where; call again for the rest, and its
// reason) or an address-space event is pending.
int uffd_move(int uffd, uint64_t dst, uint64_t src, uint64_t len, uint64_t mode, int64_t *moved);
int uffd_register(int uffd, uint64_t addr, uint64_t len, uint64_t mode);
int uffd_unregister(int uffd, uint64_t addr, uint64_t len);

} // namespace memfed::pager
