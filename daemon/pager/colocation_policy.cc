// See colocation_policy.h.
#include "daemon/pager/colocation_policy.h"

namespace memfed::pager
{

Colocation colocation_decision(const FaultVotes &w, uint32_t pinned_tid)
{
	if (pinned_tid == 0)
		return w.faults >= kColocationStartFaults &&
		                       w.candidate_share() >= kColocationStartShare
		               ? Colocation::kStart
		               : Colocation::kKeep;
	// Another thread took over the faulting, or the faults grew rare: the
	// pin costs the program its other CPUs and buys little.
	if (w.faults < kColocationStopFaults || w.candidate != pinned_tid ||
	    w.candidate_share() < kColocationStopShare)
		return Colocation::kStop;
	return Colocation::kKeep;
}

} // namespace memfed::pager
