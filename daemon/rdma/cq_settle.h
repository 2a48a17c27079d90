// settle_cq_events: before ibv_destroy_cq, wait for the completion event that a
// completion posted to an armed CQ has scheduled. Run by whichever thread
// destroys the CQ, after the last queue pair that feeds it is destroyed.
#pragma once

#include <infiniband/verbs.h>

namespace memfed
{

// Why: soft-RoCE (rxe) before Linux 6.4 delivers a CQ's completion events from
// a tasklet that ibv_destroy_cq neither kills nor waits for. A CQ destroyed
// while that tasklet is scheduled or running is written after it is freed (the
// 6.1 guest of the QEMU tier logged "BUG kmalloc-512: Poison overwritten" in a
// CQ freed by ib_destroy_cq_user: the tasklet's unlock cleared a bit in the
// poison). Upstream removed the tasklet in "RDMA/rxe: Remove tasklet call
// from rxe_cq.c". The tasklet is scheduled only by the first completion after
// an arm, and every owner here re-arms before it polls, so a completion still
// queued at teardown means an event is queued or on its way: this drains the
// CQ and, if it held any completion, waits up to `timeout_ms` for that event
// and acknowledges it. Once the event is readable, what is left of the tasklet
// is its return, far shorter than the syscalls that follow.
// `comp`'s fd must be non-blocking. Returns the completions discarded.
// kCqSettleMs bounds the wait where a queued completion came before the arm
// and no event follows (a teardown from inside a poll loop); it is rxe's own
// bound on waiting for an object's references.
inline constexpr int kCqSettleMs = 200;
int settle_cq_events(ibv_cq *cq, ibv_comp_channel *comp, int timeout_ms);

} // namespace memfed
