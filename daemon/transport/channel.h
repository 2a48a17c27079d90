// Channel: a connection to one peer module, whatever carries it.
//
// Callers (the daemon's region service, the pager, relays) speak to modules
// only through this interface. The TCP implementation (tcp_channel.h) sends
// wire messages over an io_uring socket; an RDMA implementation can serve
// read_pages/write_pages with one-sided operations into the module's
// registered pool and implement call() over a send/recv queue pair, without
// any caller changing.
//
// All methods run on the EventLoop thread the channel was created on, except
// where stated. A Channel allows many requests in flight; responses may
// complete out of order.
//
// The completion contract, kept by every implementation: a completion never
// runs inside the call that issued it. on_reply runs on the loop thread,
// from the loop (EventLoop::run_once) at a later turn than the one that
// issued the request: a request that fails at once (not allowed by the
// protocol, a lost connection) or that is served in-process completes at
// the next turn, never before read_pages/write_pages/call returns. So a
// caller may issue requests in the middle of updating its own state, and
// issue more from inside on_reply, without guarding against re-entry. (A
// channel's destructor and TcpChannel::close() may complete pending
// requests; they are not issuing calls.)
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "daemon/common/ids.h"
#include "daemon/common/status.h"
#include "daemon/trust/node_key.h"
#include "daemon/wire/protocol.h"

namespace memfed
{

// Receives the outcome of one request. Owned by the caller and must stay
// alive until on_reply runs; no allocation happens per request.
class Completion
{
public:
	virtual ~Completion() = default;
	// `st` is OK when the peer answered OK; otherwise the peer's error (code and
	// message) or a transport failure (kUnavailable). `payload` is the response
	// payload unless it was delivered into a caller buffer (read_pages).
	virtual void on_reply(const Status &st, const wire::Header &resp,
	                      std::span<const uint8_t> payload) = 0;
};

// How a channel carries requests to one module, for `memfedctl module ls`
// and `status`: "tcp", "rdma" (one-sided reads up) or "local" (this
// memfedd's own module); `why` says why RDMA is not in use where it was
// wanted.
struct TransportState {
	ModuleId module;
	std::string transport;
	std::string why;
};

struct PeerInfo {
	ModuleId module; // from the peer's HELLO
	uint32_t capabilities = 0;
	uint64_t capacity_bytes = 0;
	uint8_t version = 0;
	std::string endpoint; // "host:port"
	// Over TLS: the module's authenticated key and its name in TrustedPeers.
	bool authenticated = false;
	trust::PublicKey key{};
	std::string key_name;
};

class Channel
{
public:
	virtual ~Channel() = default;

	virtual const PeerInfo &peer() const = 0;
	virtual bool connected() const = 0;
	// Appends how this channel reaches its module(s) (a replicated
	// region's channel: each copy's).
	virtual void transport_states(std::vector<TransportState> *out) const
	{
		out->push_back({peer().module, "tcp", ""});
	}

	// READ `count` pages at `fa_offset` of `region_id` straight into `dst`
	// (count * kPageSize bytes, valid until completion).
	virtual void read_pages(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
	                        uint32_t count, void *dst, Completion *done) = 0;
	// WRITE `count` pages from `src` (valid until completion); completes when
	// the module has made them durable. The issuing thread never waits for
	// the persist.
	virtual void write_pages(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
	                         uint32_t count, const void *src, Completion *done) = 0;
	// Any other request: `hdr` supplies type, tclass and type-specific fields;
	// the channel fills magic, version, ids, lengths and checksums.
	virtual void call(const wire::Header &hdr, std::span<const uint8_t> payload,
	                  Completion *done) = 0;
	// WRITE_VERSIONED (protocol.h): `count` pages from `src` (valid until
	// completion) behind `prefix`, without copying the pages into a
	// payload. Completes when durable; the reply's payload is the count of
	// pages applied.
	virtual void write_versioned(wire::TrafficClass tc, uint32_t region_id,
	                             uint64_t fa_offset, uint32_t count,
	                             const wire::WireVersionedWrite &prefix, const void *src,
	                             Completion *done) = 0;
};

} // namespace memfed
