#include "daemon/pager/shared_window.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "daemon/pager/process.h"
#include "daemon/pager/uffd.h"

namespace memfed::pager
{

SharedWindow::SharedWindow(std::string k, const Mapping &first, int fd)
    : key(std::move(k)), region(first.region), region_id(first.region_id), fa_base(first.fa_base),
      npages(first.npages), memfd(fd), pages(first.npages), crc(first.npages, kCrcUnknown)
{
}

SharedWindow::~SharedWindow()
{
	if (memfd >= 0)
		close(memfd);
}

Result<int> SharedWindow::create_memfd(const std::string &region, uint32_t pages)
{
	std::string name = "memfed:" + region;
	int fd = memfd_create(name.c_str(), MFD_CLOEXEC);
	if (fd < 0)
		return Status::from_errno(errno, "memfd_create for region '" + region + "'");
	if (ftruncate(fd, off_t(pages) * off_t(kPageSize)) < 0) {
		int err = errno;
		close(fd);
		return Status::from_errno(err, "sizing the memfd of region '" + region + "'");
	}
	return fd;
}

Status SharedWindow::check_memfd(int fd, uint32_t pages)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return Status::from_errno(errno, "fstat of the client's memfd");
	// memfds answer F_GET_SEALS; other files do not.
	if (!S_ISREG(st.st_mode) || fcntl(fd, F_GET_SEALS) < 0)
		return Status(Code::kInvalidArgument, "fds[0] of a shared \"map\" is not a memfd");
	if (uint64_t(st.st_size) < uint64_t(pages) * kPageSize)
		return Status(Code::kInvalidArgument,
		              "the client's memfd is smaller than the mapping");
	return Status::ok();
}

// The part of window pages [first, first+count) that mapper `mp` maps, as an
// address range in its process; false if it maps none of them.
static bool mapper_range(const SharedWindow::Mapper &mp, uint32_t first, uint32_t count,
                         uint64_t *addr, uint64_t *len)
{
	const Mapping *m = mp.mapping;
	uint32_t a = std::max(first, m->window_first);
	uint32_t b = std::min(first + count, m->window_first + m->npages);
	if (a >= b)
		return false;
	*addr = m->page_addr(a - m->window_first);
	*len = uint64_t(b - a) * kPageSize;
	return true;
}

void SharedWindow::wake_all(uint32_t first, uint32_t count)
{
	uint64_t a, l;
	for (const Mapper &mp : mappers)
		if (mapper_range(mp, first, count, &a, &l))
			(void)uffd_wake(mp.mapping->uffd(), a, l);
}

bool SharedWindow::write_protect_all(uint32_t first, uint32_t count, bool wp)
{
	uint64_t a, l;
	bool ok = true;
	for (const Mapper &mp : mappers) {
		if (!mapper_range(mp, first, count, &a, &l))
			continue;
		int r = uffd_writeprotect(mp.mapping->uffd(), a, l, wp, false);
		if (r < 0 && !(r == -ENOENT && mp.proc->dead))
			ok = false;
	}
	return ok;
}

bool SharedWindow::all_ready() const
{
	for (const Mapper &mp : mappers)
		if (!mp.ready)
			return false;
	return true;
}

bool SharedWindow::in_memfd(uint32_t idx) const
{
	off_t off = off_t(idx) * off_t(kPageSize);
	off_t d = lseek(memfd, off, SEEK_DATA);
	return d == off;
}

int SharedWindow::fill(uint32_t idx, const void *src, uint32_t count) const
{
	size_t len = size_t(count) * kPageSize;
	ssize_t r = pwrite(memfd, src, len, off_t(idx) * off_t(kPageSize));
	return r == ssize_t(len) ? 0 : r < 0 ? -errno : -EIO;
}

int SharedWindow::read(uint32_t idx, void *dst, uint32_t count) const
{
	size_t len = size_t(count) * kPageSize;
	ssize_t r = pread(memfd, dst, len, off_t(idx) * off_t(kPageSize));
	return r == ssize_t(len) ? 0 : r < 0 ? -errno : -EIO;
}

int SharedWindow::punch(uint32_t idx, uint32_t count) const
{
	return fallocate(memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
	                 off_t(idx) * off_t(kPageSize), off_t(count) * off_t(kPageSize)) < 0
	               ? -errno
	               : 0;
}

void SharedWindow::adopt_present()
{
	off_t end = off_t(npages) * off_t(kPageSize);
	off_t pos = 0;
	while (pos < end) {
		off_t d = lseek(memfd, pos, SEEK_DATA);
		if (d < 0 || d >= end)
			break;
		off_t h = lseek(memfd, d, SEEK_HOLE);
		if (h < 0 || h > end)
			h = end;
		for (off_t o = d; o < h; o += off_t(kPageSize)) {
			uint32_t i = uint32_t(o / off_t(kPageSize));
			if (pages[i].state != PageState::kResident) {
				pages[i].state = PageState::kResident;
				pages[i].flags = kRef;
				crc[i] = kCrcUnknown;
				resident++;
			}
		}
		pos = h;
	}
}

} // namespace memfed::pager
