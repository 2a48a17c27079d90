// Test helper: a fresh directory under /tmp, removed with its contents at the
// end of the test, and raw byte access to pool files for corruption tests.
#pragma once

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <string>

#include "daemon/store/layout.h"
#include "daemon/store/pool_file.h"

namespace memfed::store
{

class TestPoolDir
{
public:
	// `base`: where to make it. A test that makes thousands of regions
	// (a durable msync each: milliseconds on a disk) uses kInMemory, and
	// /tmp if that is missing.
	static constexpr const char *kInMemory = "/dev/shm";
	explicit TestPoolDir(const std::string &base = "/tmp")
	{
		std::string tmpl = base + "/memfed-store-test-XXXXXX";
		char *d = mkdtemp(tmpl.data());
		if (d == nullptr) {
			tmpl = "/tmp/memfed-store-test-XXXXXX";
			d = mkdtemp(tmpl.data());
		}
		dir_ = d != nullptr ? d : "";
	}
	~TestPoolDir() { std::filesystem::remove_all(dir_); }
	std::string path(const std::string &name) const { return dir_ + "/" + name; }

private:
	std::string dir_;
};

// XORs byte `offset` of the file at `path` with 0xff.
inline void flip_byte(const std::string &path, uint64_t offset)
{
	int fd = open(path.c_str(), O_RDWR);
	uint8_t b = 0;
	if (pread(fd, &b, 1, static_cast<off_t>(offset)) == 1) {
		b ^= 0xff;
		(void)!pwrite(fd, &b, 1, static_cast<off_t>(offset));
	}
	close(fd);
}

// Rewrites the freshly formatted, still empty pool at `path`, formatted with
// size `pool_bytes`, as layout `version` (1 to 5, thick) would have written it: the
// file cut to pool_bytes (thick) and that layout's geometry (no access area
// before 4; from 3 on a version area) for the same size and table. True on
// success. An empty pool is zeros past its header, so the result is a valid
// older pool. REQUIRES for version 1: formatted with table_slots kMinTableSlots.
inline bool make_old_layout(const std::string &path, uint32_t version, uint64_t pool_bytes)
{
	PoolHeader h;
	{
		auto fr = PoolFile::open(path, false, false);
		if (!fr || !(*fr)->read_at(&h, sizeof(h), 0).is_ok())
			return false;
	}
	if (version == kLayoutVersionFixedTable && h.table_slots != kMinTableSlots)
		return false;
	if (truncate(path.c_str(), static_cast<off_t>(pool_bytes)) != 0)
		return false;
	Geometry g = compute_geometry(pool_bytes, h.table_slots, version);
	h.layout_version = version;
	h.pool_bytes = pool_bytes;
	h.log_desc_offset = g.log_desc_offset;
	h.log_data_offset = g.log_data_offset;
	h.meta_offset = g.meta_offset;
	h.data_offset = g.data_offset;
	h.data_pages = g.data_pages;
	// Layout 5 formatted thick (a device) when not thin.
	h.capacity_pages = version >= kLayoutVersionThin ? g.data_pages : 0;
	h.reserved2 = 0;
	h.crc = header_crc(h);
	int fd = open(path.c_str(), O_WRONLY);
	bool ok = fd >= 0 && pwrite(fd, &h, sizeof(h), 0) == ssize_t(sizeof(h));
	if (fd >= 0)
		close(fd);
	return ok;
}

} // namespace memfed::store
