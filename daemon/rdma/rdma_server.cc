#include "daemon/rdma/rdma_server.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include <cstring>

#include "daemon/common/log.h"
#include "daemon/rdma/rdma_address.h"
#include "daemon/trust/trusted_peers.h"
#include "daemon/wire/rdma_codec.h"

namespace memfed
{

namespace
{
constexpr auto kTokenLife = std::chrono::seconds(30);
constexpr size_t kMaxTokens = 1024;
} // namespace

Result<std::unique_ptr<RdmaServer>> RdmaServer::listen(const std::string &host_port,
                                                       ModuleStore *store, ModuleService *service)
{
	std::unique_ptr<RdmaServer> s(new RdmaServer());
	s->store_ = store;
	s->service_ = service;
	s->base_ = store->base();
	store::PoolHeader h;
	std::memcpy(&h, s->base_, sizeof(h));
	s->geo_ = store::geometry_of(h);

	auto addr = resolve_rdma_address(host_port, "--rdma-listen");
	if (!addr)
		return addr.status();
	s->events_ = rdma_create_event_channel();
	if (s->events_ == nullptr)
		return Status(Code::kUnavailable,
		              std::string("rdma listen ") + host_port +
		                      ": no RDMA event channel (" + strerror(errno) +
		                      "; is rdma_ucm loaded and /dev/infiniband/rdma_cm there?)");
	if (rdma_create_id(s->events_, &s->listen_id_, s.get(), RDMA_PS_TCP) != 0)
		return Status(Code::kUnavailable,
		              std::string("rdma listen: rdma_create_id: ") + strerror(errno));
	if (rdma_bind_addr(s->listen_id_, reinterpret_cast<sockaddr *>(&addr->ss)) != 0)
		return Status(Code::kUnavailable,
		              "rdma listen " + host_port + ": cannot bind (" + strerror(errno) +
		                      "): the address must belong to an RDMA device "
		                      "(rdma link show; soft-RoCE: rdma link add rxe0 type rxe "
		                      "netdev DEV)");
	if (s->listen_id_->verbs == nullptr)
		return Status(Code::kUnavailable,
		              "rdma listen " + host_port +
		                      ": the address is not on an RDMA device (rdma link show); a "
		                      "wildcard address is not accepted");
	if (rdma_listen(s->listen_id_, 64) != 0)
		return Status(Code::kUnavailable,
		              std::string("rdma listen: rdma_listen: ") + strerror(errno));
	s->endpoint_ = format_rdma_endpoint(rdma_get_local_addr(s->listen_id_));
	s->pd_ = ibv_alloc_pd(s->listen_id_->verbs);
	if (s->pd_ == nullptr)
		return Status(Code::kUnavailable,
		              std::string("rdma listen: ibv_alloc_pd: ") + strerror(errno));
	s->cq_ = ibv_create_cq(s->listen_id_->verbs, 16, nullptr, nullptr, 0);
	if (s->cq_ == nullptr)
		return Status(Code::kUnavailable,
		              std::string("rdma listen: ibv_create_cq: ") + strerror(errno));
	auto w = RdmaWriteReceiver::create(s->listen_id_->verbs, s->pd_, store->module_id(),
	                                   service);
	if (!w)
		return w.status();
	s->writes_ = std::move(*w);
	s->stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->stop_fd_ < 0)
		return Status(Code::kInternal, std::string("eventfd: ") + strerror(errno));
	int fl = fcntl(s->events_->fd, F_GETFL);
	fcntl(s->events_->fd, F_SETFL, fl | O_NONBLOCK);
	int afd = s->listen_id_->verbs->async_fd;
	fcntl(afd, F_SETFL, fcntl(afd, F_GETFL) | O_NONBLOCK);
	store->set_on_access_lost([p = s.get()](uint32_t region_id) { p->revoke(region_id); });
	s->thread_ = std::thread([p = s.get()] { p->cm_main(); });
	LOG_INFO("rdma",
	         "listening for RDMA on %s (device %s); regions are registered for remote read "
	         "as peers that may read them ask",
	         s->endpoint_.c_str(), ibv_get_device_name(s->listen_id_->verbs->device));
	return s;
}

RdmaServer::~RdmaServer()
{
	if (store_ != nullptr)
		store_->set_on_access_lost(nullptr);
	if (thread_.joinable()) {
		uint64_t one = 1;
		(void)!write(stop_fd_, &one, sizeof(one));
		thread_.join();
	}
	for (auto &[id, c] : conns_) {
		writes_->detach(id);
		rdma_destroy_id(id);
	}
	writes_.reset();
	for (auto &[region, m] : mrs_)
		deregister(m);
	if (cq_ != nullptr)
		ibv_destroy_cq(cq_);
	if (pd_ != nullptr)
		ibv_dealloc_pd(pd_);
	if (listen_id_ != nullptr)
		rdma_destroy_id(listen_id_);
	if (events_ != nullptr)
		rdma_destroy_event_channel(events_);
	if (stop_fd_ >= 0)
		close(stop_fd_);
}

void RdmaServer::deregister(RegionMrs m)
{
	if (m.data != nullptr)
		ibv_dereg_mr(m.data);
	if (m.meta != nullptr)
		ibv_dereg_mr(m.meta);
}

namespace
{
RdmaServer::RegionKeys keys_of(ibv_mr *data, ibv_mr *meta)
{
	return {reinterpret_cast<uint64_t>(data->addr), reinterpret_cast<uint64_t>(meta->addr),
	        data->rkey, meta->rkey};
}
} // namespace

Result<RdmaServer::RegionKeys> RdmaServer::region_keys(uint32_t region_id, RegionInfo *info)
{
	// The store is asked without mu_ held (its access-lost callback takes
	// mu_ under the store's lock); a revoke() that runs meanwhile bumps the
	// epoch, and a registration made across it is dropped, not handed out.
	for (int attempt = 0; attempt < 3; attempt++) {
		uint64_t epoch;
		std::optional<RegionKeys> had;
		{
			std::lock_guard lk(mu_);
			epoch = revoke_epoch_;
			auto it = mrs_.find(region_id);
			if (it != mrs_.end())
				had = keys_of(it->second.data, it->second.meta);
		}
		auto r = store_->region_by_id(region_id);
		if (!r)
			return r.status();
		*info = *r;
		if (had) {
			std::lock_guard lk(mu_);
			if (revoke_epoch_ == epoch)
				return *had;
			continue; // revoked meanwhile: look again
		}
		// A clone's pages it never wrote are its base's (store/pool.h): a
		// one-sided read of its own extent would miss them.
		if (r->is_clone)
			return Status(Code::kUnavailable,
			              "rdma: region '" + r->name +
			                      "' is a copy-on-write clone, whose unwritten pages "
			                      "are its base's, which a remote read of its own "
			                      "pages cannot follow: read it over TCP");
		// A pin populates the extent: a thin region larger than the pool
		// could hold is read over TCP instead (rdma_server.h).
		if (geo_.thin() && r->size_bytes > geo_.capacity_pages * wire::kPageSize)
			return Status(
			        Code::kUnavailable,
			        "rdma: region '" + r->name + "' (" + std::to_string(r->size_bytes) +
			                " bytes) is larger than the thin pool's capacity of " +
			                std::to_string(geo_.capacity_pages * wire::kPageSize) +
			                " bytes; registering it would pin pages never written: "
			                "read it over TCP");
		uint64_t pages = r->size_bytes / wire::kPageSize;
		uint64_t first = geo_.page_index(r->fa_offset);
		// Remote read only: never remote write, never atomics. (An int, not
		// the enum: verbs.h's ibv_reg_mr macro mixes two enum types.)
		int access = IBV_ACCESS_REMOTE_READ;
		RegionMrs m;
		m.data = ibv_reg_mr(pd_, base_ + r->fa_offset, r->size_bytes, access);
		if (m.data != nullptr)
			m.meta = ibv_reg_mr(pd_, base_ + geo_.meta_fa(first),
			                    pages * sizeof(store::PageMeta), access);
		if (m.meta == nullptr) {
			int e = errno;
			deregister(m);
			return Status(Code::kUnavailable,
			              "rdma: cannot register region '" + r->name +
			                      "' for remote read (" + strerror(e) +
			                      "; the locked-memory limit, ulimit -l, must cover "
			                      "the regions read over RDMA): read it over TCP");
		}
		std::optional<RegionKeys> made;
		{
			std::lock_guard lk(mu_);
			if (revoke_epoch_ == epoch && mrs_.emplace(region_id, m).second) {
				counters_.registrations++;
				made = keys_of(m.data, m.meta);
			}
		}
		if (made)
			return *made;
		deregister(m); // the region changed meanwhile: look again
	}
	return Status(Code::kBusy, "region " + std::to_string(region_id) +
	                                   " keeps changing while it is registered for RDMA: "
	                                   "read it over TCP");
}

void RdmaServer::revoke(uint32_t region_id)
{
	RegionMrs m;
	{
		std::lock_guard lk(mu_);
		revoke_epoch_++;
		auto it = mrs_.find(region_id);
		if (it == mrs_.end())
			return;
		m = it->second;
		mrs_.erase(it);
		counters_.revocations++;
	}
	deregister(m);
	LOG_INFO("rdma",
	         "region %u: its RDMA keys revoked (deleted, truncated or a grant taken "
	         "away); readers that may still read it ask again",
	         region_id);
}

std::optional<RdmaServer::RegionKeys> RdmaServer::keys(uint32_t region_id) const
{
	std::lock_guard lk(mu_);
	auto it = mrs_.find(region_id);
	if (it == mrs_.end())
		return std::nullopt;
	return keys_of(it->second.data, it->second.meta);
}

RdmaServer::Counters RdmaServer::counters() const
{
	std::lock_guard lk(mu_);
	Counters c = counters_;
	c.writes = writes_->counters();
	return c;
}

void RdmaServer::handle(const ConnInfo &conn, const wire::Header &req,
                        std::span<const uint8_t> payload, Reply &reply)
{
	auto type = wire::MsgType(req.type);
	if (type != wire::MsgType::kRdmaConnect && type != wire::MsgType::kRdmaRegion &&
	    type != wire::MsgType::kRdmaFence)
		return service_->handle(conn, req, payload, reply);
	if (!conn.authenticated) {
		{
			std::lock_guard lk(mu_);
			counters_.refused++;
		}
		LOG_WARN("rdma",
		         "RDMA key refused to %s: the connection is not authenticated (TLS)",
		         conn.peer.c_str());
		return reply.fail(Status(Code::kPermission,
		                         "RDMA access is given only over an authenticated (TLS) "
		                         "connection"));
	}
	if (type == wire::MsgType::kRdmaFence)
		return writes_->fence(conn);
	if (type == wire::MsgType::kRdmaConnect) {
		// The queue pair this token connects writes as this connection,
		// its messages handled on this connection's loop.
		RdmaWriteReceiver::Identity who{conn, EventLoop::current()};
		wire::WireRdmaConnect c{};
		c.write_depth = who.loop != nullptr ? RdmaWriteReceiver::kDepth : 0;
		std::snprintf(c.endpoint, sizeof(c.endpoint), "%s", endpoint_.c_str());
		if (getrandom(c.token, sizeof(c.token), 0) != ssize_t(sizeof(c.token)))
			return reply.fail(Status(Code::kInternal, "getrandom failed"));
		std::array<uint8_t, wire::kRdmaTokenSize> t;
		std::memcpy(t.data(), c.token, t.size());
		{
			std::lock_guard lk(mu_);
			auto now = std::chrono::steady_clock::now();
			std::erase_if(tokens_,
			              [&](const auto &e) { return e.second.expires < now; });
			if (tokens_.size() >= kMaxTokens)
				return reply.fail(
				        Status(Code::kBusy, "too many RDMA connects pending"));
			tokens_[t] = Token{now + kTokenLife,
			                   "node " +
			                           trust::TrustedPeers::describe(conn.peer_key,
			                                                         conn.peer_name) +
			                           " at " + conn.peer,
			                   std::move(who)};
		}
		auto out = reply.payload_buffer(sizeof(c));
		std::memcpy(out.data(), &c, sizeof(c));
		return;
	}
	// RDMA_REGION: the keys of a region only to a peer that may READ it
	// (the READ path's own check; a refusal is counted and logged there).
	Status allowed = service_->authorize_read(conn, req.region_id);
	if (!allowed)
		return reply.fail(allowed);
	RegionInfo r;
	auto k = region_keys(req.region_id, &r);
	if (!k)
		return reply.fail(k.status());
	wire::WireRdmaRegion w{};
	w.region_id = r.id;
	w.fa_offset = r.fa_offset;
	w.size_bytes = r.size_bytes;
	w.data_addr = k->data_addr;
	w.meta_addr = k->meta_addr;
	w.data_rkey = k->data_rkey;
	w.meta_rkey = k->meta_rkey;
	auto out = reply.payload_buffer(sizeof(w));
	std::memcpy(out.data(), &w, sizeof(w));
}

std::optional<RdmaServer::Token> RdmaServer::take_token(const uint8_t *token)
{
	std::array<uint8_t, wire::kRdmaTokenSize> t;
	std::memcpy(t.data(), token, t.size());
	std::lock_guard lk(mu_);
	auto it = tokens_.find(t);
	if (it == tokens_.end() || it->second.expires < std::chrono::steady_clock::now())
		return std::nullopt;
	Token got = std::move(it->second);
	tokens_.erase(it);
	return got;
}

void RdmaServer::count_key_refusal(rdma_cm_id *id, const char *how)
{
	auto it = conns_.find(id);
	if (it == conns_.end() || it->second.counted)
		return;
	it->second.counted = true;
	{
		std::lock_guard lk(mu_);
		counters_.key_errors++;
	}
	service_->log_refusal(Status(Code::kPermission,
	                             "a one-sided RDMA read by " + it->second.peer +
	                                     " came with a key that is not good for the address "
	                                     "it read (forged, or revoked by a delete, truncate "
	                                     "or grant change): the device refused it (" +
	                                     how + ")"),
	                      Refusal::kRdmaKey);
}

void RdmaServer::on_async_event()
{
	ibv_context *ctx = listen_id_->verbs;
	ibv_async_event ev;
	while (ibv_get_async_event(ctx, &ev) == 0) {
		ibv_event_type t = ev.event_type;
		bool qp_error = t == IBV_EVENT_QP_ACCESS_ERR || t == IBV_EVENT_QP_REQ_ERR ||
		                t == IBV_EVENT_QP_FATAL;
		ibv_qp *qp = qp_error ? ev.element.qp : nullptr;
		ibv_ack_async_event(&ev);
		if (t == IBV_EVENT_DEVICE_FATAL)
			LOG_WARN("rdma", "RDMA device fatal error: readers fall back to TCP");
		if (qp == nullptr)
			continue;
		// The context is shared by every rdma_cm id of the device in this
		// process: only the module's passive QPs are counted here.
		for (auto &[id, c] : conns_)
			if (id->qp == qp)
				count_key_refusal(id, ibv_event_type_str(t));
	}
}

void RdmaServer::on_connect_request(rdma_cm_id *id, const void *data, uint8_t len)
{
	const char *why = nullptr;
	std::optional<Token> token;
	// rdma_cm pads private data; the hello is its first bytes.
	auto h = wire::decode_rdma_hello(
	        std::span(static_cast<const uint8_t *>(data), data != nullptr ? len : 0));
	std::string bad = h ? "" : h.status().message();
	if (h && !(token = take_token(h->token)))
		why = "unknown, used or expired token (ask RDMA_CONNECT over TLS)";
	else if (!h)
		why = bad.c_str();
	if (why != nullptr) {
		{
			std::lock_guard lk(mu_);
			counters_.refused++;
		}
		LOG_WARN("rdma", "RDMA connect refused: %s", why);
		rdma_reject(id, nullptr, 0);
		rdma_destroy_id(id);
		return;
	}
	ibv_qp_init_attr qa{};
	qa.send_cq = cq_;
	qa.recv_cq = cq_;
	qa.qp_type = IBV_QPT_RC;
	writes_->init_qp_attr(&qa); // the receives and answers of write-back
	if (rdma_create_qp(id, pd_, &qa) != 0) {
		LOG_WARN("rdma", "RDMA connect refused: rdma_create_qp: %s", strerror(errno));
		rdma_reject(id, nullptr, 0);
		rdma_destroy_id(id);
		return;
	}
	if (Status st = writes_->attach(id, std::move(token->who)); !st) {
		LOG_WARN("rdma", "RDMA connect refused: %s", st.message().c_str());
		writes_->detach(id);
		rdma_reject(id, nullptr, 0);
		rdma_destroy_id(id);
		return;
	}
	rdma_conn_param p{};
	p.responder_resources = 16; // RDMA READs in flight from the reader
	p.initiator_depth = 0;
	p.rnr_retry_count = 7;
	if (rdma_accept(id, &p) != 0) {
		LOG_WARN("rdma", "rdma_accept: %s", strerror(errno));
		writes_->detach(id);
		rdma_destroy_id(id);
		return;
	}
	conns_[id] = Conn{std::move(token->peer), false};
}

void RdmaServer::cm_main()
{
	for (;;) {
		pollfd fds[3] = {{events_->fd, POLLIN, 0},
		                 {stop_fd_, POLLIN, 0},
		                 {listen_id_->verbs->async_fd, POLLIN, 0}};
		if (poll(fds, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		if (fds[1].revents != 0)
			return;
		if (fds[2].revents != 0)
			on_async_event();
		rdma_cm_event *ev = nullptr;
		while (rdma_get_cm_event(events_, &ev) == 0) {
			rdma_cm_event e = *ev;
			std::vector<uint8_t> priv;
			if (e.event == RDMA_CM_EVENT_CONNECT_REQUEST && e.param.conn.private_data)
				priv.assign(
				        static_cast<const uint8_t *>(e.param.conn.private_data),
				        static_cast<const uint8_t *>(e.param.conn.private_data) +
				                e.param.conn.private_data_len);
			rdma_ack_cm_event(ev);
			switch (e.event) {
			case RDMA_CM_EVENT_CONNECT_REQUEST:
				on_connect_request(e.id, priv.empty() ? nullptr : priv.data(),
				                   uint8_t(priv.size()));
				break;
			case RDMA_CM_EVENT_ESTABLISHED: {
				std::lock_guard lk(mu_);
				counters_.connections++;
				break;
			}
			case RDMA_CM_EVENT_DISCONNECTED:
			case RDMA_CM_EVENT_REJECTED:
			case RDMA_CM_EVENT_CONNECT_ERROR:
			case RDMA_CM_EVENT_UNREACHABLE:
				if (conns_.count(e.id) == 0)
					break;
				on_async_event(); // an event for this QP is counted first
				if (e.id->qp != nullptr) {
					// A device that raises no async event for a bad key
					// still leaves the responder's QP in the error state.
					ibv_qp_attr a{};
					ibv_qp_init_attr ia{};
					if (ibv_query_qp(e.id->qp, &a, IBV_QP_STATE, &ia) == 0 &&
					    a.qp_state == IBV_QPS_ERR)
						count_key_refusal(e.id,
						                  "its queue pair was found in "
						                  "the error state");
				}
				conns_.erase(e.id);
				writes_->detach(e.id);
				rdma_destroy_id(e.id);
				break;
			case RDMA_CM_EVENT_DEVICE_REMOVAL:
				LOG_WARN("rdma", "RDMA device removed: readers fall back to TCP");
				break;
			default:
				break;
			}
		}
	}
}

} // namespace memfed
