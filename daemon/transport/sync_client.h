// SyncClient: a blocking wire-protocol client (plain send/recv, no io_uring)
// for control-path work and tests: region management on a remote module,
// the daemon's control ops, crash tests. One request at a time.
//
// With a TlsContext, hello() runs protocol.h's whole sequence: the
// plaintext version gate, the TLS 1.3 handshake (the module's key must be
// trusted) and the HELLO inside TLS; every later message is encrypted. A
// module that does not offer TLS is refused (no downgrade), and one that
// speaks only an older wire version is named as such. Without a TlsContext the
// client speaks plaintext and refuses a module that requires TLS.
//
// Thread-safety: none; use one client per thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "daemon/common/ids.h"
#include "daemon/common/status.h"
#include "daemon/transport/channel.h"
#include "daemon/trust/tls_session.h"
#include "daemon/wire/protocol.h"

namespace memfed
{

class SyncClient
{
public:
	struct Response {
		wire::Header header{};
		std::vector<uint8_t> payload;
	};

	// Opens a TCP connection (no HELLO yet: call hello()). kUnavailable if
	// nothing answers within `timeout_ms`; the same timeout bounds every
	// later send and receive, the TLS handshake included. `tls`: this
	// node's TLS (null: plaintext). `conn_class`: the traffic class the
	// connection serves: its packets carry that class's DSCP (dscp.h), and
	// its HELLO names it so the module marks its replies the same.
	static Result<std::unique_ptr<SyncClient>>
	connect(const std::string &host_port, ModuleId self, int timeout_ms = 5000,
	        std::shared_ptr<trust::TlsContext> tls = nullptr,
	        wire::TrafficClass conn_class = wire::TrafficClass::kControl);
	~SyncClient();
	SyncClient(const SyncClient &) = delete;
	SyncClient &operator=(const SyncClient &) = delete;

	// HELLO exchange (over TLS: gate, handshake, HELLO); fills peer().
	// `capabilities`: what we announce. Errors: kPermission when a key is
	// refused (either side's; the message names the key and the fix),
	// kProtocol for a module of another wire version or without TLS.
	Status hello(uint32_t capabilities = 0);
	const PeerInfo &peer() const { return peer_; }

	// Sends one request (`hdr` gives type, tclass and type-specific fields;
	// magic, version, ids, lengths and checksums are filled in) and waits
	// for its response. A response with an error status is returned as that
	// Status (the peer's code and message).
	Result<Response> call(const wire::Header &hdr, std::span<const uint8_t> payload);

	// `dst`/`src`: count * kPageSize bytes.
	Status read_pages(uint32_t region_id, uint64_t fa_offset, uint32_t count, void *dst,
	                  wire::TrafficClass tc = wire::TrafficClass::kFault);
	Status write_pages(uint32_t region_id, uint64_t fa_offset, uint32_t count, const void *src,
	                   wire::TrafficClass tc = wire::TrafficClass::kBulk);

	// Replicated regions (wire version 4). WRITE_VERSIONED of `count` pages
	// (1..kMaxPagesPerRequest) at page version `version` (nonzero): each page
	// is applied iff newer than the module's (`repair`: at least as new);
	// *applied = the pages applied. Durable on return.
	Status write_pages_versioned(uint32_t region_id, uint64_t fa_offset, uint32_t count,
	                             const void *src, uint64_t version, bool repair,
	                             uint32_t *applied,
	                             wire::TrafficClass tc = wire::TrafficClass::kBulk);
	// READ_VERSIONED: the pages into `dst` and their versions into
	// versions[0..count); the payload crc is checked as read_pages does
	// (kCorrupt when the module's copy is damaged).
	Status read_pages_versioned(uint32_t region_id, uint64_t fa_offset, uint32_t count,
	                            void *dst, uint64_t *versions,
	                            wire::TrafficClass tc = wire::TrafficClass::kBulk);
	// READ_VERSIONS: the versions of `count` pages (<= kMaxVersionsPerRequest).
	Status read_versions(uint32_t region_id, uint64_t fa_offset, uint32_t count,
	                     uint64_t *versions, wire::TrafficClass tc = wire::TrafficClass::kBulk);

	Result<wire::WireRegion> region_create(const wire::WireRegionSpec &spec);
	Status region_delete(const std::string &name);
	Result<wire::WireRegion> region_lookup(const std::string &name);
	Result<wire::WireRegion> region_set_length(const std::string &name, uint64_t length,
	                                           bool grow_only);
	// One page of the module's regions in name order: those after `after`
	// (empty: from the first), at most `limit` (0: a whole wire page).
	// *more is set when there may be more after the last one. Asked for
	// `asker_uid` (this node's user), each region's `access` is the module's
	// answer for that user (wire::kAccessAnswered, protocol.h).
	Result<std::vector<wire::WireRegion>>
	region_list_page(const std::string &after, uint32_t limit, bool *more,
	                 std::optional<uint32_t> asker_uid = std::nullopt);
	// Every region of the module, page by page.
	Result<std::vector<wire::WireRegion>> region_list();
	Result<wire::WireStat> stat();

	// Sends raw bytes, for tests that speak garbage to a server.
	Status send_raw(std::span<const uint8_t> bytes);
	// Gives up the socket (to hand it to another transport); the client is
	// unusable afterwards.
	int release_fd();
	// Gives up the TLS session (null in plaintext), with release_fd().
	std::unique_ptr<trust::TlsSession> release_session() { return std::move(tls_); }
	int fd() const { return fd_; }

private:
	SyncClient(int fd, ModuleId self, std::string endpoint);
	// Through TLS once the session is established.
	Status send_all(const void *p, size_t n);
	Status recv_all(void *p, size_t n);
	Status sock_send_all(const void *p, size_t n);
	// Some bytes into `b` (at least one), or an error.
	Status sock_recv_some(ByteBuffer &b);
	// Some bytes (at least one) into [p, p + cap), or why none came.
	Result<size_t> sock_recv(void *p, size_t cap);
	Status send_tls_output();
	Status tls_handshake();
	Result<Response> exchange(wire::Header &h, std::span<const uint8_t> payload,
	                          void *pages_dst);

	int fd_;
	ModuleId self_;
	wire::TrafficClass conn_class_ = wire::TrafficClass::kControl; // named in HELLO
	PeerInfo peer_;
	uint8_t version_ = wire::kWireVersion;
	uint64_t next_request_id_ = 1;
	std::shared_ptr<trust::TlsContext> tls_ctx_;
	std::unique_ptr<trust::TlsSession> tls_;
};

} // namespace memfed
