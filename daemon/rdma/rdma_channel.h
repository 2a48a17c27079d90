// RdmaChannel: a Channel (channel.h) to one module that serves page reads
// with one-sided RDMA READs and everything else over TLS (issue 12, step 1).
//
// Hybrid by design. The channel owns the authenticated TLS TcpChannel to the
// module: call() (control) and every read or write the RDMA side cannot
// take go there unchanged. Nothing is ever written by one-sided RDMA.
// read_pages() goes over RDMA when all of these hold:
//   1. The module offered kCapRdma at HELLO and answered RDMA_CONNECT over
//      TLS (it does so only to an authenticated peer) with its rdma_cm
//      endpoint and a one-time token; the channel then connected an RC queue
//      pair with rdma_cm, presenting the token as private data (blocking, on
//      the loop thread, bounded by Options::connect_timeout_ms: a
//      control-path step).
//   2. The region's extent and keys are known (RDMA_REGION over TLS: the
//      region's extent and the remote addresses and keys of its pages and
//      their PageMetas, registered for that region only; the first reads of
//      a region go over TCP while it is asked for) and the read lies inside
//      it. A read outside a known extent is refused here (kOutOfRange, counted
//      as refused) and never reaches the network. A region the module
//      refuses to give keys for (the node may not read it) is read over TCP,
//      whose answer is authoritative, and asked for again after
//      Options::retry_ms.
//   3. A staging slot is free (Options::slots; else TCP).
// A READ posts three RDMA READs into the slot of the channel's registered
// staging buffer, fenced so each starts after the one before has finished:
// the pages' PageMeta entries (version, crc), the pages, and the PageMeta
// entries again. Torn-read detection, seqlock style: a page is accepted only
// if its version is the same in both meta reads and the crc32c of the bytes
// read equals the crc read first (a never-written page, version 0, must be
// zeros). The module's store writes a page's bytes before its meta (crc,
// then version), so bytes that raced a write fail the crc or the version
// check. A request with a failing page is read again, up to kTornRetries
// times, then served over TCP (counted as a fallback). Accepted pages are
// copied into the caller's dst (one pass over them beside the crc; the
// caller's buffers are not registered).
//
// Failures. A work completion in error (a revoked or forged key, or a key
// of another region: remote access error; a QP error; a lost peer: retry exceeded, within about 2 s
// thanks to the QP's ACK timeout; a removed device)
// marks the RDMA side broken: the reason is logged once, every read in
// flight over RDMA is issued again over TCP (reads are idempotent; nothing
// is lost), every unanswered write too (below: fenced first, so nothing is
// applied after its copy), the queue pair, buffers and device context are
// torn down, the region extents forgotten, and RDMA is tried again after
// Options::retry_ms.
//
// Write-back over RDMA (issue 12, items 4 and 5). write_pages() and
// write_versioned() SEND the whole wire message (header + [prefix] + pages,
// copied into one of Options::write_slots registered send buffers, at most
// the module's WireRdmaConnect::write_depth) on the same queue pair; the
// module applies it through its redo-log path and SENDs back the response
// once durable (protocol.h, rdma_write_receiver.h), and only then does the
// write complete, with that response. Writes wait in the channel's queue,
// in issue order, when no send buffer is free.
//
// Exactly once in effect. A write whose answer never came (the queue pair
// broke, the TLS connection was lost, no answer in kWriteTimeout) may or may
// not have been applied by the module. On such a failure the channel, in
// this order: tears the queue pair down; sends RDMA_FENCE over TLS, so the
// module drops every message of that queue pair it has not yet handed to
// its write path; re-issues the unanswered writes over TCP (oldest first),
// then the queued ones. The module handles the fence and the re-issued
// writes in the order they came on the TLS connection, so each unanswered
// write was either handed to the write path before the fence (then its
// re-issued copy, queued behind it, writes the same bytes again) or is
// dropped (then the copy is its only application). Re-applying is harmless
// only if no newer write of those pages came between, and the channel makes
// sure none did, rather than relying on its callers: the pager does keep
// one write-back of a page in flight per mapping (kWbInFlight), but two
// mappings of one region, a remap that re-dirties a page in flight
// (address_events.cc) or a shared window may write a page twice. So:
//   - a write never goes over RDMA while a write of overlapping pages is
//     unanswered on the queue pair (it waits, and so does everything
//     queued behind it);
//   - the channel switches paths only when the other is drained: writes go
//     over TCP while a write of this channel is in flight over TCP, and
//     wait while one is in flight over RDMA unless RDMA is up.
// So when the unanswered writes are re-issued, no later write of their
// pages has been issued yet. A re-issued WRITE_VERSIONED carries
// kVersionedRepair: if the lost attempt was applied, the copy (same version,
// same bytes) is applied again and counts as applied instead of looking
// like a newer version's win; a strictly newer version still stands.
//
// Sequenced (wire version 5). When the TLS channel carries a write session
// (TcpChannel::Options::session), every write SENT over RDMA is numbered in
// it, and a re-issue over TCP is a retry of that number (kFlagRetry): the
// module answers it from its session cache when the SEND was applied, so
// nothing is applied twice, and applies it when the SEND was fenced. When
// the TLS connection itself is lost, the writes fail back to the caller
// (kUnavailable) and no fence can be sent; the session passes to the next
// channel, and a SEND still in the module's completion queue (the module
// gives it the TLS connection's identity) is refused once the session's
// writes come on the newer connection (daemon/service/session_cache.h), or
// applied before them. Named limits: ordering holds per channel (writes of
// one page from two nodes were never ordered); a control call() or a read
// over TCP is not held back behind writes in flight over RDMA (reads over
// RDMA never were ordered against writes over TCP either).
//
// Completions keep the Channel contract: RDMA completions run from the
// loop's poll of the completion channel, TCP ones from the TcpChannel; a
// refused read completes at the next loop turn.
//
// Thread-safety: as TcpChannel: everything on the loop thread.
#pragma once

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "daemon/common/relaxed_counter.h"
#include "daemon/transport/tcp_channel.h"

namespace memfed
{

class RdmaChannel : public Channel
{
public:
	// tcp: never RDMA. auto: RDMA when the module offers it and it connects.
	// rdma: as auto, but a module that does not offer RDMA is logged as an
	// error (reads are still served, over TCP).
	enum class Mode { kTcp, kAuto, kRdma };
	struct Options {
		Mode mode = Mode::kAuto;
		unsigned slots = 8; // RDMA READ requests in flight (1 MiB of staging each)
		int connect_timeout_ms = 3000;
		int retry_ms = 5000; // after an RDMA failure
		// RDMA write SENDs in flight (1 MiB of send buffer each); the module's
		// write_depth caps it; 0: writes over TCP only.
		unsigned write_slots = 4;
	};
	static constexpr unsigned kTornRetries = 8;
	// Read slots only a fault may take (faults go before bulk work).
	static constexpr unsigned kFaultSlots = 2;
	static constexpr auto kReadTimeout = std::chrono::seconds(5);
	// A durable answer can take a group commit under load: generous.
	static constexpr auto kWriteTimeout = std::chrono::seconds(30);

	// Bumped on the loop thread, read from any (totals()).
	struct Counters {
		RelaxedCounter reads;           // READ requests served over RDMA
		RelaxedCounter pages;           // pages served over RDMA
		RelaxedCounter bytes;           // bytes read by RDMA (pages and meta)
		RelaxedCounter torn_retries;    // requests read again after a torn page
		RelaxedCounter fallbacks;       // READs issued over RDMA, finished over TCP
		RelaxedCounter errors;          // times the RDMA side broke
		RelaxedCounter refused;         // reads outside a region's extent
		RelaxedCounter connects;        // RDMA connections made
		RelaxedCounter writes;          // WRITE/WRITE_VERSIONED answered over RDMA
		RelaxedCounter pages_written;   // their pages
		RelaxedCounter write_fallbacks; // writes sent over RDMA, re-issued over TCP
		RelaxedCounter fences;          // RDMA_FENCEs sent before such re-issues
		RelaxedCounter bulk_to_tcp;     // bulk reads sent over TCP: slots kept for faults
		void add(const Counters &o);
	};
	// The sums over every RdmaChannel of this process, past and present
	// (memfedctl stats, metrics): they only grow.
	static Counters totals();

	// Wraps a connected TLS channel; RDMA is set up lazily (at the first read).
	static std::unique_ptr<RdmaChannel> wrap(EventLoop *loop, std::unique_ptr<TcpChannel> tcp,
	                                         Options opts);
	~RdmaChannel() override;

	const PeerInfo &peer() const override { return tcp_->peer(); }
	bool connected() const override { return tcp_->connected(); }
	void transport_states(std::vector<TransportState> *out) const override
	{
		out->push_back({peer().module, rdma_up() ? "rdma" : "tcp", why_});
	}
	void read_pages(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
	                uint32_t count, void *dst, Completion *done) override;
	void write_pages(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
	                 uint32_t count, const void *src, Completion *done) override;
	void call(const wire::Header &hdr, std::span<const uint8_t> payload,
	          Completion *done) override
	{
		tcp_->call(hdr, payload, done);
	}
	void write_versioned(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
	                     uint32_t count, const wire::WireVersionedWrite &prefix,
	                     const void *src, Completion *done) override;

	// Starts setting RDMA up now if it is due (read_pages does so too).
	void try_rdma();
	bool rdma_up() const { return state_ == State::kUp; }
	// Whether writes go over RDMA while it is up (the module takes them).
	bool rdma_writes() const { return state_ == State::kUp && write_depth_ > 0; }
	// Writes waiting in the channel, and in flight over RDMA and over TCP.
	size_t writes_queued() const { return wq_.size(); }
	unsigned writes_in_flight_rdma() const { return wbusy_; }
	unsigned writes_in_flight_tcp() const { return tcp_writes_; }
	// An RDMA_CONNECT is on its way (its answer sets RDMA up or fails).
	bool rdma_connecting() const { return state_ == State::kAsking; }
	// Why RDMA is not in use ("" while it is, or before the first try).
	const std::string &rdma_why() const { return why_; }
	const Counters &counters() const { return counters_; }
	// Whether reads of `region_id` may go over RDMA (its extent is known).
	bool knows_region(uint32_t region_id) const { return extents_.count(region_id) != 0; }
	TcpChannel *tcp() { return tcp_.get(); }
	// A region's extent and its registration as the module handed it out.
	struct Extent {
		uint64_t fa = 0, size = 0;
		uint64_t data_addr = 0, meta_addr = 0; // remote addresses of the first page, meta
		uint32_t data_rkey = 0, meta_rkey = 0;
	};
	// The extent and keys known for `region_id` (nullptr: none).
	const Extent *extent(uint32_t region_id) const
	{
		auto it = extents_.find(region_id);
		return it == extents_.end() ? nullptr : &it->second;
	}
	// Test only: read region `region_id` with these keys instead of the
	// module's (a forged key, or another region's).
	void set_keys_for_test(uint32_t region_id, uint32_t data_rkey, uint32_t meta_rkey)
	{
		auto it = extents_.find(region_id);
		if (it != extents_.end())
			it->second.data_rkey = data_rkey, it->second.meta_rkey = meta_rkey;
	}

private:
	enum class State { kIdle, kAsking, kUp };
	struct Slot {
		bool busy = false;
		unsigned tries = 0;
		wire::TrafficClass tc{};
		uint32_t region_id = 0;
		uint64_t fa = 0;
		uint32_t count = 0;
		void *dst = nullptr;
		Completion *done = nullptr;
		std::chrono::steady_clock::time_point posted{};
	};
	// A write as the caller issued it.
	struct Write {
		bool versioned = false;
		wire::TrafficClass tc{};
		uint32_t region_id = 0;
		uint64_t fa = 0;
		uint32_t count = 0;
		wire::WireVersionedWrite prefix{};
		const void *src = nullptr;
		Completion *done = nullptr;
		uint64_t seq = 0; // sent over RDMA as this write of the TCP channel's session
	};
	struct WriteSlot {
		bool busy = false;
		Write w;
		uint64_t request_id = 0;
		std::chrono::steady_clock::time_point posted{};
	};
	class PollOp;
	class TimerOp;
	class CancelOp;
	class ConnectReply;
	class RegionReply;
	class TcpWrite;
	class FenceReply;

	RdmaChannel(EventLoop *loop, std::unique_ptr<TcpChannel> tcp, Options opts);
	void on_connect_reply(const Status &st, std::span<const uint8_t> payload);
	void on_region_reply(uint32_t region_id, const Status &st,
	                     std::span<const uint8_t> payload);
	Status setup(const wire::WireRdmaConnect &c);
	Status wait_cm_event(rdma_cm_event_type want, const char *step);
	void arm_poll();
	void on_poll(int res);
	void arm_timer();
	void on_timer(int res);
	void post(unsigned slot);
	void finish_slot(unsigned slot);
	void to_tcp(unsigned slot);
	void fail(const std::string &why);
	void teardown();
	// Tears the RDMA side down and hands its reads in flight and its
	// unanswered writes (behind a fence) to the TCP channel.
	void in_flight_to_tcp();
	uint8_t *slot_base(unsigned slot) const;
	uint8_t *write_base(unsigned slot) const;
	uint8_t *ack_base(unsigned i) const;
	// Issues queued writes while the rules above allow.
	void pump_writes();
	bool write_fits_rdma(const Write &w) const;
	bool overlaps_rdma_write(const Write &w) const;
	void post_write(const Write &w);
	void post_ack_recv(unsigned i);
	void on_ack(unsigned i, uint32_t len);
	void write_over_tcp(const Write &w, bool repair);
	void on_tcp_write_done(TcpWrite *t);
	// After a failure: fence, then every write of the RDMA side over TCP.
	void writes_to_tcp(std::vector<WriteSlot> unanswered);

	EventLoop *loop_;
	std::unique_ptr<TcpChannel> tcp_;
	Options opts_;
	State state_ = State::kIdle;
	std::chrono::steady_clock::time_point next_try_{};
	std::string why_;
	Counters counters_;
	// Lists counters_ for totals() while this channel lives, and adds them
	// to the retired sum when it goes (declared after counters_, so
	// destroyed before it: after the destructor's last count).
	class Listed
	{
	public:
		explicit Listed(const Counters *c);
		~Listed();
		Listed(const Listed &) = delete;
		Listed &operator=(const Listed &) = delete;

	private:
		const Counters *c_;
	};
	Listed listed_{&counters_};

	std::unique_ptr<ConnectReply> connect_reply_;
	std::unordered_map<uint32_t, Extent> extents_;
	std::unordered_map<uint32_t, std::unique_ptr<RegionReply>> asking_; // by region
	// Regions whose keys the module refused: not asked again before then.
	std::unordered_map<uint32_t, std::chrono::steady_clock::time_point> refused_until_;
	uint64_t epoch_ = 0; // bumped by each teardown: answers from before are dropped

	rdma_event_channel *events_ = nullptr;
	rdma_cm_id *id_ = nullptr;
	ibv_pd *pd_ = nullptr;
	ibv_comp_channel *comp_ = nullptr;
	ibv_cq *cq_ = nullptr;
	ibv_mr *mr_ = nullptr;
	std::vector<uint8_t> staging_;
	std::vector<Slot> slots_;
	unsigned busy_ = 0;
	std::unique_ptr<PollOp> poll_op_;
	std::unique_ptr<CancelOp> cancel_op_;
	bool poll_armed_ = false;
	// While READs are in flight: a 1 s tick that fails the RDMA side when
	// the TLS connection is gone or a READ has waited kReadTimeout.
	std::unique_ptr<TimerOp> timer_op_;
	bool timer_armed_ = false;

	// Write-back over RDMA.
	unsigned write_depth_ = 0; // min(module's write_depth, Options::write_slots)
	std::deque<Write> wq_;     // waiting, in issue order
	std::vector<WriteSlot> wslots_;
	unsigned wbusy_ = 0;
	uint64_t next_write_id_ = 1;
	unsigned tcp_writes_ = 0; // this channel's writes in flight over TCP
	std::vector<std::unique_ptr<TcpWrite>> tcp_write_pool_; // owns them all
	std::vector<TcpWrite *> free_tcp_writes_;
	std::unique_ptr<FenceReply> fence_reply_;
	bool closing_ = false; // in the destructor: queue nothing more
	__kernel_timespec tick_{1, 0};
};

} // namespace memfed
