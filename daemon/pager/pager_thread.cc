// PagerThread's lifecycle and pools: construction, start() (every buffer
// and operation the fault path will use is allocated here), the thread's
// main loop, stop(), the per-module channels and the lookups of processes
// and mappings by id.
//
// Threads: start() and stop() run on the caller's thread (the Pager's);
// run() is the pager thread itself; the rest runs on the pager thread.
#include "daemon/pager/pager_thread.h"

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>

#include "daemon/pager/pager_thread_ops.h"

namespace memfed::pager
{

uint64_t Mapping::count_dirty() const
{
	uint64_t n = 0;
	for (uint32_t i = 0; i < scan_end(); i++)
		if (pages[i].flags & (kDirty | kWbInFlight))
			n++;
	return n;
}

bool PagerThread::FaultRing::push(const PendingFault &f)
{
	if (size == slots.size())
		return false;
	slots[(head + size) % slots.size()] = f;
	size++;
	return true;
}

bool PagerThread::FaultRing::pop(PendingFault *f)
{
	if (size == 0)
		return false;
	*f = slots[head];
	head = (head + 1) % slots.size();
	size--;
	return true;
}

PagerThread::PagerThread(Federation &fed, const PagerConfig &cfg, const UffdCaps &caps, int index,
                         std::atomic<uint64_t> *ids)
    : fed_(fed), cfg_(cfg), caps_(caps), index_(index), policy_(cfg), ids_(ids)
{
}

PagerThread::~PagerThread()
{
	stop();
	for (auto &op : fetch_ops_)
		free(op->buf);
	for (auto &op : write_ops_)
		free(op->buf);
	for (auto &wr : shared_writes_)
		free(wr->buf);
	free(shared_scratch_);
}

Status PagerThread::start()
{
	auto loop = EventLoop::create(1024);
	if (!loop)
		return loop.status();
	loop_ = std::move(*loop);

	// Every buffer the fault path will ever use, allocated now.
	uint32_t chunk = std::max(2u, std::min(cfg_.prefetch_chunk, wire::kMaxPagesPerRequest));
	bulk_cap_ = chunk;
	run_plan_.resize(std::max(cfg_.fault_slots, cfg_.bulk_slots));
	for (uint32_t i = 0; i < cfg_.fault_slots + cfg_.bulk_slots; i++) {
		auto op = std::make_unique<FetchOp>();
		op->t = this;
		op->bulk = i >= cfg_.fault_slots;
		op->cap = op->bulk ? chunk : 1;
		op->buf = alloc_pages(op->cap);
		FetchOp *&list = op->bulk ? free_bulk_ : free_fault_;
		op->next = list;
		list = op.get();
		(op->bulk ? free_bulk_count_ : free_fault_count_)++;
		fetch_ops_.push_back(std::move(op));
	}
	for (unsigned i = 0; i < kWriteSlots; i++) {
		auto op = std::make_unique<WriteOp>();
		op->t = this;
		op->buf = alloc_pages(kWritePages);
		op->next = free_write_;
		free_write_ = op.get();
		write_ops_.push_back(std::move(op));
	}
	shared_scratch_ = alloc_pages(kWritePages);
	// Shared windows' write-back: a job per round or sync, a write per run.
	for (int i = 0; i < 2; i++) {
		shared_jobs_.push_back(std::make_unique<SharedJob>());
		shared_jobs_.back()->victims.reserve(cfg_.evict_batch);
		shared_jobs_.back()->next = free_shared_jobs_;
		free_shared_jobs_ = shared_jobs_.back().get();
	}
	for (unsigned i = 0; i < kWriteSlots; i++) {
		shared_writes_.push_back(std::make_unique<SharedWrite>());
		SharedWrite *wr = shared_writes_.back().get();
		wr->t = this;
		wr->buf = alloc_pages(kWritePages);
		wr->next = free_shared_writes_;
		free_shared_writes_ = wr;
	}
	failed_shared_.reserve(kWriteSlots);
	zero_.assign(std::max(kWritePages, chunk) * kPageSize, 0);
	stage_buf_.assign(size_t(kWritePages) * kPageSize, 0);
	waiting_.slots.resize(kRingCapacity);
	orphans_.slots.resize(kRingCapacity);
	retry_.slots.resize(kRingCapacity);
	copy_retry_.reserve(cfg_.fault_slots + cfg_.bulk_slots);
	failed_writes_.reserve(kWriteSlots);
	// Write-back claimed by eviction rounds (evict_batch pages at most
	// each, one run per page at worst) never allocates; a large sync may.
	wb_queue_.reserve(2 * size_t(cfg_.evict_batch));
	runs_.reserve(2 * size_t(cfg_.evict_batch));
	tick_op_ = std::make_unique<TickOp>(this);
	soon_op_ = std::make_unique<SoonOp>(this);

	running_ = true;
	thread_ = std::thread([this] { run(); });
	return Status::ok();
}

void PagerThread::run()
{
	char name[16];
	std::snprintf(name, sizeof(name), "mf-pager%d", index_);
	pthread_setname_np(pthread_self(), name);
	if (!cfg_.cpus.empty()) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(cfg_.cpus[index_ % cfg_.cpus.size()], &set);
		if (sched_setaffinity(0, sizeof(set), &set) != 0)
			LOG_WARN(kLog, "pinning pager thread %d to cpu %d failed: %s", index_,
			         cfg_.cpus[index_ % cfg_.cpus.size()], std::strerror(errno));
	}
	CPU_ZERO(&own_cpus_);
	(void)sched_getaffinity(0, sizeof(own_cpus_), &own_cpus_);
	tick_op_->arm();
	loop_->run();
}

void PagerThread::stop()
{
	if (!running_.load())
		return;
	// Flush every process, then leave the loop.
	std::atomic<bool> flushed{false};
	loop_->post([this, &flushed] {
		auto remaining = std::make_shared<size_t>(0);
		auto finish = [&flushed, remaining] {
			if (--*remaining == 0)
				flushed = true;
		};
		std::vector<uint64_t> ids;
		for (auto &p : procs_)
			if (!p->dead)
				ids.push_back(p->uffd_id);
		*remaining = ids.size() + 1;
		for (uint64_t id : ids)
			detach(id, finish);
		finish();
	});
	uint64_t deadline = now_ns() + uint64_t(cfg_.control_timeout_ms) * 1'000'000ull;
	while (!flushed.load() && now_ns() < deadline)
		usleep(1000);
	if (!flushed.load())
		LOG_WARN(kLog, "pager thread %d: write-back at stop did not finish in %d ms",
		         index_, cfg_.control_timeout_ms);
	running_ = false;
	loop_->stop();
	thread_.join();
	// A process whose detach did not finish may still have a thread pinned.
	// This is not the pager thread, whose CPUs ended with it.
	stop_colocation(/*restore_self=*/false);
	for (auto &p : procs_)
		p->close_fds();
	// The ring goes away with the loop, cancelling what is still queued;
	// channels must go first (their destructors complete requests, and run
	// the loop to do so). They leave channels_ before they are destroyed,
	// so nothing those completions reach finds one half gone.
	auto channels = std::move(channels_);
	channels_.clear();
	channels.clear();
}

ChannelSlot *PagerThread::channel(ModuleId module)
{
	auto it = channels_.find(module.value);
	if (it != channels_.end())
		return it->second.get();
	auto slot = std::make_unique<ChannelSlot>();
	slot->module = module;
	auto ch = fed_.open_channel(loop_.get(), module);
	if (!ch) {
		LOG_WARN(kLog, "opening a channel to module %s: %s", module.to_string().c_str(),
		         ch.status().to_string().c_str());
		return nullptr;
	}
	slot->channel = std::move(*ch);
	ChannelSlot *raw = slot.get();
	channels_[module.value] = std::move(slot);
	return raw;
}

Process *PagerThread::find_process(uint64_t uffd_id)
{
	for (auto &p : procs_)
		if (p->uffd_id == uffd_id && !p->dead)
			return p.get();
	return nullptr;
}

Mapping *PagerThread::find_mapping(uint64_t mapping_id)
{
	for (auto &p : procs_)
		for (auto &m : p->mappings)
			if (m->id == mapping_id && !m->dead)
				return m.get();
	return nullptr;
}

} // namespace memfed::pager
