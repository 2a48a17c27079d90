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

#include <memory>
#include <string>
#include <vector>

#include "daemon/common/thread_annotations.h"
#include "daemon/control/server.h"
#include "daemon/trust/node_key.h"
#include "daemon/trust/trusted_peers.h"

namespace memfed
{

class TrustOps
{
public:
	// `config_file` is where "trust.peers" is written (DaemonConfig::config_file).
	TrustOps(trust::PublicKey self, std::string key_file, std::string config_file,
	         std::shared_ptr<trust::TrustedPeers> live,
	         std::vector<trust::TrustedPeer> file_peers,
	         std::vector<trust::TrustedPeer> flag_peers);
	void register_ops(control::Server &server);
	// A reload read the config file again: its "trust.peers" replaces the
	// file's list, and the live set becomes it plus the --trust keys.
	void reload(std::vector<trust::TrustedPeer> file_peers);

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
};

} // namespace memfed
