#include "daemon/transport/event_loop.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

#include "daemon/common/log.h"

namespace memfed
{

// Keeps one read of the wake eventfd queued; its completion drains posted
// work and re-arms.
class EventLoop::WakeOp : public IoOp
{
public:
	explicit WakeOp(EventLoop *loop) : loop_(loop) {}
	void arm()
	{
		io_uring_sqe *s = loop_->sqe(this);
		io_uring_prep_read(s, loop_->wake_fd_, &value_, sizeof(value_), 0);
	}
	void complete(int res, uint32_t) override
	{
		if (res < 0 && res != -EINTR && res != -EAGAIN)
			LOG_ERROR("event_loop", "wake eventfd read failed: %d", res);
		loop_->drain_posted();
		arm();
	}

private:
	EventLoop *loop_;
	uint64_t value_ = 0;
};

Result<std::unique_ptr<EventLoop>> EventLoop::create(unsigned entries)
{
	std::unique_ptr<EventLoop> loop(new EventLoop());
	// Completion queue twice the submission queue; plain flags: SINGLE_ISSUER
	// and DEFER_TASKRUN gain under 1 us here (notes/limits.md) but would tie
	// the ring to the creating thread, and loops are often created on one
	// thread and run on another.
	io_uring_params p{};
	p.flags = IORING_SETUP_CQSIZE;
	p.cq_entries = entries * 2;
	int r = io_uring_queue_init_params(entries, &loop->ring_, &p);
	if (r < 0)
		return Status::from_errno(-r,
		                          "io_uring_queue_init(" + std::to_string(entries) + ")");
	loop->ring_ok_ = true;
	loop->wake_fd_ = eventfd(0, EFD_CLOEXEC);
	if (loop->wake_fd_ < 0)
		return Status::from_errno(errno, "eventfd");
	loop->wake_op_ = std::make_unique<WakeOp>(loop.get());
	loop->wake_op_->arm();
	return loop;
}

namespace
{
thread_local EventLoop *t_current = nullptr;
}

EventLoop::~EventLoop()
{
	if (t_current == this)
		t_current = nullptr;
	// Closing the ring cancels outstanding operations; their IoOps are not
	// called back.
	if (ring_ok_)
		io_uring_queue_exit(&ring_);
	if (wake_fd_ >= 0)
		close(wake_fd_);
}

io_uring_sqe *EventLoop::sqe(IoOp *op)
{
	io_uring_sqe *s = io_uring_get_sqe(&ring_);
	while (s == nullptr) {
		int r = io_uring_submit(&ring_);
		if (r < 0 && r != -EBUSY && r != -EAGAIN && r != -EINTR)
			LOG_ERROR("event_loop", "io_uring_submit failed: %d", r);
		s = io_uring_get_sqe(&ring_);
	}
	io_uring_sqe_set_data(s, op);
	return s;
}

EventLoop *EventLoop::current()
{
	return t_current;
}

int EventLoop::run_once(int timeout_ms)
{
	t_current = this;
	io_uring_cqe *cqe = nullptr;
	int r;
	if (timeout_ms < 0) {
		r = io_uring_submit_and_wait(&ring_, 1);
	} else {
		__kernel_timespec ts{};
		ts.tv_sec = timeout_ms / 1000;
		ts.tv_nsec = (timeout_ms % 1000) * 1000000LL;
		r = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
	}
	if (r < 0 && r != -ETIME && r != -EINTR && r != -EBUSY && r != -EAGAIN)
		LOG_ERROR("event_loop", "io_uring wait failed: %d", r);
	int n = 0;
	// A completion handler may queue new SQEs and even submit; reap one CQE
	// at a time so its slot is free before the handler runs.
	while (io_uring_peek_cqe(&ring_, &cqe) == 0) {
		auto *op = static_cast<IoOp *>(io_uring_cqe_get_data(cqe));
		int res = cqe->res;
		uint32_t flags = cqe->flags;
		io_uring_cqe_seen(&ring_, cqe);
		if (op != nullptr)
			op->complete(res, flags);
		n++;
	}
	return n;
}

void EventLoop::run()
{
	while (!stopping())
		run_once(-1);
}

void EventLoop::stop()
{
	stop_.store(true, std::memory_order_release);
	uint64_t one = 1;
	// Async-signal-safe; a full counter (EAGAIN) still means a pending wake.
	ssize_t r = write(wake_fd_, &one, sizeof(one));
	(void)r;
}

void EventLoop::post(std::function<void()> fn)
{
	{
		std::lock_guard<std::mutex> lk(posted_mu_);
		posted_.push_back(std::move(fn));
	}
	uint64_t one = 1;
	ssize_t r = write(wake_fd_, &one, sizeof(one));
	(void)r;
}

void EventLoop::drain_posted()
{
	std::vector<std::function<void()>> work;
	{
		std::lock_guard<std::mutex> lk(posted_mu_);
		work.swap(posted_);
	}
	for (auto &fn : work)
		fn();
}

} // namespace memfed
