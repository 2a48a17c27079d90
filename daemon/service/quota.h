// Quotas: how much of this node's module one local user (uid) may hold, in
// bytes and in regions, so that no unprivileged user can fill the pool or the
// region table for everyone.
//
// A limit is an amount, a percentage of the module ("50%" of the pool's
// capacity, or of its region table's slots), or none. The defaults are half of
// each: generous enough that one user's ordinary work never meets them, and
// finite, so one user (a runaway loop, a hostile script) always leaves at
// least half of the pool and of the table to everyone else. Root (uid 0) is
// exempt unless "quota.root_exempt" is false: the daemon's own tools and an
// administrator's repairs must not be stopped by a quota.
//
// Usage is what the module's region table records for the uid (ModuleStore::
// usage_of): every region it owns there, whoever created it. On a pool of
// layout 1 to 4 (thick) a region's whole size is charged at create (its
// extent is reserved then; a truncate changes only its length as a file,
// within that size), so create is the one place a quota is checked, under the
// store's table lock (ModuleStore::AdmitFn). On a thin pool (layout 5,
// daemon/store/layout.h) a region's size is only address space: a program's
// heap is a region of a size no program reaches. There the byte quotas count
// the pages written, and are checked when a write first takes a page
// (ModuleStore::WriteAdmitFn, admit_write); the region quotas are checked at
// create as before.
// Regions another node creates on this module count against that node's
// quota ("quota.node_bytes", "quota.node_regions"), keyed on the node key TLS
// authenticated and recorded with each region (the pool's access area,
// daemon/store/region_access.h), so a node cannot evade it by claiming a new
// module ID. The module's own node is not limited by it (its users have
// their uid quotas).
//
// Thread-safety: plain values and pure functions.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "daemon/common/status.h"
#include "daemon/store/region_table.h"

namespace memfed
{

// One limit: an amount, a percentage of the whole it limits, or none.
struct QuotaLimit {
	enum class Kind { kNone, kAmount, kPercent };
	Kind kind = Kind::kNone;
	uint64_t value = 0; // the amount, or the percentage (1..100)

	static QuotaLimit none() { return {}; }
	static QuotaLimit amount(uint64_t n) { return {Kind::kAmount, n}; }
	static QuotaLimit percent(uint64_t p) { return {Kind::kPercent, p}; }
	// The limit against `whole` (pool bytes or table slots); kNoLimit for none.
	uint64_t resolve(uint64_t whole) const;
	// As the config file writes it: null, a number, or "N%".
	nlohmann::json to_json() const;
	bool operator==(const QuotaLimit &) const = default;
};

constexpr uint64_t kNoLimit = UINT64_MAX;

// Parses a config value for `key` (named in errors, with `origin`): null (no
// limit), "N%" (1 to 100), an unsigned number, or, when `bytes`, a size
// string like "512M".
Status parse_quota_limit(const std::string &origin, const std::string &key, const nlohmann::json &v,
                         bool bytes, QuotaLimit *out);

struct QuotaConfig {
	QuotaLimit uid_bytes = QuotaLimit::percent(50);
	QuotaLimit uid_regions = QuotaLimit::percent(50);
	QuotaLimit node_bytes = QuotaLimit::percent(50);   // per other node, by its key
	QuotaLimit node_regions = QuotaLimit::percent(50); // likewise
	bool root_exempt = true;
};

// What one module offers: its pool's data capacity and its table's slots.
struct ModuleSize {
	uint64_t capacity_bytes = 0;
	uint64_t table_slots = 0;
};

// The limits that apply to `uid` on a module of `size` (kNoLimit: none).
struct UidLimits {
	uint64_t bytes = kNoLimit;
	uint64_t regions = kNoLimit;
	bool exempt = false; // root with quota.root_exempt
};
UidLimits uid_limits(const QuotaConfig &q, uint32_t uid, const ModuleSize &size);

// Whether `uid`, holding `usage` on module `module` of `size`, may create
// region `name` of `bytes` more: OK, or kQuota naming the quota, the usage and
// the fix (the config key to raise, in `config_path`).
Status admit_region(const QuotaConfig &q, uint32_t uid, const OwnerUsage &usage,
                    const std::string &name, uint64_t bytes, const std::string &module,
                    const ModuleSize &size, const std::string &config_path);

// The limits each other node has on a module of `size` (kNoLimit: none).
struct NodeLimits {
	uint64_t bytes = kNoLimit;
	uint64_t regions = kNoLimit;
};
NodeLimits node_limits(const QuotaConfig &q, const ModuleSize &size);

// admit_region for another node (`node`: its key as the message shows it),
// holding `usage` on this module, against "quota.node_bytes" and
// "quota.node_regions".
Status admit_node_region(const QuotaConfig &q, const std::string &node, const OwnerUsage &usage,
                         const std::string &name, uint64_t bytes, const std::string &module,
                         const ModuleSize &size, const std::string &config_path);

// On a thin pool: whether a write that takes `more_bytes` of pages never
// written before may go into region `r`, whose owner (uid `r.owner_uid` of
// this node, or node `node` when r.owner_key is not zero) holds `usage`
// written bytes: OK, or kQuota naming the quota, the usage and the fix.
Status admit_write(const QuotaConfig &q, const RegionInfo &r, const std::string &node,
                   const OwnerUsage &usage, uint64_t more_bytes, const std::string &module,
                   const ModuleSize &size, const std::string &config_path);

} // namespace memfed
