#include "daemon/pager/pager_thread.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "daemon/common/crc32c.h"
#include "daemon/common/log.h"

namespace memfed::pager
{

namespace
{

constexpr const char *kLog = "pager";
constexpr int kTickMs = 20;
constexpr uint64_t kChannelRetryNs = 500'000'000;
constexpr uint64_t kErrorLogNs = 5'000'000'000ull; // a repeating error is logged this often
// An orphan fault (no mapping covers it) is zero-filled only when no "map"
// or "attach" arrived for this long: a restarted daemon first receives the
// client's maps, and the client's blocked threads must wait for them.
constexpr uint64_t kOrphanGraceNs = 10'000'000'000ull;
constexpr uint32_t kWritePages = 64;
constexpr unsigned kWriteSlots = 8;
constexpr size_t kRingCapacity = 8192;

uint64_t now_ns()
{
	timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return uint64_t(ts.tv_sec) * 1'000'000'000ull + uint64_t(ts.tv_nsec);
}

uint8_t *alloc_pages(size_t pages)
{
	void *p = aligned_alloc(kPageSize, pages * kPageSize);
	if (p == nullptr)
		abort(); // start-up only: nothing sensible to do without memory
	std::memset(p, 0, pages * kPageSize);
	return static_cast<uint8_t *>(p);
}

// The Tgid line of /proc/<tid>/status.
pid_t tgid_of(uint32_t tid)
{
	char path[64];
	std::snprintf(path, sizeof(path), "/proc/%u/status", tid);
	FILE *f = std::fopen(path, "re");
	if (f == nullptr)
		return 0;
	char line[256];
	pid_t tgid = 0;
	while (std::fgets(line, sizeof(line), f) != nullptr) {
		if (std::sscanf(line, "Tgid: %d", &tgid) == 1)
			break;
	}
	std::fclose(f);
	return tgid;
}

} // namespace

uint64_t Mapping::count_dirty() const
{
	uint64_t n = 0;
	for (const Page &pg : pages)
		if (pg.flags & (kDirty | kWbInFlight))
			n++;
	return n;
}

void ProcessOp::complete(int res, uint32_t flags)
{
	thread_->on_op(proc_, kind_, res, flags);
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
		t_->retry_copies();
	}
	bool armed = false;

private:
	PagerThread *t_;
};

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
    : fed_(fed), cfg_(cfg), caps_(caps), index_(index), ids_(ids)
{
}

PagerThread::~PagerThread()
{
	stop();
	for (auto &op : fetch_ops_)
		free(op->buf);
	for (auto &op : write_ops_)
		free(op->buf);
}

Status PagerThread::start()
{
	auto loop = EventLoop::create(1024);
	if (!loop)
		return loop.status();
	loop_ = std::move(*loop);

	// Every buffer the fault path will ever use, allocated now.
	uint32_t chunk = std::max(2u, std::min(cfg_.prefetch_chunk, wire::kMaxPagesPerRequest));
	for (uint32_t i = 0; i < cfg_.fault_slots + cfg_.bulk_slots; i++) {
		auto op = std::make_unique<FetchOp>();
		op->t = this;
		op->bulk = i >= cfg_.fault_slots;
		op->cap = op->bulk ? chunk : 1;
		op->buf = alloc_pages(op->cap);
		FetchOp *&list = op->bulk ? free_bulk_ : free_fault_;
		op->next = list;
		list = op.get();
		free_fault_count_ += op->bulk ? 0 : 1;
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
	zero_.assign(std::max(kWritePages, chunk) * kPageSize, 0);
	waiting_.slots.resize(kRingCapacity);
	orphans_.slots.resize(kRingCapacity);
	retry_.slots.resize(kRingCapacity);
	copy_retry_.reserve(cfg_.fault_slots + cfg_.bulk_slots);
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
	for (auto &p : procs_) {
		if (p->uffd >= 0)
			close(p->uffd);
		if (p->evict_fd >= 0)
			close(p->evict_fd);
		if (p->pidfd >= 0)
			close(p->pidfd);
		p->uffd = p->evict_fd = p->pidfd = -1;
	}
	// The ring goes away with the loop, cancelling what is still queued;
	// channels must go first (their destructors complete requests).
	channels_.clear();
}

// ---------------------------------------------------------------------------
// Processes and their io_uring operations

void PagerThread::arm(Process *p, ProcessOp *op, int kind)
{
	io_uring_sqe *s = loop_->sqe(op);
	switch (kind) {
	case ProcessOp::kUffdPoll:
		io_uring_prep_poll_multishot(s, p->uffd, POLLIN);
		break;
	case ProcessOp::kEvictRecv:
		io_uring_prep_recv(s, p->evict_fd, &p->evict.reply, sizeof(p->evict.reply), 0);
		break;
	case ProcessOp::kPidPoll:
		io_uring_prep_poll_add(s, p->pidfd, POLLIN);
		break;
	}
	op->armed = true;
}

void PagerThread::adopt(std::unique_ptr<Process> p)
{
	Process *raw = p.get();
	int fl = fcntl(raw->uffd, F_GETFL);
	if (fl >= 0 && !(fl & O_NONBLOCK))
		(void)fcntl(raw->uffd, F_SETFL, fl | O_NONBLOCK);
	raw->uffd_op = std::make_unique<ProcessOp>(this, raw, ProcessOp::kUffdPoll);
	raw->evict_op = std::make_unique<ProcessOp>(this, raw, ProcessOp::kEvictRecv);
	raw->pid_op = std::make_unique<ProcessOp>(this, raw, ProcessOp::kPidPoll);
	raw->evict.victims.reserve(cfg_.evict_batch);
	procs_.push_back(std::move(p));
	last_map_ns_ = now_ns();
	arm(raw, raw->uffd_op.get(), ProcessOp::kUffdPoll);
	if (raw->evict_fd >= 0)
		arm(raw, raw->evict_op.get(), ProcessOp::kEvictRecv);
	// Messages may be queued already (a restarted daemon).
	drain_uffd(raw);
}

void PagerThread::on_op(Process *p, int kind, int res, uint32_t flags)
{
	ProcessOp *op = kind == ProcessOp::kUffdPoll    ? p->uffd_op.get()
	                : kind == ProcessOp::kEvictRecv ? p->evict_op.get()
	                                                : p->pid_op.get();
	if (!(flags & IORING_CQE_F_MORE))
		op->armed = false;
	if (p->dead) {
		reap();
		return;
	}
	switch (kind) {
	case ProcessOp::kUffdPoll:
		if (res < 0 && res != -ECANCELED) {
			LOG_WARN(kLog, "polling uffd %lu failed: %s", (unsigned long)p->uffd_id,
			         std::strerror(-res));
			kill_process(p, "uffd poll failed");
			return;
		}
		drain_uffd(p);
		if (!op->armed && !p->dead)
			arm(p, op, kind);
		break;
	case ProcessOp::kEvictRecv:
		on_drop_reply(p, res);
		break;
	case ProcessOp::kPidPoll:
		if (res >= 0)
			kill_process(p, "process exited");
		break;
	}
}

void PagerThread::drain_uffd(Process *p)
{
	uffd_msg msgs[32];
	while (!p->dead) {
		ssize_t n = read(p->uffd, msgs, sizeof(msgs));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				LOG_WARN(kLog, "reading uffd %lu: %s", (unsigned long)p->uffd_id,
				         std::strerror(errno));
			return;
		}
		size_t count = size_t(n) / sizeof(uffd_msg);
		for (size_t i = 0; i < count && !p->dead; i++)
			handle_msg(p, msgs[i]);
		// A copy refused with EAGAIN waited for an event read just now.
		if (!copy_retry_.empty())
			retry_copies();
		if (count < std::size(msgs))
			return;
	}
}

void PagerThread::handle_msg(Process *p, const uffd_msg &msg)
{
	switch (msg.event) {
	case UFFD_EVENT_PAGEFAULT:
		handle_fault(p, msg.arg.pagefault.address, uint32_t(msg.arg.pagefault.flags),
		             msg.arg.pagefault.feat.ptid, false);
		break;
	case UFFD_EVENT_REMOVE:
		handle_remove(p, msg.arg.remove.start, msg.arg.remove.end);
		break;
	case UFFD_EVENT_UNMAP:
		handle_unmap(p, msg.arg.remove.start, msg.arg.remove.end);
		break;
	case UFFD_EVENT_REMAP:
		handle_remap(p, msg.arg.remap.from, msg.arg.remap.to, msg.arg.remap.len);
		break;
	case UFFD_EVENT_FORK:
		handle_fork(p, int(msg.arg.fork.ufd));
		break;
	default:
		LOG_WARN(kLog, "uffd %lu: unknown event %u ignored", (unsigned long)p->uffd_id,
		         unsigned(msg.event));
	}
}

void PagerThread::learn_pid(Process *p, uint32_t ptid)
{
	pid_t pid = tgid_of(ptid);
	if (pid <= 0)
		return;
	p->pid = pid;
	p->pidfd = int(syscall(SYS_pidfd_open, pid, 0));
	if (p->pidfd >= 0)
		arm(p, p->pid_op.get(), ProcessOp::kPidPoll);
	LOG_DEBUG(kLog, "uffd %lu belongs to pid %d", (unsigned long)p->uffd_id, int(pid));
}

// ---------------------------------------------------------------------------
// Faults

bool PagerThread::admit(Mapping *m) const
{
	const Process *p = m->proc;
	return (m->budget_pages == 0 || m->resident < m->budget_pages) &&
	       (p->budget_pages == 0 || p->resident < p->budget_pages);
}

void PagerThread::handle_fault(Process *p, uint64_t addr, uint32_t flags, uint32_t ptid, bool retry)
{
	addr &= ~(kPageSize - 1);
	if (p->pid == 0 && ptid != 0)
		learn_pid(p, ptid);
	Mapping *m = p->find(addr);
	uint32_t idx = m ? uint32_t((addr - m->addr) / kPageSize) : 0;
	if (m == nullptr || m->pages[idx].state == PageState::kGone) {
		// Not (yet) ours: a mapping the client is still sending.
		if (!orphans_.push({p, addr, flags, now_ns()}))
			(void)uffd_wake(p->uffd, addr, kPageSize);
		return;
	}
	if (m->window) {
		shared_fault(m, idx, flags, retry);
		return;
	}
	Page &pg = m->pages[idx];
	bool write = flags & UFFD_PAGEFAULT_FLAG_WRITE;

	if (flags & UFFD_PAGEFAULT_FLAG_WP) {
		if (pg.state == PageState::kEvicting) {
			pg.flags |= kParked;
			return;
		}
		if (pg.state == PageState::kResident) {
			m->stats.wp_faults++;
			pg.flags = uint8_t((pg.flags | kDirty | kRef) & ~kPrefetched);
			int r = uffd_writeprotect(p->uffd, addr, kPageSize, false, false);
			if (r == -EAGAIN)
				// An address-space event is queued (e.g. the client's
				// evictor MADV_DONTNEED): the thread faults again once
				// it is read.
				(void)uffd_wake(p->uffd, addr, kPageSize);
			else if (r < 0 && r != -ENOENT)
				LOG_WARN(kLog, "un-write-protecting 0x%lx: %s", (unsigned long)addr,
				         std::strerror(-r));
			return;
		}
		(void)uffd_wake(p->uffd, addr, kPageSize);
		return;
	}

	if (!retry)
		m->stats.faults++;
	switch (pg.state) {
	case PageState::kFetching:
		// The copy that completes the fetch wakes this thread; kParked
		// keeps a tripwire page from being held back instead.
		pg.flags |= write ? (kWriteFault | kParked) : kParked;
		// A stream that catches up with its prefetch asks for more.
		if (m->prefetch && cfg_.prefetch)
			prefetch(m, idx);
		return;
	case PageState::kEvicting:
		pg.flags |= kParked;
		return;
	case PageState::kHeld: {
		int s = m->streams.stream_of_tripwire(idx);
		if (s >= 0) {
			install_held(m, idx, s, write);
			return;
		}
		pg.state = PageState::kRemote; // lost its buffer: fetch again
		m->resident--;
		p->resident--;
		break;
	}
	case PageState::kResident:
		// A fault that raced with the copy that resolved it.
		(void)uffd_wake(p->uffd, addr, kPageSize);
		return;
	default:
		break;
	}
	if (!admit(m)) {
		if (!waiting_.push({p, addr, flags, now_ns()}))
			(void)uffd_wake(p->uffd, addr, kPageSize);
		maybe_evict(p);
		return;
	}
	if (pg.state == PageState::kZero) {
		install_zero(m, idx, write);
		return;
	}
	if (!issue_fetch(m, idx, write, now_ns())) {
		if (!waiting_.push({p, addr, flags, now_ns()}))
			(void)uffd_wake(p->uffd, addr, kPageSize);
		return;
	}
	if (m->prefetch && cfg_.prefetch)
		prefetch(m, idx);
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

bool PagerThread::issue_fetch(Mapping *m, uint32_t idx, bool write, uint64_t t0)
{
	Process *p = m->proc;
	ChannelSlot *cs = m->chan;
	if (cs->broken || !cs->channel) {
		// Never a zero page instead of data: the fault waits for the module.
		if (!retry_.push({p, m->page_addr(idx), write ? UFFD_PAGEFAULT_FLAG_WRITE : 0u,
		                  now_ns()}))
			(void)uffd_wake(p->uffd, m->page_addr(idx), kPageSize);
		return true;
	}
	FetchOp *op = free_fault_;
	if (op == nullptr)
		return false;
	free_fault_ = op->next;
	free_fault_count_--;
	op->bulk = false;
	Page &pg = m->pages[idx];
	pg.state = PageState::kFetching;
	pg.flags = write ? kWriteFault : 0;
	m->resident++;
	p->resident++;
	m->inflight++;
	op->m = m;
	op->first = idx;
	op->count = 1;
	op->done = 0;
	op->t0 = t0;
	op->tripwire = kNoPage;
	op->stream = -1;
	cs->channel->read_pages(wire::TrafficClass::kFault, m->region_id, m->page_fa(idx), 1,
	                        op->buf, op);
	return true;
}

bool PagerThread::plan_prefetch(Mapping *m, uint32_t idx, PrefetchPlan *plan)
{
	uint64_t hits = 0;
	uint32_t released = kNoPage;
	bool go = m->streams.on_fault(idx, m->npages, cfg_.prefetch_window, plan, &hits, &released);
	m->stats.prefetch_hits += hits;
	if (released != kNoPage)
		drop_held(m, released);
	return go;
}

void PagerThread::prefetch(Mapping *m, uint32_t idx)
{
	PrefetchPlan plan;
	if (!plan_prefetch(m, idx, &plan))
		return;
	Process *p = m->proc;
	ChannelSlot *cs = m->chan;
	if (cs->broken || !cs->channel) {
		m->streams.requested_until(plan.stream, plan.first);
		return;
	}
	uint64_t allowed = std::min(prefetch_room(m->resident, m->budget_pages),
	                            prefetch_room(p->resident, p->budget_pages));
	bool trip_issued = false;
	uint32_t end = plan.first + plan.count * plan.stride;
	uint32_t i = plan.first;
	while (i < end) {
		if (plan.stride == 1) {
			while (i < end && m->pages[i].state != PageState::kRemote)
				i++;
			if (i >= end)
				break;
		} else if (m->pages[i].state != PageState::kRemote) {
			i += plan.stride;
			continue;
		}
		// Strided pages are fetched one by one in spare fault slots.
		FetchOp *op = plan.stride == 1                           ? free_bulk_
		              : free_fault_count_ > cfg_.fault_slots / 2 ? free_fault_
		                                                         : nullptr;
		if (op == nullptr || allowed == 0) {
			m->streams.requested_until(plan.stream, i);
			if (allowed == 0) {
				// The budget stops the stream: make room now rather
				// than when a fault finds the budget full.
				p->evict_pressure = true;
				maybe_evict(p);
			}
			break;
		}
		uint32_t s = i, n = 0;
		while (i < end && n < op->cap && n < allowed &&
		       m->pages[i].state == PageState::kRemote) {
			m->pages[i].state = PageState::kFetching;
			m->pages[i].flags = 0;
			n++;
			i += plan.stride;
		}
		if (op->cap > 1) {
			free_bulk_ = op->next;
		} else {
			free_fault_ = op->next;
			free_fault_count_--;
		}
		op->bulk = true;
		allowed -= n;
		m->resident += n;
		p->resident += n;
		m->inflight++;
		op->m = m;
		op->first = s;
		op->count = n;
		op->done = 0;
		op->t0 = now_ns();
		op->stream = plan.stream;
		op->tripwire =
		        (plan.tripwire >= s && plan.tripwire < s + n) ? plan.tripwire : kNoPage;
		trip_issued |= op->tripwire != kNoPage;
		m->stats.prefetched += n;
		cs->channel->read_pages(wire::TrafficClass::kBulk, m->region_id, m->page_fa(s), n,
		                        op->buf, op);
	}
	if (plan.tripwire != kNoPage && !trip_issued &&
	    m->streams.tripwire(plan.stream) == plan.tripwire)
		m->streams.clear_tripwire(plan.stream);
}

void PagerThread::install_zero(Mapping *m, uint32_t idx, bool write)
{
	Process *p = m->proc;
	Page &pg = m->pages[idx];
	int64_t copied = 0;
	int r = uffd_copy(p->uffd, m->page_addr(idx), zero_.data(), kPageSize, m->wp && !write,
	                  &copied);
	if (r < 0 && r != -EEXIST) {
		if (r == -EAGAIN) {
			// The address space is changing (an event is queued):
			// the thread will fault again once it is read.
			(void)uffd_wake(p->uffd, m->page_addr(idx), kPageSize);
			return;
		}
		LOG_WARN(kLog, "installing a zero page at 0x%lx: %s",
		         (unsigned long)m->page_addr(idx), std::strerror(-r));
		return;
	}
	if (r == -EEXIST)
		(void)uffd_wake(p->uffd, m->page_addr(idx), kPageSize);
	pg.state = PageState::kResident;
	pg.flags = kDirty | kRef; // the module still has the old content
	m->resident++;
	p->resident++;
	after_install(m);
}

void PagerThread::install_held(Mapping *m, uint32_t idx, int stream, bool write)
{
	Process *p = m->proc;
	Page &pg = m->pages[idx];
	bool wp = m->wp && !write;
	int r = uffd_copy(p->uffd, m->page_addr(idx), m->held.data() + size_t(stream) * kPageSize,
	                  kPageSize, wp, nullptr);
	if (r == -EAGAIN) {
		(void)uffd_wake(p->uffd, m->page_addr(idx), kPageSize);
		return;
	}
	m->streams.clear_tripwire(stream);
	pg.state = PageState::kResident;
	// A stream passes through its tripwire like through the pages around
	// it: no reference bit, so that CLOCK evicts the stream's pages as one
	// run instead of sparing one page in every window (each spared page
	// would later cost a drop of its own).
	pg.flags = uint8_t(wp ? 0 : kDirty);
	if (r == -EEXIST)
		(void)uffd_wake(p->uffd, m->page_addr(idx), kPageSize);
	if (r < 0 && r != -EEXIST)
		LOG_WARN(kLog, "installing prefetched page 0x%lx: %s",
		         (unsigned long)m->page_addr(idx), std::strerror(-r));
	if (m->prefetch && cfg_.prefetch)
		prefetch(m, idx);
	after_install(m);
}

void PagerThread::drop_held(Mapping *m, uint32_t idx)
{
	if (idx >= m->npages || m->pages[idx].state != PageState::kHeld)
		return;
	m->pages[idx].state = PageState::kRemote;
	m->pages[idx].flags = 0;
	m->resident--;
	m->proc->resident--;
}

void PagerThread::on_fetch_done(FetchOp *op, const Status &st)
{
	Mapping *m = op->m;
	if (m->window) {
		shared_fetch_done(op, st);
		return;
	}
	if (m->dead || m->proc->dead) {
		release_fetch(op);
		return;
	}
	Process *p = m->proc;
	if (!st.is_ok()) {
		if (st.code() == Code::kUnavailable && !m->chan->broken) {
			m->chan->broken = true;
			m->chan->retry_at_ns = now_ns() + kChannelRetryNs;
			LOG_WARN(kLog, "module %s unreachable (%s); faults wait for it",
			         m->chan->module.to_string().c_str(), st.message().c_str());
		} else if (st.code() != Code::kUnavailable &&
		           now_ns() - last_fetch_error_ns_ > kErrorLogNs) {
			last_fetch_error_ns_ = now_ns();
			LOG_WARN(kLog, "fetching %u pages of region '%s' at page %u: %s", op->count,
			         m->region.c_str(), op->first, st.to_string().c_str());
		}
		// A page the module holds damaged, asked for by a fault: the
		// program gets SIGBUS there, as from a hardware memory error,
		// rather than wait forever (or get zeroes).
		bool poison = st.code() == Code::kCorrupt && !op->bulk &&
		              (p->features & UFFD_FEATURE_POISON);
		for (uint32_t i = op->first; i < op->first + op->count; i++) {
			Page &pg = m->pages[i];
			if (pg.state != PageState::kFetching)
				continue;
			bool write = pg.flags & kWriteFault;
			pg.state = (pg.flags & kRemoved) ? PageState::kZero : PageState::kRemote;
			pg.flags = (pg.flags & kRemoved) ? kDirty : 0;
			m->resident--;
			p->resident--;
			if (poison && pg.state == PageState::kRemote) {
				int r = uffd_poison(p->uffd, m->page_addr(i), kPageSize);
				LOG_ERROR(
				        kLog,
				        "pid %d: page %u of region '%s' is damaged on its module; "
				        "poisoned, so the program gets SIGBUS there%s%s",
				        int(p->pid), i, m->region.c_str(), r < 0 ? ": " : "",
				        r < 0 ? std::strerror(-r) : "");
				m->stats.poisoned++;
				continue;
			}
			if (!op->bulk) {
				if (!retry_.push({p, m->page_addr(i),
				                  write ? UFFD_PAGEFAULT_FLAG_WRITE : 0u,
				                  now_ns()}))
					(void)uffd_wake(p->uffd, m->page_addr(i), kPageSize);
			} else {
				// A fault may be waiting on this page: let it retry.
				(void)uffd_wake(p->uffd, m->page_addr(i), kPageSize);
			}
		}
		if (op->tripwire != kNoPage && m->streams.tripwire(op->stream) == op->tripwire)
			m->streams.clear_tripwire(op->stream);
		release_fetch(op);
		return;
	}
	if (!op->bulk) {
		m->stats.fetches++;
		m->stats.add_latency(now_ns() - op->t0);
	}
	if (!install_run(op)) {
		copy_retry_.push_back(op); // reserved: never allocates
		arm_soon();
		return;
	}
	release_fetch(op);
	after_install(m);
}

// Installs the fetched pages of `op` from op->done on; false if the kernel
// said EAGAIN (an address-space event is pending) and the rest must wait.
bool PagerThread::install_run(FetchOp *op)
{
	Mapping *m = op->m;
	Process *p = m->proc;
	// A mapping may span several vmas (the program mprotect()s or madvise()s
	// part of it) and one copy must stay within one: after ENOENT on a run,
	// the rest goes page by page.
	bool one_by_one = false;
	while (op->done < op->count && !p->dead && !m->dead) {
		uint32_t i = op->first + op->done;
		Page &pg = m->pages[i];
		if (pg.state != PageState::kFetching) {
			op->done++;
			continue;
		}
		const uint8_t *src = op->buf + size_t(op->done) * kPageSize;
		if (i == op->tripwire && m->streams.tripwire(op->stream) == i) {
			if (!(pg.flags & (kRemoved | kWriteFault | kParked))) {
				std::memcpy(m->held.data() + size_t(op->stream) * kPageSize, src,
				            kPageSize);
				pg.state = PageState::kHeld;
				op->done++;
				continue;
			}
			// The program got there first: install it like the rest.
			m->streams.clear_tripwire(op->stream);
		}
		if (pg.flags & kRemoved) {
			// Dropped by the program while being fetched: zeroes.
			int r = uffd_copy(p->uffd, m->page_addr(i), zero_.data(), kPageSize, false,
			                  nullptr);
			if (r == -EAGAIN)
				return false;
			if (r == -EEXIST)
				(void)uffd_wake(p->uffd, m->page_addr(i), kPageSize);
			pg.state = PageState::kResident;
			pg.flags = kDirty | kRef;
			op->done++;
			continue;
		}
		bool wp = m->wp && !(pg.flags & kWriteFault);
		uint32_t n = 1;
		while (!one_by_one && op->done + n < op->count) {
			const Page &q = m->pages[i + n];
			if (q.state != PageState::kFetching || (q.flags & kRemoved) ||
			    (i + n == op->tripwire && !(q.flags & kParked)) ||
			    (m->wp && !(q.flags & kWriteFault)) != wp)
				break;
			n++;
		}
		int64_t copied = 0;
		int r = uffd_copy(p->uffd, m->page_addr(i), src, uint64_t(n) * kPageSize, wp,
		                  &copied);
		uint32_t ok = uint32_t(uint64_t(copied) / kPageSize);
		uint8_t fl = uint8_t((op->bulk ? kPrefetched : kRef) | (wp ? 0 : kDirty));
		for (uint32_t j = 0; j < ok; j++) {
			m->pages[i + j].state = PageState::kResident;
			m->pages[i + j].flags = fl;
		}
		op->done += ok;
		if (r == 0 || ok == n)
			continue;
		Page &bad = m->pages[i + ok];
		if (r == -EAGAIN)
			return false;
		if (r == -EEXIST) {
			// Present already (a race we cannot see): keep it, and
			// since its content is unknown, treat it as written. A
			// failed copy wakes nobody: wake the faulting threads.
			bad.state = PageState::kResident;
			bad.flags = kDirty | kRef;
			(void)uffd_wake(p->uffd, m->page_addr(i + ok), kPageSize);
		} else if (r == -ESRCH) {
			kill_process(p, "address space gone");
			return true;
		} else if (r == -ENOENT && n - ok > 1) {
			// The run crosses a vma boundary.
			one_by_one = true;
			continue;
		} else {
			// No vma there any more (unmapped or moved): the
			// UNMAP/REMAP event tells the rest. A thread may still
			// wait on the page: it retries and learns the same.
			bad.state = PageState::kRemote;
			bad.flags = 0;
			m->resident--;
			p->resident--;
			(void)uffd_wake(p->uffd, m->page_addr(i + ok), kPageSize);
			LOG_DEBUG(kLog, "copy to 0x%lx: %s", (unsigned long)m->page_addr(i + ok),
			          std::strerror(-r));
		}
		op->done++;
	}
	return true;
}

void PagerThread::release_fetch(FetchOp *op)
{
	Mapping *m = op->m;
	op->m = nullptr;
	if (op->cap > 1) {
		op->next = free_bulk_;
		free_bulk_ = op;
	} else {
		op->next = free_fault_;
		free_fault_ = op;
		free_fault_count_++;
	}
	m->inflight--;
	if (m->dead && m->inflight == 0)
		reap();
	retry_waiting();
}

void PagerThread::after_install(Mapping *m)
{
	if (!m->dead && !m->proc->dead)
		maybe_evict(m->proc);
}

void PagerThread::retry_waiting()
{
	// A channel may complete inline (the local module): a completion that
	// lands here while this loop runs only asks it to go round again.
	if (in_retry_) {
		retry_again_ = true;
		return;
	}
	in_retry_ = true;
	do {
		retry_again_ = false;
		size_t n = waiting_.size;
		PendingFault f;
		while (n-- > 0 && free_fault_ != nullptr && waiting_.pop(&f)) {
			if (!f.proc->dead)
				handle_fault(f.proc, f.addr, f.flags, 0, true);
		}
	} while (retry_again_);
	in_retry_ = false;
}

// ---------------------------------------------------------------------------
// Non-cooperative events

void PagerThread::set_gone(Mapping *m, uint32_t i)
{
	Page &pg = m->pages[i];
	if (pg.state == PageState::kHeld) {
		int s = m->streams.stream_of_tripwire(i);
		if (s >= 0)
			m->streams.clear_tripwire(s);
	}
	if (m->holds_memory(pg.state)) {
		m->resident--;
		m->proc->resident--;
	}
	pg.state = PageState::kGone;
	pg.flags &= kWbInFlight; // an in-flight write-back still finishes
}

void PagerThread::handle_remove(Process *p, uint64_t start, uint64_t end)
{
	// The program dropped [start, end) (MADV_DONTNEED/REMOVE/FREE): from now
	// on those pages read as zero, never as the module's old content. The
	// kernel zaps them after this event is read.
	for (auto &mp : p->mappings) {
		Mapping *m = mp.get();
		// Shared windows learn of MADV_REMOVE from the hole it leaves.
		if (m->dead || m->window)
			continue;
		uint64_t mend = m->addr + uint64_t(m->npages) * kPageSize;
		uint64_t a = std::max(start, m->addr), b = std::min(end, mend);
		if (a >= b)
			continue;
		for (uint32_t i = uint32_t((a - m->addr) / kPageSize);
		     i < uint32_t((b - m->addr + kPageSize - 1) / kPageSize); i++) {
			Page &pg = m->pages[i];
			switch (pg.state) {
			case PageState::kRemote:
			case PageState::kZero:
				pg.state = PageState::kZero;
				pg.flags = uint8_t(kDirty | (pg.flags & kWbInFlight));
				break;
			case PageState::kFetching:
				pg.flags |= kRemoved;
				break;
			case PageState::kEvicting:
				pg.flags |= (pg.flags & kRemoved) ? kRemovedTwice : kRemoved;
				break;
			case PageState::kHeld:
			case PageState::kResident:
				set_gone(m, i);
				pg.state = PageState::kZero;
				pg.flags = uint8_t(kDirty | (pg.flags & kWbInFlight));
				break;
			case PageState::kGone:
				break;
			}
		}
		// The zeroes go to the module now, not at the next sync: a
		// daemon restarted before then would serve the old content.
		uint32_t first = uint32_t((a - m->addr) / kPageSize);
		claim_writeback(m, first, uint32_t((b - a + kPageSize - 1) / kPageSize));
	}
	pump_writeback();
}

void PagerThread::handle_unmap(Process *p, uint64_t start, uint64_t end)
{
	// Already unmapped when this arrives: what was there is gone.
	for (auto &mp : p->mappings) {
		Mapping *m = mp.get();
		if (m->dead)
			continue;
		uint64_t mend = m->addr + uint64_t(m->npages) * kPageSize;
		uint64_t a = std::max(start, m->addr), b = std::min(end, mend);
		if (a >= b)
			continue;
		for (uint32_t i = uint32_t((a - m->addr) / kPageSize);
		     i < uint32_t((b - m->addr + kPageSize - 1) / kPageSize); i++)
			set_gone(m, i);
		bool all_gone = std::all_of(m->pages.begin(), m->pages.end(), [](const Page &pg) {
			return pg.state == PageState::kGone;
		});
		if (all_gone)
			retire(m);
	}
	p->last_hit = nullptr;
}

void PagerThread::handle_remap(Process *p, uint64_t from, uint64_t to, uint64_t len)
{
	// mremap moved [from, from+len) to `to`, page tables included.
	std::vector<std::unique_ptr<Mapping>> added;
	for (auto &mp : p->mappings) {
		Mapping *m = mp.get();
		if (m->dead)
			continue;
		uint64_t mend = m->addr + uint64_t(m->npages) * kPageSize;
		uint64_t a = std::max(from, m->addr), b = std::min(from + len, mend);
		if (a >= b)
			continue;
		if (a == m->addr && b == mend) {
			// The whole mapping moved: in-flight fetches install at
			// the new address, which is where the pages now belong.
			m->addr = to + (m->addr - from);
			continue;
		}
		// Part of it moved: that part becomes a mapping of its own.
		auto n = std::make_unique<Mapping>();
		uint32_t first = uint32_t((a - m->addr) / kPageSize);
		uint32_t count = uint32_t((b - a) / kPageSize);
		n->id = ids_->fetch_add(1);
		n->proc = p;
		n->region = m->region;
		n->region_id = m->region_id;
		n->fa_base = m->page_fa(first);
		n->addr = to + (a - from);
		n->npages = count;
		n->writable = m->writable;
		n->wp = m->wp;
		n->prefetch = m->prefetch;
		n->budget_pages = m->budget_pages;
		n->chan = m->chan;
		n->held.assign(m->held.size(), 0);
		n->pages.assign(m->pages.begin() + first, m->pages.begin() + first + count);
		if (m->window) {
			n->window = m->window;
			n->window_first = m->window_first + first;
			std::lock_guard<std::mutex> lk(m->window->mu);
			bool ready = true;
			for (auto &mp2 : m->window->mappers)
				if (mp2.mapping == m)
					ready = mp2.ready;
			m->window->mappers.push_back({p, n.get(), ready});
		}
		for (Page &pg : n->pages) {
			// Work in flight belongs to the old object: let the
			// new one start from what the module and process hold.
			if (pg.state == PageState::kFetching || pg.state == PageState::kHeld) {
				pg.state = (pg.flags & kRemoved) ? PageState::kZero
				                                 : PageState::kRemote;
				pg.flags = (pg.state == PageState::kZero) ? kDirty : 0;
			} else if (pg.state == PageState::kEvicting) {
				pg.state = PageState::kResident;
				pg.flags = uint8_t(kDirty | (pg.flags & kRef));
			}
			if (pg.flags & kWbInFlight)
				pg.flags = uint8_t((pg.flags & ~kWbInFlight) | kDirty);
			if (n->holds_memory(pg.state))
				n->resident++;
		}
		for (uint32_t i = first; i < first + count; i++)
			set_gone(m, i);
		p->resident += n->resident;
		added.push_back(std::move(n));
	}
	for (auto &n : added)
		p->mappings.push_back(std::move(n));
	p->last_hit = nullptr;
	// Threads still waiting at the old addresses retry (and find them moved).
	(void)uffd_wake(p->uffd, from, len);
}

void PagerThread::handle_fork(Process *parent, int child_uffd)
{
	auto c = std::make_unique<Process>();
	c->uffd_id = ids_->fetch_add(1);
	c->uffd = child_uffd;
	c->uid = parent->uid;
	c->features = parent->features;
	c->fork_child = true;
	for (auto &mp : parent->mappings) {
		Mapping *m = mp.get();
		if (m->dead)
			continue;
		auto n = std::make_unique<Mapping>();
		n->id = ids_->fetch_add(1);
		n->proc = c.get();
		n->region = m->region;
		n->region_id = m->region_id;
		n->fa_base = m->fa_base;
		n->addr = m->addr;
		n->npages = m->npages;
		n->writable = m->writable;
		n->wp = m->wp;
		n->prefetch = m->prefetch;
		n->chan = m->chan;
		n->held.assign(m->held.size(), 0);
		n->pages = m->pages;
		if (m->window) {
			// A shared mapping stays shared in the child.
			n->window = m->window;
			n->window_first = m->window_first;
			std::lock_guard<std::mutex> lk(m->window->mu);
			m->window->mappers.push_back({c.get(), n.get(), true});
			c->mappings.push_back(std::move(n));
			continue;
		}
		for (Page &pg : n->pages) {
			// The child has its own copy of every page present at fork.
			switch (pg.state) {
			case PageState::kResident:
			case PageState::kEvicting:
				pg.state = PageState::kResident;
				pg.flags = uint8_t(
				        kRef | (pg.flags & (kDirty | kWbInFlight) ? kDirty : 0));
				break;
			case PageState::kFetching:
			case PageState::kHeld:
				pg.state = (pg.flags & kRemoved) ? PageState::kZero
				                                 : PageState::kRemote;
				pg.flags = 0;
				break;
			default:
				pg.flags = 0;
				break;
			}
			if (n->holds_memory(pg.state))
				n->resident++;
		}
		c->resident += n->resident;
		c->mappings.push_back(std::move(n));
	}
	LOG_DEBUG(kLog, "uffd %lu forked: child uffd %lu with %zu mappings",
	          (unsigned long)parent->uffd_id, (unsigned long)c->uffd_id, c->mappings.size());
	adopt(std::move(c));
}

// ---------------------------------------------------------------------------
// Kind "shared": windows backed by a pager-owned memfd

struct PagerThread::SharedJob {
	std::shared_ptr<SharedWindow> w;
	int outstanding = 1; // one for the issuing code itself
	bool failed = false;
	std::function<void(bool)> done;
};

struct PagerThread::SharedWrite final : Completion {
	PagerThread *t = nullptr;
	SharedJob *job = nullptr;
	uint32_t first = 0, count = 0;
	std::vector<uint8_t> buf;
	std::vector<uint32_t> crcs;
	void on_reply(const Status &st, const wire::Header &, std::span<const uint8_t>) override
	{
		t->on_shared_write(this, st);
	}
};

void PagerThread::shared_fault(Mapping *m, uint32_t idx, uint32_t flags, bool retry)
{
	Process *p = m->proc;
	SharedWindow &w = *m->window;
	uint64_t addr = m->page_addr(idx);
	uint32_t wi = m->window_first + idx;
	std::unique_lock<std::mutex> lk(w.mu);
	Page &pg = w.pages[wi];
	if (flags & UFFD_PAGEFAULT_FLAG_WP) {
		if (pg.state == PageState::kEvicting) {
			pg.flags |= kParked;
			return;
		}
		// Write-protection is only wanted while a page is evicted; a
		// leftover marker (the page was punched and filled again) goes.
		m->stats.wp_faults++;
		(void)uffd_writeprotect(p->uffd, addr, kPageSize, false, false);
		return;
	}
	if (!retry)
		m->stats.faults++;
	switch (pg.state) {
	case PageState::kFetching:
		pg.flags |= kParked; // every mapper is woken when it is done
		lk.unlock();
		if (m->prefetch && cfg_.prefetch)
			shared_prefetch(m, idx); // a stream caught up with its prefetch
		return;
	case PageState::kEvicting:
		pg.flags |= kParked;
		return;
	case PageState::kResident:
		if (w.in_memfd(wi)) {
			(void)uffd_wake(p->uffd, addr, kPageSize); // raced with the fill
			return;
		}
		// A hole where the pager put a page: the program punched it
		// (MADV_REMOVE). It reads as zero from now on.
		pg.state = PageState::kZero;
		w.resident--;
		break;
	default:
		break;
	}
	if (w.budget_pages && w.resident >= w.budget_pages) {
		lk.unlock();
		if (!waiting_.push({p, addr, flags, now_ns()}))
			(void)uffd_wake(p->uffd, addr, kPageSize);
		maybe_evict_window(m);
		return;
	}
	if (pg.state == PageState::kZero) {
		int r = w.fill(wi, zero_.data(), 1);
		if (r < 0)
			LOG_WARN(kLog, "zero-filling page %u of window %s: %s", wi, w.key.c_str(),
			         std::strerror(-r));
		pg.state = PageState::kResident;
		pg.flags = kRef;
		w.crc[wi] = kCrcUnknown; // the module still has the old content
		w.resident++;
		w.wake_all(wi, 1);
		return;
	}
	ChannelSlot *cs = m->chan;
	FetchOp *op = free_fault_;
	if (cs->broken || !cs->channel || op == nullptr) {
		lk.unlock();
		FaultRing &ring = (cs->broken || !cs->channel) ? retry_ : waiting_;
		if (!ring.push({p, addr, flags, now_ns()}))
			(void)uffd_wake(p->uffd, addr, kPageSize);
		return;
	}
	free_fault_ = op->next;
	free_fault_count_--;
	pg.state = PageState::kFetching;
	pg.flags = 0;
	w.resident++;
	lk.unlock();
	op->bulk = false;
	op->m = m;
	op->first = wi;
	op->count = 1;
	op->done = 0;
	op->t0 = now_ns();
	op->tripwire = kNoPage;
	op->stream = -1;
	m->inflight++;
	cs->channel->read_pages(wire::TrafficClass::kFault, w.region_id,
	                        w.fa_base + uint64_t(wi) * kPageSize, 1, op->buf, op);
	if (m->prefetch && cfg_.prefetch && !m->dead)
		shared_prefetch(m, idx);
}

void PagerThread::shared_fetch_done(FetchOp *op, const Status &st)
{
	Mapping *m = op->m;
	SharedWindow &w = *m->window;
	{
		std::lock_guard<std::mutex> lk(w.mu);
		for (uint32_t k = 0; k < op->count;) {
			if (w.pages[op->first + k].state != PageState::kFetching) {
				k++;
				continue;
			}
			uint32_t e = k + 1;
			while (e < op->count &&
			       w.pages[op->first + e].state == PageState::kFetching)
				e++;
			uint32_t wi = op->first + k, n = e - k;
			const uint8_t *src = op->buf + size_t(k) * kPageSize;
			int r = st.is_ok() ? w.fill(wi, src, n) : -EIO;
			for (uint32_t j = 0; j < n; j++) {
				Page &pg = w.pages[wi + j];
				if (r == 0) {
					pg.state = PageState::kResident;
					pg.flags = op->bulk ? kPrefetched : kRef;
					w.crc[wi + j] =
					        crc32c(src + size_t(j) * kPageSize, kPageSize);
					continue;
				}
				pg.state = PageState::kRemote;
				pg.flags = 0;
				w.resident--;
				if (op->bulk || wi + j < m->window_first ||
				    wi + j >= m->window_first + m->npages)
					continue; // the wake below lets waiters fault again
				uint64_t a = m->page_addr(wi + j - m->window_first);
				if (!m->dead && !m->proc->dead &&
				    !retry_.push({m->proc, a, 0u, now_ns()}))
					(void)uffd_wake(m->proc->uffd, a, kPageSize);
			}
			if (r != 0 && st.is_ok())
				LOG_WARN(kLog, "filling pages %u+%u of window %s: %s", wi, n,
				         w.key.c_str(), std::strerror(-r));
			w.wake_all(wi, n);
			k = e;
		}
	}
	if (st.is_ok() && !op->bulk) {
		m->stats.fetches++;
		m->stats.add_latency(now_ns() - op->t0);
	} else if (!st.is_ok() && st.code() == Code::kUnavailable && !m->chan->broken) {
		m->chan->broken = true;
		m->chan->retry_at_ns = now_ns() + kChannelRetryNs;
		LOG_WARN(kLog, "module %s unreachable (%s); faults wait for it",
		         m->chan->module.to_string().c_str(), st.message().c_str());
	}
	release_fetch(op);
	if (!m->dead)
		maybe_evict_window(m);
}

void PagerThread::shared_prefetch(Mapping *m, uint32_t idx)
{
	PrefetchPlan plan;
	if (!plan_prefetch(m, idx, &plan))
		return;
	// No tripwires here: a page filled into the memfd is mapped by the
	// kernel without a fault, so streams advance on faults at in-flight
	// pages and at the end of what was fetched.
	if (plan.tripwire != kNoPage)
		m->streams.clear_tripwire(plan.stream);
	ChannelSlot *cs = m->chan;
	if (plan.stride != 1 || cs->broken || !cs->channel) {
		m->streams.requested_until(plan.stream, plan.first);
		return;
	}
	SharedWindow &w = *m->window;
	struct Run {
		FetchOp *op;
		uint32_t first, n;
	};
	constexpr int kMaxRuns = 16;
	Run runs[kMaxRuns];
	int nr = 0;
	{
		std::lock_guard<std::mutex> lk(w.mu);
		uint64_t allowed = prefetch_room(w.resident, w.budget_pages);
		uint32_t i = plan.first, end = plan.first + plan.count;
		while (i < end) {
			if (w.pages[m->window_first + i].state != PageState::kRemote) {
				i++;
				continue;
			}
			FetchOp *op = free_bulk_;
			if (op == nullptr || allowed == 0 || nr == kMaxRuns) {
				m->streams.requested_until(plan.stream, i);
				break;
			}
			free_bulk_ = op->next;
			uint32_t s0 = i, n = 0;
			while (i < end && n < op->cap && n < allowed &&
			       w.pages[m->window_first + i].state == PageState::kRemote) {
				w.pages[m->window_first + i].state = PageState::kFetching;
				w.pages[m->window_first + i].flags = 0;
				n++;
				i++;
			}
			allowed -= n;
			w.resident += n;
			runs[nr++] = {op, m->window_first + s0, n};
		}
	}
	// Issued without the lock: a channel may complete inline.
	for (int k = 0; k < nr; k++) {
		FetchOp *op = runs[k].op;
		op->bulk = true;
		op->m = m;
		op->first = runs[k].first;
		op->count = runs[k].n;
		op->done = 0;
		op->t0 = now_ns();
		op->tripwire = kNoPage;
		op->stream = -1;
		m->inflight++;
		m->stats.prefetched += runs[k].n;
		cs->channel->read_pages(wire::TrafficClass::kBulk, w.region_id,
		                        w.fa_base + uint64_t(runs[k].first) * kPageSize, runs[k].n,
		                        op->buf, op);
	}
}

void PagerThread::maybe_evict_window(Mapping *m)
{
	SharedWindow &w = *m->window;
	std::vector<uint32_t> victims;
	{
		std::lock_guard<std::mutex> lk(w.mu);
		if (w.evicting || w.budget_pages == 0 || !caps_.shmem_wp || !w.all_ready())
			return;
		uint64_t want = std::min<uint64_t>(eviction_want(w.resident, w.budget_pages, false),
		                                   cfg_.evict_batch);
		if (want == 0)
			return;
		for (uint64_t step = 0; step < 2ull * w.npages && victims.size() < want; step++) {
			uint32_t i = w.clock_hand;
			w.clock_hand = (w.clock_hand + 1) % w.npages;
			Page &pg = w.pages[i];
			if (pg.state != PageState::kResident)
				continue;
			if (pg.flags & kRef) {
				pg.flags &= uint8_t(~kRef);
				continue;
			}
			// Prefetched for this mapper's stream, not reached yet.
			if ((pg.flags & kPrefetched) && i >= m->window_first &&
			    i < m->window_first + m->npages &&
			    m->streams.ahead_of_stream(i - m->window_first))
				continue;
			pg.state = PageState::kEvicting;
			pg.flags = 0;
			victims.push_back(i);
		}
		if (victims.empty())
			return;
		std::sort(victims.begin(), victims.end());
		w.evicting = true;
		// Writers are parked from here on, in every process.
		bool ok = true;
		for (size_t i = 0; i < victims.size();) {
			size_t j = i + 1;
			while (j < victims.size() && victims[j] == victims[j - 1] + 1)
				j++;
			ok &= w.write_protect_all(victims[i], uint32_t(j - i), true);
			i = j;
		}
		if (!ok) {
			LOG_WARN(kLog, "window %s: write-protect failed; eviction skipped",
			         w.key.c_str());
			for (uint32_t i : victims)
				w.pages[i].state = PageState::kResident;
			w.evicting = false;
			return;
		}
	}
	m->inflight++;
	uint32_t first = victims.front(), count = victims.back() - victims.front() + 1;
	shared_writeback(m, first, count, true, [this, m, victims](bool ok) {
		finish_window_eviction(m, victims, ok);
		m->inflight--;
		if (m->dead && m->inflight == 0)
			reap();
	});
}

void PagerThread::finish_window_eviction(Mapping *m, const std::vector<uint32_t> &victims, bool ok)
{
	SharedWindow &w = *m->window;
	{
		std::lock_guard<std::mutex> lk(w.mu);
		for (size_t i = 0; i < victims.size();) {
			size_t j = i + 1;
			while (j < victims.size() && victims[j] == victims[j - 1] + 1)
				j++;
			uint32_t a = victims[i], n = uint32_t(j - i);
			int r = ok ? w.punch(a, n) : -EIO;
			for (uint32_t k = a; k < a + n; k++) {
				Page &pg = w.pages[k];
				if (pg.state != PageState::kEvicting)
					continue;
				if (r == 0) {
					pg.state = PageState::kRemote;
					w.resident--;
					w.stats.evictions++;
				} else {
					pg.state =
					        PageState::kResident; // still write-protected: fine
				}
				pg.flags = 0;
			}
			w.wake_all(a, n);
			i = j;
		}
		w.evicting = false;
	}
	retry_waiting();
	if (!m->dead)
		maybe_evict_window(m);
	check_trim_waiters(ok ? nullptr : &w);
}

void PagerThread::shared_writeback(Mapping *m, uint32_t first, uint32_t count, bool victims,
                                   std::function<void(bool)> done)
{
	SharedWindow &w = *m->window;
	auto *job = new SharedJob;
	job->w = m->window;
	job->done = std::move(done);
	std::vector<SharedWrite *> writes;
	{
		std::lock_guard<std::mutex> lk(w.mu);
		uint32_t end = std::min(w.npages, first + count);
		for (uint32_t i = first; i < end;) {
			auto held = [&](uint32_t k) {
				PageState s = w.pages[k].state;
				return victims ? s == PageState::kEvicting
				               : (s == PageState::kResident ||
				                  s == PageState::kEvicting);
			};
			if (!held(i)) {
				i++;
				continue;
			}
			uint32_t j = i + 1;
			while (j < end && j - i < kWritePages && held(j))
				j++;
			std::vector<uint8_t> buf(size_t(j - i) * kPageSize);
			int r = w.read(i, buf.data(), j - i);
			if (r < 0) {
				LOG_WARN(kLog, "reading window %s: %s", w.key.c_str(),
				         std::strerror(-r));
				job->failed = true;
				i = j;
				continue;
			}
			// Changed pages only, in runs.
			for (uint32_t k = i; k < j;) {
				uint32_t c =
				        crc32c(buf.data() + size_t(k - i) * kPageSize, kPageSize);
				if (c == w.crc[k] && w.crc[k] != kCrcUnknown) {
					k++;
					continue;
				}
				auto *wr = new SharedWrite;
				wr->t = this;
				wr->job = job;
				wr->first = k;
				while (k < j) {
					const uint8_t *pg = buf.data() + size_t(k - i) * kPageSize;
					uint32_t ck = crc32c(pg, kPageSize);
					if (ck == w.crc[k] && w.crc[k] != kCrcUnknown)
						break;
					wr->buf.insert(wr->buf.end(), pg, pg + kPageSize);
					wr->crcs.push_back(ck);
					k++;
				}
				wr->count = k - wr->first;
				writes.push_back(wr);
			}
			i = j;
		}
	}
	job->outstanding += int(writes.size());
	for (SharedWrite *wr : writes) {
		if (m->chan->broken || !m->chan->channel) {
			on_shared_write(wr, Status(Code::kUnavailable, "module unreachable"));
			continue;
		}
		m->chan->channel->write_pages(wire::TrafficClass::kBulk, w.region_id,
		                              w.fa_base + uint64_t(wr->first) * kPageSize,
		                              wr->count, wr->buf.data(), wr);
	}
	// Drop the issuing reference.
	if (--job->outstanding == 0) {
		job->done(!job->failed);
		delete job;
	}
}

void PagerThread::on_shared_write(SharedWrite *wr, const Status &st)
{
	SharedJob *job = wr->job;
	SharedWindow &w = *job->w;
	if (st.is_ok()) {
		std::lock_guard<std::mutex> lk(w.mu);
		for (uint32_t k = 0; k < wr->count; k++)
			w.crc[wr->first + k] = wr->crcs[k];
		w.stats.writebacks += wr->count;
	} else {
		job->failed = true;
		wb_failures_++;
		LOG_WARN(kLog, "writing back %u pages of window %s: %s", wr->count, w.key.c_str(),
		         st.to_string().c_str());
	}
	delete wr;
	if (--job->outstanding == 0) {
		job->done(!job->failed);
		delete job;
	}
}

void PagerThread::mapping_ready(uint64_t mapping_id, std::function<void(Status)> done)
{
	Mapping *m = find_mapping(mapping_id);
	if (m == nullptr || !m->window) {
		done(Status(Code::kNotFound,
		            "shared mapping " + std::to_string(mapping_id) + " not found"));
		return;
	}
	{
		std::lock_guard<std::mutex> lk(m->window->mu);
		for (auto &mp : m->window->mappers)
			if (mp.mapping == m)
				mp.ready = true;
	}
	// A window joined with a smaller budget may be over it already (another
	// mapper, or a previous one whose pages are still in the memfd): the
	// client touches the mapping only after the reply, so it is trimmed
	// first.
	trim_waiters_.push_back({mapping_id, std::move(done)});
	check_trim_waiters(nullptr);
}

void PagerThread::check_trim_waiters(const SharedWindow *failed)
{
	// Rounds may finish synchronously and call back in here.
	std::vector<TrimWaiter> held;
	held.swap(trim_waiters_);
	for (TrimWaiter &tw : held) {
		Mapping *m = find_mapping(tw.mapping_id);
		bool answer = m == nullptr || !m->window;
		if (!answer) {
			SharedWindow &w = *m->window;
			auto state = [&w](bool *over, bool *evicting) {
				std::lock_guard<std::mutex> lk(w.mu);
				*over = w.budget_pages != 0 && w.resident > w.budget_pages;
				*evicting = w.evicting;
			};
			bool over, evicting;
			state(&over, &evicting);
			if (over && &w == failed) {
				LOG_WARN(kLog,
				         "window %s stays over its budget: writing back failed",
				         w.key.c_str());
				evicting = false;
			} else if (over && !evicting) {
				maybe_evict_window(m);
				state(&over, &evicting);
			}
			// Over with no round running (none could start): as far as
			// eviction gets.
			answer = !over || !evicting;
		}
		if (answer)
			tw.done(Status::ok());
		else
			trim_waiters_.push_back(std::move(tw));
	}
}

// ---------------------------------------------------------------------------
// Eviction

uint64_t PagerThread::headroom(uint64_t budget) const
{
	// A sixteenth of the budget at least, so faults and prefetch find room
	// without waiting for a round.
	uint64_t h = std::max<uint64_t>(cfg_.evict_headroom, budget / 16);
	if (cfg_.prefetch)
		h = std::max<uint64_t>(h, cfg_.prefetch_window / 2);
	return std::max<uint64_t>(1, std::min<uint64_t>(h, budget / 4));
}

uint64_t PagerThread::prefetch_room(uint64_t resident, uint64_t budget) const
{
	if (budget == 0)
		return UINT64_MAX;
	uint64_t high = budget - headroom(budget);
	return high > resident ? high - resident : 0;
}

uint64_t PagerThread::eviction_want(uint64_t resident, uint64_t budget, bool pressure) const
{
	// Past the high mark (budget - headroom), or when prefetch is held up
	// by the budget, evict a round's worth below it: a quarter of the
	// budget, up to a full batch. Each round pays the drop round trip
	// (pager -> evictor -> REMOVE event -> pager), which costs about as much
	// as dropping a hundred pages, so rounds are few and large; the budget
	// stays used between the low mark and the high one.
	uint64_t h = headroom(budget);
	if (budget == 0 || (resident + h <= budget && !pressure))
		return 0;
	uint64_t round = std::max<uint64_t>(h, std::min<uint64_t>(budget / 4, cfg_.evict_batch));
	uint64_t low = budget > h + round ? budget - h - round : budget / 2;
	return resident > low ? resident - low : 0;
}

void PagerThread::maybe_evict(Process *p)
{
	if (p->evict.active || !p->can_evict())
		return;
	bool pressure = p->evict_pressure;
	p->evict_pressure = false;
	uint64_t need_p = eviction_want(p->resident, p->budget_pages, pressure);
	auto &victims = p->evict.victims;
	victims.clear();
	// Mappings over their own budget first, then the largest for the process.
	for (int pass = 0; pass < 2 && victims.size() < cfg_.evict_batch; pass++) {
		for (auto &mp : p->mappings) {
			Mapping *m = mp.get();
			if (m->dead || !m->wp || m->npages == 0)
				continue;
			uint64_t want = 0;
			if (pass == 0)
				want = eviction_want(m->resident, m->budget_pages, pressure);
			if (pass == 1 && need_p > victims.size())
				want = need_p - victims.size();
			if (want == 0)
				continue;
			want = std::min<uint64_t>(want, cfg_.evict_batch - victims.size());
			// CLOCK: a page with its reference bit set gets a second chance.
			uint64_t taken = 0;
			for (uint64_t step = 0; step < 2ull * m->npages && taken < want; step++) {
				uint32_t i = m->clock_hand;
				m->clock_hand = (m->clock_hand + 1) % m->npages;
				Page &pg = m->pages[i];
				if (pg.state != PageState::kResident || (pg.flags & kWbInFlight))
					continue;
				if (pg.flags & kRef) {
					pg.flags &= uint8_t(~kRef);
					continue;
				}
				// Prefetched for a stream that has not got there yet.
				if ((pg.flags & kPrefetched) && m->streams.ahead_of_stream(i))
					continue;
				pg.state = PageState::kEvicting;
				pg.flags &= uint8_t(~(kParked | kRemoved | kRemovedTwice));
				victims.emplace_back(m, i);
				taken++;
			}
		}
	}
	if (victims.empty())
		return;
	Eviction &ev = p->evict;
	ev.active = true;
	ev.drop_sent = false;
	ev.failed = false;
	ev.seq++;
	ev.started_ns = now_ns();
	std::sort(victims.begin(), victims.end(), [](const auto &x, const auto &y) {
		return x.first->page_addr(x.second) < y.first->page_addr(y.second);
	});
	// One drop request carries at most kMaxDropRanges ranges: victims past
	// them stay resident for a later round.
	uint32_t ranges = 0;
	for (size_t k = 0; k < victims.size(); k++) {
		auto [m, i] = victims[k];
		bool joins = k > 0 &&
		             victims[k - 1].first->page_addr(victims[k - 1].second) + kPageSize ==
		                     m->page_addr(i);
		if (!joins && ++ranges > kMaxDropRanges) {
			for (size_t r = k; r < victims.size(); r++)
				victims[r].first->pages[victims[r].second].state =
				        PageState::kResident;
			victims.resize(k);
			break;
		}
	}
	// Dirty victims are written back first, in runs.
	for (size_t i = 0; i < victims.size();) {
		Mapping *m = victims[i].first;
		uint32_t a = victims[i].second;
		if (!(m->pages[a].flags & kDirty)) {
			i++;
			continue;
		}
		size_t j = i + 1;
		while (j < victims.size() && victims[j].first == m &&
		       victims[j].second == victims[j - 1].second + 1 &&
		       (m->pages[victims[j].second].flags & kDirty))
			j++;
		claim_run(m, a, uint32_t(j - i));
		i = j;
	}
	pump_writeback();
	check_eviction(p);
}

void PagerThread::check_eviction(Process *p)
{
	Eviction &ev = p->evict;
	if (!ev.active || ev.drop_sent)
		return;
	if (ev.failed) {
		finish_eviction(p, false);
		return;
	}
	for (auto &[m, i] : ev.victims) {
		const Page &pg = m->pages[i];
		if (!m->dead && pg.state == PageState::kEvicting && (pg.flags & kWbInFlight))
			return; // still being written
	}
	send_drop(p);
}

void PagerThread::send_drop(Process *p)
{
	Eviction &ev = p->evict;
	DropRequest &req = ev.request;
	req.magic = kDropRequestMagic;
	req.seq = ev.seq;
	req.count = 0;
	for (auto &[m, i] : ev.victims) {
		if (m->dead || m->pages[i].state != PageState::kEvicting)
			continue;
		uint64_t a = m->page_addr(i);
		if (req.count > 0 &&
		    req.ranges[req.count - 1].addr + req.ranges[req.count - 1].length == a)
			req.ranges[req.count - 1].length += kPageSize;
		else if (req.count < kMaxDropRanges)
			req.ranges[req.count++] = {a, kPageSize};
	}
	if (req.count == 0) {
		finish_eviction(p, true);
		return;
	}
	ssize_t r =
	        send(p->evict_fd, &req, drop_request_size(req.count), MSG_DONTWAIT | MSG_NOSIGNAL);
	if (r < 0) {
		LOG_WARN(kLog,
		         "pid %d: sending a drop request to the client's evictor: %s; "
		         "its budget is no longer enforced",
		         int(p->pid), std::strerror(errno));
		close(p->evict_fd);
		p->evict_fd = -1;
		finish_eviction(p, false);
		return;
	}
	ev.drop_sent = true;
}

void PagerThread::on_drop_reply(Process *p, int res)
{
	Eviction &ev = p->evict;
	bool valid = res == int(sizeof(DropReply)) && ev.reply.magic == kDropReplyMagic;
	if (res <= 0 || (res > 0 && !valid)) {
		// A client closes its end when it exits or detaches: normal.
		if (res == 0 || res == -ECANCELED)
			LOG_DEBUG(kLog, "pid %d: evict channel closed", int(p->pid));
		else
			LOG_WARN(kLog, "pid %d: evict channel %s; its budget is no longer enforced",
			         int(p->pid),
			         res < 0 ? std::strerror(-res) : "sent a malformed reply");
		if (p->evict_fd >= 0)
			close(p->evict_fd);
		p->evict_fd = -1;
		if (ev.active)
			finish_eviction(p, ev.drop_sent);
		return;
	}
	arm(p, p->evict_op.get(), ProcessOp::kEvictRecv);
	if (!ev.active || !ev.drop_sent || ev.reply.seq != ev.seq) {
		LOG_WARN(kLog, "pid %d: unexpected drop reply seq %lu ignored", int(p->pid),
		         (unsigned long)ev.reply.seq);
		return;
	}
	if (ev.reply.error != 0)
		LOG_WARN(kLog, "pid %d: the client's evictor reported %s", int(p->pid),
		         std::strerror(-ev.reply.error));
	finish_eviction(p, true);
	retry_copies(); // its madvise held copies off until now
}

void PagerThread::finish_eviction(Process *p, bool dropped)
{
	Eviction &ev = p->evict;
	for (auto &[m, i] : ev.victims) {
		if (m->dead)
			continue;
		Page &pg = m->pages[i];
		if (pg.state != PageState::kEvicting)
			continue;
		int removes = (pg.flags & kRemovedTwice) ? 2 : (pg.flags & kRemoved) ? 1 : 0;
		bool parked = pg.flags & kParked;
		if (!dropped) {
			// Not dropped by us: still present unless the program
			// dropped it, in which case it reads as zero.
			if (removes == 0) {
				pg.state = PageState::kResident;
				pg.flags &= uint8_t(kDirty | kWbInFlight);
			} else {
				set_gone(m, i);
				pg.state = PageState::kZero;
				pg.flags = kDirty;
			}
		} else {
			set_gone(m, i);
			if (removes >= 2) {
				// The program dropped it too: zero, not the old data.
				pg.state = PageState::kZero;
				pg.flags = kDirty;
			} else {
				pg.state = PageState::kRemote;
				pg.flags = 0;
				m->stats.evictions++;
			}
		}
		if (parked)
			(void)uffd_wake(p->uffd, m->page_addr(i), kPageSize);
	}
	ev.victims.clear();
	ev.active = false;
	ev.drop_sent = false;
	ev.failed = false;
	retry_waiting();
	maybe_evict(p);
}

// ---------------------------------------------------------------------------
// Write-back

void PagerThread::claim_writeback(Mapping *m, uint32_t first, uint32_t count)
{
	uint32_t end = std::min(m->npages, first + count);
	for (uint32_t i = first; i < end;) {
		const Page &pg = m->pages[i];
		bool dirty = (pg.flags & kDirty) && !(pg.flags & kWbInFlight) &&
		             pg.state != PageState::kGone && pg.state != PageState::kFetching;
		if (!dirty) {
			i++;
			continue;
		}
		uint32_t j = i + 1;
		while (j < end && j - i < kWritePages && (m->pages[j].flags & kDirty) &&
		       !(m->pages[j].flags & kWbInFlight) &&
		       m->pages[j].state != PageState::kGone &&
		       m->pages[j].state != PageState::kFetching)
			j++;
		claim_run(m, i, j - i);
		i = j;
	}
}

void PagerThread::claim_run(Mapping *m, uint32_t first, uint32_t count)
{
	Process *p = m->proc;
	if (p->fork_child || !m->writable)
		return; // a child's private copy never goes back to the region
	for (uint32_t i = first; i < first + count; i++)
		m->pages[i].flags = uint8_t((m->pages[i].flags & ~kDirty) | kWbInFlight);
	uint64_t id = next_run_id_++;
	runs_[id] = RunState{};
	m->inflight++;
	wb_queue_.push_back({m, first, count, id});
}

void PagerThread::pump_writeback()
{
	if (in_pump_) { // re-entered from an inline completion
		pump_again_ = true;
		return;
	}
	in_pump_ = true;
	do {
		pump_again_ = false;
		pump_once();
	} while (pump_again_);
	in_pump_ = false;
}

void PagerThread::pump_once()
{
	while (wb_head_ < wb_queue_.size() && free_write_ != nullptr) {
		// A copy: an inline completion may queue more runs (and move
		// the vector) while this one is being issued.
		WbRun run = wb_queue_[wb_head_];
		uint32_t f = run.first;
		bool all = issue_write(run, &f);
		if (!all) {
			wb_queue_[wb_head_].count -= f - run.first;
			wb_queue_[wb_head_].first = f;
			break;
		}
		RunState &rs = runs_[run.id];
		rs.issued_all = true;
		uint64_t id = run.id;
		Mapping *m = run.m;
		wb_head_++;
		m->inflight--;
		if (rs.outstanding == 0)
			finish_run(id);
		if (m->dead && m->inflight == 0)
			reap();
	}
	if (wb_head_ == wb_queue_.size()) {
		wb_queue_.clear();
		wb_head_ = 0;
	}
}

// Writes the claimed pages of `run` from *first on, one homogeneous piece
// per WriteOp; false (with *first advanced) when out of WriteOps.
bool PagerThread::issue_write(const WbRun &run, uint32_t *first)
{
	Mapping *m = run.m;
	Process *p = m->proc;
	uint32_t end = run.first + run.count;
	while (*first < end) {
		uint32_t i = *first;
		Page &pg = m->pages[i];
		bool live = !m->dead && !p->dead;
		bool zero = pg.state == PageState::kZero;
		if (p->mm_gone && !zero)
			live = false;
		bool readable =
		        pg.state == PageState::kResident || pg.state == PageState::kEvicting;
		if (pg.state == PageState::kEvicting && (pg.flags & kRemoved))
			readable = false; // the program dropped it: nothing to save
		if (!live || !(pg.flags & kWbInFlight) || !(zero || readable)) {
			pg.flags &= uint8_t(~kWbInFlight);
			(*first)++;
			continue;
		}
		WriteOp *op = free_write_;
		if (op == nullptr)
			return false;
		uint32_t n = 1;
		while (i + n < end && n < kWritePages) {
			const Page &q = m->pages[i + n];
			bool qzero = q.state == PageState::kZero;
			bool qread = (q.state == PageState::kResident ||
			              (q.state == PageState::kEvicting && !(q.flags & kRemoved)));
			if (!(q.flags & kWbInFlight) || qzero != zero || (!qzero && !qread))
				break;
			n++;
		}
		const void *src = zero_.data();
		if (!zero) {
			// Write-protect, then copy out: a write after this point
			// faults and marks the page dirty again.
			if (m->wp) {
				int r = uffd_writeprotect(p->uffd, m->page_addr(i),
				                          uint64_t(n) * kPageSize, true, false);
				if (r == -ESRCH) {
					// Exited: what it had not synced is gone with it.
					LOG_DEBUG(kLog,
					          "pid %d exited; dirty pages not written back",
					          int(p->pid));
					p->mm_gone = true;
					continue;
				}
				if (r < 0 && r != -ENOENT)
					LOG_WARN(kLog, "write-protecting 0x%lx+%u pages: %s",
					         (unsigned long)m->page_addr(i), n,
					         std::strerror(-r));
			}
			iovec local{op->buf, size_t(n) * kPageSize};
			iovec remote{reinterpret_cast<void *>(m->page_addr(i)),
			             size_t(n) * kPageSize};
			ssize_t r = process_vm_readv(p->pid, &local, 1, &remote, 1, 0);
			uint32_t got = r > 0 ? uint32_t(size_t(r) / kPageSize) : 0;
			if (got < n) {
				// Unmapped under us, or the process is gone.
				m->pages[i + got].flags &= uint8_t(~kWbInFlight);
				if (got == 0) {
					(*first)++;
					continue;
				}
				n = got;
			}
			src = op->buf;
		}
		free_write_ = op->next;
		op->m = m;
		op->first = i;
		op->count = n;
		op->run = run.id;
		m->inflight++;
		runs_[run.id].outstanding++;
		*first = i + n;
		if (m->chan->broken || !m->chan->channel) {
			on_write_done(op, Status(Code::kUnavailable,
			                         "module " + m->chan->module.to_string() +
			                                 " unreachable"));
			continue;
		}
		m->chan->channel->write_pages(wire::TrafficClass::kBulk, m->region_id,
		                              m->page_fa(i), n, src, op);
	}
	return true;
}

void PagerThread::on_write_done(WriteOp *op, const Status &st)
{
	Mapping *m = op->m;
	bool ok = st.is_ok();
	for (uint32_t i = op->first; i < op->first + op->count; i++) {
		Page &pg = m->pages[i];
		pg.flags &= uint8_t(~kWbInFlight);
		if (!ok && pg.state != PageState::kGone) {
			pg.flags |= kDirty;
			if (pg.state == PageState::kEvicting && !m->proc->dead)
				m->proc->evict.failed = true;
		}
		if (!m->wp && pg.state != PageState::kGone && pg.state != PageState::kZero)
			pg.flags |= kDirty; // without write-protect nothing is ever clean
	}
	if (ok) {
		m->stats.writebacks += op->count;
	} else {
		wb_failures_++;
		LOG_WARN(kLog, "writing back %u pages of region '%s': %s", op->count,
		         m->region.c_str(), st.to_string().c_str());
		if (st.code() == Code::kUnavailable && !m->chan->broken) {
			m->chan->broken = true;
			m->chan->retry_at_ns = now_ns() + kChannelRetryNs;
		}
	}
	uint64_t id = op->run;
	op->m = nullptr;
	op->next = free_write_;
	free_write_ = op;
	m->inflight--;
	auto it = runs_.find(id);
	if (it != runs_.end() && --it->second.outstanding == 0 && it->second.issued_all)
		finish_run(id);
	pump_writeback();
	if (!m->proc->dead)
		check_eviction(m->proc);
	if (m->dead && m->inflight == 0)
		reap();
}

void PagerThread::finish_run(uint64_t id)
{
	runs_.erase(id);
	check_waiters();
}

void PagerThread::add_waiter(Mapping *m, uint32_t first, uint32_t count, bool second_pass,
                             std::function<void(Status)> done)
{
	waiters_.push_back(
	        {m, first, count, next_run_id_, wb_failures_, !second_pass, std::move(done)});
	if (m != nullptr)
		m->inflight++;
	pump_writeback();
	check_waiters();
}

void PagerThread::check_waiters()
{
	uint64_t lowest = runs_.empty() ? next_run_id_ : runs_.begin()->first;
	for (size_t i = 0; i < waiters_.size();) {
		WbWaiter &w = waiters_[i];
		if (w.end_id > lowest) {
			i++;
			continue;
		}
		if (!w.second_pass_done && w.m != nullptr && !w.m->dead) {
			w.second_pass_done = true;
			uint64_t before = next_run_id_;
			claim_writeback(w.m, w.first, w.count);
			if (next_run_id_ != before) {
				w.end_id = next_run_id_;
				pump_writeback();
				// pump may have finished runs and re-entered: restart.
				lowest = runs_.empty() ? next_run_id_ : runs_.begin()->first;
				i = 0;
				continue;
			}
		}
		WbWaiter done = std::move(w);
		waiters_.erase(waiters_.begin() + long(i));
		if (done.m != nullptr)
			done.m->inflight--;
		Status st =
		        wb_failures_ > done.failures_at_start
		                ? Status(Code::kUnavailable,
		                         "writing back to the module failed; dirty pages are kept "
		                         "and written again later (is the module reachable?)")
		                : Status::ok();
		done.done(st);
		if (done.m != nullptr && done.m->dead && done.m->inflight == 0)
			reap();
		lowest = runs_.empty() ? next_run_id_ : runs_.begin()->first;
		i = 0;
	}
}

// ---------------------------------------------------------------------------
// Control requests (loop thread)

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

Status PagerThread::add_mapping(uint64_t uffd_id, std::unique_ptr<Mapping> m, ModuleId module)
{
	Process *p = find_process(uffd_id);
	if (p == nullptr)
		return Status(Code::kNotFound, "uffd " + std::to_string(uffd_id) +
		                                       " is not attached (send \"attach\" first)");
	uint64_t len = uint64_t(m->npages) * kPageSize;
	for (auto &o : p->mappings) {
		if (o->dead)
			continue;
		uint64_t oend = o->addr + uint64_t(o->npages) * kPageSize;
		if (m->addr < oend && o->addr < m->addr + len)
			return Status(Code::kAlreadyExists, "range overlaps mapping " +
			                                            std::to_string(o->id) +
			                                            " (unmap it first)");
	}
	ChannelSlot *cs = channel(module);
	if (cs == nullptr)
		return Status(Code::kUnavailable, "module " + module.to_string() +
		                                          " holding region '" + m->region +
		                                          "' is unreachable");
	m->chan = cs;
	m->proc = p;
	m->held.assign(size_t(StreamDetector::kStreams) * kPageSize, 0);
	if (m->window) {
		Mapping *raw = m.get();
		{
			std::lock_guard<std::mutex> lk(raw->window->mu);
			raw->window->mappers.push_back({p, raw, false});
		}
		p->mappings.push_back(std::move(m));
		last_map_ns_ = now_ns();
		(void)uffd_wake(p->uffd, raw->addr, len);
		return Status::ok();
	}
	if ((m->budget_pages || p->budget_pages) && (!p->can_evict() || !m->wp) &&
	    !p->warned_no_evict) {
		p->warned_no_evict = true;
		LOG_WARN(kLog, "pid %d: budget not enforced (%s)", int(p->pid),
		         !m->wp ? "no write-protect on this kernel"
		                : "the client gave no evict channel");
	}
	if (!p->can_evict() || !m->wp)
		m->budget_pages = 0;

	// Pages the process has already (a restarted daemon; memory the client
	// touched) are its data: resident, and dirty since nobody knows better.
	if (p->pid > 0) {
		char path[64];
		std::snprintf(path, sizeof(path), "/proc/%d/pagemap", int(p->pid));
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			std::vector<uint64_t> ent(std::min<uint32_t>(m->npages, 4096));
			for (uint32_t base = 0; base < m->npages; base += uint32_t(ent.size())) {
				uint32_t n =
				        std::min<uint32_t>(uint32_t(ent.size()), m->npages - base);
				off_t off = off_t((m->addr / kPageSize + base) * 8);
				ssize_t r = pread(fd, ent.data(), n * 8, off);
				if (r != ssize_t(n) * 8)
					break;
				for (uint32_t k = 0; k < n; k++) {
					bool present = ent[k] & (1ull << 63),
					     swapped = ent[k] & (1ull << 62);
					if (present || swapped) {
						m->pages[base + k].state = PageState::kResident;
						m->pages[base + k].flags = kDirty | kRef;
						m->resident++;
					}
				}
			}
			close(fd);
		}
	}
	p->resident += m->resident;
	Mapping *raw = m.get();
	p->mappings.push_back(std::move(m));
	last_map_ns_ = now_ns();
	// Pages the client reported dropped while no daemon had the mapping
	// ("removed") and that are still missing read as zero: the zeroes go to
	// the module now, as handle_remove's do.
	for (uint32_t i = 0; i < raw->npages;) {
		if (raw->pages[i].state != PageState::kZero || !(raw->pages[i].flags & kDirty)) {
			i++;
			continue;
		}
		uint32_t j = i + 1;
		while (j < raw->npages && raw->pages[j].state == PageState::kZero &&
		       (raw->pages[j].flags & kDirty))
			j++;
		claim_writeback(raw, i, j - i);
		i = j;
	}
	pump_writeback();
	// Threads a previous daemon left blocked retry now.
	(void)uffd_wake(p->uffd, raw->addr, len);
	// Faults that arrived before this mapping was known.
	size_t n = orphans_.size;
	PendingFault f;
	while (n-- > 0 && orphans_.pop(&f))
		if (!f.proc->dead)
			handle_fault(f.proc, f.addr, f.flags, 0, true);
	maybe_evict(p);
	return Status::ok();
}

void PagerThread::sync(uint64_t mapping_id, uint32_t first, uint32_t count,
                       std::function<void(Status)> done)
{
	Mapping *m = find_mapping(mapping_id);
	if (m == nullptr) {
		done(Status(Code::kNotFound,
		            "mapping " + std::to_string(mapping_id) + " not found"));
		return;
	}
	flush(m, first, count, std::move(done));
}

void PagerThread::flush(Mapping *m, uint32_t first, uint32_t count,
                        std::function<void(Status)> done)
{
	if (!m->window) {
		claim_writeback(m, first, count);
		add_waiter(m, first, count, true, std::move(done));
		return;
	}
	m->inflight++;
	shared_writeback(m, m->window_first + first, std::min(count, m->npages - first), false,
	                 [this, m, done](bool ok) {
		                 m->inflight--;
		                 if (m->dead && m->inflight == 0)
			                 reap();
		                 done(ok ? Status::ok()
		                         : Status(Code::kUnavailable,
		                                  "writing back to the module failed; the pages "
		                                  "stay in the window (is the module reachable?)"));
	                 });
}

void PagerThread::unmap(uint64_t mapping_id, std::function<void(Status)> done)
{
	Mapping *m = find_mapping(mapping_id);
	if (m == nullptr) {
		done(Status(Code::kNotFound,
		            "mapping " + std::to_string(mapping_id) + " not found"));
		return;
	}
	sync(mapping_id, 0, m->npages, [this, mapping_id, done](Status st) {
		Mapping *mm = find_mapping(mapping_id);
		if (mm != nullptr && st.is_ok())
			retire(mm);
		done(st);
	});
}

void PagerThread::detach(uint64_t uffd_id, std::function<void()> done)
{
	Process *p = find_process(uffd_id);
	if (p == nullptr) {
		done();
		return;
	}
	auto pending = std::make_shared<int>(1);
	auto finish = [this, uffd_id, done, pending](Status st) {
		if (!st.is_ok())
			LOG_WARN(kLog, "uffd %lu detached with pages not written back: %s",
			         (unsigned long)uffd_id, st.message().c_str());
		if (--*pending > 0)
			return;
		if (Process *pp = find_process(uffd_id))
			kill_process(pp, "detached");
		done();
	};
	for (auto &m : p->mappings) {
		if (m->dead)
			continue;
		if (m->window) {
			++*pending;
			flush(m.get(), 0, m->npages, finish);
		} else {
			claim_writeback(m.get(), 0, m->npages);
		}
	}
	add_waiter(nullptr, 0, 0, false, finish);
}

void PagerThread::collect(StatsSnapshot *out)
{
	for (auto &[name, st] : retired_regions_)
		out->regions[name].add(st);
	for (auto &p : procs_) {
		if (p->dead)
			continue;
		PageStats ps = p->retired;
		for (auto &m : p->mappings) {
			if (m->dead)
				continue;
			PageStats s = m->stats;
			if (m->window) {
				// A window's pages, evictions and write-backs are
				// counted once per region, in the first mapper seen.
				std::lock_guard<std::mutex> lk(m->window->mu);
				s.resident = m->window->resident;
				if (out->windows.insert(m->window.get()).second) {
					PageStats ws = m->window->stats;
					ws.resident = m->window->resident;
					out->regions[m->region].add(ws);
				}
				ps.add(s);
				s.resident = 0;
				out->regions[m->region].add(s);
				continue;
			}
			s.resident = m->resident;
			s.dirty = m->count_dirty();
			ps.add(s);
			out->regions[m->region].add(s);
		}
		out->processes.push_back({p->pid, p->uffd_id, p->fork_child, ps});
	}
}

// ---------------------------------------------------------------------------
// Housekeeping

void PagerThread::tick()
{
	if (reap_pending_)
		reap_now();
	uint64_t now = now_ns();
	for (auto &[id, cs] : channels_) {
		if (!cs->broken || now < cs->retry_at_ns)
			continue;
		cs->retry_at_ns = now + kChannelRetryNs;
		auto old = std::move(cs->channel); // completes its requests (failed)
		old.reset();
		auto ch = fed_.open_channel(loop_.get(), cs->module);
		if (ch) {
			cs->channel = std::move(*ch);
			cs->broken = false;
			LOG_INFO(kLog, "module %s reachable again", cs->module.to_string().c_str());
		}
	}
	retry_copies();
	PendingFault f;
	for (size_t n = retry_.size; n > 0 && retry_.pop(&f); n--)
		if (!f.proc->dead)
			handle_fault(f.proc, f.addr, f.flags, 0, true);
	for (size_t n = orphans_.size; n > 0 && orphans_.pop(&f); n--) {
		if (f.proc->dead)
			continue;
		Mapping *m = f.proc->find(f.addr);
		if (m != nullptr &&
		    m->pages[(f.addr - m->addr) / kPageSize].state != PageState::kGone) {
			handle_fault(f.proc, f.addr, f.flags, 0, true);
		} else if (now - std::max(f.since_ns, last_map_ns_) > kOrphanGraceNs) {
			// Registered memory no mapping claims (an mremap grew it):
			// plain anonymous memory, zero.
			LOG_WARN(kLog,
			         "uffd %lu: fault at 0x%lx outside every mapping; zero-filled",
			         (unsigned long)f.proc->uffd_id, (unsigned long)f.addr);
			(void)uffd_copy(f.proc->uffd, f.addr, zero_.data(), kPageSize, false,
			                nullptr);
		} else {
			orphans_.push(f);
		}
	}
	retry_waiting();
	for (auto &p : procs_) {
		if (p->dead)
			continue;
		if (p->evict.active && p->evict.drop_sent &&
		    now - p->evict.started_ns > 5'000'000'000ull) {
			LOG_WARN(kLog, "pid %d: the client's evictor has not answered for 5 s",
			         int(p->pid));
			p->evict.started_ns = now;
		}
		maybe_evict(p.get());
		for (auto &m : p->mappings)
			if (m->window && !m->dead)
				maybe_evict_window(m.get());
	}
	// Rounds of other pager threads end without telling this one.
	check_trim_waiters(nullptr);
}

void PagerThread::retry_copies()
{
	for (size_t n = copy_retry_.size(); n > 0 && !copy_retry_.empty(); n--) {
		FetchOp *op = copy_retry_.front();
		copy_retry_.erase(copy_retry_.begin());
		if (op->m->dead || op->m->proc->dead || install_run(op)) {
			Mapping *m = op->m;
			release_fetch(op);
			after_install(m);
		} else {
			copy_retry_.push_back(op);
		}
	}
	if (!copy_retry_.empty())
		arm_soon();
}

void PagerThread::arm_soon()
{
	// The thread whose event made the kernel refuse (EAGAIN) lets go of
	// it right after running again: look again very soon, not at the tick.
	if (soon_op_->armed)
		return;
	soon_op_->armed = true;
	soon_ts_.tv_sec = 0;
	soon_ts_.tv_nsec = 50'000;
	io_uring_prep_timeout(loop_->sqe(soon_op_.get()), &soon_ts_, 0, 0);
}

void PagerThread::retire(Mapping *m)
{
	if (m->dead)
		return;
	for (uint32_t i = 0; i < m->npages; i++)
		if (m->pages[i].state != PageState::kGone)
			set_gone(m, i);
	m->dead = true;
	if (m->window) {
		std::lock_guard<std::mutex> lk(m->window->mu);
		auto &v = m->window->mappers;
		v.erase(std::remove_if(
		                v.begin(), v.end(),
		                [m](const SharedWindow::Mapper &x) { return x.mapping == m; }),
		        v.end());
	}
	m->proc->retired.add(m->stats);
	retired_regions_[m->region].add(m->stats);
	m->proc->last_hit = nullptr;
	reap();
}

void PagerThread::kill_process(Process *p, const char *why)
{
	if (p->dead)
		return;
	LOG_DEBUG(kLog, "uffd %lu (pid %d): %s", (unsigned long)p->uffd_id, int(p->pid), why);
	for (auto &m : p->mappings)
		retire(m.get());
	p->dead = true;
	for (ProcessOp *op : {p->uffd_op.get(), p->evict_op.get(), p->pid_op.get()}) {
		if (op->armed) {
			io_uring_sqe *s = loop_->sqe(nullptr);
			io_uring_prep_cancel(s, op, 0);
		}
	}
	if (p->evict_fd >= 0)
		shutdown(p->evict_fd, SHUT_RDWR);
	reap();
}

void PagerThread::reap()
{
	reap_pending_ = true;
}

void PagerThread::reap_now()
{
	reap_pending_ = false;
	// Mappings: freed once dead with nothing in flight.
	for (auto &p : procs_) {
		auto &ms = p->mappings;
		for (size_t i = 0; i < ms.size();) {
			if (ms[i]->dead && ms[i]->inflight == 0) {
				ms.erase(ms.begin() + long(i));
				p->last_hit = nullptr;
			} else {
				i++;
			}
		}
	}
	// Processes: freed once dead, mappings gone and no operation armed.
	for (size_t i = 0; i < procs_.size();) {
		Process *p = procs_[i].get();
		bool busy = !p->mappings.empty() || p->uffd_op->armed || p->evict_op->armed ||
		            p->pid_op->armed;
		if (!p->dead || busy) {
			i++;
			continue;
		}
		// Faults of this process that still wait anywhere are dropped.
		for (FaultRing *ring : {&waiting_, &orphans_, &retry_}) {
			PendingFault f;
			for (size_t n = ring->size; n > 0 && ring->pop(&f); n--)
				if (f.proc != p)
					ring->push(f);
		}
		if (p->uffd >= 0)
			close(p->uffd);
		if (p->evict_fd >= 0)
			close(p->evict_fd);
		if (p->pidfd >= 0)
			close(p->pidfd);
		procs_.erase(procs_.begin() + long(i));
	}
}

} // namespace memfed::pager
