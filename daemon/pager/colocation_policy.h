// Colocation policy of the pager, as pure functions: when a process waits on
// its pager thread often enough, and from one thread only, that the two
// should share a CPU, and when they should part.
//
// Why: a fault served across CPUs costs two wakeups of a sleeping CPU, the
// faulting thread's wakeup of the pager and the pager's UFFDIO_COPY waking it
// back. On a virtual machine whose idle vCPUs halt at once each is an
// interrupt to a halted vCPU: 57.5 us a fault against 6.9 us when both threads
// share a vCPU (shared/notes/limits.md). The scheduler cannot keep them
// together by itself: each wakeup goes to an idle CPU, which is the other
// one. colocation.cc applies the decision (sched_setaffinity); this file
// decides from one window's faults, with no I/O, no clock and no lock, and
// colocation_policy_test.cc checks it.
#pragma once

#include <cstdint>

namespace memfed::pager
{

// The faults of one process in one window, and the thread most of them came
// from: Boyer-Moore's majority vote, constant space per fault. `candidate`
// is the thread with more than half the faults if there is one; `votes` is
// a lower bound on how far ahead it is, so it raised at least
// (faults + votes) / 2 of them.
struct FaultVotes {
	uint32_t faults = 0;
	uint32_t candidate = 0;
	uint32_t votes = 0;

	void add(uint32_t tid)
	{
		faults++;
		if (votes == 0) {
			candidate = tid;
			votes = 1;
		} else if (tid == candidate) {
			votes++;
		} else {
			votes--;
		}
	}
	// At least this share (0 to 1) of the window's faults came from
	// `candidate`.
	double candidate_share() const
	{
		return faults == 0 ? 0.0 : (double(faults) + votes) / (2.0 * faults);
	}
};

// Window length and thresholds. A window of 100 ms with 200 faults means the
// thread waited at least 2000 times a second; at 50 us a fault that is a
// tenth of its time. Starting and stopping thresholds differ by 4x so a
// program at the boundary does not move every window.
inline constexpr uint64_t kColocationWindowNs = 100'000'000;
inline constexpr uint32_t kColocationStartFaults = 200;
inline constexpr uint32_t kColocationStopFaults = 50;
inline constexpr double kColocationStartShare = 0.9;
inline constexpr double kColocationStopShare = 0.75;

enum class Colocation { kKeep, kStart, kStop };

// What to do after a window with faults `w`, when `pinned_tid` (0: none) of
// this process is already pinned beside its pager thread.
Colocation colocation_decision(const FaultVotes &w, uint32_t pinned_tid);

} // namespace memfed::pager
