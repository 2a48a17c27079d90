// LocalChannel: a Channel to the module in this same memfedd. Requests go
// straight to the ModuleStore with no socket and no copy beyond the one into
// the caller's buffer (or, for a WRITE, the one into the pool).
//
// As the Channel contract requires, no completion runs inside the call that
// issued it; every completion runs on the loop thread, at a later turn of
// the loop:
//   - WRITEs go to the ModuleService's writer thread (submit_local), which
//     commits them in groups with the remote WRITEs (one persist per group)
//     and finishes them once durable; the completion is handed back to the
//     loop through an eventfd. The issuing thread never waits for a persist.
//   - A READ that overlaps a WRITE of this channel not yet completed is
//     queued behind it on the writer, so it sees that WRITE; any other READ
//     copies the pages at once and completes at the next loop turn.
//   - call(): a WRITE or WRITE_VERSIONED travels as above (its payload
//     copied; a WRITE_VERSIONED answers the pages it applied); any other
//     request is handled by the ModuleService's handler at once, or on the
//     writer after this channel's WRITEs in flight when there are any (so a
//     REGION_SET_LENGTH or REGION_DELETE never overtakes them); it completes
//     at a later loop turn.
// Requests live in a table of slots that grows to the deepest queue seen and
// is reused: the steady READ and WRITE paths allocate nothing.
//
// Thread-safety: everything, destruction included, runs on the loop thread,
// except that the writer thread finishes requests (finished(), which only
// queues them for the loop). REQUIRES: destroyed on the loop thread or while
// the loop is not running, never from one of its own completions; the
// destructor runs the loop until every request has completed, so other
// components' completions may run inside it. The ModuleService must outlive
// the channel.
#pragma once

#include <memory>
#include <vector>

#include "daemon/common/thread_annotations.h"
#include "daemon/service/module_service.h"
#include "daemon/transport/byte_buffer.h"
#include "daemon/transport/channel.h"
#include "daemon/transport/event_loop.h"

namespace memfed
{

class LocalChannel : public Channel
{
public:
	LocalChannel(EventLoop *loop, ModuleStore *store, ModuleService *service);
	~LocalChannel() override;
	LocalChannel(const LocalChannel &) = delete;
	LocalChannel &operator=(const LocalChannel &) = delete;

	const PeerInfo &peer() const override { return peer_; }
	bool connected() const override { return true; }
	void transport_states(std::vector<TransportState> *out) const override
	{
		out->push_back({peer_.module, "local", ""});
	}
	void read_pages(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
	                uint32_t count, void *dst, Completion *done) override;
	void write_pages(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
	                 uint32_t count, const void *src, Completion *done) override;
	void write_versioned(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
	                     uint32_t count, const wire::WireVersionedWrite &prefix,
	                     const void *src, Completion *done) override;
	void call(const wire::Header &hdr, std::span<const uint8_t> payload,
	          Completion *done) override;

	// Requests issued and not yet completed.
	size_t in_flight() const { return in_flight_; }

private:
	struct Slot;
	class ReadyOp;

	Slot &take_slot(Completion *done, const wire::Header &req);
	void submit(Slot &s);
	void serve_call(Slot &s);
	void submit_versioned(Slot &s, const wire::WireVersionedWrite &prefix, const void *pages);
	bool overlaps_pending_write(uint64_t fa, uint32_t count) const;
	// Queues a finished slot for completion at the next loop turn: from
	// the loop thread through a NOP, from the writer through the eventfd.
	void ready_from_loop(Slot &s);
	void ready_from_writer(Slot &s);
	void arm_wake();
	void deliver();
	wire::Header reply_header(const wire::Header &req, Code code) const;

	EventLoop *loop_;
	ModuleStore *store_;
	ModuleService *service_;
	PeerInfo peer_;
	bool closing_ = false;

	// Loop thread only.
	std::vector<std::unique_ptr<Slot>> slots_; // slots never move
	std::vector<uint32_t> free_;
	size_t in_flight_ = 0;
	size_t at_writer_ = 0;      // requests the writer has not handed back
	size_t pending_writes_ = 0; // WRITEs issued and not yet completed
	std::unique_ptr<ReadyOp> nop_op_, wake_op_;
	bool nop_armed_ = false, wake_armed_ = false;
	uint64_t wake_value_ = 0;
	int wake_fd_ = -1;
	std::vector<uint32_t> delivering_; // swapped with ready_

	// Finished slots waiting for the loop; filled by both threads.
	Mutex mu_;
	std::vector<uint32_t> ready_ GUARDED_BY(mu_);
};

} // namespace memfed
