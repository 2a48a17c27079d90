#include "daemon/store/pool_file.h"

#include <fcntl.h>
#include <libpmem2.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace memfed::store
{

namespace
{

Status pmem2_error(const std::string &what)
{
	return Status(Code::kIo, what + ": " + pmem2_errormsg());
}

} // namespace

Result<std::unique_ptr<PoolFile>> PoolFile::open(const std::string &path, bool writable,
                                                 bool create)
{
	int flags = (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | (create ? O_CREAT : 0);
	int fd = ::open(path.c_str(), flags, 0600);
	if (fd < 0) {
		int err = errno;
		if (err == ENOENT)
			return Status(
			        Code::kNotFound,
			        "pool " + path +
			                " does not exist; create it with `memfedctl pool format " +
			                path + " --size SIZE` (or let memfedd create it at start)");
		if (err == EACCES || err == EPERM)
			return Status(Code::kPermission,
			              "cannot open pool " + path + ": " + strerror(err));
		return Status::from_errno(err, "open pool " + path);
	}
	struct stat st;
	if (fstat(fd, &st) != 0) {
		int err = errno;
		::close(fd);
		return Status::from_errno(err, "stat pool " + path);
	}
	if (!S_ISREG(st.st_mode) && !S_ISCHR(st.st_mode)) {
		::close(fd);
		return Status(Code::kInvalidArgument,
		              "pool " + path +
		                      " is neither a regular file nor a DAX character device");
	}
	return std::unique_ptr<PoolFile>(new PoolFile(path, fd, S_ISCHR(st.st_mode)));
}

PoolFile::~PoolFile()
{
	if (map_ != nullptr)
		pmem2_map_delete(&map_);
	if (src_ != nullptr)
		pmem2_source_delete(&src_);
	::close(fd_);
}

Status PoolFile::lock()
{
	if (flock(fd_, LOCK_EX | LOCK_NB) == 0)
		return Status::ok();
	if (errno == EWOULDBLOCK)
		return Status(Code::kBusy,
		              "pool " + path_ + " is in use by another memfedd (lock held)");
	return Status::from_errno(errno, "lock pool " + path_);
}

Result<uint64_t> PoolFile::size() const
{
	if (!is_device_) {
		struct stat st;
		if (fstat(fd_, &st) != 0)
			return Status::from_errno(errno, "stat pool " + path_);
		return static_cast<uint64_t>(st.st_size);
	}
	pmem2_source *src = nullptr;
	if (pmem2_source_from_fd(&src, fd_) != 0)
		return pmem2_error("pool " + path_);
	size_t bytes = 0;
	int rc = pmem2_source_size(src, &bytes);
	pmem2_source_delete(&src);
	if (rc != 0)
		return pmem2_error("size of pool " + path_);
	return static_cast<uint64_t>(bytes);
}

Status PoolFile::reset_size(uint64_t bytes)
{
	if (ftruncate(fd_, 0) != 0 || ftruncate(fd_, static_cast<off_t>(bytes)) != 0)
		return Status::from_errno(errno, "resize pool " + path_ + " to " +
		                                         std::to_string(bytes) + " bytes");
	return Status::ok();
}

Status PoolFile::read_at(void *dst, size_t len, uint64_t offset) const
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = pread(fd_, static_cast<uint8_t *>(dst) + done, len - done,
		                  static_cast<off_t>(offset + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return Status::from_errno(errno, "read pool " + path_);
		if (n == 0)
			return Status(Code::kCorrupt,
			              "pool " + path_ + " ends at " +
			                      std::to_string(offset + done) +
			                      " bytes, before the end of its metadata");
		done += static_cast<size_t>(n);
	}
	return Status::ok();
}

Status PoolFile::map(bool writable)
{
	if (pmem2_source_from_fd(&src_, fd_) != 0)
		return pmem2_error("pool " + path_);
	pmem2_config *cfg = nullptr;
	if (pmem2_config_new(&cfg) != 0)
		return pmem2_error("pmem2 config for pool " + path_);
	Status st;
	if (pmem2_config_set_required_store_granularity(cfg, PMEM2_GRANULARITY_PAGE) != 0 ||
	    pmem2_config_set_protection(cfg, writable ? (PMEM2_PROT_READ | PMEM2_PROT_WRITE)
	                                              : PMEM2_PROT_READ) != 0)
		st = pmem2_error("pmem2 config for pool " + path_);
	if (st.is_ok() && pmem2_map_new(&map_, cfg, src_) != 0)
		st = pmem2_error("map pool " + path_);
	pmem2_config_delete(&cfg);
	MF_RETURN_IF_ERROR(st);
	base_ = static_cast<uint8_t *>(pmem2_map_get_address(map_));
	mapped_ = pmem2_map_get_size(map_);
	persist_ = pmem2_get_persist_fn(map_);
	is_pmem_ = pmem2_map_get_store_granularity(map_) != PMEM2_GRANULARITY_PAGE;
	return Status::ok();
}

Status PoolFile::zero(uint64_t offset, uint64_t len)
{
	if (len == 0)
		return Status::ok();
	if (!is_device_) {
		if (fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		              static_cast<off_t>(offset), static_cast<off_t>(len)) == 0) {
			if (fdatasync(fd_) != 0)
				return Status::from_errno(errno, "sync pool " + path_);
			return Status::ok();
		}
		if (errno != EOPNOTSUPP)
			return Status::from_errno(errno, "punch hole in pool " + path_);
	}
	memset(base_ + offset, 0, len);
	persist_(base_ + offset, len);
	return Status::ok();
}

Result<std::vector<std::pair<uint64_t, uint64_t>>> PoolFile::data_ranges(uint64_t offset,
                                                                         uint64_t len) const
{
	std::vector<std::pair<uint64_t, uint64_t>> out;
	const uint64_t end = offset + len;
	if (len == 0)
		return out;
	if (is_device_) {
		out.emplace_back(offset, len);
		return out;
	}
	uint64_t at = offset;
	while (at < end) {
		off_t data = lseek(fd_, static_cast<off_t>(at), SEEK_DATA);
		if (data < 0) {
			if (errno == ENXIO)
				break; // no data from `at` to the end of the file
			if (errno == EINVAL) {
				// No SEEK_DATA here: every byte may hold data.
				out.emplace_back(at, end - at);
				break;
			}
			return Status::from_errno(errno, "seek data in pool " + path_);
		}
		if (static_cast<uint64_t>(data) >= end)
			break;
		off_t hole = lseek(fd_, data, SEEK_HOLE);
		if (hole < 0)
			return Status::from_errno(errno, "seek hole in pool " + path_);
		uint64_t stop = std::min<uint64_t>(static_cast<uint64_t>(hole), end);
		out.emplace_back(static_cast<uint64_t>(data), stop - static_cast<uint64_t>(data));
		at = stop;
	}
	return out;
}

} // namespace memfed::store
