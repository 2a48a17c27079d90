// ClassChannel: a Channel (channel.h) to one module made of one connection
// per traffic class, so each class's packets carry its own DSCP (dscp.h)
// and a priority qdisc on every hop of the mesh can put demand faults
// ahead of bulk work (issue 11, item 5).
//
// Two connections, each a Channel of its own (a TcpChannel whose
// Options::conn_class names the class, or an RdmaChannel around one):
//   fault  reads of class kFault, and call()s of class kFault or kControl
//          (a pager's channel carries few control calls, probes of a
//          replicated region: small, and never worth queueing behind bulk)
//   bulk   reads of class kBulk, call()s of class kBulk, and EVERY write
//          (write_pages, write_versioned, a call() of type WRITE or
//          WRITE_VERSIONED)
// Every write goes on the bulk connection, whatever class it names: no
// caller waits on a write to serve a fault (write-back completes when
// durable), and one connection keeps all writes in issue order, as the
// module handles a connection's requests in order. Over RDMA each
// connection is an RdmaChannel around its own TcpChannel: the bulk one
// carries every write, so its fence and drain rules (rdma_channel.h) see
// all of them, exactly as when one channel carried everything; the fault
// one serves fault reads with one-sided READs and writes nothing.

// Ordering across the two connections. Requests on one connection keep
// their order; requests on different connections do not, so the channel
// orders conflicting ones itself: a read or write that overlaps (same
// region, a common page) a request still in flight on the OTHER
// connection, at least one of the two a write, is held here and issued
// only once every such request has completed; a request that conflicts
// with one already held waits behind it, so conflicting requests are
// issued in the order they were made. Hence a read issued after a write
// of the same page always sees that write (the write completed, durable,
// before the read went out), and a read issued before a write never sees
// it. Non-conflicting requests are never held, so a fault never waits for
// bulk work of other pages. (The pager itself never reads a page while its
// write-back is in flight: eviction waits for the write before it drops
// the page. The rule here keeps every caller correct, e.g. two mappings
// of one region.) call()s other than writes are not ordered against
// reads and writes, as before.
//
// Completions keep the Channel contract: they are the underlying
// channels' completions, forwarded; a held request is issued from another
// request's completion and completes at a later turn. Destruction
// destroys both connections (completing their pending requests) and then
// completes held requests with kUnavailable.
//
// Thread-safety: as TcpChannel: everything on the loop thread.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "daemon/transport/channel.h"

namespace memfed
{

class ClassChannel : public Channel
{
public:
	// `fault` and `bulk`: connected channels to the same module.
	ClassChannel(std::unique_ptr<Channel> fault, std::unique_ptr<Channel> bulk);
	~ClassChannel() override;

	const PeerInfo &peer() const override { return conns_[kFaultConn]->peer(); }
	// Both connections up.
	bool connected() const override;
	// The fault connection's (a fault's path is what `module ls` is asked
	// about); the bulk connection's when it differs, with "bulk: " before
	// its reason.
	void transport_states(std::vector<TransportState> *out) const override;

	void read_pages(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
	                uint32_t count, void *dst, Completion *done) override;
	void write_pages(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
	                 uint32_t count, const void *src, Completion *done) override;
	void call(const wire::Header &hdr, std::span<const uint8_t> payload,
	          Completion *done) override;
	void write_versioned(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
	                     uint32_t count, const wire::WireVersionedWrite &prefix,
	                     const void *src, Completion *done) override;

	// The connection a request of this kind goes on (0: fault, 1: bulk).
	static constexpr int kFaultConn = 0;
	static constexpr int kBulkConn = 1;
	Channel *connection(int which) { return conns_[which].get(); }
	// Requests held so far behind a conflicting one on the other connection.
	uint64_t held_total() const { return held_total_; }

private:
	class Op;
	enum class Kind : uint8_t { kRead, kWrite, kWriteVersioned };

	Op *alloc_op();
	void submit(Op *op);
	bool conflicts_in_flight(const Op &op) const;
	void issue(Op *op);
	void on_done(Op *op, const Status &st, const wire::Header &resp,
	             std::span<const uint8_t> payload);
	void release_held();

	std::vector<std::unique_ptr<Op>> pool_; // owns every Op; Ops never move
	std::vector<Op *> free_;
	std::vector<Op *> in_flight_; // tracked reads and writes, issued
	std::deque<Op *> held_;       // waiting, in the order they were made
	uint64_t held_total_ = 0;
	bool closing_ = false;
	std::unique_ptr<Channel> conns_[2];
};

} // namespace memfed
