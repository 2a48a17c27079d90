// Colocation: a thread that raises nearly all of its process's faults, often,
// is pinned to this pager thread's CPU, and this thread with it, for as long
// as that lasts; colocation_policy.h says why and decides when. Then a fault
// costs a context switch on one CPU instead of a wakeup of each CPU. The
// process's evictor follows by itself: its move requests name the CPU
// (evictor_cpu_flags; libclient/evictor_pin.h).
//
// What the pin changes for the program, and how that is undone:
//   - the thread's CPUs: saved before the pin and given back when it ends,
//     unless the program set them itself meanwhile (they are then not the
//     pin's single CPU, and are left as the program set them);
//   - threads it creates and children it forks while pinned inherit the
//     pin: each window finds them (/proc/<pid>/task, and the pinned
//     thread's /proc/.../children) and gives those still on the pin's
//     single CPU the pinned thread's saved CPUs. A grandchild forked within
//     one window keeps the pin; the kernel offers no cheaper way to see it.
// Pinning another user's thread needs CAP_SYS_NICE; without it (EPERM) the
// process is left unpinned, and that is logged once.
//
// A pin outlives a pager that dies (kill -9, a crash): each pin is recorded
// in PagerConfig::pin_dir while it lasts, one file per thread with its
// process, its start time (thread ids are reused) and its saved CPUs, and
// the next pager to start gives the threads their CPUs back.
//
// Thread: the pager thread (the tick).
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "daemon/common/log.h"
#include "daemon/common/proc_stat.h"
#include "daemon/pager/pager_thread.h"

namespace memfed::pager
{

namespace
{

constexpr const char *kLog = "pager";

cpu_set_t one_cpu(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return set;
}

bool only_cpu(pid_t tid, int cpu)
{
	cpu_set_t cur;
	cpu_set_t want = one_cpu(cpu);
	return sched_getaffinity(tid, sizeof(cur), &cur) == 0 && CPU_EQUAL(&cur, &want);
}

// The numbers in /proc/<pid>/task, or the pids in a .../children file.
void list_task_ids(pid_t pid, std::vector<pid_t> *out)
{
	char path[64];
	std::snprintf(path, sizeof(path), "/proc/%d/task", int(pid));
	DIR *d = opendir(path);
	if (d == nullptr)
		return;
	while (dirent *e = readdir(d)) {
		int tid = 0;
		if (std::sscanf(e->d_name, "%d", &tid) == 1 && tid > 0)
			out->push_back(tid);
	}
	closedir(d);
}

void list_children(pid_t pid, pid_t tid, std::vector<pid_t> *out)
{
	char path[96];
	std::snprintf(path, sizeof(path), "/proc/%d/task/%d/children", int(pid), int(tid));
	FILE *f = std::fopen(path, "re");
	if (f == nullptr)
		return;
	int child = 0;
	while (std::fscanf(f, "%d", &child) == 1)
		if (child > 0)
			out->push_back(child);
	std::fclose(f);
}

// The start time of thread `tid` of `pid` (clock ticks since boot), or 0
// if it is gone.
unsigned long long start_time(pid_t pid, pid_t tid)
{
	return proc_stat_number(proc_stat_fields("/proc/" + std::to_string(pid) + "/task/" +
	                                         std::to_string(tid) + "/stat"),
	                        22);
}

std::string pin_path(const std::string &dir, pid_t tid)
{
	return dir + "/" + std::to_string(tid);
}

bool contains(const std::vector<pid_t> &v, pid_t x)
{
	for (pid_t y : v)
		if (y == x)
			return true;
	return false;
}

} // namespace

void PagerThread::colocation_window()
{
	if (colocated_.proc != nullptr) {
		Process *p = colocated_.proc;
		Colocation d = colocation_decision(p->fault_votes, uint32_t(colocated_.tid));
		if (p->dead || d == Colocation::kStop)
			stop_colocation();
		else
			release_inheritors();
	}
	// One pin per pager thread: the process that faulted most this window.
	Process *best = nullptr;
	FaultVotes best_votes;
	for (auto &p : procs_) {
		if (colocated_.proc == nullptr && !p->dead && !p->colocation_refused &&
		    p->pid > 0 && colocation_decision(p->fault_votes, 0) == Colocation::kStart &&
		    p->fault_votes.faults > best_votes.faults) {
			best = p.get();
			best_votes = p->fault_votes;
		}
		p->fault_votes = FaultVotes();
	}
	if (best != nullptr)
		start_colocation(best, pid_t(best_votes.candidate), best_votes.faults);
}

void PagerThread::start_colocation(Process *p, pid_t tid, uint32_t faults)
{
	// The vote saw a thread id from a fault message: it must still be a
	// thread of this process (ids are reused) before it is pinned.
	if (tgid_of(uint32_t(tid)) != p->pid)
		return;
	cpu_set_t saved;
	if (sched_getaffinity(tid, sizeof(saved), &saved) != 0)
		return;
	// This thread's CPU, if the faulting thread may run there; else the
	// first CPU both may run on.
	int cpu = sched_getcpu();
	if (cpu < 0 || !CPU_ISSET(cpu, &saved) || !CPU_ISSET(cpu, &own_cpus_)) {
		cpu_set_t both;
		CPU_AND(&both, &saved, &own_cpus_);
		cpu = -1;
		for (int c = 0; c < CPU_SETSIZE && cpu < 0; c++)
			if (CPU_ISSET(c, &both))
				cpu = c;
		if (cpu < 0)
			return;
	}
	cpu_set_t pin = one_cpu(cpu);
	if (sched_setaffinity(tid, sizeof(pin), &pin) != 0) {
		if (errno == EPERM) {
			p->colocation_refused = true;
			LOG_WARN(kLog,
			         "pid %d: cannot pin its faulting thread %d beside pager thread "
			         "%d: %s; "
			         "its faults keep paying a wakeup across CPUs (memfedd needs "
			         "CAP_SYS_NICE, or set pager.colocate false)",
			         int(p->pid), int(tid), index_, std::strerror(errno));
		}
		return;
	}
	if (sched_setaffinity(0, sizeof(pin), &pin) != 0)
		LOG_WARN(kLog, "pager thread %d: pinning itself to cpu %d: %s", index_, cpu,
		         std::strerror(errno));
	colocated_.proc = p;
	colocated_.tid = tid;
	colocated_.cpu = cpu;
	colocated_.saved = saved;
	colocated_.seen.clear();
	list_task_ids(p->pid, &colocated_.seen);
	list_children(p->pid, tid, &colocated_.seen);
	p->colocations++;
	record_pin();
	LOG_DEBUG(kLog,
	          "pid %d: thread %d and pager thread %d share cpu %d (%u faults in a window)",
	          int(p->pid), int(tid), index_, cpu, faults);
}

void PagerThread::release_inheritors()
{
	const Colocated &c = colocated_;
	std::vector<pid_t> found;
	list_task_ids(c.proc->pid, &found);
	size_t threads = found.size();
	list_children(c.proc->pid, c.tid, &found);
	for (size_t i = 0; i < found.size(); i++) {
		pid_t id = found[i];
		if (id == c.tid || contains(c.seen, id))
			continue;
		colocated_.seen.push_back(id);
		std::vector<pid_t> tids;
		if (i >= threads) // a child process: all its threads
			list_task_ids(id, &tids);
		else
			tids.push_back(id);
		for (pid_t t : tids)
			if (only_cpu(t, c.cpu))
				(void)sched_setaffinity(t, sizeof(c.saved), &c.saved);
	}
}

uint32_t PagerThread::evictor_cpu_flags(const Process *p) const
{
	if (colocated_.proc != p || colocated_.cpu < 0)
		return 0;
	return kMoveOnCpu | uint32_t(colocated_.cpu) << kMoveCpuShift;
}

void PagerThread::stop_colocation(bool restore_self)
{
	Colocated &c = colocated_;
	if (c.proc == nullptr)
		return;
	// A process that exited took its thread id with it: another may have it.
	if (!c.proc->mm_gone && tgid_of(uint32_t(c.tid)) == c.proc->pid && only_cpu(c.tid, c.cpu))
		(void)sched_setaffinity(c.tid, sizeof(c.saved), &c.saved);
	erase_pin();
	if (restore_self && sched_setaffinity(0, sizeof(own_cpus_), &own_cpus_) != 0)
		LOG_WARN(kLog, "pager thread %d: restoring its CPUs: %s", index_,
		         std::strerror(errno));
	LOG_DEBUG(kLog, "pid %d: thread %d unpinned from cpu %d", int(c.proc->pid), int(c.tid),
	          c.cpu);
	c.proc = nullptr;
	c.tid = 0;
	c.cpu = -1;
	c.seen.clear();
}

void PagerThread::record_pin()
{
	const Colocated &c = colocated_;
	if (cfg_.pin_dir.empty())
		return;
	if (mkdir(cfg_.pin_dir.c_str(), 0700) != 0 && errno != EEXIST)
		return;
	std::string path = pin_path(cfg_.pin_dir, c.tid);
	FILE *f = std::fopen(path.c_str(), "we");
	if (f == nullptr) {
		LOG_WARN(kLog, "recording the pin of thread %d in %s: %s", int(c.tid), path.c_str(),
		         std::strerror(errno));
		return;
	}
	// "PID TID START CPU SAVED_CPU..."
	std::fprintf(f, "%d %d %llu %d", int(c.proc->pid), int(c.tid),
	             start_time(c.proc->pid, c.tid), c.cpu);
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
		if (CPU_ISSET(cpu, &c.saved))
			std::fprintf(f, " %d", cpu);
	std::fprintf(f, "\n");
	std::fclose(f);
}

void PagerThread::erase_pin()
{
	if (!cfg_.pin_dir.empty())
		(void)unlink(pin_path(cfg_.pin_dir, colocated_.tid).c_str());
}

void restore_recorded_pins(const std::string &dir)
{
	DIR *d = opendir(dir.c_str());
	if (d == nullptr)
		return;
	while (dirent *e = readdir(d)) {
		if (e->d_name[0] == '.')
			continue;
		std::string path = dir + "/" + e->d_name;
		FILE *f = std::fopen(path.c_str(), "re");
		int pid = 0, tid = 0, cpu = -1, c = 0;
		unsigned long long start = 0;
		cpu_set_t saved;
		CPU_ZERO(&saved);
		bool ok = f != nullptr &&
		          std::fscanf(f, "%d %d %llu %d", &pid, &tid, &start, &cpu) == 4 &&
		          pid > 0 && tid > 0 && cpu >= 0 && cpu < CPU_SETSIZE;
		while (ok && std::fscanf(f, "%d", &c) == 1)
			if (c >= 0 && c < CPU_SETSIZE)
				CPU_SET(c, &saved);
		if (f != nullptr)
			std::fclose(f);
		// Only the thread recorded (same process, same start), still on
		// the pin's CPU alone: anything else changed it since.
		if (ok && CPU_COUNT(&saved) > 0 && start != 0 && start_time(pid, tid) == start &&
		    only_cpu(tid, cpu)) {
			if (sched_setaffinity(tid, sizeof(saved), &saved) == 0)
				LOG_INFO(kLog,
				         "thread %d of pid %d: its CPUs given back (pinned to cpu "
				         "%d by "
				         "a pager that ended without unpinning it)",
				         tid, pid, cpu);
		}
		(void)unlink(path.c_str());
	}
	closedir(d);
}

} // namespace memfed::pager
