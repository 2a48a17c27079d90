// Region access records: who owns a region (the node key and the uid it
// vouches for) and whom the owner granted access, as the pool keeps them
// (layout 4's access area, layout.h AccessRecord), and their encoding.
//
// A grant names a node key and a uid on that node (kAnyUid: every user of
// that node) and the rights it gives: kRightRead, or kRightRead|kRightWrite.
// An owner key of all zeros means the node that runs the module (so a pool
// of an older layout, which records no owner node, reads that way, and a
// module's own regions survive a change of its node key).
//
// Thread-safety: plain values and pure functions.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "daemon/common/status.h"
#include "daemon/store/layout.h"

namespace memfed
{

using NodeKeyBytes = std::array<uint8_t, 32>;

constexpr uint32_t kAnyUid = 0xffffffffu;
constexpr uint8_t kRightRead = 1 << 0;
constexpr uint8_t kRightWrite = 1 << 1;
constexpr uint8_t kRightsKnown = kRightRead | kRightWrite;

struct AccessGrant {
	NodeKeyBytes key{};
	uint32_t uid = kAnyUid;
	uint8_t rights = 0;
	bool operator==(const AccessGrant &) const = default;
};

struct RegionAccess {
	NodeKeyBytes owner_key{}; // zeros: the node that runs the module
	std::vector<AccessGrant> grants;
	bool operator==(const RegionAccess &) const = default;
};

// "r" or "rw" for a grant's rights.
std::string rights_text(uint8_t rights);
bool is_zero_key(const NodeKeyBytes &k);

// `a` with the grant for (key, uid) set to `rights` (replacing one for the
// same key and uid) or, with rights 0, removed. kNoSpace when a new grant
// would exceed store::kMaxGrants (the message names the region and the fix:
// revoke one, or grant the node's every user at once); kNotFound when a
// revoke finds no such grant.
Status apply_grant(RegionAccess *a, const std::string &region, const AccessGrant &g);

namespace store
{

// Encodes `a` as a record of `seq` (nonzero) for a slot of `generation`.
// REQUIRES: a.grants.size() <= kMaxGrants.
AccessRecord encode_access(const RegionAccess &a, uint64_t seq, uint32_t generation);
// The record's content if it is valid for a slot of `generation` (crc, seq
// nonzero, generation, grant count and rights in range), else nullopt.
std::optional<RegionAccess> decode_access(const AccessRecord &r, uint32_t generation);
uint32_t access_crc(const AccessRecord &r);

// The current one of a slot's two copies: its index (0 or 1), seq and
// content; nullopt when neither is valid.
struct CurrentAccess {
	int copy = 0;
	uint64_t seq = 0;
	RegionAccess access;
};
std::optional<CurrentAccess> current_access(const AccessRecord copies[2], uint32_t generation);

} // namespace store
} // namespace memfed
