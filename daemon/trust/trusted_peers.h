// TrustedPeers: the public keys this node talks to, as `memfedctl peer add`
// and the config's "trust.peers" give them. A key is the peer's identity,
// wherever it connects from; the endpoint (optional) is only where to dial
// it. A mesh node trusts the keys in this set, not whoever announces a
// route.
//
// Thread-safety: every method may be called from any thread; replace()
// (a config reload) takes effect for the next handshake.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "daemon/common/thread_annotations.h"
#include "daemon/trust/node_key.h"

namespace memfed::trust
{

struct TrustedPeer {
	PublicKey key{};
	std::string name;     // for logs and `peer ls`; "" if none was given
	std::string endpoint; // "host:port" to dial, "" if it only dials us
	// How the pager reaches this peer's module: "auto", "tcp" or "rdma";
	// "" = the node's own "transport".
	std::string transport;
	bool operator==(const TrustedPeer &) const = default;
};

class TrustedPeers
{
public:
	TrustedPeers() = default;
	explicit TrustedPeers(std::vector<TrustedPeer> peers) { replace(std::move(peers)); }

	// Replaces the whole set (the last entry wins for a repeated key).
	void replace(std::vector<TrustedPeer> peers);
	std::optional<TrustedPeer> find(const PublicKey &key) const;
	bool contains(const PublicKey &key) const { return find(key).has_value(); }
	std::vector<TrustedPeer> list() const; // in key order
	size_t size() const;

	// "name (KEY)" or "KEY": how logs name a peer's key.
	static std::string describe(const PublicKey &key, const std::string &name);
	std::string describe(const PublicKey &key) const;

private:
	mutable Mutex mu_;
	std::map<PublicKey, TrustedPeer> peers_ GUARDED_BY(mu_);
};

} // namespace memfed::trust
