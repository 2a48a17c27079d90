#include "daemon/store/pool.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

#include "daemon/common/crc32c.h"
#include "daemon/common/log.h"

namespace memfed
{

using store::kPageSize;

namespace
{

constexpr const char *kComp = "store";

uint64_t realtime_ns()
{
	timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// Aligned 8-byte stores that cannot tear (see layout.h PageMeta).
void store_meta(store::PageMeta *m, uint32_t crc, uint64_t version)
{
	std::atomic_ref<uint32_t>(m->crc).store(crc, std::memory_order_relaxed);
	std::atomic_ref<uint64_t>(m->version).store(version, std::memory_order_release);
}

std::string hex(uint64_t v)
{
	char buf[24];
	snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(v));
	return buf;
}

} // namespace

Status ModuleStore::format(const PoolOptions &opts)
{
	if (opts.module_id.value != 0 && !opts.module_id.valid())
		return Status(Code::kInvalidArgument,
		              "module id " + hex(opts.module_id.value) + " is not a 48-bit id");
	auto fr = store::PoolFile::open(opts.path, true, true);
	if (!fr)
		return fr.status();
	store::PoolFile &f = **fr;
	MF_RETURN_IF_ERROR(f.lock());
	uint64_t bytes = opts.size_bytes;
	if (f.is_device()) {
		auto sz = f.size();
		if (!sz)
			return sz.status();
		bytes = *sz;
	}
	uint32_t slots = opts.table_slots;
	if (slots != 0 && (slots < store::kMinTableSlots || slots > store::kMaxTableSlots ||
	                   (slots & (slots - 1)) != 0))
		return Status(Code::kInvalidArgument,
		              "a region table of " + std::to_string(slots) +
		                      " slots: give a power of two from " +
		                      std::to_string(store::kMinTableSlots) + " to " +
		                      std::to_string(store::kMaxTableSlots) +
		                      ", or 0 to size it from the pool");
	// A file is thin (sparse, its address space larger than its capacity);
	// a device cannot be (layout.h).
	store::Geometry geo = store::compute_thin_geometry(bytes, slots, f.is_device());
	if (geo.data_pages == 0)
		return Status(Code::kInvalidArgument,
		              "pool size " + std::to_string(bytes) + " bytes for " + opts.path +
		                      " is too small; the minimum is " +
		                      std::to_string(store::min_pool_bytes()) + " bytes");
	if (!f.is_device())
		MF_RETURN_IF_ERROR(f.reset_size(geo.pool_bytes));
	MF_RETURN_IF_ERROR(f.map(true));
	if (f.is_device()) {
		// A file starts as zeros; a device must be cleared (free space and
		// unwritten pages always read as zeros).
		memset(f.base(), 0, bytes);
		f.persist_fn()(f.base(), bytes);
	}
	store::PoolHeader h{};
	memcpy(h.magic, store::kPoolMagic, sizeof(h.magic));
	h.layout_version = store::kLayoutVersion;
	h.page_size = kPageSize;
	h.module_id = opts.module_id.value != 0 ? opts.module_id.value : ModuleId::random().value;
	h.pool_bytes = geo.pool_bytes;
	h.ctime_ns = realtime_ns();
	h.table_offset = geo.table_offset;
	h.table_slots = geo.table_slots;
	h.table_entry_size = sizeof(store::RegionEntry);
	h.log_desc_offset = geo.log_desc_offset;
	h.log_data_offset = geo.log_data_offset;
	h.log_slots = store::kLogSlots;
	h.log_desc_size = sizeof(store::LogDescriptor);
	h.meta_offset = geo.meta_offset;
	h.data_offset = geo.data_offset;
	h.data_pages = geo.data_pages;
	h.capacity_pages = geo.capacity_pages;
	h.crc = store::header_crc(h);
	memcpy(f.base(), &h, sizeof(h));
	f.persist_fn()(f.base(), sizeof(h));
	LOG_INFO(kComp,
	         "formatted pool %s: module %s, capacity %llu pages in %llu data pages (%s), %u "
	         "region slots",
	         opts.path.c_str(), ModuleId{h.module_id}.to_string().c_str(),
	         static_cast<unsigned long long>(geo.capacity_pages),
	         static_cast<unsigned long long>(geo.data_pages), geo.thin() ? "thin" : "thick",
	         geo.table_slots);
	return Status::ok();
}

Result<std::unique_ptr<ModuleStore>> ModuleStore::open(const std::string &path,
                                                       uint64_t expected_size)
{
	auto fr = store::PoolFile::open(path, true, false);
	if (!fr)
		return fr.status();
	std::unique_ptr<store::PoolFile> file = std::move(*fr);
	MF_RETURN_IF_ERROR(file->lock());
	auto sz = file->size();
	if (!sz)
		return sz.status();
	store::PoolHeader h;
	if (*sz < sizeof(h))
		return Status(
		        Code::kCorrupt,
		        "pool " + path + " is " + std::to_string(*sz) +
		                " bytes, too short for a pool header; create it with `memfedctl "
		                "pool format`");
	MF_RETURN_IF_ERROR(file->read_at(&h, sizeof(h), 0));
	MF_RETURN_IF_ERROR(store::validate_header(h, path));
	if (*sz != h.pool_bytes)
		return Status(Code::kInvalidArgument,
		              "pool " + path + " is " + std::to_string(*sz) +
		                      " bytes but its header says " + std::to_string(h.pool_bytes) +
		                      "; it was truncated or extended: restore it or reformat");
	// A thin pool's file is its address space: the size asked for at
	// format is its capacity, which the header records.
	const bool thin_header = h.layout_version >= store::kLayoutVersionThin && h.capacity_pages < h.data_pages;
	if (expected_size != 0 && !thin_header && expected_size != *sz)
		return Status(Code::kInvalidArgument,
		              "pool " + path + " is " + std::to_string(*sz) +
		                      " bytes but the configuration asks for " +
		                      std::to_string(expected_size) +
		                      "; set pool_size to match or reformat the pool");
	if (expected_size != 0 && thin_header &&
	    store::compute_geometry(expected_size, h.table_slots).data_pages != h.capacity_pages)
		return Status(Code::kInvalidArgument,
		              "pool " + path + " holds " +
		                      std::to_string(h.capacity_pages * kPageSize) +
		                      " bytes of data but the configuration asks for a pool of " +
		                      std::to_string(expected_size) +
		                      " bytes; set pool_size to the size it was formatted with "
		                      "or reformat the pool");
	MF_RETURN_IF_ERROR(file->map(true));
	std::unique_ptr<ModuleStore> s(new ModuleStore(std::move(file)));
	s->geo_ = store::geometry_of(h);
	s->layout_version_ = h.layout_version;
	s->module_ = ModuleId{h.module_id};
	s->ctime_ns_ = h.ctime_ns;
	MF_RETURN_IF_ERROR(s->recover());
	return s;
}

Status ModuleStore::recover()
{
	const std::string &path = file_->path();
	uint8_t *base = file_->base();
	store::PersistFn persist = file_->persist_fn();
	table_ = std::make_unique<store::RegionTable>(base, geo_, persist);
	alloc_ = std::make_unique<store::ExtentAllocator>(geo_.data_pages);
	log_ = std::make_unique<store::RedoLog>(base, geo_, persist, !file_->is_pmem());
	unpersisted_.reserve(store::kLogSlots);
	MF_RETURN_IF_ERROR(table_->load(path));

	std::vector<store::RegionSlot> live, deleting = table_->deleting();
	for (const RegionInfo &r : table_->list())
		live.push_back(*table_->by_id(r.id));
	for (const auto *set : {&live, &deleting})
		for (const store::RegionSlot &s : *set) {
			Status st = alloc_->reserve(geo_.page_index(s.info.fa_offset),
			                            s.info.size_bytes / kPageSize);
			if (!st.is_ok())
				return Status(Code::kCorrupt,
				              "pool " + path + ": region '" + s.info.name +
				                      "': " + st.message() +
				                      "; run `memfedctl pool check " + path + "`");
		}
	MF_RETURN_IF_ERROR(replay_log(live));

	// Finish deletes a crash interrupted (the log is clear now).
	for (const store::RegionSlot &s : deleting) {
		uint64_t pages = s.info.size_bytes / kPageSize;
		uint64_t first = geo_.page_index(s.info.fa_offset);
		MF_RETURN_IF_ERROR(file_->zero(s.info.fa_offset, s.info.size_bytes));
		clear_page_meta(first, pages);
		table_->mark_free(s.slot);
		alloc_->release(first, pages);
		LOG_INFO(kComp, "pool %s: finished the interrupted delete of region '%s'",
		         path.c_str(), s.info.name.c_str());
	}

	// Clones by base. A clone whose base is not live cannot be left by a
	// delete (it detaches them first): detach it rather than read through
	// to a slot that may be reused.
	for (const store::RegionSlot &s : live) {
		if (!s.info.is_clone)
			continue;
		const store::RegionSlot *b = table_->by_id(s.info.base_id);
		if (b != nullptr && b->state == store::kRegionLive) {
			clones_[s.info.base_id].push_back(s.info.id);
			continue;
		}
		LOG_WARN(kComp, "pool %s: region '%s' is a clone of region id %u, which is gone; "
		                "detached (its unwritten pages read as zeros)",
		         path.c_str(), s.info.name.c_str(), s.info.base_id);
		table_->detach(s.slot);
	}

	// The pages written, from the metas (no counter is stored that a crash
	// could leave wrong).
	for (const store::RegionSlot &s : live) {
		auto n = count_written(geo_.page_index(s.info.fa_offset),
		                       s.info.size_bytes / kPageSize);
		if (!n)
			return n.status();
		space_.add(s.info, static_cast<int64_t>(*n));
	}
	return Status::ok();
}

Result<std::vector<std::pair<uint64_t, uint64_t>>> ModuleStore::meta_runs(uint64_t first,
                                                                          uint64_t count) const
{
	std::vector<std::pair<uint64_t, uint64_t>> runs;
	auto ranges = file_->data_ranges(geo_.meta_fa(first), count * sizeof(store::PageMeta));
	if (!ranges)
		return ranges.status();
	const uint64_t end = first + count;
	for (auto [off, len] : *ranges) {
		uint64_t b = (off - geo_.meta_offset) / sizeof(store::PageMeta);
		uint64_t e = (off + len - geo_.meta_offset + sizeof(store::PageMeta) - 1) /
		             sizeof(store::PageMeta);
		b = std::max(b, first);
		e = std::min(e, end);
		if (b >= e)
			continue;
		if (!runs.empty() && runs.back().second >= b)
			runs.back().second = std::max(runs.back().second, e);
		else
			runs.emplace_back(b, e);
	}
	return runs;
}

Status ModuleStore::replay_log(const std::vector<store::RegionSlot> &live)
{
	uint8_t *base = file_->base();
	store::RedoLog::ScanResult scan = store::RedoLog::scan(base, geo_);

	// Live extents sorted by start, to find a record's region.
	std::vector<std::pair<uint64_t, uint64_t>> extents;
	for (const store::RegionSlot &s : live)
		extents.emplace_back(s.info.fa_offset, s.info.fa_offset + s.info.size_bytes);
	std::sort(extents.begin(), extents.end());
	auto in_live_region = [&](uint64_t fa) {
		auto it = std::upper_bound(extents.begin(), extents.end(),
		                           std::make_pair(fa, UINT64_MAX));
		return it != extents.begin() && fa < std::prev(it)->second;
	};

	uint64_t max_seq = 0, skipped = 0;
	for (const store::RedoLog::Record &r : scan.valid) {
		max_seq = std::max(max_seq, r.seq);
		if (r.fa_offset < geo_.data_offset || r.fa_offset >= geo_.data_end() ||
		    (r.fa_offset - geo_.data_offset) % kPageSize != 0 ||
		    !in_live_region(r.fa_offset)) {
			skipped++;
			continue;
		}
		uint64_t idx = geo_.page_index(r.fa_offset);
		store::PageMeta *m = meta(idx);
		if (r.seq < m->version)
			continue; // a newer write already reached the page
		memcpy(base + r.fa_offset, store::RedoLog::payload(base, geo_, r.slot), kPageSize);
		store_meta(m, r.page_crc, r.seq);
		if (r.wversion != 0 && geo_.has_versions())
			std::atomic_ref<uint64_t>(*wversion(idx))
			        .store(r.wversion, std::memory_order_relaxed);
		unpersisted_.push_back(idx);
		log_replays_++;
	}
	auto runs = meta_runs(0, geo_.data_pages);
	if (!runs)
		return runs.status();
	for (auto [b, e] : *runs)
		for (uint64_t i = b; i < e; i++)
			max_seq = std::max(max_seq, meta(i)->version);
	next_seq_ = max_seq + 1;
	checkpoint();
	if (!scan.valid.empty() || scan.torn > 0 || !table_->deleting().empty())
		log_->clear();
	if (log_replays_ > 0 || scan.torn > 0 || skipped > 0)
		LOG_INFO(kComp,
		         "pool %s: redo log replayed %llu pages, ignored %llu torn and %llu stale "
		         "records",
		         file_->path().c_str(), static_cast<unsigned long long>(log_replays_),
		         static_cast<unsigned long long>(scan.torn),
		         static_cast<unsigned long long>(skipped));
	return Status::ok();
}

Result<std::unique_ptr<ModuleStore>> ModuleStore::open_or_create(const PoolOptions &opts)
{
	struct stat st;
	if (stat(opts.path.c_str(), &st) != 0) {
		if (errno != ENOENT)
			return Status::from_errno(errno, "stat pool " + opts.path);
		MF_RETURN_IF_ERROR(format(opts));
	}
	auto r = open(opts.path, opts.size_bytes);
	if (!r)
		return r;
	if (opts.module_id.value != 0 && !((*r)->module_id() == opts.module_id))
		return Status(
		        Code::kInvalidArgument,
		        "pool " + opts.path + " belongs to module " +
		                (*r)->module_id().to_string() + " but the configuration says " +
		                opts.module_id.to_string() +
		                "; remove module_id from the configuration or reformat the pool");
	return r;
}

Result<CheckReport> ModuleStore::check(const std::string &path)
{
	return store::check_pool(path);
}

Result<PoolInfo> ModuleStore::inspect(const std::string &path)
{
	auto fr = store::PoolFile::open(path, false, false);
	if (!fr)
		return fr.status();
	store::PoolFile &f = **fr;
	store::PoolHeader h;
	MF_RETURN_IF_ERROR(f.read_at(&h, sizeof(h), 0));
	MF_RETURN_IF_ERROR(store::validate_header(h, path));
	store::Geometry geo = store::geometry_of(h);
	// The table in chunks, so a table of a million slots needs no 128 MiB copy.
	constexpr uint32_t kChunkSlots = 4096;
	std::vector<uint8_t> table(uint64_t{kChunkSlots} * sizeof(store::RegionEntry));
	std::vector<std::string> problems;
	store::ExtentAllocator alloc(geo.data_pages);
	PoolInfo info;
	for (uint32_t first = 0; first < geo.table_slots; first += kChunkSlots) {
		uint32_t n = std::min(kChunkSlots, geo.table_slots - first);
		MF_RETURN_IF_ERROR(
		        f.read_at(table.data(), uint64_t{n} * sizeof(store::RegionEntry),
		                  geo.table_offset + uint64_t{first} * sizeof(store::RegionEntry)));
		for (const store::RegionSlot &s :
		     store::RegionTable::read_entries(table.data(), first, n, geo, &problems)) {
			if (s.state == store::kRegionLive)
				info.regions++;
			(void)alloc.reserve(geo.page_index(s.info.fa_offset),
			                    s.info.size_bytes / kPageSize);
		}
	}
	info.table_slots = geo.table_slots;
	info.path = path;
	info.module = ModuleId{h.module_id};
	info.layout_version = h.layout_version;
	info.pool_bytes = h.pool_bytes;
	info.capacity_bytes = geo.capacity_pages * kPageSize;
	info.address_bytes = geo.data_pages * kPageSize;
	info.thin = geo.thin();
	info.address_free_bytes = alloc.free_pages() * kPageSize;
	info.reserved_bytes = info.address_bytes - info.address_free_bytes;
	info.largest_free_bytes = alloc.largest_free_pages() * kPageSize;
	// Pages written: the metas that are not holes, read in chunks.
	auto ranges = f.data_ranges(geo.meta_offset, geo.data_pages * sizeof(store::PageMeta));
	if (!ranges)
		return ranges.status();
	std::vector<store::PageMeta> metas(16384);
	uint64_t written = 0;
	for (auto [off, len] : *ranges) {
		uint64_t b = (off - geo.meta_offset) / sizeof(store::PageMeta);
		uint64_t e = std::min(geo.data_pages,
		                      (off + len - geo.meta_offset + sizeof(store::PageMeta) - 1) /
		                              sizeof(store::PageMeta));
		for (uint64_t i = b; i < e; i += metas.size()) {
			uint64_t n = std::min<uint64_t>(metas.size(), e - i);
			MF_RETURN_IF_ERROR(f.read_at(metas.data(), n * sizeof(store::PageMeta),
			                             geo.meta_fa(i)));
			for (uint64_t k = 0; k < n; k++)
				written += metas[k].version != 0;
		}
	}
	info.used_bytes = written * kPageSize;
	info.free_bytes =
	        info.thin ? info.capacity_bytes - std::min(info.used_bytes, info.capacity_bytes)
	                  : info.address_free_bytes;
	info.is_pmem = f.is_device();
	info.data_offset = geo.data_offset;
	info.ctime_ns = h.ctime_ns;
	return info;
}

ModuleStore::~ModuleStore()
{
	if (log_)
		checkpoint();
}

void ModuleStore::checkpoint()
{
	if (unpersisted_.empty())
		return;
	uint8_t *base = file_->base();
	store::PersistFn persist = file_->persist_fn();
	if (!file_->is_pmem()) {
		// One msync over meta and data writes back just their dirty pages.
		persist(base + geo_.meta_offset, geo_.data_end() - geo_.meta_offset);
	} else {
		for (uint64_t idx : unpersisted_) {
			persist(base + geo_.page_fa(idx), kPageSize);
			persist(meta(idx), sizeof(store::PageMeta));
			if (geo_.has_versions())
				persist(wversion(idx), sizeof(uint64_t));
		}
	}
	unpersisted_.clear();
}

Result<RegionInfo> ModuleStore::create_region(const std::string &name, uint64_t size_bytes,
                                              uint32_t owner_uid, uint32_t mode,
                                              const AdmitFn &admit, ReplicaSpec replica,
                                              const NodeKeyBytes &owner_key,
                                              const AdmitFn &admit_node)
{
	MF_RETURN_IF_ERROR(check_region_name(name));
	const std::string what = create_what(name);
	if (size_bytes == 0)
		return Status(Code::kInvalidArgument, what + ": size is 0");
	if (replica.replicas > 1)
		MF_RETURN_IF_ERROR(require_versions(
		        what + " with " + std::to_string(replica.replicas) + " replicas"));
	if (!is_zero_key(owner_key))
		MF_RETURN_IF_ERROR(require_access(what + " for another node"));
	std::unique_lock lock(table_mu_);
	return create_locked(name, size_bytes, owner_uid, mode, admit, replica, owner_key,
	                     admit_node, nullptr, what);
}

std::string ModuleStore::create_what(const std::string &name) const
{
	return "cannot create region '" + name + "' on module " + module_.to_string();
}

Result<RegionInfo> ModuleStore::create_locked(const std::string &name, uint64_t size_bytes,
                                              uint32_t owner_uid, uint32_t mode,
                                              const AdmitFn &admit, ReplicaSpec replica,
                                              const NodeKeyBytes &owner_key,
                                              const AdmitFn &admit_node, const RegionInfo *clone,
                                              const std::string &what)
{
	uint64_t pages = (size_bytes + kPageSize - 1) / kPageSize;
	if (table_->find(name) != nullptr)
		return Status(Code::kAlreadyExists, "region '" + name +
		                                            "' already exists on module " +
		                                            module_.to_string());
	// A thin region costs nothing until written: the quotas count what is
	// written (write_pages_batch asks write_admit_), a create only its region.
	const uint64_t charge = geo_.thin() ? 0 : pages * kPageSize;
	if (admit)
		MF_RETURN_IF_ERROR(admit(usage_of_locked(owner_uid), charge));
	auto start = alloc_->allocate(pages);
	if (!start)
		return Status(Code::kNoSpace, what + ": " + start.status().message());
	// A node's quota refuses only what would fit: a module without room says
	// so (kNoSpace), so the node tries another.
	if (admit_node) {
		Status st = admit_node(usage_of_node_locked(owner_key), charge);
		if (!st.is_ok()) {
			alloc_->release(*start, pages);
			return st;
		}
	}
	RegionInfo info;
	info.name = name;
	info.fa_offset = geo_.page_fa(*start);
	info.size_bytes = pages * kPageSize;
	info.length = info.size_bytes;
	info.owner_uid = owner_uid;
	info.owner_key = owner_key;
	info.mode = mode;
	info.ctime_ns = realtime_ns();
	info.replica_group = replica.group;
	info.replicas = replica.replicas;
	if (clone != nullptr) {
		info.is_clone = true;
		info.base_id = clone->base_id;
		info.base_page = clone->base_page;
	}
	Status st = table_->create(&info);
	if (!st.is_ok()) {
		alloc_->release(*start, pages);
		return Status(st.code(), what + ": " + st.message());
	}
	if (info.is_clone)
		clones_[info.base_id].push_back(info.id);
	LOG_INFO(kComp, "created region '%s' (id %u) of %llu bytes at %s%s", name.c_str(), info.id,
	         static_cast<unsigned long long>(info.size_bytes),
	         FederatedAddress{module_, info.fa_offset}.to_string().c_str(),
	         info.is_clone ? " (a clone)" : "");
	return info;
}

Status ModuleStore::delete_region(const std::string &name)
{
	std::unique_lock lock(table_mu_);
	const store::RegionSlot *s = table_->find(name);
	if (s == nullptr)
		return Status(Code::kNotFound,
		              "region '" + name + "' not found on module " + module_.to_string());
	store::RegionSlot r = *s;
	uint64_t pages = r.info.size_bytes / kPageSize;
	uint64_t first = geo_.page_index(r.info.fa_offset);
	// No write is in flight (they hold table_mu_ shared), so every log record
	// is applied; once those pages are durable, clearing the log keeps a
	// replay from refilling the extent.
	std::lock_guard wlock(write_mu_);
	// Its clones take the pages they share before those go.
	MF_RETURN_IF_ERROR(release_clone_links(r.info));
	// Keys handed out for the region die before its pages can be reused.
	if (on_access_lost_)
		on_access_lost_(r.info.id);
	table_->mark_deleting(r.slot);
	checkpoint();
	log_->clear();
	MF_RETURN_IF_ERROR(zero_pages(first, pages));
	table_->mark_free(r.slot);
	alloc_->release(first, pages);
	space_.drop_region(r.info);
	LOG_INFO(kComp, "deleted region '%s' (id %u)", name.c_str(), r.info.id);
	return Status::ok();
}

Result<RegionInfo> ModuleStore::set_length(const std::string &name, uint64_t length, bool grow_only)
{
	auto r = lookup_region(name);
	if (!r)
		return r.status();
	if (length > r->size_bytes)
		return Status(Code::kOutOfRange,
		              "length " + std::to_string(length) + " is beyond region '" + name +
		                      "' of " + std::to_string(r->size_bytes) +
		                      " bytes; a region's file length cannot exceed its size");
	if (grow_only && length <= r->length)
		return *r;
	// Any other length is a truncate: every byte past it reads as zero from
	// now on, wherever the length recorded here was. A file grows on its
	// writer's node before the module hears of it (and a mapping may write
	// past the end), so written pages can lie beyond that length.
	if (!grow_only && length % kPageSize != 0) {
		// The tail of the page that ends the file, rewritten through the
		// log, so a crash leaves it whole.
		uint64_t fa = r->fa_offset + length / kPageSize * kPageSize;
		std::vector<uint8_t> page(kPageSize);
		MF_RETURN_IF_ERROR(read_pages(r->id, fa, 1, page.data()));
		auto tail = page.begin() + long(length % kPageSize);
		if (std::any_of(tail, page.end(), [](uint8_t b) { return b != 0; })) {
			std::fill(tail, page.end(), 0);
			MF_RETURN_IF_ERROR(write_pages(r->id, fa, 1, page.data()));
		}
	}
	std::unique_lock lock(table_mu_);
	const store::RegionSlot *s = table_->find(name);
	if (s == nullptr || s->info.id != r->id)
		return Status(Code::kNotFound, "region '" + name + "' was deleted meanwhile");
	if (grow_only && length <= s->info.length)
		return s->info; // grown by someone else since the lookup
	if (!grow_only) {
		Status cleared = clear_pages_from(s->info, (length + kPageSize - 1) / kPageSize);
		// Registrations made before the clear may still hold the old pages.
		if (on_access_lost_)
			on_access_lost_(s->info.id);
		MF_RETURN_IF_ERROR(cleared);
	}
	table_->set_length(s->slot, length);
	return s->info;
}

// Every written page of `r` from page `first` on becomes zeros (a page of
// version 0), as delete clears an extent; a replay must not refill them.
// Pages never written are zeros already and are not touched.
// REQUIRES: table_mu_ held exclusively.
Status ModuleStore::clear_pages_from(const RegionInfo &r, uint64_t first)
{
	uint64_t pages = r.size_bytes / kPageSize;
	if (first >= pages)
		return Status::ok();
	std::lock_guard wlock(write_mu_);
	// Clones of r keep its pages; r, if a clone, stops reading through to
	// its base (whose pages past the end would show again).
	if (clones_.count(r.id) != 0)
		for (uint32_t id : std::vector<uint32_t>(clones_.at(r.id)))
			MF_RETURN_IF_ERROR(materialize(table_->by_id(id)->info));
	if (r.is_clone)
		MF_RETURN_IF_ERROR(materialize(r));
	checkpoint(); // logged writes reach their pages and meta first
	log_->clear();
	uint64_t base = geo_.page_index(r.fa_offset);
	// Only where the metas are not holes (a thin region's may be mostly holes).
	auto runs = meta_runs(base + first, pages - first);
	if (!runs)
		return runs.status();
	uint64_t cleared = 0;
	Status st = Status::ok();
	for (auto [b, e] : *runs) {
		for (uint64_t i = b; i < e && st.is_ok();) {
			if (meta(i)->version == 0) {
				i++;
				continue;
			}
			uint64_t j = i + 1;
			while (j < e && meta(j)->version != 0)
				j++;
			st = zero_pages(i, j - i);
			if (st.is_ok())
				cleared += j - i;
			i = j;
		}
	}
	space_.add(r, -static_cast<int64_t>(cleared));
	return st;
}

// Pool pages [first, first + count) become zeros of version 0, durably.
// REQUIRES: write_mu_ held, and no log record left for them.
Status ModuleStore::zero_pages(uint64_t first, uint64_t count)
{
	MF_RETURN_IF_ERROR(file_->zero(geo_.page_fa(first), count * kPageSize));
	clear_page_meta(first, count);
	return Status::ok();
}

void ModuleStore::clear_page_meta(uint64_t first, uint64_t count)
{
	store::PersistFn persist = file_->persist_fn();
	uint8_t *base = file_->base();
	// Whole pages of the area become holes again on a file (so deleting a
	// thin region leaves its metas as sparse as they were), the rest zeros.
	auto clear = [&](uint64_t fa, uint64_t len) {
		uint64_t b = (fa + kPageSize - 1) / kPageSize * kPageSize;
		uint64_t e = (fa + len) / kPageSize * kPageSize;
		if (file_->is_device() || b >= e || !file_->zero(b, e - b).is_ok()) {
			memset(base + fa, 0, len);
			persist(base + fa, len);
			return;
		}
		if (b > fa) {
			memset(base + fa, 0, b - fa);
			persist(base + fa, b - fa);
		}
		if (fa + len > e) {
			memset(base + e, 0, fa + len - e);
			persist(base + e, fa + len - e);
		}
	};
	clear(geo_.meta_fa(first), count * sizeof(store::PageMeta));
	if (geo_.has_versions())
		clear(geo_.version_fa(first), count * sizeof(uint64_t));
}

Status ModuleStore::require_versions(const std::string &what) const
{
	if (geo_.has_versions())
		return Status::ok();
	return Status(Code::kInvalidArgument,
	              what + ": pool " + file_->path() + " has layout version " +
	                      std::to_string(layout_version_) +
	                      ", which has no page-version area; replicated regions need a "
	                      "pool formatted by this memfedd (layout version " +
	                      std::to_string(store::kLayoutVersion) +
	                      "): copy the regions out and run `memfedctl pool format`");
}

Status ModuleStore::require_access(const std::string &what) const
{
	if (geo_.has_access())
		return Status::ok();
	return Status(Code::kInvalidArgument,
	              what + ": pool " + file_->path() + " has layout version " +
	                      std::to_string(layout_version_) +
	                      ", which cannot record which node owns a region or whom it "
	                      "granted access (its regions belong to this module's node); "
	                      "that needs a pool formatted by this memfedd (layout version " +
	                      std::to_string(store::kLayoutVersion) +
	                      "): copy the regions out and run `memfedctl pool format`");
}

Result<RegionAccess> ModuleStore::region_access(const std::string &name) const
{
	std::shared_lock lock(table_mu_);
	const store::RegionSlot *s = table_->find(name);
	if (s == nullptr)
		return Status(Code::kNotFound,
		              "region '" + name + "' not found on module " + module_.to_string());
	return s->access;
}

Result<RegionAccess> ModuleStore::region_access(uint32_t id) const
{
	std::shared_lock lock(table_mu_);
	const store::RegionSlot *s = table_->by_id(id);
	if (s == nullptr)
		return Status(Code::kNotFound, "region id " + std::to_string(id) +
		                                       " not found on module " +
		                                       module_.to_string());
	return s->access;
}

Result<RegionAccess> ModuleStore::set_grant(const std::string &name, const AccessGrant &g)
{
	MF_RETURN_IF_ERROR(require_access("cannot change the grants of region '" + name + "'"));
	std::unique_lock lock(table_mu_);
	const store::RegionSlot *s = table_->find(name);
	if (s == nullptr)
		return Status(Code::kNotFound,
		              "region '" + name + "' not found on module " + module_.to_string());
	const RegionAccess before = s->access;
	RegionAccess a = before;
	MF_RETURN_IF_ERROR(apply_grant(&a, name, g));
	table_->set_access(s->slot, a);
	// A grant revoked or narrowed: whatever it let a node read is withdrawn.
	bool lost = std::any_of(before.grants.begin(), before.grants.end(),
	                        [&](const AccessGrant &was) {
		                        return was.key == g.key && was.uid == g.uid &&
		                               (was.rights & ~g.rights) != 0;
	                        });
	if (lost && on_access_lost_)
		on_access_lost_(s->info.id);
	return a;
}

void ModuleStore::set_on_access_lost(AccessLostFn fn)
{
	std::unique_lock lock(table_mu_);
	on_access_lost_ = std::move(fn);
}

Result<RegionInfo> ModuleStore::lookup_region(const std::string &name) const
{
	std::shared_lock lock(table_mu_);
	const store::RegionSlot *s = table_->find(name);
	if (s == nullptr)
		return Status(Code::kNotFound,
		              "region '" + name + "' not found on module " + module_.to_string());
	return with_used(s->info);
}

Result<RegionInfo> ModuleStore::region_by_id(uint32_t id) const
{
	std::shared_lock lock(table_mu_);
	const store::RegionSlot *s = table_->by_id(id);
	if (s == nullptr)
		return Status(Code::kNotFound, "region id " + std::to_string(id) +
		                                       " not found on module " +
		                                       module_.to_string());
	return with_used(s->info);
}

std::vector<RegionInfo> ModuleStore::list_regions(const std::string &after, size_t limit) const
{
	std::shared_lock lock(table_mu_);
	std::vector<RegionInfo> out = table_->list(after, limit);
	for (RegionInfo &r : out)
		r = with_used(std::move(r));
	return out;
}

Status ModuleStore::check_range(uint32_t region_id, uint64_t fa_offset, uint32_t count) const
{
	const store::RegionSlot *s = table_->by_id(region_id);
	if (s == nullptr)
		return Status(Code::kNotFound, "region id " + std::to_string(region_id) +
		                                       " not found on module " +
		                                       module_.to_string());
	const RegionInfo &r = s->info;
	uint64_t end = r.fa_offset + r.size_bytes;
	if (fa_offset % kPageSize != 0 || fa_offset < r.fa_offset || fa_offset > end ||
	    uint64_t{count} * kPageSize > end - fa_offset)
		return Status(Code::kOutOfRange,
		              "access of " + std::to_string(count) + " pages at " +
		                      FederatedAddress{module_, fa_offset}.to_string() +
		                      " is outside region '" + r.name + "' [" + hex(r.fa_offset) +
		                      ", " + hex(end) + ") or not page-aligned");
	return Status::ok();
}

void ModuleStore::copy_page(uint64_t idx, const store::PageMeta *m, uint8_t *dst) const
{
	if (m->version == 0)
		memset(dst, 0, kPageSize); // never written: zeros, also on the media
	else
		memcpy(dst, file_->base() + geo_.page_fa(idx), kPageSize);
}

Status ModuleStore::read_pages(uint32_t region_id, uint64_t fa_offset, uint32_t count, void *dst)
{
	std::shared_lock lock(table_mu_);
	MF_RETURN_IF_ERROR(check_range(region_id, fa_offset, count));
	if (const RegionInfo &r = table_->by_id(region_id)->info; r.is_clone)
		return read_clone_pages(r, fa_offset, count, static_cast<uint8_t *>(dst), nullptr,
		                        nullptr, true);
	uint8_t *out = static_cast<uint8_t *>(dst);
	uint64_t first = geo_.page_index(fa_offset);
	for (uint32_t i = 0; i < count; i++) {
		uint64_t idx = first + i;
		std::shared_lock page_lock(stripe(idx));
		const store::PageMeta *m = meta(idx);
		copy_page(idx, m, out + uint64_t{i} * kPageSize);
		if (m->version != 0 && crc32c(out + uint64_t{i} * kPageSize, kPageSize) != m->crc)
			return Status(
			        Code::kCorrupt,
			        "page at " +
			                FederatedAddress{module_, geo_.page_fa(idx)}.to_string() +
			                " fails its checksum; run `memfedctl pool check " +
			                file_->path() + "`");
	}
	pages_read_.fetch_add(count, std::memory_order_relaxed);
	return Status::ok();
}

Status ModuleStore::read_pages_with_crc(uint32_t region_id, uint64_t fa_offset, uint32_t count,
                                        void *dst, uint32_t *payload_crc)
{
	return copy_pages(region_id, fa_offset, count, dst, nullptr, payload_crc);
}

// read_pages_with_crc, and each page's version (if `versions`) under the
// same page lock.
Status ModuleStore::copy_pages(uint32_t region_id, uint64_t fa_offset, uint32_t count, void *dst,
                               uint64_t *versions, uint32_t *payload_crc)
{
	// A page never written is zeros (its meta says version 0, crc unset).
	const uint32_t zero_crc = store::zero_page_crc();
	std::shared_lock lock(table_mu_);
	MF_RETURN_IF_ERROR(check_range(region_id, fa_offset, count));
	if (const RegionInfo &r = table_->by_id(region_id)->info; r.is_clone)
		return read_clone_pages(r, fa_offset, count, static_cast<uint8_t *>(dst), versions,
		                        payload_crc, false);
	uint8_t *out = static_cast<uint8_t *>(dst);
	uint64_t first = geo_.page_index(fa_offset);
	uint32_t crc = 0;
	for (uint32_t i = 0; i < count; i++) {
		uint64_t idx = first + i;
		std::shared_lock page_lock(stripe(idx));
		const store::PageMeta *m = meta(idx);
		copy_page(idx, m, out + uint64_t{i} * kPageSize);
		crc = crc32c_combine(crc, m->version != 0 ? m->crc : zero_crc, kPageSize);
		if (versions != nullptr)
			versions[i] = *wversion(idx);
	}
	*payload_crc = crc;
	pages_read_.fetch_add(count, std::memory_order_relaxed);
	return Status::ok();
}

Status ModuleStore::write_pages(uint32_t region_id, uint64_t fa_offset, uint32_t count,
                                const void *src)
{
	WriteOp op{region_id, fa_offset, count, src, Status::ok()};
	write_pages_batch({&op, 1});
	return op.status;
}

Status ModuleStore::write_pages_versioned(uint32_t region_id, uint64_t fa_offset, uint32_t count,
                                          const void *src, uint64_t version, VersionedMode mode,
                                          uint32_t *applied)
{
	*applied = 0;
	if (version == 0)
		return Status(Code::kInvalidArgument,
		              "a versioned write needs a nonzero page version (0 means never "
		              "written); region id " +
		                      std::to_string(region_id));
	WriteOp op;
	op.region_id = region_id;
	op.fa_offset = fa_offset;
	op.count = count;
	op.src = src;
	op.version = version;
	op.mode = mode;
	write_pages_batch({&op, 1});
	*applied = op.applied;
	return op.status;
}

Status ModuleStore::read_versions(uint32_t region_id, uint64_t fa_offset, uint32_t count,
                                  uint64_t *versions)
{
	MF_RETURN_IF_ERROR(require_versions("cannot read page versions"));
	std::shared_lock lock(table_mu_);
	MF_RETURN_IF_ERROR(check_range(region_id, fa_offset, count));
	uint64_t first = geo_.page_index(fa_offset);
	for (uint32_t i = 0; i < count; i++)
		versions[i] = std::atomic_ref<uint64_t>(*wversion(first + i))
		                      .load(std::memory_order_relaxed);
	return Status::ok();
}

Status ModuleStore::read_pages_versioned(uint32_t region_id, uint64_t fa_offset, uint32_t count,
                                         void *dst, uint64_t *versions, uint32_t *payload_crc)
{
	MF_RETURN_IF_ERROR(require_versions("cannot read versioned pages"));
	uint32_t pages_crc = 0;
	MF_RETURN_IF_ERROR(copy_pages(region_id, fa_offset, count, dst, versions, &pages_crc));
	// The wire sends the versions first, then the pages.
	*payload_crc = crc32c_combine(crc32c(versions, uint64_t{count} * sizeof(uint64_t)),
	                              pages_crc, uint64_t{count} * kPageSize);
	return Status::ok();
}

void ModuleStore::write_pages_batch(std::span<WriteOp> ops)
{
	std::shared_lock lock(table_mu_);
	for (WriteOp &op : ops) {
		op.applied = 0;
		op.status = check_range(op.region_id, op.fa_offset, op.count);
		if (op.status.is_ok() && op.version != 0)
			op.status = require_versions("cannot write versioned pages");
	}
	std::lock_guard wlock(write_mu_);
	// Clones still sharing a page keep what it holds now (pool_clones.cc).
	if (!clones_.empty())
		for (WriteOp &op : ops) {
			if (!op.status.is_ok() || op.count == 0)
				continue;
			const RegionInfo &r = table_->by_id(op.region_id)->info;
			op.status = preserve_for_clones(r, (op.fa_offset - r.fa_offset) / kPageSize,
			                                op.count);
		}
	write_batch_locked(ops);
}

void ModuleStore::write_batch_locked(std::span<WriteOp> ops)
{
	admit_new_pages(ops);
	uint8_t *base = file_->base();
	// A round: up to kLogSlots pages taken from consecutive ops (an op may
	// span rounds), logged with one persist, then applied. A versioned op
	// contributes only the pages its version wins, as runs of pages.
	struct Chunk {
		const WriteOp *op;
		uint32_t first; // first page of the op in this chunk
		uint32_t n;
		uint64_t seq;
	};
	Chunk chunks[store::kLogSlots];
	uint32_t crcs[store::kLogSlots];
	// Versions of the pages this round will apply (not yet in the version
	// area), so a later op of the round compares against them.
	std::vector<std::pair<uint64_t, uint64_t>> round_versions;
	auto stored_version = [&](uint64_t idx) {
		for (auto it = round_versions.rbegin(); it != round_versions.rend(); ++it)
			if (it->first == idx)
				return it->second;
		return *wversion(idx);
	};
	size_t next_op = 0;
	uint32_t op_done = 0; // pages of ops[next_op] in earlier rounds
	uint64_t written = 0;
	for (;;) {
		uint32_t round = 0;
		size_t nchunks = 0;
		round_versions.clear();
		while (next_op < ops.size() && round < store::kLogSlots) {
			WriteOp &op = ops[next_op];
			if (!op.status.is_ok() || op.count == 0) {
				next_op++;
				continue;
			}
			if (op.version == 0) {
				uint32_t n = std::min(op.count - op_done, store::kLogSlots - round);
				chunks[nchunks++] = Chunk{&op, op_done, n, 0};
				round += n;
				op_done += n;
			} else {
				// Page by page: the pages whose version wins, in runs.
				uint64_t first = geo_.page_index(op.fa_offset);
				while (op_done < op.count && round < store::kLogSlots) {
					uint64_t idx = first + op_done;
					uint64_t have = stored_version(idx);
					bool wins = op.mode == VersionedMode::kRepair
					                    ? op.version >= have
					                    : op.version > have;
					if (wins) {
						Chunk *last = nchunks > 0 ? &chunks[nchunks - 1]
						                          : nullptr;
						if (last != nullptr && last->op == &op &&
						    last->first + last->n == op_done)
							last->n++;
						else
							chunks[nchunks++] =
							        Chunk{&op, op_done, 1, 0};
						round_versions.emplace_back(idx, op.version);
						op.applied++;
						round++;
					}
					op_done++;
				}
			}
			if (op_done == op.count) {
				next_op++;
				op_done = 0;
			}
		}
		if (round == 0)
			break;
		if (log_->wraps(round)) {
			checkpoint();
			log_->rewind();
		}
		uint32_t at = 0;
		for (size_t c = 0; c < nchunks; c++) {
			Chunk &k = chunks[c];
			k.seq = next_seq_;
			next_seq_ += k.n;
			log_->stage(k.seq, k.op->fa_offset + uint64_t{k.first} * kPageSize, k.n,
			            static_cast<const uint8_t *>(k.op->src) +
			                    uint64_t{k.first} * kPageSize,
			            crcs + at, k.op->version);
			at += k.n;
		}
		log_->persist_staged();
		if (crash_after_log_for_test_) {
			for (WriteOp &op : ops)
				if (op.status.is_ok())
					op.status =
					        Status(Code::kInternal,
					               "crash_after_log_for_test: records logged, "
					               "pages not applied");
			return;
		}
		at = 0;
		for (size_t c = 0; c < nchunks; c++) {
			const Chunk &k = chunks[c];
			uint64_t fa = k.op->fa_offset + uint64_t{k.first} * kPageSize;
			const uint8_t *in = static_cast<const uint8_t *>(k.op->src) +
			                    uint64_t{k.first} * kPageSize;
			uint64_t first = geo_.page_index(fa);
			int64_t taken = 0; // pages this chunk writes for the first time
			const RegionInfo &r = table_->by_id(k.op->region_id)->info;
			for (uint32_t i = 0; i < k.n; i++) {
				std::unique_lock page_lock(stripe(first + i));
				const uint8_t *src = in + uint64_t{i} * kPageSize;
				// Its record is logged: a replay writes the zeros, which
				// reads the same.
				if (k.op->version == 0 && !k.op->store_zeros &&
				    zero_write_noop(r, first + i - geo_.page_index(r.fa_offset),
				                    src))
					continue;
				memcpy(base + fa + uint64_t{i} * kPageSize, src, kPageSize);
				taken += meta(first + i)->version == 0;
				store_meta(meta(first + i), crcs[at + i], k.seq + i);
				if (k.op->version != 0)
					std::atomic_ref<uint64_t>(*wversion(first + i))
					        .store(k.op->version, std::memory_order_relaxed);
				unpersisted_.push_back(first + i);
			}
			if (taken > 0)
				space_.add(r, taken);
			at += k.n;
			written += k.n;
		}
	}
	pages_written_.fetch_add(written, std::memory_order_relaxed);
}

PoolInfo ModuleStore::info() const
{
	std::shared_lock lock(table_mu_);
	PoolInfo info;
	info.path = file_->path();
	info.module = module_;
	info.layout_version = layout_version_;
	info.table_slots = geo_.table_slots;
	info.pool_bytes = geo_.pool_bytes;
	info.capacity_bytes = geo_.capacity_pages * kPageSize;
	info.address_bytes = geo_.data_pages * kPageSize;
	info.thin = geo_.thin();
	info.address_free_bytes = alloc_->free_pages() * kPageSize;
	info.reserved_bytes = info.address_bytes - info.address_free_bytes;
	info.largest_free_bytes = alloc_->largest_free_pages() * kPageSize;
	info.used_bytes = space_.total() * kPageSize;
	info.free_bytes =
	        info.thin ? info.capacity_bytes - std::min(info.used_bytes, info.capacity_bytes)
	                  : info.address_free_bytes;
	info.regions = table_->live_count();
	info.pages_read = pages_read_.load(std::memory_order_relaxed);
	info.pages_written = pages_written_.load(std::memory_order_relaxed);
	info.log_replays = log_replays_;
	info.log_persists = log_->persists();
	info.is_pmem = file_->is_pmem();
	info.data_offset = geo_.data_offset;
	info.ctime_ns = ctime_ns_;
	return info;
}

} // namespace memfed
