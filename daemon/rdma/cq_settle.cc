#include "daemon/rdma/cq_settle.h"

#include <poll.h>

namespace memfed
{

int settle_cq_events(ibv_cq *cq, ibv_comp_channel *comp, int timeout_ms)
{
	if (cq == nullptr || comp == nullptr)
		return 0;
	int discarded = 0;
	ibv_wc wc[16];
	int n;
	while ((n = ibv_poll_cq(cq, 16, wc)) > 0)
		discarded += n;
	if (discarded > 0) {
		pollfd p{comp->fd, POLLIN, 0};
		(void)poll(&p, 1, timeout_ms);
	}
	ibv_cq *ev_cq = nullptr;
	void *ctx = nullptr;
	while (ibv_get_cq_event(comp, &ev_cq, &ctx) == 0)
		ibv_ack_cq_events(ev_cq, 1);
	return discarded;
}

} // namespace memfed
