// EventLoop: one io_uring driven by one thread.
//
// Every component that does I/O on a thread (TCP connections, the module
// server, the pager's userfaultfd readers) queues its operations on that
// thread's EventLoop. An operation is an IoOp: the SQE's user_data points to
// it, and complete() runs on the loop thread when its CQE arrives. IoOps are
// owned by their component and live until their CQE is reaped; the loop never
// allocates per operation.
//
// Thread-safety: everything runs on the loop thread except stop() and post(),
// which any thread may call.
#pragma once

#include <liburing.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "daemon/common/status.h"

namespace memfed {

class IoOp {
public:
	virtual ~IoOp() = default;
	// `res` is the CQE's result (negative errno on failure), `flags` its flags
	// (IORING_CQE_F_MORE for multishot operations).
	virtual void complete(int res, uint32_t flags) = 0;
};

class EventLoop {
public:
	// `entries`: submission queue depth.
	static Result<std::unique_ptr<EventLoop>> create(unsigned entries = 512);
	~EventLoop();
	EventLoop(const EventLoop &) = delete;
	EventLoop &operator=(const EventLoop &) = delete;

	// A free SQE whose user_data is set to `op`; submits queued SQEs first if
	// the queue is full. Never returns null.
	io_uring_sqe *sqe(IoOp *op);
	// Submits queued SQEs, waits up to `timeout_ms` (-1: forever) for at least
	// one completion and dispatches all available completions. Returns the
	// number dispatched.
	int run_once(int timeout_ms);
	// Runs until stop() is called.
	void run();
	// Asks run() to return; safe from any thread and from signal handlers.
	void stop();
	bool stopping() const { return stop_.load(std::memory_order_acquire); }
	// Runs `fn` on the loop thread at its next iteration; safe from any thread.
	void post(std::function<void()> fn);

	io_uring *ring() { return &ring_; }
	// The loop this thread last ran (run_once), or null: lets a handler
	// called from a loop's completion learn which loop it runs on.
	static EventLoop *current();

private:
	EventLoop() = default;
	class WakeOp;
	void drain_posted();

	io_uring ring_{};
	bool ring_ok_ = false;
	int wake_fd_ = -1;
	std::unique_ptr<WakeOp> wake_op_;
	std::atomic<bool> stop_{false};
	std::mutex posted_mu_;
	std::vector<std::function<void()>> posted_;
};

} // namespace memfed
