// ControlOps' region.grant, region.revoke and the grants region.show lists:
// who besides the owner node may read or write a region (region_authz.h),
// changed on the module that holds it (REGION_ACCESS).
#include <cstring>

#include "daemon/common/log.h"
#include "daemon/service/control_ops.h"
#include "daemon/trust/node_key.h"

namespace memfed {

using control::error_reply;
using control::Message;
using control::ok_reply;
using nlohmann::json;

namespace {

Result<std::string> string_field(const json &b, const char *key)
{
	auto it = b.find(key);
	if (it == b.end() || !it->is_string() || it->get<std::string>().empty())
		return Status(Code::kInvalidArgument, std::string("request needs a non-empty string \"") + key + "\"");
	return it->get<std::string>();
}

} // namespace

std::string ControlOps::key_name(const trust::PublicKey &key) const
{
	if (!trusted_)
		return "";
	auto p = trusted_->find(key);
	return p ? p->name : "";
}

json ControlOps::access_json(const RegionLocation &loc, uint32_t uid)
{
	auto list = fed_->region_access(loc, uid, wire::AccessOp::kShow, AccessGrant{});
	if (!list)
		return nullptr;
	trust::PublicKey owner;
	std::memcpy(owner.data(), list->owner_key, owner.size());
	json o = {{"key", trust::encode_key(owner)}, {"uid", list->owner_uid}};
	if (std::string n = key_name(owner); !n.empty())
		o["name"] = n;
	json grants = json::array();
	for (const wire::WireGrant &g : list->grants) {
		trust::PublicKey k;
		std::memcpy(k.data(), g.key, k.size());
		json j = {{"key", trust::encode_key(k)},
			  {"uid", g.uid == kAnyUid ? json(nullptr) : json(g.uid)},
			  {"rights", (g.rights & wire::kAccessWrite) ? "write" : "read"}};
		if (std::string n = key_name(k); !n.empty())
			j["name"] = n;
		grants.push_back(j);
	}
	return {{"owner", o}, {"grants", grants}};
}

// "peer": KEY or a trusted peer's NAME, optionally ":UID"; "rights" (grant
// only): "read" or "write" ("r" and "rw" too).
Message ControlOps::region_grant(const control::Peer &peer, Message &req, bool grant)
{
	auto who = string_field(req.body, "peer");
	if (!who)
		return error_reply(who.status());
	AccessGrant g;
	std::string id = *who;
	if (auto colon = id.rfind(':'); colon != std::string::npos) {
		std::string uid = id.substr(colon + 1);
		if (uid.empty() || uid.size() > 10 || uid.find_first_not_of("0123456789") != std::string::npos ||
		    std::stoull(uid) >= kAnyUid)
			return error_reply(Status(Code::kInvalidArgument,
						  "'" + uid + "' in '" + *who +
							  "' is not a uid (PEER:UID, a number below 4294967295)"));
		g.uid = uint32_t(std::stoull(uid));
		id = id.substr(0, colon);
	}
	std::optional<trust::PublicKey> key;
	if (trusted_)
		for (const trust::TrustedPeer &p : trusted_->list())
			if (p.name == id)
				key = p.key;
	if (!key) {
		auto k = trust::decode_public_key(id, "peer");
		if (!k)
			return error_reply(Status(Code::kInvalidArgument,
						  "'" + id + "' is neither a trusted peer's name nor a key (" +
							  k.status().message() +
							  "); `memfedctl peer ls` lists both"));
		key = *k;
	}
	std::memcpy(g.key.data(), key->data(), g.key.size());
	if (grant) {
		auto rights = string_field(req.body, "rights");
		if (!rights)
			return error_reply(rights.status());
		if (*rights == "read" || *rights == "r")
			g.rights = kRightRead;
		else if (*rights == "write" || *rights == "rw")
			g.rights = kRightRead | kRightWrite;
		else
			return error_reply(Status(Code::kInvalidArgument,
						  "rights '" + *rights +
							  "': give read (r) or write (rw, which includes read)"));
	}
	auto loc = find_region(peer, req, Access::kOwner);
	if (!loc)
		return error_reply(loc.status());
	auto list = fed_->region_access(*loc, peer.uid,
					grant ? wire::AccessOp::kGrant : wire::AccessOp::kRevoke, g);
	if (!list)
		return error_reply(list.status());
	LOG_INFO("control", "uid %u %s region '%s' to %s%s", peer.uid,
		 grant ? ("granted " + rights_text(g.rights) + " of").c_str() : "revoked the grant of",
		 loc->name.c_str(), trust::encode_key(*key).c_str(),
		 g.uid == kAnyUid ? " (every uid)" : (" uid " + std::to_string(g.uid)).c_str());
	json body = {{"name", loc->name}};
	if (json access = access_json(*loc, peer.uid); !access.is_null())
		body.update(access);
	return ok_reply({{"region", body}});
}

} // namespace memfed
