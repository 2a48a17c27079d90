// TrustOps: the control ops for this node's identity and the keys it trusts,
// served for `memfedctl key show` and `memfedctl peer add|rm|ls`:
//
//   key.show   the node's public key and key file (never the private key);
//              any local user
//   peer.list  the trusted keys: key, name, endpoint, and where each comes
//              from ("config" file or "flag"); any local user
//   peer.add   {"key", "name"?, "endpoint"?}: trust a key, or update its name
//              and endpoint; root only
//   peer.rm    {"peer": KEY or NAME}: trust it no more; root only
//
// add and rm change the live TrustedPeers at once (the next handshake sees
// them) and write the config file's "trust.peers" (save_trusted_peers). Keys
// given by --trust stay trusted while memfedd runs and are never written to
// the file; rm of one is refused, naming the flag.
//
// Thread-safety: handlers run on control threads concurrently; reload() runs
// on the main thread. One mutex orders every change, and its write to the
// file.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "daemon/common/thread_annotations.h"
#include "daemon/control/server.h"
#include "daemon/service/config.h"
#include "daemon/trust/node_key.h"
#include "daemon/trust/trusted_peers.h"

namespace memfed
{

class TrustOps
{
public:
	// `cfg` gives the key file, the config file "trust.peers" is written to,
	// the file's and the flags' peers, and the rekey limits at start.
	TrustOps(trust::PublicKey self, const DaemonConfig &cfg,
	         std::shared_ptr<trust::TrustedPeers> live);
	void register_ops(control::Server &server);
	// The trusted set as the config lists it (the file's peers, then the
	// --trust keys), after every peer add and rm so far.
	std::vector<trust::TrustedPeer> trusted();
	// Called by reload() with new rekey limits (trust.rekey_seconds,
	// trust.rekey_bytes) for the sessions keyed from then on.
	using RekeyListener = std::function<void(uint32_t seconds, uint64_t bytes)>;
	void on_rekey_limits(RekeyListener f) { rekey_listener_ = std::move(f); }
	// A reload read the config again: its "trust.peers" replaces the file's
	// list, the live set becomes it plus the --trust keys, and changed rekey
	// limits go to the listener.
	void reload(const DaemonConfig::Trust &fresh);

private:
	control::Message key_show();
	control::Message peer_list();
	control::Message peer_add(const control::Peer &caller, control::Message &req);
	control::Message peer_rm(const control::Peer &caller, control::Message &req);
	// The live set from the two lists.
	void publish() REQUIRES(mu_);

	const trust::PublicKey self_;
	const std::string key_file_;
	const std::string config_file_;
	const std::shared_ptr<trust::TrustedPeers> live_;
	Mutex mu_;
	std::vector<trust::TrustedPeer> file_peers_ GUARDED_BY(mu_);
	const std::vector<trust::TrustedPeer> flag_peers_;
	RekeyListener rekey_listener_; // set before the ops serve
	uint32_t rekey_seconds_;       // the limits in force, main thread only
	uint64_t rekey_bytes_;
};

} // namespace memfed
