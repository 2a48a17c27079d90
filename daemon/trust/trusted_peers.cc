// The trusted-key set; see trusted_peers.h.
#include "daemon/trust/trusted_peers.h"

namespace memfed::trust
{

void TrustedPeers::replace(std::vector<TrustedPeer> peers)
{
	std::map<PublicKey, TrustedPeer> next;
	for (auto &p : peers)
		next[p.key] = std::move(p);
	MutexLock lk(&mu_);
	peers_.swap(next);
}

std::optional<TrustedPeer> TrustedPeers::find(const PublicKey &key) const
{
	MutexLock lk(&mu_);
	auto it = peers_.find(key);
	if (it == peers_.end())
		return std::nullopt;
	return it->second;
}

std::vector<TrustedPeer> TrustedPeers::list() const
{
	MutexLock lk(&mu_);
	std::vector<TrustedPeer> out;
	out.reserve(peers_.size());
	for (const auto &[k, p] : peers_)
		out.push_back(p);
	return out;
}

size_t TrustedPeers::size() const
{
	MutexLock lk(&mu_);
	return peers_.size();
}

std::string TrustedPeers::describe(const PublicKey &key, const std::string &name)
{
	if (name.empty())
		return encode_key(key);
	return name + " (" + encode_key(key) + ")";
}

std::string TrustedPeers::describe(const PublicKey &key) const
{
	auto p = find(key);
	return describe(key, p ? p->name : std::string());
}

} // namespace memfed::trust
