#include "daemon/service/region_authz.h"

#include "daemon/trust/trusted_peers.h"
#include "daemon/wire/protocol.h"

namespace memfed
{

uint8_t rights_of(const RegionInfo &r, const RegionAccess &a, const Requester &q)
{
	constexpr uint8_t kAll = wire::kAccessKnown;
	if (q.local)
		return kAll;
	if (q.key == a.owner_key) {
		if (!q.uid_known || q.uid == 0 || q.uid == r.owner_uid)
			return kAll;
		uint8_t rights = 0;
		if (r.mode & 04)
			rights |= wire::kAccessRead;
		if (r.mode & 02)
			rights |= wire::kAccessWrite;
		return rights;
	}
	uint8_t rights = 0;
	for (const AccessGrant &g : a.grants)
		if (g.key == q.key && (!q.uid_known || g.uid == kAnyUid || g.uid == q.uid)) {
			if (g.rights & kRightRead)
				rights |= wire::kAccessRead;
			if (g.rights & kRightWrite)
				rights |= wire::kAccessWrite;
		}
	return rights;
}

std::string want_text(uint8_t want)
{
	if (want & wire::kAccessAdmin)
		return "administer";
	if ((want & wire::kAccessWrite) && (want & wire::kAccessRead))
		return "read and write";
	return want & wire::kAccessWrite ? "write" : "read";
}

Status refusal(const RegionInfo &r, ModuleId module, const std::string &owner, const Requester &q,
               uint8_t want)
{
	const std::string key = trust::encode_key(q.key);
	const std::string who = "node " + trust::TrustedPeers::describe(q.key, q.key_name) +
	                        (q.uid_known ? " uid " + std::to_string(q.uid) : std::string());
	std::string msg = who + " may not " + want_text(want) + " region '" + r.name +
	                  "' on module " + module.to_string() + " (owner: node " + owner + " uid " +
	                  std::to_string(r.owner_uid) + ")";
	if (want & wire::kAccessAdmin)
		return Status(Code::kPermission,
		              msg + "; only its owner may delete it or change its grants");
	return Status(Code::kPermission,
	              msg + "; its owner can allow it with `memfedctl region grant " + r.name +
	                      " " + key + (q.uid_known ? ":" + std::to_string(q.uid) : "") +
	                      ((want & wire::kAccessWrite) ? " write`" : " read`"));
}

} // namespace memfed
