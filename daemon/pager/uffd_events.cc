// Reading a process's userfaultfd and its other fds: the io_uring
// operations armed per process (uffd readable, evict channel reply, pidfd),
// draining the uffd's messages and dispatching each to the fault path or the
// address-event handlers, and learning the process's pid from a fault.
//
// Thread: the pager thread that owns the process.
#include "daemon/pager/pager_thread.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <memory>

#include <cstdio>

#include "daemon/pager/pager_thread_ops.h"

namespace memfed::pager
{

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

void ProcessOp::complete(int res, uint32_t flags)
{
	thread_->on_op(proc_, kind_, res, flags);
}

void PagerThread::arm(Process *p, ProcessOp *op, int kind)
{
	io_uring_sqe *s = loop_->sqe(op);
	switch (kind) {
	case ProcessOp::kUffdPoll:
		io_uring_prep_poll_multishot(s, p->uffd, POLLIN);
		break;
	case ProcessOp::kWindowUffdPoll:
		io_uring_prep_poll_multishot(s, p->window_uffd, POLLIN);
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
	for (int fd : {raw->uffd, raw->window_uffd}) {
		int fl = fd >= 0 ? fcntl(fd, F_GETFL) : -1;
		if (fl >= 0 && !(fl & O_NONBLOCK))
			(void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	}
	raw->uffd_op = std::make_unique<ProcessOp>(this, raw, ProcessOp::kUffdPoll);
	raw->evict_op = std::make_unique<ProcessOp>(this, raw, ProcessOp::kEvictRecv);
	raw->pid_op = std::make_unique<ProcessOp>(this, raw, ProcessOp::kPidPoll);
	raw->window_uffd_op = std::make_unique<ProcessOp>(this, raw, ProcessOp::kWindowUffdPoll);
	raw->evict.victims.reserve(cfg_.evict_batch);
	procs_.push_back(std::move(p));
	last_map_ns_ = now_ns();
	arm(raw, raw->uffd_op.get(), ProcessOp::kUffdPoll);
	if (raw->window_uffd >= 0)
		arm(raw, raw->window_uffd_op.get(), ProcessOp::kWindowUffdPoll);
	if (raw->evict_fd >= 0)
		arm(raw, raw->evict_op.get(), ProcessOp::kEvictRecv);
	// Messages may be queued already (a restarted daemon).
	drain_uffd(raw, raw->uffd);
	if (raw->window_uffd >= 0)
		drain_uffd(raw, raw->window_uffd);
}

void PagerThread::on_op(Process *p, int kind, int res, uint32_t flags)
{
	ProcessOp *op = kind == ProcessOp::kUffdPoll         ? p->uffd_op.get()
	                : kind == ProcessOp::kWindowUffdPoll ? p->window_uffd_op.get()
	                : kind == ProcessOp::kEvictRecv      ? p->evict_op.get()
	                                                     : p->pid_op.get();
	if (!(flags & IORING_CQE_F_MORE))
		op->armed = false;
	if (p->dead) {
		reap();
		return;
	}
	switch (kind) {
	case ProcessOp::kUffdPoll:
	case ProcessOp::kWindowUffdPoll: {
		// Both uffds' messages go through one dispatch: a fault or an
		// event finds its mapping by address.
		bool window = kind == ProcessOp::kWindowUffdPoll;
		if (res < 0 && res != -ECANCELED) {
			LOG_WARN(kLog, "polling %suffd %lu failed: %s", window ? "the window " : "",
			         (unsigned long)p->uffd_id, std::strerror(-res));
			kill_process(p, "uffd poll failed");
			return;
		}
		drain_uffd(p, window ? p->window_uffd : p->uffd);
		if (!op->armed && !p->dead)
			arm(p, op, kind);
		break;
	}
	case ProcessOp::kEvictRecv:
		on_evict_reply(p, res);
		break;
	case ProcessOp::kPidPoll:
		if (res >= 0)
			kill_process(p, "process exited");
		break;
	}
}

void PagerThread::drain_uffd(Process *p, int uffd)
{
	uffd_msg msgs[32];
	while (!p->dead) {
		ssize_t n = read(uffd, msgs, sizeof(msgs));
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

void PagerThread::wake_either(Process *p, uint64_t addr, uint64_t len)
{
	(void)uffd_wake(p->uffd, addr, len);
	if (p->window_uffd >= 0)
		(void)uffd_wake(p->window_uffd, addr, len);
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

} // namespace memfed::pager
