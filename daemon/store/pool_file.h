// PoolFile: the file or DAX device behind a pool: opening it, the exclusive
// lock that keeps two daemons off one pool, and its libpmem2 mapping.
//
// A regular file is mapped with page store granularity (persist = msync); a
// DAX device gets whatever finer granularity libpmem2 finds (is_pmem()).
// Closing the PoolFile unmaps it and drops the lock.
//
// Thread-safety: immutable after map(); persist() and zero() may be called
// from several threads on disjoint ranges.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "daemon/common/status.h"
#include "daemon/store/redo_log.h"

struct pmem2_source;
struct pmem2_map;

namespace memfed::store
{

class PoolFile
{
public:
	// Opens `path` (creating an empty file if `create`). kNotFound if absent.
	static Result<std::unique_ptr<PoolFile>> open(const std::string &path, bool writable,
	                                              bool create);
	~PoolFile();
	PoolFile(const PoolFile &) = delete;
	PoolFile &operator=(const PoolFile &) = delete;

	// flock(LOCK_EX|LOCK_NB); kBusy if another open file description holds it.
	Status lock();
	// Size of the file or device.
	Result<uint64_t> size() const;
	bool is_device() const { return is_device_; }
	// Regular files only: makes the file `bytes` long and all zeros (sparse).
	Status reset_size(uint64_t bytes);
	Status read_at(void *dst, size_t len, uint64_t offset) const;

	// Maps the whole file or device through libpmem2.
	Status map(bool writable);
	uint8_t *base() const { return base_; }
	size_t mapped_bytes() const { return mapped_; }
	PersistFn persist_fn() const { return persist_; }
	bool is_pmem() const { return is_pmem_; }
	// Makes [offset, offset+len) read as zeros, durably: a punched hole on a
	// file, memset + persist on a device. REQUIRES: mapped writable, page-aligned.
	Status zero(uint64_t offset, uint64_t len);
	// The parts of [offset, offset+len) that may hold data, in order, as
	// (offset, len): a file's holes (never written, or punched by zero())
	// are left out (lseek SEEK_DATA/SEEK_HOLE), so a walk over a sparse
	// area costs what it holds; a device has no holes (one range).
	Result<std::vector<std::pair<uint64_t, uint64_t>>> data_ranges(uint64_t offset,
	                                                               uint64_t len) const;

	const std::string &path() const { return path_; }

private:
	PoolFile(std::string path, int fd, bool is_device)
	    : path_(std::move(path)), fd_(fd), is_device_(is_device)
	{
	}

	std::string path_;
	int fd_;
	bool is_device_;
	pmem2_source *src_ = nullptr;
	pmem2_map *map_ = nullptr;
	uint8_t *base_ = nullptr;
	size_t mapped_ = 0;
	PersistFn persist_ = nullptr;
	bool is_pmem_ = false;
};

} // namespace memfed::store
