// The key.* and peer.* control ops; see trust_ops.h.
#include "daemon/service/trust_ops.h"

#include <algorithm>

#include "daemon/common/log.h"
#include "daemon/service/config.h"

namespace memfed
{

using control::error_reply;
using control::Message;
using control::ok_reply;
using nlohmann::json;

namespace
{

Status need_root(const control::Peer &caller, const std::string &what)
{
	if (caller.privileged())
		return Status::ok();
	return Status(Code::kPermission, "trusted peers are the whole node's trust: `memfedctl " +
	                                         what + "` needs root (uid " +
	                                         std::to_string(caller.uid) +
	                                         " asked); run it with sudo");
}

json peer_json(const trust::TrustedPeer &p, const char *source)
{
	return {{"key", trust::encode_key(p.key)},
	        {"name", p.name},
	        {"endpoint", p.endpoint},
	        {"transport", p.transport},
	        {"source", source}};
}

bool same_key(const trust::TrustedPeer &a, const trust::PublicKey &k)
{
	return a.key == k;
}

} // namespace

TrustOps::TrustOps(trust::PublicKey self, const DaemonConfig &cfg,
                   std::shared_ptr<trust::TrustedPeers> live)
    : self_(self), key_file_(cfg.trust.key_file), config_file_(cfg.config_file),
      live_(std::move(live)), file_peers_(cfg.trust.file_peers), flag_peers_(cfg.trust.flag_peers),
      rekey_seconds_(cfg.trust.rekey_seconds), rekey_bytes_(cfg.trust.rekey_bytes)
{
}

void TrustOps::register_ops(control::Server &server)
{
	using control::Peer;
	server.add_op("key.show", [this](const Peer &, Message &) { return key_show(); });
	server.add_op("peer.list", [this](const Peer &, Message &) { return peer_list(); });
	server.add_op("peer.add", [this](const Peer &p, Message &m) { return peer_add(p, m); });
	server.add_op("peer.rm", [this](const Peer &p, Message &m) { return peer_rm(p, m); });
}

void TrustOps::reload(const DaemonConfig::Trust &fresh)
{
	{
		MutexLock lk(&mu_);
		file_peers_ = fresh.file_peers;
		publish();
	}
	if (fresh.rekey_seconds == rekey_seconds_ && fresh.rekey_bytes == rekey_bytes_)
		return;
	rekey_seconds_ = fresh.rekey_seconds;
	rekey_bytes_ = fresh.rekey_bytes;
	if (rekey_listener_)
		rekey_listener_(rekey_seconds_, rekey_bytes_);
}

std::vector<trust::TrustedPeer> TrustOps::trusted()
{
	MutexLock lk(&mu_);
	return merge_trusted_peers(file_peers_, flag_peers_);
}

void TrustOps::publish()
{
	live_->replace(merge_trusted_peers(file_peers_, flag_peers_));
}

Message TrustOps::key_show()
{
	return ok_reply({{"key", trust::encode_key(self_)}, {"key_file", key_file_}});
}

Message TrustOps::peer_list()
{
	json list = json::array();
	for (const auto &p : live_->list()) {
		bool flag = std::any_of(
		        flag_peers_.begin(), flag_peers_.end(),
		        [&](const trust::TrustedPeer &f) { return same_key(f, p.key); });
		list.push_back(peer_json(p, flag ? "flag" : "config"));
	}
	return ok_reply({{"peers", list}, {"config_file", config_file_}});
}

Message TrustOps::peer_add(const control::Peer &caller, Message &req)
{
	Status st = need_root(caller, "peer add");
	if (!st)
		return error_reply(st);
	// The request's fields as one "trust.peers" entry: the config's own
	// checks, with errors naming the field.
	json entry = json::object();
	for (const char *field : {"key", "name", "endpoint", "transport"}) {
		auto it = req.body.find(field);
		if (it != req.body.end() && !(it->is_string() && it->get<std::string>().empty()))
			entry[field] = *it;
	}
	if (!entry.contains("key"))
		return error_reply(Status(Code::kInvalidArgument,
		                          "peer add needs a key (as `memfedctl key show` prints)"));
	std::vector<trust::TrustedPeer> parsed;
	st = parse_trusted_peers(json::array({entry}), "peer add", "peer", &parsed);
	if (!st)
		return error_reply(st);
	trust::TrustedPeer p = parsed[0];
	if (!p.name.empty() && trust::decode_public_key(p.name))
		return error_reply(
		        Status(Code::kInvalidArgument,
		               "peer name '" + p.name +
		                       "' looks like a key; give the peer a name of its own"));
	if (p.key == self_)
		return error_reply(Status(Code::kInvalidArgument,
		                          "key " + trust::encode_key(p.key) +
		                                  " is this node's own (memfedctl key show)"));

	MutexLock lk(&mu_);
	for (const auto &other : file_peers_)
		if (!p.name.empty() && other.name == p.name && other.key != p.key)
			return error_reply(Status(Code::kAlreadyExists,
			                          "peer name '" + p.name + "' is taken by " +
			                                  trust::encode_key(other.key) +
			                                  " (memfedctl peer rm " + p.name +
			                                  " first)"));
	std::vector<trust::TrustedPeer> next = file_peers_;
	auto same = std::find_if(next.begin(), next.end(),
	                         [&](const trust::TrustedPeer &e) { return same_key(e, p.key); });
	bool updated = same != next.end();
	if (updated)
		*same = p;
	else
		next.push_back(p);
	st = save_trusted_peers(config_file_, next);
	if (!st)
		return error_reply(st);
	file_peers_ = std::move(next);
	publish();
	LOG_INFO("trust", "peer %s: %s%s%s (uid %u), written to %s", updated ? "updated" : "added",
	         trust::TrustedPeers::describe(p.key, p.name).c_str(),
	         p.endpoint.empty() ? "" : " at ", p.endpoint.c_str(), unsigned(caller.uid),
	         config_file_.c_str());
	return ok_reply({{"peer", peer_json(p, "config")}, {"updated", updated}});
}

Message TrustOps::peer_rm(const control::Peer &caller, Message &req)
{
	Status st = need_root(caller, "peer rm");
	if (!st)
		return error_reply(st);
	auto it = req.body.find("peer");
	if (it == req.body.end() || !it->is_string() || it->get<std::string>().empty())
		return error_reply(
		        Status(Code::kInvalidArgument, "peer rm needs a peer's key or name"));
	const std::string which = it->get<std::string>();
	auto key = trust::decode_public_key(which);

	MutexLock lk(&mu_);
	auto matches = [&](const trust::TrustedPeer &p) {
		return key ? p.key == *key : p.name == which;
	};
	std::vector<trust::TrustedPeer> next = file_peers_;
	if (!key && std::count_if(next.begin(), next.end(), matches) > 1)
		return error_reply(Status(Code::kInvalidArgument,
		                          "more than one trusted peer is named " + which +
		                                  "; remove one by its key (memfedctl peer ls)"));
	auto gone = std::find_if(next.begin(), next.end(), matches);
	if (gone == next.end()) {
		if (std::any_of(flag_peers_.begin(), flag_peers_.end(), matches))
			return error_reply(Status(
			        Code::kInvalidArgument,
			        "peer " + which +
			                " is trusted by memfedd's --trust flag, not the config "
			                "file; restart memfedd without that flag to drop it"));
		return error_reply(
		        Status(Code::kNotFound,
		               "no trusted peer " + which + " (memfedctl peer ls lists them)"));
	}
	trust::TrustedPeer removed = *gone;
	next.erase(gone);
	st = save_trusted_peers(config_file_, next);
	if (!st)
		return error_reply(st);
	file_peers_ = std::move(next);
	publish();
	bool still = live_->contains(removed.key);
	LOG_INFO("trust", "peer removed: %s (uid %u), written to %s%s",
	         trust::TrustedPeers::describe(removed.key, removed.name).c_str(),
	         unsigned(caller.uid), config_file_.c_str(),
	         still ? "; still trusted by a --trust flag" : "");
	return ok_reply({{"peer", peer_json(removed, "config")}, {"still_trusted", still}});
}

} // namespace memfed
