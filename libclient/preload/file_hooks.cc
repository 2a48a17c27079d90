#include "libclient/preload/file_hooks.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <string>

#include "libclient/preload/internal_alloc.h"
#include "libclient/preload/shim.h"

using namespace memfed::preload;
using memfed::Code;
using memfed::Result;
using memfed::Status;

#define EXPORT extern "C" __attribute__((visibility("default")))

namespace
{

constexpr uint64_t kPage = 4096;

// What stat shows of a region besides its length.
struct RegionMeta {
	uint64_t id = 0; // the inode number
	uint32_t mode = 0600;
	uint32_t uid = 0;
	uint64_t ctime_ns = 0;
};

RegionMeta meta_of(const nlohmann::json &region)
{
	return {region.value("id", uint64_t{0}), region.value("mode", 0600u) & 07777,
	        region.value("owner_uid", 0u), region.value("ctime_ns", uint64_t{0})};
}

// A region's stat, the same through a path and through an fd (cp checks).
void fill_stat(struct stat *st, const RegionMeta &m, uint64_t length)
{
	memset(st, 0, sizeof(*st));
	st->st_dev = makedev(0, 0xfed);
	st->st_ino = m.id;
	st->st_mode = S_IFREG | m.mode;
	st->st_nlink = 1;
	st->st_uid = m.uid;
	st->st_size = off_t(length);
	st->st_blksize = kPage;
	st->st_blocks = blkcnt_t((length + kPage - 1) / kPage * (kPage / 512));
	for (struct timespec *t : {&st->st_atim, &st->st_mtim, &st->st_ctim}) {
		t->tv_sec = time_t(m.ctime_ns / 1000000000);
		t->tv_nsec = long(m.ctime_ns % 1000000000);
	}
}

// One region opened as a file: a whole-region shared mapping used for read
// and write, shared by every fd of the region in this process.
struct OpenRegion {
	std::string name;
	uint64_t size = 0; // the region's: the most the file can hold
	uint64_t io_addr = 0;
	bool writable = false;
	int fds = 0;
	int length_fd = -1; // the empty memfd whose size is the file's length
	uint64_t told = 0;  // the length the module was last told of
	RegionMeta meta;
};

// A program's fd of a region; its access mode cannot change after open.
struct OpenFd {
	std::string region;
	int accmode = O_RDONLY; // O_RDONLY, O_WRONLY or O_RDWR
};

struct FileTable {
	std::mutex mu;
	std::map<std::string, OpenRegion> regions;
	std::map<int, OpenFd> fds;
	std::map<uint64_t, std::pair<uint64_t, uint64_t>>
	        maps; // returned addr -> (whole addr, whole len)
};

FileTable *g_files = nullptr;
std::mutex g_grow_mu;           // one grower at a time, so a length never goes back
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

// region.show: the region as the daemon describes it.
Result<nlohmann::json> show_region(memfed::client::PagerLink *link, const std::string &name)
{
	memfed::control::Message show;
	show.body = {{"op", "region.show"}, {"name", name}};
	auto r = link->call(show);
	Status st = r ? memfed::control::reply_status(*r) : r.status();
	if (!st)
		return st;
	return r->body["region"];
}

// region.truncate: the module's length for the region (grow_only: raised
// to `length` if shorter, never lowered).
Status set_region_length(memfed::client::PagerLink *link, const std::string &name, uint64_t length,
                         bool grow_only)
{
	memfed::control::Message m;
	m.body = {{"op", "region.truncate"},
	          {"name", name},
	          {"length", length},
	          {"grow_only", grow_only}};
	auto r = link->call(m);
	return r ? memfed::control::reply_status(*r) : r.status();
}

// The table's entry for region `name`, mapped writable if `want_write` (an
// entry mapped read-only is mapped again). `new_length_fd(length)` makes the
// length memfd of a region this process does not have open yet, or fails
// with -1 and errno. REQUIRES: t.mu held, InternalScope.
Result<OpenRegion *> region_entry(FileTable &t, memfed::client::PagerLink *link,
                                  const std::string &name, bool want_write,
                                  const std::function<int(uint64_t)> &new_length_fd)
{
	auto it = t.regions.find(name);
	if (it != t.regions.end() && (it->second.writable || !want_write))
		return &it->second;
	auto reg = show_region(link, name);
	if (!reg)
		return reg.status();
	uint64_t size = reg->value("size", uint64_t{0});
	uint64_t length = reg->value("length", size);
	if (size == 0 || size % kPage || length > size)
		return Status(Code::kProtocol, "region.show of '" + name + "' gave size " +
		                                       std::to_string(size) + " and length " +
		                                       std::to_string(length));
	auto a = link->map_shared(name, 0, size, want_write, 0, true, 0);
	if (!a)
		return a.status();
	OpenRegion o{name, size, *a, want_write};
	o.meta = meta_of(*reg);
	if (it != t.regions.end()) {
		(void)link->unmap(it->second.io_addr);
		o.fds = it->second.fds;
		o.length_fd = it->second.length_fd;
		o.told = it->second.told;
	} else {
		o.length_fd = new_length_fd(length);
		if (o.length_fd < 0) {
			Status st = Status::from_errno(errno,
			                               "the length memfd of region '" + name + "'");
			(void)link->unmap(*a);
			return st;
		}
		o.told = length;
	}
	return &t.regions.insert_or_assign(name, o).first->second;
}

// Records `fd` as one of region `o`'s. REQUIRES: t.mu held.
void add_fd(FileTable &t, OpenRegion *o, int fd, int accmode)
{
	o->fds++;
	t.fds[fd] = {o->name, accmode};
	g_any.store(true, std::memory_order_release);
}

// Opens region `name` as a file; returns the fd or -1 with errno.
int open_region(const std::string &name, int flags)
{
	auto link = shim_link();
	if (!link) {
		log_status(link.status());
		return set_errno(errno_of(link.status()));
	}
	FileTable &t = files();
	std::lock_guard<std::mutex> lk(t.mu);
	// A new region's length memfd, sealed against writes: a write that
	// misses the hooks (glibc's stdio writes without the PLT) fails loudly
	// instead of landing in this empty stand-in.
	auto o =
	        region_entry(t, *link, name, (flags & O_ACCMODE) != O_RDONLY, [&](uint64_t length) {
		        int m = int(syscall(SYS_memfd_create, ("memfed:" + name).c_str(),
		                            MFD_CLOEXEC | MFD_ALLOW_SEALING));
		        if (m >= 0 && (syscall(SYS_ftruncate, m, off_t(length)) < 0 ||
		                       syscall(SYS_fcntl, m, F_ADD_SEALS, F_SEAL_WRITE) < 0)) {
			        int err = errno;
			        syscall(SYS_close, m);
			        errno = err;
			        return -1;
		        }
		        return m;
	        });
	if (!o) {
		if (o.status().code() == Code::kNotFound && (flags & O_CREAT))
			shim_log(("region '" + name +
			          "' does not exist; create it with memfedctl region create " +
			          name + " SIZE --length 0")
			                 .c_str());
		else if (o.status().code() != Code::kNotFound)
			log_status(o.status());
		return set_errno(errno_of(o.status()));
	}
	// The program's fd: the length memfd opened afresh, so it has its own
	// file offset and flags while fstat, lseek and dup work natively.
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", (*o)->length_fd);
	int fd = int(syscall(SYS_openat, AT_FDCWD, path,
	                     (flags & O_ACCMODE) | (flags & (O_CLOEXEC | O_APPEND | O_NONBLOCK))));
	if (fd < 0)
		return -1;
	add_fd(t, *o, fd, flags & O_ACCMODE);
	return fd;
}

// The region of a memfed fd, copied out under the lock, and the fd's
// access mode.
bool lookup(int fd, OpenRegion *out, int *accmode = nullptr)
{
	if (!g_any.load(std::memory_order_acquire))
		return false;
	FileTable &t = files();
	std::lock_guard<std::mutex> lk(t.mu);
	auto it = t.fds.find(fd);
	if (it == t.fds.end())
		return false;
	*out = t.regions[it->second.region];
	if (accmode)
		*accmode = it->second.accmode;
	return true;
}

// The file's length: the size of the length memfd behind `fd`.
uint64_t file_length(int fd)
{
	struct stat st;
	return syscall(SYS_fstat, fd, &st) == 0 ? uint64_t(st.st_size) : 0;
}

// The fd's access mode and flags; -1 with errno EBADF.
int fd_flags(int fd)
{
	return int(syscall(SYS_fcntl, fd, F_GETFL));
}

bool readable(int fl)
{
	return fl >= 0 && (fl & O_ACCMODE) != O_WRONLY;
}

bool writable(int fl)
{
	return fl >= 0 && (fl & O_ACCMODE) != O_RDONLY;
}

int refuse_beyond(const OpenRegion &o, uint64_t end)
{
	InternalScope in;
	shim_log(("region '" + o.name + "' holds at most " + std::to_string(o.size) +
	          " bytes as a file, not " + std::to_string(end) +
	          "; create a larger region (memfedctl region create NAME SIZE)")
	                 .c_str());
	return set_errno(EFBIG);
}

ssize_t do_pread(int fd, const OpenRegion &o, void *buf, size_t n, uint64_t pos)
{
	uint64_t len = file_length(fd);
	if (pos >= len)
		return 0;
	n = std::min<uint64_t>(n, len - pos);
	memcpy(buf, reinterpret_cast<const void *>(o.io_addr + pos), n);
	return ssize_t(n);
}

// Writes through the mapping, then grows the file to cover what it wrote.
ssize_t do_pwrite(int fd, const OpenRegion &o, const void *buf, size_t n, uint64_t pos)
{
	if (!o.writable)
		return set_errno(EBADF);
	if (n == 0)
		return 0;
	if (pos >= o.size)
		return refuse_beyond(o, pos + n);
	n = std::min<uint64_t>(n, o.size - pos);
	memcpy(reinterpret_cast<void *>(o.io_addr + pos), buf, n);
	std::lock_guard<std::mutex> lk(g_grow_mu);
	if (file_length(fd) < pos + n && syscall(SYS_ftruncate, fd, off_t(pos + n)) < 0)
		return -1;
	return ssize_t(n);
}

// Tells the module the length this process has for region `name` if it grew
// since the module last heard; appenders elsewhere can only make it longer.
Status tell_length(const std::string &name)
{
	FileTable &t = files();
	std::unique_lock<std::mutex> lk(t.mu);
	auto it = t.regions.find(name);
	if (it == t.regions.end())
		return Status::ok();
	uint64_t len = file_length(it->second.length_fd);
	if (len <= it->second.told)
		return Status::ok();
	lk.unlock();
	auto link = shim_link();
	if (!link)
		return link.status();
	MF_RETURN_IF_ERROR(set_region_length(*link, name, len, true));
	lk.lock();
	it = t.regions.find(name);
	if (it != t.regions.end())
		it->second.told = std::max(it->second.told, len);
	return Status::ok();
}

// ftruncate: bytes past a shorter end are dropped from this node's copy
// (the partial page zeroed, whole pages punched out of the pager's memfd)
// and from the module, then the length changes.
int truncate_to(int fd, const OpenRegion &o, uint64_t len)
{
	if (len > o.size)
		return refuse_beyond(o, len);
	InternalScope in;
	auto link = shim_link();
	if (!link) {
		log_status(link.status());
		return set_errno(errno_of(link.status()));
	}
	std::lock_guard<std::mutex> lk(g_grow_mu);
	uint64_t cur = file_length(fd);
	if (len < cur) {
		// Write-backs of these pages may still be on their way to the
		// module, and the truncate travels apart from them: it could be
		// applied first and the old bytes after it. A sync sends every
		// page that differs from what the module was last known to hold
		// behind them on the same channel, and returns once all are
		// applied.
		uint64_t first = len / kPage * kPage;
		Status synced = (*link)->sync(o.io_addr + first, cur - first);
		if (!synced) {
			log_status(synced);
			return set_errno(EIO);
		}
		uint64_t page_end = std::min((len + kPage - 1) / kPage * kPage, cur);
		memset(reinterpret_cast<void *>(o.io_addr + len), 0, page_end - len);
		uint64_t cur_end = (cur + kPage - 1) / kPage * kPage;
		int memfd = (*link)->memfd_at(o.io_addr);
		if (page_end < cur_end &&
		    (memfd < 0 || fallocate(memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		                            off_t(page_end), off_t(cur_end - page_end)) < 0))
			return set_errno(EIO);
	}
	Status st = set_region_length(*link, o.name, len, false);
	if (!st) {
		log_status(st);
		return set_errno(errno_of(st));
	}
	if (syscall(SYS_ftruncate, fd, off_t(len)) < 0)
		return -1;
	FileTable &t = files();
	std::lock_guard<std::mutex> tl(t.mu);
	auto it = t.regions.find(o.name);
	if (it != t.regions.end())
		it->second.told = len;
	return 0;
}

// An fd of region `name` inherited across exec (a shell's redirection):
// registered like one this process opened, with the region mapped afresh and
// the length memfd it refers to shared with whoever else has it open.
// REQUIRES: InternalScope.
Status adopt_fd(int fd, const std::string &name)
{
	auto link = shim_link();
	if (!link)
		return link.status();
	int accmode = fd_flags(fd) & O_ACCMODE;
	FileTable &t = files();
	std::lock_guard<std::mutex> lk(t.mu);
	auto o = region_entry(t, *link, name, accmode != O_RDONLY, [fd](uint64_t) {
		return int(syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, 0));
	});
	if (!o)
		return o.status();
	add_fd(t, *o, fd, accmode);
	return Status::ok();
}

// Drops a memfed fd from the table; the last fd of a region tells the
// module its length and unmaps the region. REQUIRES: inside an InternalScope.
void forget_fd(int fd)
{
	FileTable &t = files();
	std::string last; // the region this fd was the last of
	{
		std::lock_guard<std::mutex> lk(t.mu);
		auto it = t.fds.find(fd);
		if (it == t.fds.end())
			return;
		if (--t.regions[it->second.region].fds == 0)
			last = it->second.region;
		t.fds.erase(it);
	}
	if (last.empty())
		return;
	Status st = tell_length(last);
	if (!st)
		log_status(st);
	OpenRegion o;
	{
		std::lock_guard<std::mutex> lk(t.mu);
		auto it = t.regions.find(last);
		if (it == t.regions.end() || it->second.fds != 0)
			return; // opened again meanwhile
		o = it->second;
		t.regions.erase(it);
	}
	syscall(SYS_close, o.length_fd);
	auto link = shim_link();
	st = link ? (*link)->unmap(o.io_addr) : link.status();
	if (!st)
		log_status(st);
}

// The region a path names under this run, if any. REQUIRES: InternalScope.
std::optional<std::string> region_of_path(int dirfd, const char *path)
{
	Shim *s = shim();
	if (!s || !path || (dirfd != AT_FDCWD && path[0] != '/'))
		return std::nullopt;
	return s->cfg.region_for(path, path[0] == '/' ? std::string() : cwd());
}

// stat of a region's path: a regular file of the region's length, its
// owner's and mode; -1 with errno as open would fail. REQUIRES: InternalScope.
int stat_region(const std::string &name, struct stat *st)
{
	auto link = shim_link();
	if (!link) {
		log_status(link.status());
		return set_errno(errno_of(link.status()));
	}
	auto reg = show_region(*link, name);
	if (!reg)
		return set_errno(errno_of(reg.status()));
	uint64_t length = reg->value("length", uint64_t{0});
	{
		// This process's own length, if it has the file open, is newer.
		FileTable &t = files();
		std::lock_guard<std::mutex> lk(t.mu);
		auto it = t.regions.find(name);
		if (it != t.regions.end())
			length = file_length(it->second.length_fd);
	}
	fill_stat(st, meta_of(*reg), length);
	return 0;
}

int hooked_open(int dirfd, const char *path, int flags, mode_t mode)
{
	if (t_internal || !shim())
		return int(syscall(SYS_openat, dirfd, path, flags, mode));
	InternalScope in;
	auto region = region_of_path(dirfd, path);
	if (!region)
		return int(syscall(SYS_openat, dirfd, path, flags, mode));
	if (flags & O_DIRECTORY)
		return set_errno(ENOTDIR);
	// O_EXCL asks to create the file; a region is only ever opened here
	// (it exists, or open_region fails with ENOENT).
	bool excl = (flags & (O_CREAT | O_EXCL)) == (O_CREAT | O_EXCL);
	int fd = open_region(*region, flags & ~O_PATH);
	if (fd >= 0 && excl) {
		forget_fd(fd);
		syscall(SYS_close, fd);
		return set_errno(EEXIST);
	}
	OpenRegion o;
	if (fd >= 0 && (flags & O_TRUNC) && writable(flags) && lookup(fd, &o) &&
	    truncate_to(fd, o, 0) < 0) {
		int err = errno;
		forget_fd(fd);
		syscall(SYS_close, fd);
		return set_errno(err);
	}
	return fd;
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
	// fopencookie wants 0, never a negative count, for an error (errno set).
	ssize_t r = write(int(intptr_t(c)), buf, n);
	return r < 0 ? 0 : r;
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

// A stdio stream over a memfed fd whose reads and writes go through the
// hooks (glibc's own streams call read and write without the PLT).
FILE *memfed_stream(int fd, const char *mode)
{
	cookie_io_functions_t io{cookie_read, cookie_write, cookie_seek, cookie_close};
	return fopencookie(reinterpret_cast<void *>(intptr_t(fd)), mode, io);
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
	if ((flags & MAP_TYPE) != MAP_SHARED || (flags & MAP_FIXED) || off < 0 || off % kPage ||
	    len == 0 || uint64_t(off) >= o.size) {
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

namespace memfed::preload
{

void file_adopt_inherited()
{
	int dir = int(
	        syscall(SYS_openat, AT_FDCWD, "/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
	if (dir < 0)
		return;
	// The fd numbers first: adopting opens fds of its own.
	std::vector<int> fds;
	char buf[4096];
	for (;;) {
		long n = syscall(SYS_getdents64, dir, buf, sizeof(buf));
		if (n <= 0)
			break;
		for (long off = 0; off < n;) {
			auto *d = reinterpret_cast<struct dirent64 *>(buf + off);
			off += d->d_reclen;
			char *end = nullptr;
			long fd = strtol(d->d_name, &end, 10);
			if (end != d->d_name && *end == '\0' && fd != dir)
				fds.push_back(int(fd));
		}
	}
	syscall(SYS_close, dir);
	const std::string tag = "/memfd:memfed:", gone = " (deleted)";
	for (int fd : fds) {
		char path[64], target[256];
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		ssize_t len = readlink(path, target, sizeof(target) - 1);
		if (len <= 0)
			continue;
		std::string t(target, size_t(len));
		if (t.compare(0, tag.size(), tag) != 0 || t.size() < tag.size() + gone.size() ||
		    t.compare(t.size() - gone.size(), gone.size(), gone) != 0)
			continue;
		std::string name = t.substr(tag.size(), t.size() - tag.size() - gone.size());
		Status st = adopt_fd(fd, name);
		if (st && fd <= 2) {
			// The standard streams, over a shell's redirection of them.
			FILE **std[] = {&stdin, &stdout, &stderr};
			int fl = fd_flags(fd);
			const char *mode = fd == 0 ? "r" : (fl & O_APPEND) ? "a" : "w";
			if (FILE *f = memfed_stream(fd, mode))
				*std[fd] = f;
		}
		if (!st) {
			log_status(st);
			shim_log(("fd " + std::to_string(fd) + " of region '" + name +
			          "' left to the kernel: its reads and writes miss the region")
			                 .c_str());
		}
	}
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
	std::optional<std::string> region;
	if (!t_internal && shim()) {
		InternalScope in;
		region = region_of_path(AT_FDCWD, path);
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
	FILE *f = memfed_stream(fd, mode);
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
	int acc;
	if (t_internal || !lookup(fd, &o, &acc))
		return syscall(SYS_read, fd, buf, n);
	if (!readable(acc))
		return set_errno(EBADF);
	off_t pos = off_t(syscall(SYS_lseek, fd, 0, SEEK_CUR));
	ssize_t r = do_pread(fd, o, buf, n, uint64_t(pos));
	if (r > 0)
		syscall(SYS_lseek, fd, pos + r, SEEK_SET);
	return r;
}

EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
	OpenRegion o;
	if (t_internal || !lookup(fd, &o))
		return syscall(SYS_write, fd, buf, n);
	int fl = fd_flags(fd);
	if (!writable(fl))
		return set_errno(EBADF);
	// An append finds the end and writes there as one step.
	static std::mutex append_mu;
	std::unique_lock<std::mutex> lk(append_mu, std::defer_lock);
	if (fl & O_APPEND)
		lk.lock();
	off_t pos = (fl & O_APPEND) ? off_t(file_length(fd))
	                            : off_t(syscall(SYS_lseek, fd, 0, SEEK_CUR));
	ssize_t r = do_pwrite(fd, o, buf, n, uint64_t(pos));
	if (r > 0)
		syscall(SYS_lseek, fd, pos + r, SEEK_SET);
	return r;
}

EXPORT ssize_t pread(int fd, void *buf, size_t n, off_t pos)
{
	OpenRegion o;
	int acc;
	if (t_internal || !lookup(fd, &o, &acc))
		return syscall(SYS_pread64, fd, buf, n, pos);
	if (!readable(acc))
		return set_errno(EBADF);
	if (pos < 0)
		return set_errno(EINVAL);
	return do_pread(fd, o, buf, n, uint64_t(pos));
}

EXPORT ssize_t pread64(int fd, void *buf, size_t n, off_t pos)
{
	return pread(fd, buf, n, pos);
}

EXPORT ssize_t pwrite(int fd, const void *buf, size_t n, off_t pos)
{
	OpenRegion o;
	int acc;
	if (t_internal || !lookup(fd, &o, &acc))
		return syscall(SYS_pwrite64, fd, buf, n, pos);
	if (!writable(acc))
		return set_errno(EBADF);
	if (pos < 0)
		return set_errno(EINVAL);
	return do_pwrite(fd, o, buf, n, uint64_t(pos));
}

EXPORT ssize_t pwrite64(int fd, const void *buf, size_t n, off_t pos)
{
	return pwrite(fd, buf, n, pos);
}

EXPORT int ftruncate(int fd, off_t len)
{
	OpenRegion o;
	int acc;
	if (t_internal || !lookup(fd, &o, &acc))
		return int(syscall(SYS_ftruncate, fd, len));
	if (len < 0 || !writable(acc))
		return set_errno(EINVAL); // as Linux answers both
	return truncate_to(fd, o, uint64_t(len));
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
	if (st)
		st = tell_length(o.name);
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
		forget_fd(fd);
	}
	return int(syscall(SYS_close, fd));
}

// Holes are a matter of the pages' content here: a memfed file has none.
EXPORT off_t lseek(int fd, off_t off, int whence)
{
	OpenRegion o;
	if (t_internal || (whence != SEEK_DATA && whence != SEEK_HOLE) || !lookup(fd, &o))
		return off_t(syscall(SYS_lseek, fd, off, whence));
	uint64_t len = file_length(fd);
	if (off < 0 || uint64_t(off) >= len)
		return set_errno(ENXIO);
	return off_t(syscall(SYS_lseek, fd, whence == SEEK_DATA ? off : off_t(len), SEEK_SET));
}

EXPORT off_t lseek64(int fd, off_t off, int whence)
{
	return lseek(fd, off, whence);
}

// The kernel would copy the length memfd's (absent) bytes, not the region's:
// refused with the errors on which callers fall back to read and write.
EXPORT ssize_t copy_file_range(int in, off_t *in_off, int out, off_t *out_off, size_t n,
                               unsigned flags)
{
	if (!t_internal && (file_is_memfed(in) || file_is_memfed(out)))
		return set_errno(EXDEV);
	return syscall(SYS_copy_file_range, in, in_off, out, out_off, n, flags);
}

EXPORT ssize_t sendfile(int out, int in, off_t *off, size_t n)
{
	if (!t_internal && (file_is_memfed(in) || file_is_memfed(out)))
		return set_errno(EINVAL);
	return syscall(SYS_sendfile, out, in, off, n);
}

EXPORT ssize_t sendfile64(int out, int in, off_t *off, size_t n)
{
	return sendfile(out, in, off, n);
}

// A normal exit tells the modules how far this process's files grew.
__attribute__((destructor)) static void tell_lengths_at_exit()
{
	if (!g_any.load(std::memory_order_acquire) || t_internal)
		return;
	// Streams are flushed after destructors run; their last bytes count.
	fflush(nullptr);
	InternalScope in;
	std::vector<std::string> names;
	{
		FileTable &t = files();
		std::lock_guard<std::mutex> lk(t.mu);
		for (const auto &[name, o] : t.regions)
			names.push_back(name);
	}
	for (const std::string &name : names) {
		Status st = tell_length(name);
		if (!st)
			log_status(st);
	}
}

namespace
{

// A duplicate of a memfed fd is one too: it shares the region and its length.
int adopt_dup(int oldfd, int newfd)
{
	if (newfd < 0 || newfd == oldfd)
		return newfd;
	FileTable &t = files();
	std::lock_guard<std::mutex> lk(t.mu);
	auto it = t.fds.find(oldfd);
	if (it != t.fds.end())
		add_fd(t, &t.regions[it->second.region], newfd, it->second.accmode);
	return newfd;
}

} // namespace

EXPORT int dup(int fd)
{
	int nfd = int(syscall(SYS_dup, fd));
	if (t_internal || !file_is_memfed(fd))
		return nfd;
	InternalScope in;
	return adopt_dup(fd, nfd);
}

EXPORT int dup3(int fd, int newfd, int flags)
{
	if (t_internal || !g_any.load(std::memory_order_acquire))
		return int(syscall(SYS_dup3, fd, newfd, flags));
	InternalScope in;
	if (fd != newfd && (flags & ~O_CLOEXEC) == 0 && syscall(SYS_fcntl, fd, F_GETFD) >= 0)
		forget_fd(newfd); // dup3 closes what newfd was
	return adopt_dup(fd, int(syscall(SYS_dup3, fd, newfd, flags)));
}

EXPORT int dup2(int fd, int newfd)
{
	if (fd == newfd) // dup2 checks fd and changes nothing
		return int(syscall(SYS_fcntl, fd, F_GETFD)) < 0 ? -1 : fd;
	return dup3(fd, newfd, 0);
}

// stat of a region's path or fd (ls, cp, stat): what fill_stat shows.
EXPORT int fstatat(int dirfd, const char *path, struct stat *st, int flags)
{
	if (!t_internal && shim()) {
		OpenRegion o;
		if (!path[0] && (flags & AT_EMPTY_PATH) && lookup(dirfd, &o)) {
			fill_stat(st, o.meta, file_length(dirfd));
			return 0;
		}
		InternalScope in;
		if (path[0])
			if (auto region = region_of_path(dirfd, path))
				return stat_region(*region, st);
	}
	return int(syscall(SYS_newfstatat, dirfd, path, st, flags));
}

EXPORT int fstat(int fd, struct stat *st)
{
	return fstatat(fd, "", st, AT_EMPTY_PATH);
}

EXPORT int fstat64(int fd, struct stat64 *st)
{
	return fstatat64(fd, "", st, AT_EMPTY_PATH);
}

EXPORT int fstatat64(int dirfd, const char *path, struct stat64 *st, int flags)
{
	static_assert(sizeof(struct stat64) == sizeof(struct stat));
	return fstatat(dirfd, path, reinterpret_cast<struct stat *>(st), flags);
}

EXPORT int stat(const char *path, struct stat *st)
{
	return fstatat(AT_FDCWD, path, st, 0);
}

EXPORT int stat64(const char *path, struct stat64 *st)
{
	return fstatat64(AT_FDCWD, path, st, 0);
}

EXPORT int lstat(const char *path, struct stat *st)
{
	return fstatat(AT_FDCWD, path, st, AT_SYMLINK_NOFOLLOW);
}

EXPORT int lstat64(const char *path, struct stat64 *st)
{
	return fstatat64(AT_FDCWD, path, st, AT_SYMLINK_NOFOLLOW);
}

EXPORT int statx(int dirfd, const char *path, int flags, unsigned mask, struct statx *stx)
{
	struct stat st;
	OpenRegion o;
	if (t_internal || !shim())
		return int(syscall(SYS_statx, dirfd, path, flags, mask, stx));
	if (!path[0] && (flags & AT_EMPTY_PATH) && lookup(dirfd, &o)) {
		fill_stat(&st, o.meta, file_length(dirfd));
	} else {
		InternalScope in;
		auto region = path[0] ? region_of_path(dirfd, path) : std::nullopt;
		if (!region)
			return int(syscall(SYS_statx, dirfd, path, flags, mask, stx));
		if (stat_region(*region, &st) < 0)
			return -1;
	}
	memset(stx, 0, sizeof(*stx));
	stx->stx_mask = STATX_BASIC_STATS;
	stx->stx_blksize = uint32_t(st.st_blksize);
	stx->stx_nlink = uint32_t(st.st_nlink);
	stx->stx_uid = st.st_uid;
	stx->stx_gid = st.st_gid;
	stx->stx_mode = uint16_t(st.st_mode);
	stx->stx_ino = st.st_ino;
	stx->stx_size = uint64_t(st.st_size);
	stx->stx_blocks = uint64_t(st.st_blocks);
	for (struct statx_timestamp *ts : {&stx->stx_atime, &stx->stx_mtime, &stx->stx_ctime}) {
		ts->tv_sec = st.st_mtim.tv_sec;
		ts->tv_nsec = uint32_t(st.st_mtim.tv_nsec);
	}
	return 0;
}

EXPORT FILE *fdopen(int fd, const char *mode)
{
	if (!t_internal && file_is_memfed(fd))
		return memfed_stream(fd, mode);
	using fdopen_fn = FILE *(*)(int, const char *);
	static fdopen_fn next = reinterpret_cast<fdopen_fn>(dlsym(RTLD_NEXT, "fdopen"));
	return next(fd, mode);
}
