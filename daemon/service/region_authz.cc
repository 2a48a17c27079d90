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
	// Built by appending (g++ 12 warns falsely on some "literal" + string).
	std::string uid;
	if (q.uid_known)
		uid = std::to_string(q.uid);
	std::string msg = "node ";
	msg += trust::TrustedPeers::describe(q.key, q.key_name);
	if (q.uid_known)
		msg.append(" uid ").append(uid);
	msg.append(" may not ").append(want_text(want)).append(" region '").append(r.name);
	msg.append("' on module ").append(module.to_string()).append(" (owner: node ");
	msg.append(owner).append(" uid ").append(std::to_string(r.owner_uid)).append(")");
	if (want & wire::kAccessAdmin)
		return Status(Code::kPermission,
		              msg + "; only its owner may delete it or change its grants");
	msg.append("; its owner can allow it with `memfedctl region grant ").append(r.name);
	msg.append(" ").append(trust::encode_key(q.key));
	if (q.uid_known)
		msg.append(":").append(uid);
	msg.append((want & wire::kAccessWrite) ? " write`" : " read`");
	return Status(Code::kPermission, msg);
}

} // namespace memfed
