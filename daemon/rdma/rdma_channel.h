// RdmaChannel: a Channel (channel.h) to one module that serves page reads
// with one-sided RDMA READs and everything else over TLS (issue 12, step 1).
//
// Hybrid by design. The channel owns the authenticated TLS TcpChannel to the
// module: call() (control), write_pages() (write-back) and every read the
// RDMA side cannot take go there unchanged. Write-back stays on the module's
// durable redo-log path over TCP in this step: nothing is ever written by
// RDMA. read_pages() goes over RDMA when all of these hold:
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
// is lost, and writes never went over RDMA, so nothing is applied twice), the
// queue pair, buffers and device context are torn down, the region extents
// forgotten, and RDMA is tried again after Options::retry_ms.
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
	};
	static constexpr unsigned kTornRetries = 8;
	static constexpr auto kReadTimeout = std::chrono::seconds(5);

	// Bumped on the loop thread, read from any (totals()).
	struct Counters {
		RelaxedCounter reads;        // READ requests served over RDMA
		RelaxedCounter pages;        // pages served over RDMA
		RelaxedCounter bytes;        // bytes read by RDMA (pages and meta)
		RelaxedCounter torn_retries; // requests read again after a torn page
		RelaxedCounter fallbacks;    // READs issued over RDMA, finished over TCP
		RelaxedCounter errors;       // times the RDMA side broke
		RelaxedCounter refused;      // reads outside a region's extent
		RelaxedCounter connects;     // RDMA connections made
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
	                 uint32_t count, const void *src, Completion *done) override
	{
		tcp_->write_pages(tc, region_id, fa_offset, count, src, done);
	}
	void call(const wire::Header &hdr, std::span<const uint8_t> payload,
	          Completion *done) override
	{
		tcp_->call(hdr, payload, done);
	}
	// Writes stay on TLS (the module's redo-log path).
	void write_versioned(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
	                     uint32_t count, const wire::WireVersionedWrite &prefix,
	                     const void *src, Completion *done) override
	{
		tcp_->write_versioned(tc, region_id, fa_offset, count, prefix, src, done);
	}

	// Starts setting RDMA up now if it is due (read_pages does so too).
	void try_rdma();
	bool rdma_up() const { return state_ == State::kUp; }
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
	class PollOp;
	class TimerOp;
	class CancelOp;
	class ConnectReply;
	class RegionReply;

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
	uint8_t *slot_base(unsigned slot) const;

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
	__kernel_timespec tick_{1, 0};
};

} // namespace memfed
