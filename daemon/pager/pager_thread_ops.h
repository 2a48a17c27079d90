// The operations a PagerThread keeps in flight (fetches, write-backs,
// shared write-backs, its timers) and the constants and helpers shared by
// the files that make up the pager thread (pager_thread.cc,
// private_faults.cc, shared_faults.cc, eviction.cc, writeback.cc, ...).
// Internal to those files.
//
// Thread: every operation completes on its pager thread.
#pragma once

#include <cstdlib>
#include <cstring>
#include <ctime>

#include <functional>
#include <memory>
#include <vector>

#include "daemon/common/log.h"
#include "daemon/pager/pager_thread.h"

namespace memfed::pager
{

inline constexpr const char *kLog = "pager";
inline constexpr int kTickMs = 20;
inline constexpr uint64_t kChannelRetryNs = 500'000'000;
inline constexpr uint64_t kErrorLogNs = 5'000'000'000ull; // a repeating error is logged this often
// An orphan fault (no mapping covers it) is zero-filled only when no "map"
// or "attach" arrived for this long: a restarted daemon first receives the
// client's maps, and the client's blocked threads must wait for them.
inline constexpr uint64_t kOrphanGraceNs = 10'000'000'000ull;
inline constexpr uint32_t kWritePages = 64;
inline constexpr unsigned kWriteSlots = 8;
inline constexpr size_t kRingCapacity = 8192;
// How often each mapped region is asked for (a delete elsewhere).
inline constexpr uint64_t kRegionProbeNs = 1'000'000'000ull;

// Zeroed, page-aligned buffers for `pages` pages (start-up and pool growth;
// aborts without memory). Freed with free().
inline uint8_t *alloc_pages(size_t pages)
{
	void *p = aligned_alloc(kPageSize, pages * kPageSize);
	if (p == nullptr)
		abort();
	std::memset(p, 0, pages * kPageSize);
	return static_cast<uint8_t *>(p);
}

inline uint64_t now_ns()
{
	timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return uint64_t(ts.tv_sec) * 1'000'000'000ull + uint64_t(ts.tv_nsec);
}

struct PagerThread::FetchOp final : Completion {
	PagerThread *t = nullptr;
	FetchOp *next = nullptr;
	bool bulk = false;
	uint8_t *buf = nullptr;
	uint32_t cap = 0; // pages buf holds
	Mapping *m = nullptr;
	uint32_t first = 0, count = 0, done = 0;
	uint64_t t0 = 0;
	uint32_t tripwire = kNoPage;
	int stream = -1;
	void on_reply(const Status &st, const wire::Header &, std::span<const uint8_t>) override
	{
		if (m->window)
			t->shared_fetch_done(this, st);
		else
			t->on_fetch_done(this, st);
	}
};

struct PagerThread::WriteOp final : Completion {
	PagerThread *t = nullptr;
	WriteOp *next = nullptr;
	uint8_t *buf = nullptr;
	Mapping *m = nullptr;
	uint32_t first = 0, count = 0;
	uint64_t run = 0;
	void on_reply(const Status &st, const wire::Header &, std::span<const uint8_t>) override
	{
		t->on_write_done(this, st);
	}
};

// A one-page read that asks a module whether a mapped region still exists
// (region_deletion.cc). From a pool, grown on the tick.
struct PagerThread::ProbeOp final : Completion {
	PagerThread *t = nullptr;
	bool busy = false;
	ModuleId module;
	uint32_t region_id = 0;
	uint8_t *buf = nullptr; // one page
	~ProbeOp() override { free(buf); }
	void on_reply(const Status &st, const wire::Header &, std::span<const uint8_t>) override
	{
		t->on_probe_done(this, st);
	}
};

class PagerThread::TickOp : public IoOp
{
public:
	explicit TickOp(PagerThread *t) : t_(t) {}
	void arm()
	{
		ts_.tv_sec = 0;
		ts_.tv_nsec = kTickMs * 1'000'000ll;
		io_uring_prep_timeout(t_->loop_->sqe(this), &ts_, 0, 0);
	}
	void complete(int, uint32_t) override
	{
		t_->tick();
		if (t_->running_.load(std::memory_order_acquire))
			arm();
	}

private:
	PagerThread *t_;
	__kernel_timespec ts_{};
};

class PagerThread::SoonOp : public IoOp
{
public:
	explicit SoonOp(PagerThread *t) : t_(t) {}
	void complete(int, uint32_t) override
	{
		armed = false;
		t_->fail_unsent_writes();
		t_->retry_copies();
		t_->pump_writeback(); // a write-protect refused with EAGAIN
	}
	bool armed = false;

private:
	PagerThread *t_;
};

// One write-back of a shared window's pages: an eviction round (its
// victims are punched out afterwards) or a sync. From a pool: reused, never
// allocated on the fault path once the pool has grown to its working size.
struct PagerThread::SharedJob {
	SharedJob *next = nullptr; // free list
	Mapping *m = nullptr;
	std::shared_ptr<SharedWindow> w;
	int outstanding = 0; // SharedWrites in flight, plus one while issuing
	bool failed = false;
	bool eviction = false;
	std::vector<uint32_t> victims;          // eviction: sorted window pages
	std::function<void(Status)> flush_done; // sync: the answer
};

// One run of changed window pages on its way to the module (kWritePages at
// most), with the crcs it will have once durable. From a pool, as jobs.
struct PagerThread::SharedWrite final : Completion {
	PagerThread *t = nullptr;
	SharedWrite *next = nullptr; // free list, or the batch being issued
	SharedJob *job = nullptr;
	uint32_t first = 0, count = 0;
	uint8_t *buf = nullptr; // kWritePages pages
	uint32_t crcs[kWritePages] = {};
	void on_reply(const Status &st, const wire::Header &, std::span<const uint8_t>) override
	{
		t->on_shared_write(this, st);
	}
};

} // namespace memfed::pager
