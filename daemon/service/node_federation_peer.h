// The parts of NodeFederation that both of its source files use: a peer
// module as the federation knows it, and with_peer(), which runs a request
// against one over its SyncClient. Private to node_federation.cc and
// replicated_regions.cc (and their test); nothing else includes it.
#pragma once

#include <algorithm>
#include <atomic>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "daemon/common/clock.h"
#include "daemon/common/log.h"
#include "daemon/service/node_federation.h"
#include "daemon/trust/trusted_peers.h"

namespace memfed
{

// How long a control-path request to a peer may take.
constexpr int kPeerTimeoutMs = 3000;
// How long a quiet peer (below) gets to answer a HELLO.
constexpr int kQuietTryMs = 500;
// How many peers one ask_peers (below) asks at once: a federation of 64
// modules searched for a name starts 7 threads (the caller asks too), not 63.
constexpr size_t kPeersAskedAtOnce = 8;

struct NodeFederation::Peer {
	std::string endpoint;
	std::mutex mu;
	std::unique_ptr<SyncClient> client; // null while unreachable
	ModuleId module;                    // learned at HELLO (mesh peers: known from the route)
	uint64_t capacity = 0;
	std::string key;      // its authenticated public key (base64), once connected
	std::string key_name; // that key's name among the trusted peers
	// Mesh peers only, guarded by peers_mu_: the route that makes it known.
	bool mesh = false;
	bool route_up = true;
	uint32_t metric = 0;
	uint32_t hops = 0;
	std::string down_reason;
	uint64_t down_since_unix_ms = 0;
	// Guarded by peers_mu_: set while its last HELLO was refused
	// (admit_identity), with the refused key and where it answered.
	std::string conflict;
	std::string conflict_key;
	std::string conflict_endpoint;
	// Guarded by mu: a peer that let a request run out of time (stopped,
	// hung, a path that drops everything) is quiet until quiet_until_ms:
	// requests give it only a brief HELLO (kQuietTryMs), so that each does
	// not wait out the whole timeout again; the quiet doubles while it
	// stays silent (2 s to 30 s).
	uint64_t quiet_until_ms = 0;
	uint64_t quiet_for_ms = 0;
	std::string quiet_why;

	// A request to the peer, begun at `started_ms`, failed with `st`: if it
	// failed by running out of time, the peer goes quiet. Returns `st`.
	Status failed(uint64_t started_ms, Status st);
};

// Runs fn(*peer) for every peer and returns what each gave, in the peers'
// order. Up to kPeersAskedAtOnce peers are asked at once, the calling thread
// one of the askers: each takes the next peer not yet asked (nearest first,
// in peers_nearest_first's order) until none is left. A search of the
// federation then costs about its slowest peer's time (a silent one waits
// out kPeerTimeoutMs), not the sum of every peer's; past kPeersAskedAtOnce
// silent peers, one such wait for each kPeersAskedAtOnce of them. fn must be
// safe to run concurrently for distinct peers (with_peer is: it holds only
// that peer's lock).
template <typename Fn>
auto NodeFederation::ask_peers(const std::vector<Peer *> &peers, Fn fn)
        -> std::vector<std::optional<decltype(fn(*(Peer *)nullptr))>>
{
	std::vector<std::optional<decltype(fn(*(Peer *)nullptr))>> out(peers.size());
	std::atomic<size_t> next{0};
	auto ask = [&] {
		for (size_t i; (i = next.fetch_add(1)) < peers.size();)
			out[i].emplace(fn(*peers[i]));
	};
	std::vector<std::thread> askers;
	size_t at_once = std::min(peers.size(), kPeersAskedAtOnce);
	for (size_t k = 1; k < at_once; k++)
		askers.emplace_back(ask);
	ask();
	for (auto &t : askers)
		t.join();
	return out;
}

template <typename Fn>
auto NodeFederation::with_peer(Peer &p, Fn fn) -> decltype(fn(*(SyncClient *)nullptr))
{
	std::lock_guard<std::mutex> lk(p.mu);
	uint64_t started = mono_ms();
	if (started < p.quiet_until_ms) {
		// Quiet: one brief HELLO instead of the whole timeout. An answer
		// ends the quiet at once (the module is back); none fails fast.
		p.client.reset();
		auto c = SyncClient::connect(p.endpoint, self_, kQuietTryMs, tls_);
		if (!c || !(*c)->hello())
			return Status(Code::kUnavailable,
			              "module " + p.module.to_string() + " at " + p.endpoint +
			                      " did not answer in time (" + p.quiet_why +
			                      "), nor a brief HELLO since");
		LOG_INFO("federation", "module %s at %s answers again", p.module.to_string().c_str(),
		         p.endpoint.c_str());
		p.quiet_until_ms = 0;
		started = mono_ms();
	}
	for (int attempt = 0; attempt < 2; attempt++) {
		if (!p.client) {
			auto c = SyncClient::connect(p.endpoint, self_, kPeerTimeoutMs, tls_);
			if (!c)
				return p.failed(started, c.status());
			Status st = (*c)->hello();
			if (st.code() == Code::kAlreadyExists) {
				// The module refused us as a second pool of its ID
				// (ours): shown as a conflict, its message says why.
				std::lock_guard<std::mutex> lk(peers_mu_);
				p.conflict = st.message();
				p.conflict_endpoint = p.endpoint;
				if ((*c)->peer().authenticated)
					p.conflict_key = trust::encode_key((*c)->peer().key);
				if (store_ && !p.mesh)
					p.module = store_->module_id();
			}
			if (!st)
				return p.failed(started, st);
			const PeerInfo &info = (*c)->peer();
			if (Status id = admit_identity(p, info); !id)
				return id;
			p.module = info.module;
			p.capacity = info.capacity_bytes;
			p.key = info.authenticated ? trust::encode_key(info.key) : std::string();
			p.key_name = info.key_name;
			p.client = std::move(*c);
			LOG_INFO("federation", "peer %s is module %s%s%s", p.endpoint.c_str(),
			         p.module.to_string().c_str(),
			         p.key.empty() ? " (not authenticated)" : ", key ",
			         p.key.empty() ? ""
			                       : trust::TrustedPeers::describe(info.key, p.key_name)
			                                 .c_str());
		}
		auto r = fn(*p.client);
		// kCorrupt: a TLS record failed its tag (altered in transit) or a
		// page its checksum; either way a fresh connection may answer.
		Code c = r.status().code();
		if (r.is_ok())
			p.quiet_for_ms = 0;
		if (r.is_ok() || (c != Code::kUnavailable && c != Code::kProtocol &&
		                  c != Code::kIo && c != Code::kCorrupt))
			return r;
		// The connection broke (peer restarted? bytes altered?): reconnect once.
		log_line(c == Code::kCorrupt ? LogLevel::kWarn : LogLevel::kInfo, "federation",
		         "connection to module %s at %s broke: %s; reconnecting",
		         p.module.to_string().c_str(), p.endpoint.c_str(),
		         r.status().message().c_str());
		p.client.reset();
		if (attempt == 1)
			return p.failed(started, r.status());
	}
	return Status(Code::kInternal, "unreachable");
}

} // namespace memfed
