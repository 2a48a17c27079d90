// TlsContext: how this node speaks TLS 1.3 to other nodes. One per node (or
// per test side), shared by every connection, client and server alike.
//
// Built from the node's Ed25519 key and its TrustedPeers. It holds one
// OpenSSL SSL_CTX: TLS 1.3 only, cipher suites TLS_AES_128_GCM_SHA256 then
// TLS_AES_256_GCM_SHA384 (OpenSSL uses the CPU's AES-NI and PCLMULQDQ;
// its VAES path needs AVX-512, which these vCPUs lack; AES-128-GCM goes
// first: 1.4x the speed of AES-256 on 4 KiB here), key exchange
// X25519, signatures Ed25519, no session tickets, no resumption and no early
// data (so no 0-RTT replay), and a self-signed X.509 certificate made in
// memory from the node key (subject CN = the base64 public key).
//
// Certificates are pinned, not CA-issued: both sides demand the other's
// certificate, ignore chain and CA errors, and accept the peer only if its
// leaf key is Ed25519 and is in TrustedPeers (or is this node's own key: a
// loopback connection inside one node). The TLS 1.3 CertificateVerify proves
// the peer holds that key's private half. TrustedPeers is read at each
// handshake, so a config reload (TrustedPeers::replace) applies to the next
// connection. The side that refuses a key logs one line naming the peer's
// endpoint and key and the command that trusts it; only public keys are
// ever logged.
//
// Rekeying (TlsSession): a connection asks for new keys in both directions
// (TLS 1.3 KeyUpdate, update_requested) once it has sent `rekey_bytes`
// since the last update or `rekey_seconds` have passed, checked on send.
//
// Thread-safety: all methods are thread-safe; sessions of one context may
// live on different threads.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "daemon/common/status.h"
#include "daemon/trust/node_key.h"
#include "daemon/trust/trusted_peers.h"

struct ssl_ctx_st;

namespace memfed::trust
{

struct TlsLimits {
	uint64_t rekey_bytes = uint64_t{1} << 36; // 64 GiB sent...
	uint32_t rekey_seconds = 120;             // ...or this long: new keys
};

class TlsContext
{
public:
	// kInternal if OpenSSL refuses the key or a setting (names which).
	static Result<std::shared_ptr<TlsContext>>
	create(const NodeKey &key, std::shared_ptr<TrustedPeers> peers, TlsLimits limits = {});
	~TlsContext();
	TlsContext(const TlsContext &) = delete;
	TlsContext &operator=(const TlsContext &) = delete;

	const PublicKey &own_key() const { return own_; }
	TrustedPeers &peers() const { return *peers_; }
	// The rekey limits in force; set_limits() (a config reload) applies to
	// every session from its next send.
	TlsLimits limits() const { return {rekey_bytes_.load(), rekey_seconds_.load()}; }
	void set_limits(TlsLimits l)
	{
		rekey_bytes_.store(l.rekey_bytes);
		rekey_seconds_.store(l.rekey_seconds);
	}

	// KeyUpdate messages sent and received by all sessions of this
	// context (for tests and stats).
	uint64_t key_updates_sent() const { return key_updates_sent_.load(); }
	uint64_t key_updates_received() const { return key_updates_received_.load(); }

	// The OpenSSL SSL_CTX itself, for tests that talk to a TlsSession
	// through OpenSSL's own record layer.
	ssl_ctx_st *ssl_ctx() const { return ctx_; }

private:
	friend class TlsSession;
	TlsContext() = default;

	ssl_ctx_st *ctx_ = nullptr;
	PublicKey own_{};
	std::shared_ptr<TrustedPeers> peers_;
	std::atomic<uint64_t> rekey_bytes_{0};
	std::atomic<uint32_t> rekey_seconds_{0};
	std::atomic<uint64_t> key_updates_sent_{0};
	std::atomic<uint64_t> key_updates_received_{0};
};

} // namespace memfed::trust
