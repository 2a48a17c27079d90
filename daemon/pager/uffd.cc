#include "daemon/pager/uffd.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace memfed::pager
{

namespace
{

// Registers one scratch page of `fd` (or anonymous memory when fd < 0) with
// MISSING|WP on `uffd`; true if the kernel accepts it.
bool can_register_wp(int uffd, int fd)
{
	int flags = fd < 0 ? MAP_PRIVATE | MAP_ANONYMOUS : MAP_SHARED;
	void *p = mmap(nullptr, kPageSize, PROT_READ | PROT_WRITE, flags, fd, 0);
	if (p == MAP_FAILED)
		return false;
	auto addr = reinterpret_cast<uint64_t>(p);
	bool ok = uffd_register(uffd, addr, kPageSize,
	                        UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP) == 0;
	if (ok)
		(void)uffd_unregister(uffd, addr, kPageSize);
	munmap(p, kPageSize);
	return ok;
}

} // namespace

uint64_t UffdCaps::client_features() const
{
	uint64_t f = UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE |
	             UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_MISSING_SHMEM;
	if (event_fork)
		f |= UFFD_FEATURE_EVENT_FORK;
	if (anon_wp)
		f |= UFFD_FEATURE_PAGEFAULT_FLAG_WP;
	if (shmem_wp)
		f |= UFFD_FEATURE_WP_HUGETLBFS_SHMEM;
	if (poison)
		f |= UFFD_FEATURE_POISON;
	// Only enables the ioctl, which the client's evictor issues (the map
	// protocol's "Staging").
	if (move)
		f |= UFFD_FEATURE_MOVE;
	return f & kernel_features;
}

uint64_t UffdCaps::private_register_mode() const
{
	return UFFDIO_REGISTER_MODE_MISSING | (anon_wp ? UFFDIO_REGISTER_MODE_WP : 0);
}

uint64_t UffdCaps::shared_register_mode() const
{
	return UFFDIO_REGISTER_MODE_MISSING | (shmem_wp ? UFFDIO_REGISTER_MODE_WP : 0);
}

std::string UffdCaps::describe() const
{
	std::string s;
	auto add = [&s](bool on, const char *name) {
		if (!on)
			return;
		if (!s.empty())
			s += ' ';
		s += name;
	};
	add(anon_wp, "WP");
	add(shmem_wp, "WP_SHMEM");
	add(minor_shmem, "MINOR_SHMEM");
	add(event_fork, "EVENT_FORK");
	add(wp_async, "WP_ASYNC");
	add(move, "MOVE");
	add(poison, "POISON");
	return s.empty() ? "MISSING only" : s;
}

Result<int> open_uffd(uint64_t features, bool user_mode_only)
{
	int flags = O_CLOEXEC | O_NONBLOCK | (user_mode_only ? UFFD_USER_MODE_ONLY : 0);
	int fd = static_cast<int>(syscall(SYS_userfaultfd, flags));
	if (fd < 0)
		return Status::from_errno(errno, "userfaultfd() (as non-root, set "
		                                 "vm.unprivileged_userfaultfd=1 or use "
		                                 "UFFD_USER_MODE_ONLY)");
	uffdio_api api{};
	api.api = UFFD_API;
	api.features = features;
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		int err = errno;
		close(fd);
		return Status::from_errno(err,
		                          "UFFDIO_API with features 0x" + std::to_string(features));
	}
	return fd;
}

Result<UffdCaps> probe_uffd()
{
	// With no features requested, UFFDIO_API reports every feature the
	// kernel has; using them needs another uffd that asks for them.
	int probe = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
	if (probe < 0)
		return Status::from_errno(errno, "userfaultfd() (memfedd's pager must run as root "
		                                 "or with CAP_SYS_PTRACE)");
	uffdio_api api{};
	api.api = UFFD_API;
	int r = ioctl(probe, UFFDIO_API, &api);
	int err = errno;
	close(probe);
	if (r < 0)
		return Status::from_errno(err, "probing userfaultfd features (UFFDIO_API)");
	UffdCaps caps;
	caps.kernel_features = api.features;
	caps.minor_shmem = api.features & UFFD_FEATURE_MINOR_SHMEM;
	caps.event_fork = api.features & UFFD_FEATURE_EVENT_FORK;
	caps.wp_async = api.features & UFFD_FEATURE_WP_ASYNC;
	caps.move = api.features & UFFD_FEATURE_MOVE;
	caps.poison = api.features & UFFD_FEATURE_POISON;
	for (uint64_t need :
	     {uint64_t{UFFD_FEATURE_EVENT_REMAP}, uint64_t{UFFD_FEATURE_EVENT_REMOVE},
	      uint64_t{UFFD_FEATURE_EVENT_UNMAP}, uint64_t{UFFD_FEATURE_THREAD_ID}}) {
		if (!(api.features & need))
			return Status(Code::kUnavailable,
			              "this kernel's userfaultfd lacks feature 0x" +
			                      std::to_string(need) +
			                      " (memfed's pager needs Linux 4.14 or newer)");
	}

	// Write-protect: prove it by registering, on a uffd with the WP feature.
	auto wfd = open_uffd(api.features &
	                             (UFFD_FEATURE_PAGEFAULT_FLAG_WP |
	                              UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_MISSING_SHMEM),
	                     false);
	if (wfd) {
		if (api.features & UFFD_FEATURE_PAGEFAULT_FLAG_WP)
			caps.anon_wp = can_register_wp(*wfd, -1);
		if (api.features & UFFD_FEATURE_WP_HUGETLBFS_SHMEM) {
			int mfd = memfd_create("memfed-probe", MFD_CLOEXEC);
			if (mfd >= 0 && ftruncate(mfd, kPageSize) == 0)
				caps.shmem_wp = can_register_wp(*wfd, mfd);
			if (mfd >= 0)
				close(mfd);
		}
		close(*wfd);
	}
	return caps;
}

int uffd_copy(int uffd, uint64_t dst, const void *src, uint64_t len, bool wp, int64_t *copied)
{
	uffdio_copy c{};
	c.dst = dst;
	c.src = reinterpret_cast<uint64_t>(src);
	c.len = len;
	c.mode = wp ? UFFDIO_COPY_MODE_WP : 0;
	int r = ioctl(uffd, UFFDIO_COPY, &c);
	int err = r < 0 ? errno : 0;
	if (copied != nullptr)
		*copied = c.copy > 0 ? c.copy : 0;
	return -err;
}

int uffd_writeprotect(int uffd, uint64_t addr, uint64_t len, bool wp, bool dontwake)
{
	uffdio_writeprotect w{};
	w.range.start = addr;
	w.range.len = len;
	w.mode = (wp ? UFFDIO_WRITEPROTECT_MODE_WP : 0) |
	         (dontwake ? UFFDIO_WRITEPROTECT_MODE_DONTWAKE : 0);
	return ioctl(uffd, UFFDIO_WRITEPROTECT, &w) < 0 ? -errno : 0;
}

int uffd_wake(int uffd, uint64_t addr, uint64_t len)
{
	uffdio_range r{addr, len};
	return ioctl(uffd, UFFDIO_WAKE, &r) < 0 ? -errno : 0;
}

int uffd_poison(int uffd, uint64_t addr, uint64_t len)
{
	uffdio_poison r{};
	r.range.start = addr;
	r.range.len = len;
	return ioctl(uffd, UFFDIO_POISON, &r) < 0 ? -errno : 0;
}

int uffd_move(int uffd, uint64_t dst, uint64_t src, uint64_t len, uint64_t mode, int64_t *moved)
{
	uffdio_move m{};
	m.dst = dst;
	m.src = src;
	m.len = len;
	m.mode = mode;
	int r = ioctl(uffd, UFFDIO_MOVE, &m);
	int err = r < 0 ? errno : 0;
	if (moved != nullptr)
		*moved = m.move > 0 ? m.move : 0;
	return -err;
}

int uffd_register(int uffd, uint64_t addr, uint64_t len, uint64_t mode)
{
	uffdio_register r{};
	r.range.start = addr;
	r.range.len = len;
	r.mode = mode;
	return ioctl(uffd, UFFDIO_REGISTER, &r) < 0 ? -errno : 0;
}

int uffd_unregister(int uffd, uint64_t addr, uint64_t len)
{
	uffdio_range r{addr, len};
	return ioctl(uffd, UFFDIO_UNREGISTER, &r) < 0 ? -errno : 0;
}

} // namespace memfed::pager
