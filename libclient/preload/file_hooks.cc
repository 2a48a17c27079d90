#include "libclient/preload/file_hooks.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <string>

#include "libclient/preload/internal_alloc.h"
#include "libclient/preload/shim.h"

using namespace memfed::preload;
using memfed::Code;
using memfed::Status;

#define EXPORT extern "C" __attribute__((visibility("default")))

namespace
{

constexpr uint64_t kPage = 4096;

// One region opened as a file: a whole-region shared mapping used for read
// and write, shared by every fd of the region in this process.
struct OpenRegion {
	std::string name;
	uint64_t size = 0;
	uint64_t io_addr = 0;
	bool writable = false;
	int fds = 0;
};

struct FileTable {
	std::mutex mu;
	std::map<std::string, OpenRegion> regions;
	std::map<int, std::string> fds; // fd -> region
	std::map<uint64_t, std::pair<uint64_t, uint64_t>>
	        maps; // returned addr -> (whole addr, whole len)
};

FileTable *g_files = nullptr;
std::atomic<bool> g_any{false}; // any memfed fd or mapping ever: the fast path

FileTable &files()
{
	if (!g_files)
		g_files = new FileTable();
	return *g_files;
}

int set_errno(int err)
{
	errno = err;
	return -1;
}

void log_status(const Status &st)
{
	std::string m = st.to_string();
	shim_log(m.c_str());
}

int errno_of(const Status &st)
{
	switch (st.code()) {
	case Code::kNotFound:
		return ENOENT;
	case Code::kPermission:
		return EACCES;
	case Code::kNoSpace:
		return ENOSPC;
	case Code::kInvalidArgument:
		return EINVAL;
	case Code::kUnavailable:
		return EAGAIN;
	default:
		return EIO;
	}
}

std::string cwd()
{
	char buf[4096];
	return getcwd(buf, sizeof(buf)) ? std::string(buf) : std::string("/");
}

// Opens region `name` as a file; returns the fd or -1 with errno.
int open_region(const std::string &name, int flags)
{
	auto link = shim_link();
	if (!link) {
		log_status(link.status());
		return set_errno(errno_of(link.status()));
	}
	bool want_write = (flags & O_ACCMODE) != O_RDONLY;
	FileTable &t = files();
	std::lock_guard<std::mutex> lk(t.mu);
	auto it = t.regions.find(name);
	if (it == t.regions.end() || (want_write && !it->second.writable)) {
		memfed::control::Message show;
		show.body = {{"op", "region.show"}, {"name", name}};
		auto r = (*link)->call(show);
		Status st = r ? memfed::control::reply_status(*r) : r.status();
		if (!st) {
			if (st.code() == Code::kNotFound && (flags & O_CREAT))
				shim_log(("region '" + name +
				          "' does not exist; create it with memfedctl region "
				          "create " +
				          name + " SIZE")
				                 .c_str());
			return set_errno(errno_of(st));
		}
		uint64_t size = r->body["region"].value("size", uint64_t{0});
		if (size == 0 || size % kPage)
			return set_errno(EIO);
		auto a = (*link)->map_shared(name, 0, size, want_write, 0, true, 0);
		if (!a) {
			log_status(a.status());
			return set_errno(errno_of(a.status()));
		}
		OpenRegion o{name, size, *a, want_write,
		             it == t.regions.end() ? 0 : it->second.fds};
		if (it != t.regions.end())
			(void)(*link)->unmap(it->second.io_addr);
		it = t.regions.insert_or_assign(name, o).first;
	}
	// The program's fd: the region's memfd opened afresh, so it has its
	// own file offset while fstat, lseek and dup work natively.
	int memfd = (*link)->memfd_at(it->second.io_addr);
	if (memfd < 0)
		return set_errno(EIO);
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", memfd);
	int fd = int(syscall(SYS_openat, AT_FDCWD, path,
	                     (want_write ? O_RDWR : O_RDONLY) | (flags & O_CLOEXEC)));
	if (fd < 0)
		return -1;
	it->second.fds++;
	t.fds[fd] = name;
	g_any.store(true, std::memory_order_release);
	return fd;
}

// The region of a memfed fd, copied out under the lock.
bool lookup(int fd, OpenRegion *out)
{
	if (!g_any.load(std::memory_order_acquire))
		return false;
	FileTable &t = files();
	std::lock_guard<std::mutex> lk(t.mu);
	auto it = t.fds.find(fd);
	if (it == t.fds.end())
		return false;
	*out = t.regions[it->second];
	return true;
}

ssize_t do_pread(const OpenRegion &o, void *buf, size_t n, uint64_t pos)
{
	if (pos >= o.size)
		return 0;
	n = std::min<uint64_t>(n, o.size - pos);
	memcpy(buf, reinterpret_cast<const void *>(o.io_addr + pos), n);
	return ssize_t(n);
}

ssize_t do_pwrite(const OpenRegion &o, const void *buf, size_t n, uint64_t pos)
{
	if (!o.writable)
		return set_errno(EBADF);
	if (n == 0)
		return 0;
	if (pos >= o.size)
		return set_errno(EFBIG);
	n = std::min<uint64_t>(n, o.size - pos);
	memcpy(reinterpret_cast<void *>(o.io_addr + pos), buf, n);
	return ssize_t(n);
}

int hooked_open(int dirfd, const char *path, int flags, mode_t mode)
{
	Shim *s = shim();
	if (!s || t_internal || !path || (dirfd != AT_FDCWD && path[0] != '/'))
		return int(syscall(SYS_openat, dirfd, path, flags, mode));
	InternalScope in;
	auto region = s->cfg.region_for(path, path[0] == '/' ? std::string() : cwd());
	if (!region)
		return int(syscall(SYS_openat, dirfd, path, flags, mode));
	return open_region(*region, flags);
}

mode_t mode_arg(int flags, va_list ap)
{
	return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? mode_t(va_arg(ap, int)) : 0;
}

// fopen() streams over memfed fds read and write through the hooks.
ssize_t cookie_read(void *c, char *buf, size_t n)
{
	return read(int(intptr_t(c)), buf, n);
}
ssize_t cookie_write(void *c, const char *buf, size_t n)
{
	return write(int(intptr_t(c)), buf, n);
}
int cookie_seek(void *c, off64_t *pos, int whence)
{
	off_t r = lseek(int(intptr_t(c)), *pos, whence);
	if (r < 0)
		return -1;
	*pos = r;
	return 0;
}
int cookie_close(void *c)
{
	return close(int(intptr_t(c)));
}

int fopen_flags(const char *mode)
{
	int acc = O_RDONLY, extra = 0;
	switch (mode[0]) {
	case 'r':
		acc = O_RDONLY;
		break;
	case 'w':
		acc = O_WRONLY, extra = O_CREAT | O_TRUNC;
		break;
	case 'a':
		acc = O_WRONLY, extra = O_CREAT | O_APPEND;
		break;
	default:
		return -1;
	}
	for (const char *p = mode + 1; *p; p++)
		if (*p == '+')
			acc = O_RDWR;
		else if (*p == 'e')
			extra |= O_CLOEXEC;
	return acc | extra;
}

} // namespace

namespace memfed::preload
{

bool file_is_memfed(int fd)
{
	OpenRegion o;
	return lookup(fd, &o);
}

void *file_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	OpenRegion o;
	if (!lookup(fd, &o))
		return raw_mmap(addr, len, prot, flags, fd, off);
	if ((flags & MAP_TYPE) != MAP_SHARED || (flags & MAP_FIXED) || off % kPage || len == 0 ||
	    uint64_t(off) >= o.size) {
		errno = (flags & MAP_TYPE) != MAP_SHARED ? ENOTSUP : EINVAL;
		if ((flags & MAP_TYPE) != MAP_SHARED)
			shim_log("memfed files support MAP_SHARED mappings only");
		return MAP_FAILED;
	}
	if ((prot & PROT_WRITE) && !o.writable) {
		errno = EACCES;
		return MAP_FAILED;
	}
	auto link = shim_link();
	if (!link)
		return errno = EAGAIN, MAP_FAILED;
	// The whole region, so every mapping of it shares the pager's memfd.
	auto a = (*link)->map_shared(o.name, 0, o.size, prot & PROT_WRITE, 0, true,
	                             reinterpret_cast<uint64_t>(addr));
	if (!a) {
		log_status(a.status());
		errno = errno_of(a.status());
		return MAP_FAILED;
	}
	uint64_t ret = *a + uint64_t(off);
	FileTable &t = files();
	std::lock_guard<std::mutex> lk(t.mu);
	t.maps[ret] = {*a, o.size};
	return reinterpret_cast<void *>(ret);
}

bool file_munmap(void *addr, size_t)
{
	if (!g_any.load(std::memory_order_acquire))
		return false;
	uint64_t whole;
	{
		FileTable &t = files();
		std::lock_guard<std::mutex> lk(t.mu);
		auto it = t.maps.find(reinterpret_cast<uint64_t>(addr));
		if (it == t.maps.end())
			return false;
		whole = it->second.first;
		t.maps.erase(it);
	}
	auto link = shim_link();
	if (link) {
		Status st = (*link)->unmap(whole);
		if (!st)
			log_status(st);
	}
	return true;
}

} // namespace memfed::preload

EXPORT int open(const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = mode_arg(flags, ap);
	va_end(ap);
	return hooked_open(AT_FDCWD, path, flags, mode);
}

EXPORT int open64(const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = mode_arg(flags, ap);
	va_end(ap);
	return hooked_open(AT_FDCWD, path, flags | O_LARGEFILE, mode);
}

EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = mode_arg(flags, ap);
	va_end(ap);
	return hooked_open(dirfd, path, flags, mode);
}

EXPORT int openat64(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = mode_arg(flags, ap);
	va_end(ap);
	return hooked_open(dirfd, path, flags | O_LARGEFILE, mode);
}

EXPORT int creat(const char *path, mode_t mode)
{
	return hooked_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}

EXPORT int creat64(const char *path, mode_t mode)
{
	return creat(path, mode);
}

EXPORT FILE *fopen(const char *path, const char *mode)
{
	Shim *s = shim();
	std::optional<std::string> region;
	if (s && !t_internal && path) {
		InternalScope in;
		region = s->cfg.region_for(path, path[0] == '/' ? std::string() : cwd());
	}
	if (!region) {
		using fopen_fn = FILE *(*)(const char *, const char *);
		static fopen_fn next = reinterpret_cast<fopen_fn>(dlsym(RTLD_NEXT, "fopen"));
		return next(path, mode);
	}
	int flags = fopen_flags(mode);
	if (flags < 0) {
		errno = EINVAL;
		return nullptr;
	}
	int fd = hooked_open(AT_FDCWD, path, flags, 0644);
	if (fd < 0)
		return nullptr;
	if (flags & O_APPEND)
		lseek(fd, 0, SEEK_END);
	cookie_io_functions_t io{cookie_read, cookie_write, cookie_seek, cookie_close};
	FILE *f = fopencookie(reinterpret_cast<void *>(intptr_t(fd)), mode, io);
	if (!f)
		close(fd);
	return f;
}

EXPORT FILE *fopen64(const char *path, const char *mode)
{
	return fopen(path, mode);
}

EXPORT ssize_t read(int fd, void *buf, size_t n)
{
	OpenRegion o;
	if (t_internal || !lookup(fd, &o))
		return syscall(SYS_read, fd, buf, n);
	off_t pos = lseek(fd, 0, SEEK_CUR);
	ssize_t r = do_pread(o, buf, n, uint64_t(pos));
	if (r > 0)
		lseek(fd, pos + r, SEEK_SET);
	return r;
}

EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
	OpenRegion o;
	if (t_internal || !lookup(fd, &o))
		return syscall(SYS_write, fd, buf, n);
	int fl = int(syscall(SYS_fcntl, fd, F_GETFL));
	off_t pos = (fl >= 0 && (fl & O_APPEND)) ? off_t(o.size) : lseek(fd, 0, SEEK_CUR);
	ssize_t r = do_pwrite(o, buf, n, uint64_t(pos));
	if (r > 0)
		lseek(fd, pos + r, SEEK_SET);
	return r;
}

EXPORT ssize_t pread(int fd, void *buf, size_t n, off_t pos)
{
	OpenRegion o;
	if (t_internal || !lookup(fd, &o))
		return syscall(SYS_pread64, fd, buf, n, pos);
	if (pos < 0)
		return set_errno(EINVAL);
	return do_pread(o, buf, n, uint64_t(pos));
}

EXPORT ssize_t pread64(int fd, void *buf, size_t n, off_t pos)
{
	return pread(fd, buf, n, pos);
}

EXPORT ssize_t pwrite(int fd, const void *buf, size_t n, off_t pos)
{
	OpenRegion o;
	if (t_internal || !lookup(fd, &o))
		return syscall(SYS_pwrite64, fd, buf, n, pos);
	if (pos < 0)
		return set_errno(EINVAL);
	return do_pwrite(o, buf, n, uint64_t(pos));
}

EXPORT ssize_t pwrite64(int fd, const void *buf, size_t n, off_t pos)
{
	return pwrite(fd, buf, n, pos);
}

EXPORT int ftruncate(int fd, off_t len)
{
	OpenRegion o;
	if (t_internal || !lookup(fd, &o))
		return int(syscall(SYS_ftruncate, fd, len));
	if (len >= 0 && uint64_t(len) == o.size)
		return 0;
	InternalScope in;
	shim_log(("region '" + o.name + "' has a fixed size of " + std::to_string(o.size) +
	          " bytes; ftruncate to another size is refused")
	                 .c_str());
	return set_errno(EINVAL);
}

EXPORT int ftruncate64(int fd, off_t len)
{
	return ftruncate(fd, len);
}

EXPORT int fsync(int fd)
{
	OpenRegion o;
	if (t_internal || !lookup(fd, &o))
		return int(syscall(SYS_fsync, fd));
	InternalScope in;
	auto link = shim_link();
	Status st = link ? (*link)->sync(o.io_addr, o.size) : link.status();
	if (!st) {
		log_status(st);
		return set_errno(EIO);
	}
	return 0;
}

EXPORT int fdatasync(int fd)
{
	return fsync(fd);
}

EXPORT int msync(void *addr, size_t len, int flags)
{
	if (g_any.load(std::memory_order_acquire) && !t_internal) {
		InternalScope in;
		auto link = shim_link();
		if (link && (*link)->locate(reinterpret_cast<uint64_t>(addr))) {
			Status st = (*link)->sync(reinterpret_cast<uint64_t>(addr), len);
			if (!st) {
				log_status(st);
				return set_errno(EIO);
			}
			return 0;
		}
	}
	(void)flags;
	return int(syscall(SYS_msync, addr, len, flags));
}

EXPORT int close(int fd)
{
	if (g_any.load(std::memory_order_acquire) && !t_internal) {
		InternalScope in;
		FileTable &t = files();
		std::string unmap_region;
		uint64_t unmap_addr = 0;
		{
			std::lock_guard<std::mutex> lk(t.mu);
			auto it = t.fds.find(fd);
			if (it != t.fds.end()) {
				auto &o = t.regions[it->second];
				if (--o.fds == 0) {
					unmap_addr = o.io_addr;
					t.regions.erase(it->second);
				}
				t.fds.erase(it);
			}
		}
		if (unmap_addr) {
			auto link = shim_link();
			if (link) {
				Status st = (*link)->unmap(unmap_addr);
				if (!st)
					log_status(st);
			}
		}
	}
	return int(syscall(SYS_close, fd));
}
