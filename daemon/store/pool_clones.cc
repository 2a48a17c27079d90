// ModuleStore's copy-on-write clones (pool.h, layout.h layout 6): making a
// clone, reading through to its base, and keeping what a clone shares when
// its base changes or goes away. Every function runs on the caller's thread
// under the locks its declaration names.
#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>

#include "daemon/common/crc32c.h"
#include "daemon/common/log.h"
#include "daemon/store/pool.h"

namespace memfed
{

using store::kPageSize;

Result<RegionInfo> ModuleStore::clone_region(const std::string &name, const std::string &base,
                                             uint64_t base_offset, uint64_t size_bytes,
                                             uint32_t owner_uid, uint32_t mode,
                                             const AdmitFn &admit, const NodeKeyBytes &owner_key,
                                             const AdmitFn &admit_node)
{
	MF_RETURN_IF_ERROR(check_region_name(name));
	const std::string what = "cannot clone region '" + base + "' as '" + name +
	                         "' on module " + module_.to_string();
	if (!geo_.has_clones())
		return Status(Code::kInvalidArgument,
		              what + ": pool " + file_->path() + " has layout version " +
		                      std::to_string(layout_version_) +
		                      ", which cannot record clones; a pool formatted by this "
		                      "memfedd (layout " +
		                      std::to_string(store::kLayoutVersion) +
		                      ", `memfedctl pool format`) can");
	if (size_bytes == 0)
		return Status(Code::kInvalidArgument, what + ": size is 0");
	if (base_offset % kPageSize != 0)
		return Status(Code::kInvalidArgument,
		              what + ": offset " + std::to_string(base_offset) +
		                      " is not a multiple of 4096 (a clone shares whole pages)");
	if (!is_zero_key(owner_key))
		MF_RETURN_IF_ERROR(require_access(what + " for another node"));
	const uint64_t pages = (size_bytes + kPageSize - 1) / kPageSize;
	std::unique_lock lock(table_mu_);
	const store::RegionSlot *b = table_->find(base);
	if (b == nullptr)
		return Status(Code::kNotFound,
		              "region '" + base + "' not found on module " + module_.to_string());
	if (b->info.replicas > 1)
		return Status(Code::kInvalidArgument,
		              what + ": it is replicated (" + std::to_string(b->info.replicas) +
		                      " copies), and a clone shares the pages of one copy");
	if (base_offset > b->info.size_bytes || pages > (b->info.size_bytes - base_offset) / kPageSize)
		return Status(Code::kOutOfRange,
		              what + ": " + std::to_string(pages * kPageSize) + " bytes at offset " +
		                      std::to_string(base_offset) + " run past its end (" +
		                      std::to_string(b->info.size_bytes) + " bytes)");
	int depth = 1;
	for (const RegionInfo *a = &b->info; a->is_clone; depth++) {
		const store::RegionSlot *up = table_->by_id(a->base_id);
		if (up == nullptr)
			break;
		a = &up->info;
	}
	if (depth > kMaxCloneDepth)
		return Status(Code::kInvalidArgument,
		              what + ": it is already a clone " + std::to_string(depth - 1) +
		                      " deep, and clones go at most " +
		                      std::to_string(kMaxCloneDepth) + " deep; copy it instead");
	RegionInfo link;
	link.base_id = b->info.id;
	link.base_page = base_offset / kPageSize;
	return create_locked(name, size_bytes, owner_uid, mode, admit, {}, owner_key, admit_node,
	                     &link, create_what(name));
}

uint64_t ModuleStore::resolve(const RegionInfo *r, uint64_t page) const
{
	for (int depth = 0;; depth++) {
		uint64_t idx = geo_.page_index(r->fa_offset) + page;
		if (!r->is_clone || depth >= kMaxCloneDepth ||
		    std::atomic_ref<uint64_t>(meta(idx)->version).load(std::memory_order_acquire) != 0)
			return idx;
		const store::RegionSlot *b = table_->by_id(r->base_id);
		if (b == nullptr)
			return idx;
		page += r->base_page;
		r = &b->info;
	}
}

bool ModuleStore::zero_write_noop(const RegionInfo &r, uint64_t page, const uint8_t *src) const
{
	return meta(resolve(&r, page))->version == 0 && store::page_is_zero(src);
}

Status ModuleStore::read_clone_pages(const RegionInfo &r, uint64_t fa_offset, uint32_t count,
                                     uint8_t *out, uint64_t *versions, uint32_t *payload_crc,
                                     bool check_crc)
{
	const uint32_t zero_crc = store::zero_page_crc();
	const uint64_t first = (fa_offset - r.fa_offset) / kPageSize;
	uint32_t crc = 0;
	for (uint32_t i = 0; i < count; i++) {
		// The stripes of the page at every level of the chain, taken in
		// order: a pre-copy into a level (or a write to it) cannot land
		// between choosing the level to read and reading it.
		std::array<size_t, kMaxCloneDepth + 1> held;
		size_t n = 0;
		const RegionInfo *c = &r;
		for (uint64_t p = first + i;;) {
			held[n++] = (geo_.page_index(c->fa_offset) + p) % stripes_.size();
			if (!c->is_clone || n > size_t{kMaxCloneDepth})
				break;
			const store::RegionSlot *b = table_->by_id(c->base_id);
			if (b == nullptr)
				break;
			p += c->base_page;
			c = &b->info;
		}
		std::sort(held.begin(), held.begin() + long(n));
		n = size_t(std::unique(held.begin(), held.begin() + long(n)) - held.begin());
		for (size_t k = 0; k < n; k++)
			stripes_[held[k]].lock_shared();
		uint64_t idx = resolve(&r, first + i);
		uint8_t *dst = out + uint64_t{i} * kPageSize;
		const store::PageMeta *m = meta(idx);
		copy_page(idx, m, dst);
		bool bad = check_crc && m->version != 0 && crc32c(dst, kPageSize) != m->crc;
		crc = crc32c_combine(crc, m->version != 0 ? m->crc : zero_crc, kPageSize);
		if (versions != nullptr)
			versions[i] = geo_.has_versions() ? *wversion(idx) : 0;
		for (size_t k = 0; k < n; k++)
			stripes_[held[k]].unlock_shared();
		if (bad)
			return Status(Code::kCorrupt,
			              "page at " +
			                      FederatedAddress{module_, geo_.page_fa(idx)}.to_string() +
			                      " (read through clone '" + r.name +
			                      "') fails its checksum; run `memfedctl pool check " +
			                      file_->path() + "`");
	}
	if (payload_crc != nullptr)
		*payload_crc = crc;
	pages_read_.fetch_add(count, std::memory_order_relaxed);
	return Status::ok();
}

// The copies a clone takes are written from the source pages where the
// pool maps them, with no copy of their own: the redo log copies them once
// (RedoLog::stage) and the apply once more. That is safe because the
// sources stand still until write_batch_locked returns:
//  - a pool page's content and meta change only with write_mu_ held (every
//    write goes through write_batch_locked; delete and truncate zero pages
//    in zero_pages under it) or at open, before any other thread can reach
//    the store; readers, who hold only table_mu_ shared and the stripes
//    shared, never change a page, and RDMA readers only read (the module
//    grants no remote write). preserve_for_clones and materialize run with
//    write_mu_ held from before they choose the sources until the copies
//    are applied, and table_mu_ held, so no region goes away meanwhile.
//  - the copies do not write their own sources: the pages written are
//    clone pages not yet written (version 0), the pages read belong to the
//    clone's base chain, and a region is never in its own chain.
// The runs are the runs of consecutive pages written, as before; a run
// whose sources are not consecutive in the pool (they lie at different
// levels of a chain of clones) is copied into `scratch`, so the ops, and
// what the admission of each decides, are the same either way.
Status ModuleStore::write_copies(uint32_t region_id, const std::vector<uint64_t> &pages,
                                 const std::vector<const uint8_t *> &srcs)
{
	std::vector<WriteOp> ops;
	// (op, its first index in pages) of each run whose sources are scattered
	std::vector<std::pair<size_t, size_t>> scattered;
	size_t scratch_pages = 0;
	for (size_t i = 0; i < pages.size();) {
		size_t j = i + 1;
		bool together = true;
		while (j < pages.size() && pages[j] == pages[j - 1] + 1) {
			together = together && srcs[j] == srcs[j - 1] + kPageSize;
			j++;
		}
		WriteOp op;
		op.region_id = region_id;
		op.fa_offset = geo_.page_fa(pages[i]);
		op.count = static_cast<uint32_t>(j - i);
		op.src = srcs[i];
		op.store_zeros = true;
		if (!together) {
			scattered.emplace_back(ops.size(), i);
			scratch_pages += j - i;
		}
		ops.push_back(op);
		i = j;
	}
	std::vector<uint8_t> scratch(scratch_pages * kPageSize);
	uint8_t *at = scratch.data();
	for (auto [o, i] : scattered) {
		ops[o].src = at;
		for (uint32_t k = 0; k < ops[o].count; k++, at += kPageSize)
			memcpy(at, srcs[i + k], kPageSize);
	}
	write_batch_locked(ops);
	for (const WriteOp &op : ops)
		MF_RETURN_IF_ERROR(op.status);
	return Status::ok();
}

Status ModuleStore::preserve_for_clones(const RegionInfo &r, uint64_t first, uint64_t count)
{
	auto it = clones_.find(r.id);
	if (it == clones_.end())
		return Status::ok();
	const uint8_t *base = file_->base();
	std::vector<uint64_t> pages;
	std::vector<const uint8_t *> srcs; // mapped: see write_copies
	for (uint32_t id : it->second) {
		const store::RegionSlot *cs = table_->by_id(id);
		if (cs == nullptr)
			continue;
		const RegionInfo &c = cs->info;
		// The clone's page j is r's page c.base_page + j.
		uint64_t lo = std::max(first, c.base_page);
		uint64_t hi = std::min(first + count, c.base_page + c.size_bytes / kPageSize);
		pages.clear();
		srcs.clear();
		for (uint64_t q = lo; q < hi; q++) {
			uint64_t cidx = geo_.page_index(c.fa_offset) + (q - c.base_page);
			if (meta(cidx)->version != 0)
				continue; // the clone has its own page
			pages.push_back(cidx);
			srcs.push_back(base + geo_.page_fa(resolve(&r, q)));
		}
		if (!pages.empty()) {
			Status st = write_copies(id, pages, srcs);
			if (!st.is_ok())
				return Status(st.code(), "keeping the pages clone '" + c.name +
				                                 "' shares with region '" + r.name +
				                                 "': " + st.message());
		}
	}
	return Status::ok();
}

Status ModuleStore::materialize(const RegionInfo &c)
{
	if (!c.is_clone)
		return Status::ok();
	const store::RegionSlot *cs = table_->by_id(c.id);
	if (cs == nullptr)
		return Status::ok();
	const uint64_t pages = c.size_bytes / kPageSize, cfirst = geo_.page_index(c.fa_offset);
	// Where the chain may hold data: the runs of each ancestor's metas that
	// are not holes, in the clone's page numbers.
	std::vector<std::pair<uint64_t, uint64_t>> runs;
	uint64_t off = 0;
	for (const RegionInfo *a = &c; a->is_clone;) {
		const store::RegionSlot *b = table_->by_id(a->base_id);
		if (b == nullptr)
			break;
		off += a->base_page;
		a = &b->info;
		uint64_t afirst = geo_.page_index(a->fa_offset) + off;
		auto mr = meta_runs(afirst, pages);
		if (!mr)
			return mr.status();
		for (auto [bb, ee] : *mr)
			runs.emplace_back(bb - afirst, ee - afirst);
	}
	std::sort(runs.begin(), runs.end());
	const uint8_t *base = file_->base();
	std::vector<uint64_t> todo;
	std::vector<const uint8_t *> srcs; // mapped: see write_copies
	auto flush = [&]() -> Status {
		if (todo.empty())
			return Status::ok();
		Status st = write_copies(c.id, todo, srcs);
		todo.clear();
		srcs.clear();
		return st;
	};
	uint64_t next = 0; // runs may overlap: each page once
	for (auto [b, e] : runs) {
		for (uint64_t j = std::max(b, next); j < e; j++) {
			if (meta(cfirst + j)->version != 0)
				continue;
			uint64_t src = resolve(&c, j);
			if (meta(src)->version == 0)
				continue; // zeros: its own page reads the same
			todo.push_back(cfirst + j);
			srcs.push_back(base + geo_.page_fa(src));
			if (todo.size() == store::kLogSlots)
				MF_RETURN_IF_ERROR(flush());
		}
		next = std::max(next, e);
	}
	MF_RETURN_IF_ERROR(flush());
	const uint32_t base_id = c.base_id, id = c.id;
	table_->detach(cs->slot);
	auto it = clones_.find(base_id);
	if (it != clones_.end()) {
		std::erase(it->second, id);
		if (it->second.empty())
			clones_.erase(it);
	}
	return Status::ok();
}

Status ModuleStore::release_clone_links(const RegionInfo &r)
{
	if (auto it = clones_.find(r.id); it != clones_.end())
		for (uint32_t id : std::vector<uint32_t>(it->second))
			if (const store::RegionSlot *cs = table_->by_id(id))
				MF_RETURN_IF_ERROR(materialize(cs->info));
	clones_.erase(r.id);
	if (r.is_clone)
		if (auto it = clones_.find(r.base_id); it != clones_.end()) {
			std::erase(it->second, r.id);
			if (it->second.empty())
				clones_.erase(it);
		}
	return Status::ok();
}

} // namespace memfed
