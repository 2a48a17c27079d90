// A pool's space accounting (pool_space.h): the SpaceLedger, and
// ModuleStore's use of it (pool.h): deriving the counts at open, charging
// what owners hold, and admitting a write batch that takes new pages. Every
// function runs on the caller's thread under the locks its declaration
// names.
#include "daemon/store/pool_space.h"

#include <atomic>

#include "daemon/store/pool.h"

namespace memfed
{

using store::kPageSize;

namespace store
{

void SpaceLedger::add(const RegionInfo &r, int64_t delta)
{
	std::lock_guard lock(mu_);
	add_locked(r, delta);
}

void SpaceLedger::add_locked(const RegionInfo &r, int64_t delta)
{
	if (delta == 0)
		return;
	auto add = [delta](uint64_t &v) {
		v = static_cast<uint64_t>(static_cast<int64_t>(v) + delta);
	};
	add(total_);
	add(by_region_[r.id]);
	add(by_uid_[r.owner_uid]);
	add(by_node_[r.owner_key]);
	if (by_uid_[r.owner_uid] == 0)
		by_uid_.erase(r.owner_uid);
	if (by_node_[r.owner_key] == 0)
		by_node_.erase(r.owner_key);
}

void SpaceLedger::drop_region(const RegionInfo &r)
{
	std::lock_guard lock(mu_);
	auto it = by_region_.find(r.id);
	if (it == by_region_.end())
		return;
	add_locked(r, -static_cast<int64_t>(it->second));
	by_region_.erase(r.id);
}

uint64_t SpaceLedger::total() const
{
	std::lock_guard lock(mu_);
	return total_;
}

uint64_t SpaceLedger::of_region(uint32_t region_id) const
{
	std::lock_guard lock(mu_);
	auto it = by_region_.find(region_id);
	return it == by_region_.end() ? 0 : it->second;
}

uint64_t SpaceLedger::of_uid(uint32_t uid) const
{
	std::lock_guard lock(mu_);
	auto it = by_uid_.find(uid);
	return it == by_uid_.end() ? 0 : it->second;
}

uint64_t SpaceLedger::of_node(const NodeKeyBytes &key) const
{
	std::lock_guard lock(mu_);
	auto it = by_node_.find(key);
	return it == by_node_.end() ? 0 : it->second;
}

std::map<uint32_t, uint64_t> SpaceLedger::by_uid() const
{
	std::lock_guard lock(mu_);
	return by_uid_;
}

std::map<NodeKeyBytes, uint64_t> SpaceLedger::by_node() const
{
	std::lock_guard lock(mu_);
	return by_node_;
}

} // namespace store

Result<uint64_t> ModuleStore::count_written(uint64_t first, uint64_t count) const
{
	auto runs = meta_runs(first, count);
	if (!runs)
		return runs.status();
	uint64_t n = 0;
	for (auto [b, e] : *runs)
		for (uint64_t i = b; i < e; i++)
			n += std::atomic_ref<uint64_t>(meta(i)->version)
			             .load(std::memory_order_relaxed) != 0;
	return n;
}

RegionInfo ModuleStore::with_used(RegionInfo r) const
{
	r.used_bytes = space_.of_region(r.id) * kPageSize;
	return r;
}

OwnerUsage ModuleStore::charged(OwnerUsage usage, uint64_t used_pages) const
{
	if (geo_.thin())
		usage.bytes = used_pages * kPageSize;
	return usage;
}

void ModuleStore::set_write_admit(WriteAdmitFn fn)
{
	std::unique_lock lock(table_mu_);
	write_admit_ = std::move(fn);
}

OwnerUsage ModuleStore::usage_of(uint32_t owner_uid) const
{
	std::shared_lock lock(table_mu_);
	return usage_of_locked(owner_uid);
}

OwnerUsage ModuleStore::usage_of_locked(uint32_t owner_uid) const
{
	return charged(table_->usage_of(owner_uid), space_.of_uid(owner_uid));
}

std::map<uint32_t, OwnerUsage> ModuleStore::usage_by_owner() const
{
	std::shared_lock lock(table_mu_);
	std::map<uint32_t, OwnerUsage> out = table_->usage_by_owner();
	const std::map<uint32_t, uint64_t> used = space_.by_uid();
	for (auto &[uid, u] : out) {
		auto it = used.find(uid);
		u = charged(u, it == used.end() ? 0 : it->second);
	}
	return out;
}

OwnerUsage ModuleStore::usage_of_node(const NodeKeyBytes &key) const
{
	std::shared_lock lock(table_mu_);
	return usage_of_node_locked(key);
}

OwnerUsage ModuleStore::usage_of_node_locked(const NodeKeyBytes &key) const
{
	return charged(table_->usage_of_node(key), space_.of_node(key));
}

std::map<NodeKeyBytes, OwnerUsage> ModuleStore::usage_by_node() const
{
	std::shared_lock lock(table_mu_);
	std::map<NodeKeyBytes, OwnerUsage> out = table_->usage_by_node();
	const std::map<NodeKeyBytes, uint64_t> used = space_.by_node();
	for (auto &[key, u] : out) {
		auto it = used.find(key);
		u = charged(u, it == used.end() ? 0 : it->second);
	}
	return out;
}

// Fails each op of `ops` whose pages never written before would take the
// pool past its capacity, or which write_admit_ refuses, before anything is
// logged. Pages a versioned op would skip, and a page two ops both write
// first, are counted as new: the check errs on the side of refusing.
// REQUIRES: table_mu_ shared and write_mu_ held.
void ModuleStore::admit_new_pages(std::span<WriteOp> ops)
{
	uint64_t taken = 0; // by the ops admitted so far
	std::map<uint32_t, uint64_t> by_uid;
	std::map<NodeKeyBytes, uint64_t> by_node;
	for (WriteOp &op : ops) {
		if (!op.status.is_ok() || op.count == 0)
			continue;
		const RegionInfo &r = table_->by_id(op.region_id)->info;
		const uint64_t first = geo_.page_index(op.fa_offset);
		const uint64_t region_first = geo_.page_index(r.fa_offset);
		const auto *src = static_cast<const uint8_t *>(op.src);
		uint64_t fresh = 0;
		for (uint64_t i = first; i < first + op.count; i++)
			fresh += meta(i)->version == 0 &&
			         !(op.version == 0 && !op.store_zeros &&
			           zero_write_noop(r, i - region_first,
			                           src + (i - first) * kPageSize));
		if (fresh == 0)
			continue;
		const uint64_t used = space_.total();
		if (used + taken + fresh > geo_.capacity_pages) {
			op.status = Status(
			        Code::kNoSpace,
			        "cannot write " + std::to_string(fresh) + " new pages to region '" +
			                r.name + "' on module " + module_.to_string() + ": pool " +
			                file_->path() + " is full (" +
			                std::to_string((used + taken) * kPageSize) + " of " +
			                std::to_string(geo_.capacity_pages * kPageSize) +
			                " bytes written); delete regions that are no longer needed "
			                "or format a larger pool (memfedctl pool format --size)");
			continue;
		}
		if (write_admit_ && geo_.thin()) {
			OwnerUsage u = usage_of_locked(r.owner_uid);
			u.bytes += by_uid[r.owner_uid] * kPageSize;
			OwnerUsage n = usage_of_node_locked(r.owner_key);
			n.bytes += by_node[r.owner_key] * kPageSize;
			Status st = write_admit_(r, u, n, fresh * kPageSize);
			if (!st.is_ok()) {
				op.status = st;
				continue;
			}
		}
		taken += fresh;
		by_uid[r.owner_uid] += fresh;
		by_node[r.owner_key] += fresh;
	}
}

} // namespace memfed
