#include "daemon/store/region_access.h"

#include <algorithm>
#include <cstring>

#include "daemon/common/crc32c.h"

namespace memfed
{

std::string rights_text(uint8_t rights)
{
	std::string s;
	if (rights & kRightRead)
		s += 'r';
	if (rights & kRightWrite)
		s += 'w';
	return s.empty() ? "-" : s;
}

bool is_zero_key(const NodeKeyBytes &k)
{
	return std::all_of(k.begin(), k.end(), [](uint8_t b) { return b == 0; });
}

Status apply_grant(RegionAccess *a, const std::string &region, const AccessGrant &g)
{
	auto it = std::find_if(a->grants.begin(), a->grants.end(), [&](const AccessGrant &x) {
		return x.key == g.key && x.uid == g.uid;
	});
	if (g.rights == 0) {
		if (it == a->grants.end())
			return Status(Code::kNotFound, "region '" + region +
			                                       "' has no such grant to revoke "
			                                       "(memfedctl region show " +
			                                       region + ")");
		a->grants.erase(it);
		return Status::ok();
	}
	if (it != a->grants.end()) {
		it->rights = g.rights;
		return Status::ok();
	}
	if (a->grants.size() >= store::kMaxGrants)
		return Status(Code::kNoSpace,
		              "region '" + region + "' already has " +
		                      std::to_string(store::kMaxGrants) +
		                      " grants, the most a region holds; revoke one first "
		                      "(memfedctl region revoke), or grant a node's every user "
		                      "at once (PEER without :UID)");
	a->grants.push_back(g);
	return Status::ok();
}

namespace store
{

uint32_t access_crc(const AccessRecord &r)
{
	AccessRecord c = r;
	c.crc = 0;
	return crc32c(&c, sizeof(c));
}

AccessRecord encode_access(const RegionAccess &a, uint64_t seq, uint32_t generation)
{
	AccessRecord r{};
	r.seq = seq;
	r.generation = generation;
	r.grant_count = static_cast<uint8_t>(std::min<size_t>(a.grants.size(), kMaxGrants));
	memcpy(r.owner_key, a.owner_key.data(), sizeof(r.owner_key));
	for (size_t i = 0; i < r.grant_count; i++) {
		memcpy(r.grants[i].key, a.grants[i].key.data(), sizeof(r.grants[i].key));
		r.grants[i].uid = a.grants[i].uid;
		r.grants[i].rights = a.grants[i].rights;
	}
	r.crc = access_crc(r);
	return r;
}

std::optional<RegionAccess> decode_access(const AccessRecord &r, uint32_t generation)
{
	if (r.seq == 0 || r.crc != access_crc(r) || r.generation != generation ||
	    r.grant_count > kMaxGrants)
		return std::nullopt;
	RegionAccess a;
	memcpy(a.owner_key.data(), r.owner_key, sizeof(r.owner_key));
	for (uint32_t i = 0; i < r.grant_count; i++) {
		AccessGrant g;
		memcpy(g.key.data(), r.grants[i].key, sizeof(r.grants[i].key));
		g.uid = r.grants[i].uid;
		g.rights = r.grants[i].rights;
		if (g.rights == 0 || (g.rights & ~kRightsKnown) != 0)
			return std::nullopt;
		a.grants.push_back(g);
	}
	return a;
}

std::optional<CurrentAccess> current_access(const AccessRecord copies[2], uint32_t generation)
{
	std::optional<CurrentAccess> best;
	for (int i = 0; i < 2; i++) {
		auto a = decode_access(copies[i], generation);
		if (a && (!best || copies[i].seq > best->seq))
			best = CurrentAccess{i, copies[i].seq, std::move(*a)};
	}
	return best;
}

} // namespace store
} // namespace memfed
