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
// usage_of): every region it owns there, whoever created it. A region's whole
// size is charged at create (its extent is reserved then; a truncate changes
// only its length as a file, within that size), so create is the one place a
// quota is checked, under the store's table lock (ModuleStore::AdmitFn).
// Regions a local user creates on another module count against that module's
// quota for this node ("quota.node_bytes", "quota.node_regions"), which
// applies once peers are authenticated: today a peer's module ID is whatever
// its HELLO claims, so a quota keyed on it would be evaded by claiming a new
// one, and the pool does not record which node created a region.
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
	QuotaLimit node_bytes = QuotaLimit::percent(50);   // applies once peers are authenticated
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

} // namespace memfed
