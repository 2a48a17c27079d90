// ReplicatedChannel: a Channel to a replicated region's virtual module
// (replica_set.h) that speaks to every copy of the region.
//
//   read_pages   goes to the nearest copy in sync; a failed read is retried
//                on the next one, so the caller never notices a lost copy. A
//                read whose pages fail their checksum on one copy (kCorrupt)
//                is answered by another, and the damaged pages are rewritten
//                from the good copy at the version they hold (a repair).
//   write_pages  takes a version from the set's clock and sends the pages as
//                WRITE_VERSIONED to every copy in sync or catching up; it
//                completes when each of them has made them durable or has
//                failed and been marked lost, and fails only when no copy in
//                sync took it (then nothing is acknowledged).
//   call()       a request of any other type goes to the nearest copy in sync.
//
// Catching up runs here too, in the bulk class and one page run at a time,
// so it never holds a fault back for long: for a copy that is catching up,
// the page versions of a chunk are read from it and from a copy in sync
// (READ_VERSIONS), and every run of pages whose versions differ is copied
// from the newer side to the older one (READ_VERSIONED, then
// WRITE_VERSIONED, applied only where still newer, so a write racing the
// copy always wins). The copy is in sync after a pass that found nothing to
// copy and began at least kSettleNs after the first: a write issued before
// the copy came back (so not sent to it) may still have been on its way to
// the source when the first pass compared that chunk, and the later pass
// sees it. One channel of the set does this at a time
// (ReplicaSet::claim_catch_up).
//
// A lost copy is retried every few seconds, when a request comes: its
// channel is opened again and it starts catching up.
//
// Addresses: the caller's offsets are bytes from the start of the region
// (the virtual module has the region at 0); each copy's own region id and
// pool offset replace them on the way out.
//
// Thread-safety: as every Channel, on the loop thread it was created on.
// Completions follow the Channel contract (never inside the issuing call).
#pragma once

#include <deque>
#include <memory>
#include <vector>

#include "daemon/service/federation.h"
#include "daemon/service/replica_set.h"
#include "daemon/transport/channel.h"
#include "daemon/transport/event_loop.h"

namespace memfed
{

class ReplicatedChannel : public Channel
{
public:
	ReplicatedChannel(EventLoop *loop, std::shared_ptr<ReplicaSet> set, Federation *fed);
	~ReplicatedChannel() override;

	const PeerInfo &peer() const override { return peer_; }
	bool connected() const override;
	void transport_states(std::vector<TransportState> *out) const override;
	void read_pages(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
	                uint32_t count, void *dst, Completion *done) override;
	void write_pages(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
	                 uint32_t count, const void *src, Completion *done) override;
	void call(const wire::Header &hdr, std::span<const uint8_t> payload,
	          Completion *done) override;
	// Refused: the set's own clock versions its writes (write_pages).
	void write_versioned(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
	                     uint32_t count, const wire::WireVersionedWrite &prefix,
	                     const void *src, Completion *done) override;
	// Retries lost copies that are due and moves catch-up along (requests do
	// that too), and checks that every other copy is still reachable: a copy
	// whose module does not answer is lost, and one whose connection broke
	// and came back is compared again (its module may have restarted on a
	// fresh pool). ReplicaKeeper calls it once a second.
	void maintain();

private:
	struct Sub;
	struct Probe;
	struct ReadOp;
	struct WriteOp;
	struct Part;
	struct CopyStep;

	// Rereads the set's states when they changed; retries lost copies that are due.
	void refresh();
	// The reachability check of maintain().
	void check_reachable();
	// The channel to copy i, or null while it has none.
	Channel *open(size_t i);
	// The STAT sent to lost copy i's module (refresh) came back with `st`.
	void probe_done(size_t i, const Status &st);
	// Copy i failed a request with `st`: lost, if the failure says it is gone.
	void failed(size_t i, const Status &st);
	// The nearest copy in sync with a channel, not in `tried` (a bit per copy).
	int pick(uint32_t tried);
	void fail_later(Completion *done, uint8_t type, Status st);
	// The error of a request no copy in sync could take, built only when
	// one fails (never on the fault path's way in). `to_do`: " to take a
	// write", or "".
	Status no_copy_in_sync(const char *to_do) const;

	void issue_read(ReadOp *op);
	void read_done(ReadOp *op, size_t i, const Status &st, const wire::Header &resp,
	               std::span<const uint8_t> payload);
	void part_done(WriteOp *op, size_t i, const Status &st, std::span<const uint8_t> payload);

	// Catch-up and repair (see the top of the file).
	void pump();
	void start_chunk();
	void versions_done(size_t i, const Status &st, std::span<const uint8_t> payload);
	void compare_chunk();
	void copy_next();
	void copy_read_done(const Status &st, std::span<const uint8_t> payload);
	void copy_write_done(const Status &st);
	void end_catch_up(bool ok, const std::string &why);

	EventLoop *loop_;
	std::shared_ptr<ReplicaSet> set_;
	Federation *fed_;
	PeerInfo peer_;
	uint64_t gen_seen_ = 0;
	std::vector<std::unique_ptr<Sub>> subs_;          // only grows: requests hold indexes
	std::vector<size_t> order_;                       // subs_ nearest first
	std::vector<std::unique_ptr<Channel>> graveyard_; // replaced channels, freed later
	uint64_t graveyard_at_ns_ = 0;
	std::vector<std::unique_ptr<ReadOp>> free_reads_;
	std::vector<std::unique_ptr<WriteOp>> free_writes_;
	std::shared_ptr<bool> alive_;
	bool closing_ = false;

	// A copy of pages from one replica to another, at the versions they hold.
	struct CopyJob {
		size_t from = 0, to = 0;
		uint64_t first_page = 0;
		uint32_t count = 0;
		bool repair = false; // rewrite the same version (damaged pages)
	};
	std::deque<CopyJob> copies_;
	bool copying_ = false;
	CopyJob current_;
	std::vector<uint8_t> copy_buf_; // the pages of current_ being written
	uint32_t copy_writes_pending_ = 0;
	bool copy_failed_ = false;
	std::unique_ptr<CopyStep> copy_read_;
	std::vector<std::unique_ptr<CopyStep>> copy_writes_;

	struct CatchUp {
		bool active = false;
		size_t target = 0, source = 0;
		uint64_t next_page = 0; // first page of the next chunk
		uint64_t chunk_first = 0;
		uint32_t chunk_pages = 0;
		int versions_pending = 0;
		bool versions_failed = false;
		unsigned pass = 0;          // passes over the region begun
		uint64_t differed = 0;      // pages that differed in this pass
		uint64_t to_copy = 0;       // of those, not yet copied
		uint64_t began_ns = 0;      // when the first pass began
		uint64_t wait_until_ns = 0; // the next pass waits until then
		std::vector<uint64_t> src, tgt;
	} cu_;
	std::unique_ptr<CopyStep> cu_src_read_, cu_tgt_read_;
};

} // namespace memfed
