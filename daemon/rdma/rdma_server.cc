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

namespace memfed
{

namespace
{
constexpr auto kTokenLife = std::chrono::seconds(30);
constexpr size_t kMaxTokens = 1024;
} // namespace

Result<std::unique_ptr<RdmaServer>> RdmaServer::listen(const std::string &host_port,
                                                       ModuleStore *store, RequestHandler *inner)
{
	std::unique_ptr<RdmaServer> s(new RdmaServer());
	s->store_ = store;
	s->inner_ = inner;
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
	MF_RETURN_IF_ERROR(s->register_pool());
	auto w = RdmaWriteReceiver::create(s->listen_id_->verbs, s->pd_, store->module_id(), inner);
	if (!w)
		return w.status();
	s->writes_ = std::move(*w);
	s->stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->stop_fd_ < 0)
		return Status(Code::kInternal, std::string("eventfd: ") + strerror(errno));
	int fl = fcntl(s->events_->fd, F_GETFL);
	fcntl(s->events_->fd, F_SETFL, fl | O_NONBLOCK);
	s->thread_ = std::thread([p = s.get()] { p->cm_main(); });
	LOG_INFO("rdma", "listening for RDMA on %s (device %s), pool registered for remote read",
	         s->endpoint_.c_str(), ibv_get_device_name(s->listen_id_->verbs->device));
	return s;
}

RdmaServer::~RdmaServer()
{
	if (thread_.joinable()) {
		uint64_t one = 1;
		(void)!write(stop_fd_, &one, sizeof(one));
		thread_.join();
	}
	for (rdma_cm_id *id : conns_) {
		writes_->detach(id);
		rdma_destroy_id(id);
	}
	writes_.reset();
	if (mr_ != nullptr)
		ibv_dereg_mr(mr_);
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

Status RdmaServer::register_pool()
{
	uint8_t *first = base_ + geo_.meta_offset;
	size_t len = geo_.data_end() - geo_.meta_offset;
	// Remote read only: never remote write, never atomics.
	// (An int, not the enum: verbs.h's ibv_reg_mr macro mixes two enum types.)
	int access = IBV_ACCESS_REMOTE_READ;
	ibv_mr *mr = ibv_reg_mr(pd_, first, len, access);
	if (mr == nullptr)
		return Status(Code::kUnavailable,
		              "rdma: cannot register the pool for remote read (" +
		                      std::string(strerror(errno)) +
		                      "; the locked-memory limit, ulimit -l, must cover the pool)");
	ibv_mr *old;
	{
		std::lock_guard lk(mu_);
		old = mr_;
		mr_ = mr;
	}
	if (old != nullptr)
		ibv_dereg_mr(old);
	return Status::ok();
}

Status RdmaServer::reregister()
{
	Status st = register_pool();
	if (st) {
		std::lock_guard lk(mu_);
		counters_.reregistrations++;
	} else {
		// Revocation comes first: the old keys die even if no new
		// registration could be made (RDMA_CONNECT is refused until then).
		ibv_mr *old;
		{
			std::lock_guard lk(mu_);
			old = mr_;
			mr_ = nullptr;
		}
		if (old != nullptr)
			ibv_dereg_mr(old);
	}
	LOG_INFO("rdma", "pool registered again after a free: earlier keys revoked (%s)",
	         st ? "ok" : st.message().c_str());
	return st;
}

uint32_t RdmaServer::rkey() const
{
	std::lock_guard lk(mu_);
	return mr_ != nullptr ? mr_->rkey : 0;
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
		return inner_->handle(conn, req, payload, reply);
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
			if (mr_ == nullptr)
				return reply.fail(
				        Status(Code::kUnavailable,
				               "the pool is not registered for RDMA now "
				               "(a registration failed; see the module's log)"));
			tokens_[t] = Token{now + kTokenLife, std::move(who)};
			c.rkey = mr_->rkey;
		}
		c.pool_addr = reinterpret_cast<uint64_t>(base_);
		c.meta_offset = geo_.meta_offset;
		c.data_offset = geo_.data_offset;
		c.data_pages = geo_.data_pages;
		auto out = reply.payload_buffer(sizeof(c));
		std::memcpy(out.data(), &c, sizeof(c));
		return;
	}
	auto r = store_->region_by_id(req.region_id);
	if (!r)
		return reply.fail(r.status());
	wire::WireRdmaRegion w{};
	w.region_id = r->id;
	w.fa_offset = r->fa_offset;
	w.size_bytes = r->size_bytes;
	w.rkey = rkey();
	auto out = reply.payload_buffer(sizeof(w));
	std::memcpy(out.data(), &w, sizeof(w));
}

std::optional<RdmaWriteReceiver::Identity> RdmaServer::take_token(const uint8_t *token)
{
	std::array<uint8_t, wire::kRdmaTokenSize> t;
	std::memcpy(t.data(), token, t.size());
	std::lock_guard lk(mu_);
	auto it = tokens_.find(t);
	if (it == tokens_.end() || it->second.expires < std::chrono::steady_clock::now())
		return std::nullopt;
	RdmaWriteReceiver::Identity who = std::move(it->second.who);
	tokens_.erase(it);
	return who;
}

void RdmaServer::on_connect_request(rdma_cm_id *id, const void *data, uint8_t len)
{
	const char *why = nullptr;
	std::optional<RdmaWriteReceiver::Identity> who;
	wire::WireRdmaHello h{};
	// rdma_cm pads private data; the hello is its first bytes.
	if (data == nullptr || len < sizeof(h)) {
		why = "private data too short for a hello";
	} else {
		std::memcpy(&h, data, sizeof(h));
		if (h.magic != wire::kRdmaHelloMagic)
			why = "bad hello magic";
		else if (h.version != wire::kWireVersion)
			why = "wrong wire version";
		else if (!(who = take_token(h.token)))
			why = "unknown, used or expired token (ask RDMA_CONNECT over TLS)";
	}
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
	if (Status st = writes_->attach(id, std::move(*who)); !st) {
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
	conns_.insert(id);
}

void RdmaServer::cm_main()
{
	for (;;) {
		pollfd fds[2] = {{events_->fd, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		if (fds[1].revents != 0)
			return;
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
				if (conns_.erase(e.id) != 0) {
					writes_->detach(e.id);
					rdma_destroy_id(e.id);
				}
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
