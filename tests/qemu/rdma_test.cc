// RDMA transport tests, run inside the QEMU guest over soft-RoCE (rdma_rxe on
// a dummy device; rdma_cm does not work over lo): a module store with its
// ModuleService and RdmaServer behind a TLS TcpServer on a thread, and an
// RdmaChannel (over a TLS TcpChannel) on this thread. Prints one
// "MEMFED-TEST rdma-... PASS|FAIL" marker per case (guest_check.h).
//
//   memfed_rdma_test ADDR     ADDR: an IPv4 address of the rxe device
//
// Cases: the RDMA connection comes up; random reads equal the store's bytes
// and came over RDMA; reads outside a region's extent are refused; a forged
// key breaks RDMA, the read is served over TCP, the module counts the bad
// key and RDMA comes back; a key of one region used at another's address is
// refused by the device; a deleted region's keys die with it (and a
// truncate's), its read fails over TCP, and a region made in its space gets
// new keys and reads its own bytes; RDMA_REGION needs the right to READ the
// region, and a revoked grant kills the keys handed out; a bad connect
// token is refused; a module that does not offer RDMA is read over TCP;
// keys are refused without TLS; torn reads: a writer rewrites pages while
// one-sided reads run, and every delivered page is one version.
//
// Authorization (daemon/service/region_authz.h) holds here as in memfedd:
// the regions the test writes through the store belong to the module's node,
// which grants the pager's node read through the store (the path of
// `memfedctl region grant` on the module's node); region "b", which the
// pager deletes over the wire, is created as the pager's node's own (only an
// owner's node may delete a region).
#include <rdma/rdma_cma.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <future>
#include <mutex>
#include <random>
#include <thread>

#include "daemon/common/log.h"
#include "daemon/rdma/rdma_address.h"
#include "daemon/rdma/rdma_channel.h"
#include "daemon/rdma/rdma_server.h"
#include "daemon/service/module_service.h"
#include "daemon/store/check.h"
#include "daemon/trust/tls_context.h"
#include "daemon/wire/codec.h"
#include "tests/qemu/guest_check.h"
#include "tests/qemu/rdma_channel_cases.h"

using namespace memfed;
using guest::Check;
using wire::kPageSize;

namespace
{

const ModuleId kModuleId{0x020000000001};
const ModuleId kPagerId{0x020000000002};

struct Waiter : Completion {
	void on_reply(const Status &st, const wire::Header &, std::span<const uint8_t>) override
	{
		done = true;
		status = st;
	}
	bool done = false;
	Status status;
};

// Every 8-byte word of page `p` at version `v`: one version is one pattern.
void fill(uint8_t *page, uint64_t p, uint64_t v)
{
	uint64_t w = p << 32 | v;
	for (size_t i = 0; i < kPageSize; i += 8)
		std::memcpy(page + i, &w, 8);
}

// The module: store, service, RDMA server and TLS TCP server on a thread.
struct Module {
	std::unique_ptr<ModuleStore> store;
	std::unique_ptr<ModuleService> service;
	std::unique_ptr<RdmaServer> rdma;
	std::thread thread;
	EventLoop *loop = nullptr;
	uint16_t port = 0, plain_port = 0, notls_port = 0;

	Status start(const std::string &addr, std::shared_ptr<trust::TlsContext> tls,
	             const NodeKeyBytes &node_key)
	{
		unlink("/tmp/rdma-test.mfp");
		auto s = ModuleStore::open_or_create({"/tmp/rdma-test.mfp", 32 << 20, kModuleId});
		if (!s)
			return s.status();
		store = std::move(*s);
		service = std::make_unique<ModuleService>(store.get());
		service->set_node_key(node_key);
		auto r = RdmaServer::listen(addr + ":0", store.get(), service.get());
		if (!r)
			return r.status();
		rdma = std::move(*r);
		std::promise<Status> started;
		auto fut = started.get_future();
		thread = std::thread([&] {
			auto l = EventLoop::create();
			if (!l)
				return started.set_value(l.status());
			loop = l->get();
			ServerIdentity id{kModuleId, wire::kCapModule | wire::kCapRdma,
			                  store->info().capacity_bytes, tls};
			auto srv = TcpServer::listen(loop, "127.0.0.1:0", id, rdma.get());
			// The same pool without RDMA, and with RDMA but without TLS.
			ServerIdentity plain_id{kModuleId, wire::kCapModule,
			                        store->info().capacity_bytes, tls};
			auto plain =
			        TcpServer::listen(loop, "127.0.0.1:0", plain_id, service.get());
			ServerIdentity notls_id{kModuleId, wire::kCapModule | wire::kCapRdma,
			                        store->info().capacity_bytes, nullptr};
			auto notls = TcpServer::listen(loop, "127.0.0.1:0", notls_id, rdma.get());
			if (!srv || !plain || !notls)
				return started.set_value(Status(Code::kUnavailable, "tcp listen"));
			port = (*srv)->port();
			plain_port = (*plain)->port();
			notls_port = (*notls)->port();
			started.set_value(Status::ok());
			loop->run();
			srv->reset();
			plain->reset();
			notls->reset();
		});
		return fut.get();
	}
	// Stops serving and closes the pool (so ModuleStore::check may take it).
	void stop()
	{
		if (thread.joinable()) {
			loop->stop();
			thread.join();
		}
		service.reset(); // answers its queued writes, through the RDMA server too
		rdma.reset();
		store.reset();
	}
	~Module() { stop(); }
};

// The module's node grants node `key` (every uid) read of region `name`.
Status grant_read(ModuleStore *store, const std::string &name, const NodeKeyBytes &key)
{
	return store->set_grant(name, AccessGrant{key, kAnyUid, kRightRead}).status();
}

template <typename Pred> bool drive(EventLoop *loop, Pred pred)
{
	for (int i = 0; i < 3000 && !pred(); i++)
		loop->run_once(10);
	return pred();
}

// One read through the channel, driven to completion.
Status read(EventLoop *loop, RdmaChannel *ch, uint32_t region, uint64_t fa, uint32_t count,
            void *dst)
{
	Waiter w;
	ch->read_pages(wire::TrafficClass::kFault, region, fa, count, dst, &w);
	if (!drive(loop, [&] { return w.done; }))
		return Status(Code::kUnavailable, "read never completed");
	return w.status;
}

// Waits for the RDMA side to come up (or to give up).
bool rdma_comes_up(EventLoop *loop, RdmaChannel *ch)
{
	ch->try_rdma();
	return drive(loop, [&] { return !ch->rdma_connecting(); }) && ch->rdma_up();
}

// After an RDMA failure: waits out the channel's retry_ms (100 ms), then
// for the RDMA side to come up again.
bool rdma_comes_back(EventLoop *loop, RdmaChannel *ch)
{
	usleep(150 * 1000);
	return ch->rdma_up() || rdma_comes_up(loop, ch);
}

// Reads a region's first page until its extent and keys are known.
bool learn_region(EventLoop *loop, RdmaChannel *ch, const RegionInfo &r)
{
	std::vector<uint8_t> page(kPageSize);
	for (int i = 0; i < 50 && !ch->knows_region(r.id); i++) {
		(void)read(loop, ch, r.id, r.fa_offset, 1, page.data());
		drive(loop, [&] { return ch->knows_region(r.id); });
	}
	return ch->knows_region(r.id);
}

// The module's bad-key refusals (ModuleService reason rdma_key), waited for
// until there are at least `n`: the module learns of them from its device,
// on its own thread, once the reader has disconnected.
bool key_refusals_reach(EventLoop *loop, Module &m, uint64_t n)
{
	return drive(loop, [&] { return m.service->refusals().rdma_key >= n; });
}

// Reads of random pages, several in flight, each compared with the store.
void random_reads(EventLoop *loop, RdmaChannel *ch, ModuleStore *store, const RegionInfo &r,
                  int rounds, Check &check)
{
	std::mt19937_64 rng(42);
	uint64_t pages = r.size_bytes / kPageSize;
	for (int round = 0; round < rounds && check.ok(); round++) {
		constexpr int kInFlight = 6;
		Waiter w[kInFlight];
		std::vector<uint8_t> got[kInFlight];
		uint64_t first[kInFlight];
		uint32_t count[kInFlight];
		for (int k = 0; k < kInFlight; k++) {
			count[k] = uint32_t(1 + rng() % 16);
			first[k] = rng() % (pages - count[k] + 1);
			got[k].resize(size_t{count[k]} * kPageSize);
			ch->read_pages(wire::TrafficClass::kFault, r.id,
			               r.fa_offset + first[k] * kPageSize, count[k], got[k].data(),
			               &w[k]);
		}
		check(drive(loop,
		            [&] {
			            for (auto &x : w)
				            if (!x.done)
					            return false;
			            return true;
		            }),
		      "reads never completed");
		for (int k = 0; k < kInFlight; k++) {
			std::vector<uint8_t> want(got[k].size());
			check(store->read_pages(r.id, r.fa_offset + first[k] * kPageSize, count[k],
			                        want.data())
			              .is_ok(),
			      "store read");
			check(w[k].status.is_ok(), "read failed: " + w[k].status.to_string());
			check(got[k] == want,
			      "pages differ from the store's at page " + std::to_string(first[k]));
		}
	}
}

// Prints how long a case took (TCG makes the guest slow: keep them short).
struct Lap {
	explicit Lap(const char *n) : name(n) {}
	~Lap()
	{
		std::printf("MEMFED-INFO %s took %.1f s\n", name,
		            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
		                    .count());
	}
	const char *name;
	std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
};

std::string counters(const RdmaChannel &ch)
{
	const auto &c = ch.counters();
	return "reads " + std::to_string(c.reads) + " pages " + std::to_string(c.pages) +
	       " bytes " + std::to_string(c.bytes) + " torn_retries " +
	       std::to_string(c.torn_retries) + " fallbacks " + std::to_string(c.fallbacks) +
	       " errors " + std::to_string(c.errors) + " refused " + std::to_string(c.refused) +
	       " connects " + std::to_string(c.connects);
}

// A raw rdma_cm connect with `priv` as private data: true if rejected.
bool connect_rejected(const std::string &endpoint, const void *priv, uint8_t len)
{
	auto addr = resolve_rdma_address(endpoint, "endpoint");
	if (!addr)
		return false;
	rdma_event_channel *ec = rdma_create_event_channel();
	rdma_cm_id *id = nullptr;
	bool rejected = false;
	auto next = [&](rdma_cm_event_type want) {
		rdma_cm_event *ev = nullptr;
		if (rdma_get_cm_event(ec, &ev) != 0)
			return false;
		bool ok = ev->event == want;
		rejected = ev->event == RDMA_CM_EVENT_REJECTED;
		rdma_ack_cm_event(ev);
		return ok;
	};
	ibv_qp_init_attr qa{};
	qa.qp_type = IBV_QPT_RC;
	qa.cap.max_send_wr = qa.cap.max_recv_wr = 1;
	qa.cap.max_send_sge = qa.cap.max_recv_sge = 1;
	rdma_conn_param p{};
	p.private_data = priv;
	p.private_data_len = len;
	p.initiator_depth = 1;
	if (ec && rdma_create_id(ec, &id, nullptr, RDMA_PS_TCP) == 0 &&
	    rdma_resolve_addr(id, nullptr, reinterpret_cast<sockaddr *>(&addr->ss), 2000) == 0 &&
	    next(RDMA_CM_EVENT_ADDR_RESOLVED) && rdma_resolve_route(id, 2000) == 0 &&
	    next(RDMA_CM_EVENT_ROUTE_RESOLVED) && rdma_create_qp(id, nullptr, &qa) == 0 &&
	    rdma_connect(id, &p) == 0)
		next(RDMA_CM_EVENT_ESTABLISHED);
	if (id) {
		if (id->qp)
			rdma_destroy_qp(id);
		rdma_destroy_id(id);
	}
	if (ec)
		rdma_destroy_event_channel(ec);
	return rejected;
}

// make bench (functional figures: TCG is no performance figure): `n`
// READs of `pages` pages, one at a time, through `ch`; prints the p50 and
// p99 latency and the page rate as one MEMFED-BENCH line.
void bench_reads(EventLoop *loop, RdmaChannel *ch, const RegionInfo &r, const char *path,
                 uint32_t pages, int n)
{
	std::vector<uint8_t> buf(size_t{pages} * kPageSize);
	std::vector<double> us;
	std::mt19937_64 rng(1);
	uint64_t span = r.size_bytes / kPageSize - pages;
	auto t0 = std::chrono::steady_clock::now();
	for (int i = 0; i < n; i++) {
		auto s = std::chrono::steady_clock::now();
		Status st = read(loop, ch, r.id, r.fa_offset + (rng() % span) * kPageSize, pages,
		                 buf.data());
		if (!st) {
			std::printf("MEMFED-BENCH %s failed: %s\n", path, st.to_string().c_str());
			return;
		}
		us.push_back(std::chrono::duration<double, std::micro>(
		                     std::chrono::steady_clock::now() - s)
		                     .count());
	}
	double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
	std::sort(us.begin(), us.end());
	std::printf("MEMFED-BENCH %-5s %3u-page READ: p50 %8.1f us  p99 %8.1f us  %8.0f pages/s\n",
	            path, pages, us[us.size() / 2], us[us.size() * 99 / 100], n * pages / secs);
}

// Issues every write of `ws` at once (overlapping ones included: the channel
// orders them) and drives them to completion; applies them, in issue
// order, to `model` (pages from `base`) and `versions`.
struct TestWrite {
	uint64_t first = 0; // page index in the region
	uint32_t count = 0;
	uint64_t version = 0; // 0: a plain WRITE
	std::vector<uint8_t> bytes;
	Waiter w;
};
void issue_writes(RdmaChannel *ch, const RegionInfo &r, std::vector<std::unique_ptr<TestWrite>> &ws,
                  std::vector<uint8_t> &model, std::vector<uint64_t> &versions)
{
	for (auto &t : ws) {
		uint64_t fa = r.fa_offset + t->first * kPageSize;
		if (t->version == 0) {
			ch->write_pages(wire::TrafficClass::kBulk, r.id, fa, t->count,
			                t->bytes.data(), &t->w);
		} else {
			wire::WireVersionedWrite vw{t->version, 0, 0};
			ch->write_versioned(wire::TrafficClass::kBulk, r.id, fa, t->count, vw,
			                    t->bytes.data(), &t->w);
			for (uint32_t k = 0; k < t->count; k++)
				versions[t->first + k] =
				        std::max(versions[t->first + k], t->version);
		}
		std::memcpy(model.data() + t->first * kPageSize, t->bytes.data(), t->bytes.size());
	}
}
std::unique_ptr<TestWrite> random_write(std::mt19937_64 &rng, uint64_t pages, uint64_t version,
                                        uint32_t max_count, uint64_t tag)
{
	auto t = std::make_unique<TestWrite>();
	t->count = uint32_t(1 + rng() % max_count);
	t->first = rng() % (pages - t->count + 1);
	t->version = version;
	t->bytes.resize(size_t{t->count} * kPageSize);
	for (uint32_t k = 0; k < t->count; k++)
		fill(t->bytes.data() + size_t{k} * kPageSize, t->first + k, tag);
	return t;
}
bool all_done(const std::vector<std::unique_ptr<TestWrite>> &ws)
{
	for (auto &t : ws)
		if (!t->w.done)
			return false;
	return true;
}
// Breaks the channel's queue pair while `ws` are in flight (a READ of `r`
// over RDMA with a forged key) and drives every write to its end.
void break_with_writes_in_flight(EventLoop *loop, RdmaChannel *ch, const RegionInfo &r,
                                 std::vector<std::unique_ptr<TestWrite>> &ws, Check &c)
{
	const RdmaChannel::Extent *e = ch->extent(r.id);
	c(e != nullptr, "the extent of the region is not known");
	if (e != nullptr)
		ch->set_keys_for_test(r.id, e->data_rkey ^ 0x00a5a500, e->meta_rkey ^ 0x00a5a500);
	std::vector<uint8_t> one(kPageSize);
	Waiter rw;
	ch->read_pages(wire::TrafficClass::kFault, r.id, r.fa_offset, 1, one.data(), &rw);
	c(drive(loop, [&] { return all_done(ws) && rw.done; }), "writes never completed");
	for (auto &t : ws)
		c(t->w.status.is_ok(), "write failed: " + t->w.status.to_string());
}

std::string write_counters(const RdmaChannel &ch, const RdmaServer &srv)
{
	const auto &c = ch.counters();
	auto m = srv.counters().writes;
	return "channel writes " + std::to_string(c.writes) + " pages " +
	       std::to_string(c.pages_written) + " write_fallbacks " +
	       std::to_string(c.write_fallbacks) + " fences " + std::to_string(c.fences) +
	       " errors " + std::to_string(c.errors) + "; module writes " +
	       std::to_string(m.writes) + " pages " + std::to_string(m.pages) + " failed " +
	       std::to_string(m.failed) + " malformed " + std::to_string(m.malformed) +
	       " dropped " + std::to_string(m.dropped) + " qp_errors " +
	       std::to_string(m.qp_errors);
}

// A queue pair of its own to the module's RDMA endpoint, connected with a
// token from RDMA_CONNECT over `tcp` (TLS): for SENDs the channel would
// never make.
struct RawQp {
	rdma_event_channel *ec = nullptr;
	rdma_cm_id *id = nullptr;
	ibv_pd *pd = nullptr;
	ibv_cq *cq = nullptr;
	ibv_mr *mr = nullptr;
	std::vector<uint8_t> buf; // [send kRdmaWriteMessageMax + 1][4 answers]
	static constexpr size_t kSend = wire::kRdmaWriteMessageMax + 4096;
	~RawQp()
	{
		if (id && id->qp)
			rdma_destroy_qp(id);
		if (mr)
			ibv_dereg_mr(mr);
		if (cq)
			ibv_destroy_cq(cq);
		if (pd)
			ibv_dealloc_pd(pd);
		if (id)
			rdma_destroy_id(id);
		if (ec)
			rdma_destroy_event_channel(ec);
	}
	uint8_t *answer(unsigned i) { return buf.data() + kSend + size_t{i} * wire::kRdmaAckMax; }
	bool post_answer(unsigned i)
	{
		ibv_sge sge{reinterpret_cast<uint64_t>(answer(i)), wire::kRdmaAckMax, mr->lkey};
		ibv_recv_wr wr{};
		wr.wr_id = 100 + i;
		wr.sg_list = &sge;
		wr.num_sge = 1;
		ibv_recv_wr *bad = nullptr;
		return ibv_post_recv(id->qp, &wr, &bad) == 0;
	}
	Status connect(const wire::WireRdmaConnect &c)
	{
		auto addr = resolve_rdma_address(c.endpoint, "endpoint");
		if (!addr)
			return addr.status();
		ec = rdma_create_event_channel();
		auto next = [&](rdma_cm_event_type want) {
			rdma_cm_event *ev = nullptr;
			if (rdma_get_cm_event(ec, &ev) != 0)
				return false;
			bool ok = ev->event == want;
			rdma_ack_cm_event(ev);
			return ok;
		};
		if (!ec || rdma_create_id(ec, &id, nullptr, RDMA_PS_TCP) != 0 ||
		    rdma_resolve_addr(id, nullptr, reinterpret_cast<sockaddr *>(&addr->ss), 2000) !=
		            0 ||
		    !next(RDMA_CM_EVENT_ADDR_RESOLVED) || rdma_resolve_route(id, 2000) != 0 ||
		    !next(RDMA_CM_EVENT_ROUTE_RESOLVED))
			return Status(Code::kUnavailable, "resolve");
		pd = ibv_alloc_pd(id->verbs);
		cq = pd ? ibv_create_cq(id->verbs, 32, nullptr, nullptr, 0) : nullptr;
		if (!cq)
			return Status(Code::kUnavailable, "pd/cq");
		ibv_qp_init_attr qa{};
		qa.qp_type = IBV_QPT_RC;
		qa.send_cq = qa.recv_cq = cq;
		qa.cap.max_send_wr = qa.cap.max_recv_wr = 8;
		qa.cap.max_send_sge = qa.cap.max_recv_sge = 1;
		if (rdma_create_qp(id, pd, &qa) != 0)
			return Status(Code::kUnavailable, "qp");
		buf.assign(kSend + 4 * wire::kRdmaAckMax, 0);
		int access = IBV_ACCESS_LOCAL_WRITE; // an int: verbs.h's macro mixes enum types
		mr = ibv_reg_mr(pd, buf.data(), buf.size(), access);
		if (!mr)
			return Status(Code::kUnavailable, "mr");
		for (unsigned i = 0; i < 4; i++)
			if (!post_answer(i))
				return Status(Code::kUnavailable, "post recv");
		wire::WireRdmaHello h{wire::kRdmaHelloMagic, wire::kWireVersion, {}};
		std::memcpy(h.token, c.token, sizeof(h.token));
		rdma_conn_param p{};
		p.private_data = &h;
		p.private_data_len = sizeof(h);
		p.initiator_depth = 1;
		p.retry_count = 7;
		p.rnr_retry_count = 7;
		if (rdma_connect(id, &p) != 0 || !next(RDMA_CM_EVENT_ESTABLISHED))
			return Status(Code::kUnavailable, "connect");
		return Status::ok();
	}
	// SENDs `msg` and waits for the module's answer: its header and payload.
	Status exchange(std::span<const uint8_t> msg, wire::Header *h, std::string *text)
	{
		std::memcpy(buf.data(), msg.data(), msg.size());
		ibv_sge sge{reinterpret_cast<uint64_t>(buf.data()), uint32_t(msg.size()), mr->lkey};
		ibv_send_wr wr{};
		wr.wr_id = 1;
		wr.sg_list = &sge;
		wr.num_sge = 1;
		wr.opcode = IBV_WR_SEND;
		wr.send_flags = IBV_SEND_SIGNALED;
		ibv_send_wr *bad = nullptr;
		if (ibv_post_send(id->qp, &wr, &bad) != 0)
			return Status(Code::kUnavailable, "post send");
		bool sent = false, answered = false;
		auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
		while ((!sent || !answered) && std::chrono::steady_clock::now() < deadline) {
			ibv_wc wc;
			int n = ibv_poll_cq(cq, 1, &wc);
			if (n == 0) {
				usleep(1000);
				continue;
			}
			if (n < 0 || wc.status != IBV_WC_SUCCESS)
				return Status(Code::kUnavailable,
				              std::string("completion: ") +
				                      ibv_wc_status_str(wc.status));
			if (wc.wr_id == 1) {
				sent = true;
				continue;
			}
			unsigned i = unsigned(wc.wr_id - 100);
			std::span<const uint8_t> a(answer(i), wc.byte_len);
			Status st = a.size() >= wire::kHeaderSize
			                    ? wire::validate_header(a.first(wire::kHeaderSize), h)
			                    : Status(Code::kProtocol, "short answer");
			if (st)
				st = wire::check_payload(*h, a.subspan(wire::kHeaderSize));
			text->assign(a.begin() + wire::kHeaderSize, a.end());
			post_answer(i);
			if (!st)
				return st;
			answered = true;
		}
		return answered ? Status::ok() : Status(Code::kUnavailable, "no answer in 20 s");
	}
};

// A WRITE message of `count` pages of `fill_byte`, sealed.
std::vector<uint8_t> write_message(uint32_t region, uint64_t fa, uint32_t count, uint64_t id,
                                   uint8_t fill_byte)
{
	wire::Header h{};
	h.type = uint8_t(wire::MsgType::kWrite);
	h.tclass = uint8_t(wire::TrafficClass::kBulk);
	h.hop_limit = wire::kDefaultHopLimit;
	h.request_id = id;
	h.offset = fa;
	h.count = count;
	h.region_id = region;
	std::vector<uint8_t> m(wire::kHeaderSize + size_t{count} * kPageSize, fill_byte);
	wire::encode_header(h, {m.data() + wire::kHeaderSize, m.size() - wire::kHeaderSize},
	                    m.data());
	return m;
}

} // namespace

int main(int argc, char **argv)
{
	bool bench = argc == 3 && std::string(argv[2]) == "--bench";
	if (argc != 2 && !bench) {
		std::fprintf(stderr, "usage: memfed_rdma_test ADDR [--bench]  (ADDR: an address of "
		                     "the rxe device)\n");
		return 2;
	}
	std::string addr = argv[1];
	auto t0 = std::chrono::steady_clock::now();
	set_log_level(LogLevel::kWarn);

	auto mod_key = trust::generate_node_key();
	auto pager_key = trust::generate_node_key();
	auto mod_tls = trust::TlsContext::create(
	        *mod_key, std::make_shared<trust::TrustedPeers>(
	                          std::vector<trust::TrustedPeer>{{pager_key->pub, "pager", ""}}));
	auto pager_tls = trust::TlsContext::create(
	        *pager_key, std::make_shared<trust::TrustedPeers>(
	                            std::vector<trust::TrustedPeer>{{mod_key->pub, "module", ""}}));
	Module m;
	std::unique_ptr<EventLoop> loop;
	std::unique_ptr<RdmaChannel> ch;
	{
		Lap lap("rdma-connect");
		Check c("rdma-connect");
		Status st = m.start(addr, *mod_tls, mod_key->pub);
		if (c(st.is_ok(), "module: " + st.to_string())) {
			auto l = EventLoop::create();
			loop = std::move(*l);
			TcpChannel::Options o;
			o.tls = *pager_tls;
			auto tcp = TcpChannel::connect(
			        loop.get(), "127.0.0.1:" + std::to_string(m.port), kPagerId, o);
			if (c(tcp.is_ok(), "tcp: " + tcp.status().to_string())) {
				RdmaChannel::Options ro;
				ro.mode = RdmaChannel::Mode::kRdma;
				ro.retry_ms = 100;
				ch = RdmaChannel::wrap(loop.get(), std::move(*tcp), ro);
				c(rdma_comes_up(loop.get(), ch.get()),
				  "RDMA did not come up: " + ch->rdma_why());
			}
		}
	}
	if (!ch || !ch->rdma_up()) {
		std::printf("MEMFED-DETAIL rdma: no RDMA channel, the other RDMA cases fail\n");
		return 1;
	}
	ModuleStore *store = m.store.get();
	auto a = store->create_region("a", 1024 * kPageSize, 0, 0600);
	if (!a || !grant_read(store, "a", pager_key->pub)) {
		std::printf(
		        "MEMFED-DETAIL rdma: region 'a' not created and granted to the pager\n");
		return 1;
	}
	{
		Lap lap("rdma-read-random");
		Check c("rdma-read-random");
		std::vector<uint8_t> page(4 * kPageSize);
		// Runs of 4 written pages, each followed by a never-written (zero) one.
		for (uint64_t p = 0; p + 4 < 1024; p += 5) {
			for (uint64_t k = 0; k < 4; k++)
				fill(page.data() + k * kPageSize, p + k, 1);
			c(store->write_pages(a->id, a->fa_offset + p * kPageSize, 4, page.data())
			          .is_ok(),
			  "store write");
		}
		page.resize(kPageSize);
		// The first read asks for the region's extent (and goes over TCP).
		c(read(loop.get(), ch.get(), a->id, a->fa_offset, 1, page.data()).is_ok(),
		  "first read");
		c(drive(loop.get(), [&] { return ch->knows_region(a->id); }), "extent never known");
		random_reads(loop.get(), ch.get(), store, *a, 100, c);
		const auto &k = ch->counters();
		c(k.reads > 50 && k.pages > k.reads, "too few reads over RDMA: " + counters(*ch));
		c(k.fallbacks == 0 && k.errors == 0 && k.torn_retries == 0,
		  "fallbacks, errors or torn reads without a writer: " + counters(*ch));
		std::printf("MEMFED-INFO rdma-read-random: %s\n", counters(*ch).c_str());
	}
	{
		// Faults go before bulk work: 8 bulk reads issued at once take the
		// slots a bulk read may (all but kFaultSlots) and the rest go over
		// TCP; a fault issued after them still finds an RDMA slot.
		Lap lap("rdma-faults-before-bulk");
		Check c("rdma-faults-before-bulk");
		uint64_t reads = ch->counters().reads, to_tcp = ch->counters().bulk_to_tcp;
		const unsigned bulk_rdma = RdmaChannel::Options{}.slots - RdmaChannel::kFaultSlots;
		constexpr unsigned kBulk = 8, kRun = 128;
		std::vector<uint8_t> bulk(size_t{kBulk} * kRun * kPageSize), fault(kPageSize);
		std::vector<Waiter> bw(kBulk);
		for (unsigned i = 0; i < kBulk; i++)
			ch->read_pages(wire::TrafficClass::kBulk, a->id,
			               a->fa_offset + uint64_t{i} * kRun * kPageSize, kRun,
			               bulk.data() + size_t{i} * kRun * kPageSize, &bw[i]);
		Waiter fw;
		ch->read_pages(wire::TrafficClass::kFault, a->id, a->fa_offset + 1000 * kPageSize, 1,
		               fault.data(), &fw);
		c(drive(loop.get(),
		        [&] {
			        return fw.done && std::all_of(bw.begin(), bw.end(),
			                                      [](const Waiter &w) { return w.done; });
		        }),
		  "reads never completed");
		for (const Waiter &w : bw)
			c(w.status.is_ok(), "bulk read: " + w.status.to_string());
		c(fw.status.is_ok(), "fault read: " + fw.status.to_string());
		std::vector<uint8_t> want(bulk.size());
		c(store->read_pages(a->id, a->fa_offset, kBulk * kRun, want.data()).is_ok() &&
		          want == bulk,
		  "bulk bytes differ from the store's");
		want.resize(kPageSize);
		c(store->read_pages(a->id, a->fa_offset + 1000 * kPageSize, 1, want.data()).is_ok() &&
		          want == fault,
		  "fault bytes differ from the store's");
		c(ch->counters().reads - reads == bulk_rdma + 1 &&
		          ch->counters().bulk_to_tcp - to_tcp == kBulk - bulk_rdma,
		  "want " + std::to_string(bulk_rdma) + " bulk reads and the fault over RDMA, " +
		          std::to_string(kBulk - bulk_rdma) + " bulk reads over TCP: " +
		          counters(*ch) + " bulk_to_tcp " +
		          std::to_string(ch->counters().bulk_to_tcp - to_tcp));
	}
	if (bench) {
		// The same module over TCP (TLS): a second channel with RDMA off.
		TcpChannel::Options o;
		o.tls = *pager_tls;
		auto tcp = TcpChannel::connect(loop.get(), "127.0.0.1:" + std::to_string(m.port),
		                               kPagerId, o);
		if (!tcp) {
			std::printf("MEMFED-BENCH no TCP channel: %s\n",
			            tcp.status().to_string().c_str());
			return 1;
		}
		RdmaChannel::Options off;
		off.mode = RdmaChannel::Mode::kTcp;
		auto tcp_ch = RdmaChannel::wrap(loop.get(), std::move(*tcp), off);
		for (uint32_t pages : {1u, 16u}) {
			bench_reads(loop.get(), ch.get(), *a, "rdma", pages,
			            pages == 1 ? 2000 : 500);
			bench_reads(loop.get(), tcp_ch.get(), *a, "tcp", pages,
			            pages == 1 ? 2000 : 500);
		}
		std::printf("MEMFED-BENCH (RDMA path: %s)\n", counters(*ch).c_str());
		return 0;
	}
	{
		Lap lap("rdma-read-outside-extent-refused");
		Check c("rdma-read-outside-extent-refused");
		std::vector<uint8_t> buf(2 * kPageSize);
		uint64_t refused = ch->counters().refused;
		Status st = read(loop.get(), ch.get(), a->id,
		                 a->fa_offset + a->size_bytes - kPageSize, 2, buf.data());
		c(st.code() == Code::kOutOfRange, "past the end: " + st.to_string());
		st = read(loop.get(), ch.get(), a->id, a->fa_offset - kPageSize, 1, buf.data());
		c(st.code() == Code::kOutOfRange, "before the start: " + st.to_string());
		c(ch->counters().refused == refused + 2, "not counted: " + counters(*ch));
	}
	{
		Lap lap("rdma-forged-key-refused");
		Check c("rdma-forged-key-refused");
		uint64_t errors = ch->counters().errors;
		uint64_t reads = ch->counters().reads;
		uint64_t key_refusals = m.service->refusals().rdma_key;
		const RdmaChannel::Extent *e = ch->extent(a->id);
		if (c(e != nullptr, "region a not known"))
			ch->set_keys_for_test(a->id, e->data_rkey ^ 0x00a5a500,
			                      e->meta_rkey ^ 0x00a5a500);
		std::vector<uint8_t> got(4 * kPageSize), want(4 * kPageSize);
		Status st = read(loop.get(), ch.get(), a->id, a->fa_offset + 8 * kPageSize, 4,
		                 got.data());
		c(store->read_pages(a->id, a->fa_offset + 8 * kPageSize, 4, want.data()).is_ok(),
		  "store read");
		c(st.is_ok() && got == want, "read not served over TCP: " + st.to_string());
		c(ch->counters().errors == errors + 1 && ch->counters().reads == reads &&
		          !ch->rdma_up(),
		  "the forged key was not refused: " + counters(*ch));
		c(key_refusals_reach(loop.get(), m, key_refusals + 1),
		  "the module did not count the forged key (rdma_key refusals " +
		          std::to_string(m.service->refusals().rdma_key) + ")");
		c(rdma_comes_back(loop.get(), ch.get()),
		  "RDMA did not come back: " + ch->rdma_why());
		random_reads(loop.get(), ch.get(), store, *a, 20, c);
		c(ch->counters().reads > reads,
		  "no RDMA reads after reconnecting: " + counters(*ch));
	}
	{
		// Keys are per region: region k's keys at region a's addresses are
		// refused by the device, although both are the pager's to read.
		Lap lap("rdma-key-per-region");
		Check c("rdma-key-per-region");
		auto k = store->create_region("k", 16 * kPageSize, 0, 0600);
		c(k.is_ok() && grant_read(store, "k", pager_key->pub).is_ok(),
		  "create and grant k: " + k.status().to_string());
		c(learn_region(loop.get(), ch.get(), *k) && learn_region(loop.get(), ch.get(), *a),
		  "extents never known");
		const RdmaChannel::Extent *ek = ch->extent(k->id);
		const RdmaChannel::Extent *ea = ch->extent(a->id);
		if (c(ek != nullptr && ea != nullptr, "no keys")) {
			c(ek->data_rkey != ea->data_rkey && ek->meta_rkey != ea->meta_rkey,
			  "two regions share a key");
			auto mk = m.rdma->keys(k->id);
			c(mk && mk->data_rkey == ek->data_rkey && mk->data_addr == ek->data_addr,
			  "the module's registration of k is not the one handed out");
			ch->set_keys_for_test(a->id, ek->data_rkey, ek->meta_rkey);
		}
		uint64_t errors = ch->counters().errors, reads = ch->counters().reads;
		uint64_t key_refusals = m.service->refusals().rdma_key;
		std::vector<uint8_t> got(2 * kPageSize, 0xee), want(2 * kPageSize);
		Status st = read(loop.get(), ch.get(), a->id, a->fa_offset + 3 * kPageSize, 2,
		                 got.data());
		c(store->read_pages(a->id, a->fa_offset + 3 * kPageSize, 2, want.data()).is_ok(),
		  "store read");
		// Nothing came by RDMA: the read was answered by TCP.
		c(ch->counters().errors == errors + 1 && ch->counters().reads == reads,
		  "region k's key read region a: " + counters(*ch));
		c(st.is_ok() && got == want, "read not served over TCP: " + st.to_string());
		c(key_refusals_reach(loop.get(), m, key_refusals + 1),
		  "the module did not count the misused key");
		c(rdma_comes_back(loop.get(), ch.get()),
		  "RDMA did not come back: " + ch->rdma_why());
		random_reads(loop.get(), ch.get(), store, *a, 5, c);
	}
	{
		Lap lap("rdma-stale-key-after-delete");
		Check c("rdma-stale-key-after-delete");
		auto b = store->create_region("b", 64 * kPageSize, 0, 0600, nullptr, {},
		                              pager_key->pub);
		c(b.is_ok(), "create b: " + b.status().to_string());
		std::vector<uint8_t> page(kPageSize), got(kPageSize);
		fill(page.data(), 7, 1);
		c(store->write_pages(b->id, b->fa_offset, 1, page.data()).is_ok(), "store write");
		c(store->write_pages(b->id, b->fa_offset + 9 * kPageSize, 1, page.data()).is_ok(),
		  "store write");
		c(learn_region(loop.get(), ch.get(), *b), "extent never known");
		uint64_t reads = ch->counters().reads;
		c(read(loop.get(), ch.get(), b->id, b->fa_offset, 1, got.data()).is_ok() &&
		          ch->counters().reads == reads + 1 && got == page,
		  "region b not read over RDMA: " + counters(*ch));

		// A truncate (here the module node's own, through the store, as
		// its control socket does) revokes b's keys: the page past the end
		// reads zeros, over TCP after the old key failed, then over RDMA
		// with the new keys.
		uint64_t errors = ch->counters().errors;
		uint64_t key_refusals = m.service->refusals().rdma_key;
		auto known = [&](uint32_t id) {
			const RdmaChannel::Extent *e = ch->extent(id);
			return e != nullptr ? *e : RdmaChannel::Extent{};
		};
		RdmaChannel::Extent old = known(b->id);
		c(store->set_length("b", 4 * kPageSize, false).is_ok(), "truncate b");
		c(!m.rdma->keys(b->id), "b's keys outlived its truncate");
		Status st = read(loop.get(), ch.get(), b->id, b->fa_offset + 9 * kPageSize, 1,
		                 got.data());
		c(st.is_ok() && store::page_is_zero(got.data()),
		  "page past the truncate: " + st.to_string());
		c(ch->counters().errors == errors + 1, "the pre-truncate key still worked");
		c(key_refusals_reach(loop.get(), m, key_refusals + 1),
		  "the module did not count the stale key");
		c(rdma_comes_back(loop.get(), ch.get()),
		  "RDMA did not come back: " + ch->rdma_why());
		c(learn_region(loop.get(), ch.get(), *b), "extent never known again");
		const RdmaChannel::Extent *now = ch->extent(b->id);
		c(now != nullptr &&
		          (now->data_rkey != old.data_rkey || now->meta_rkey != old.meta_rkey),
		  "no new keys after the truncate");
		reads = ch->counters().reads;
		c(read(loop.get(), ch.get(), b->id, b->fa_offset, 1, got.data()).is_ok() &&
		          ch->counters().reads == reads + 1 && got == page,
		  "region b not read over RDMA with its new keys: " + counters(*ch));

		// Deleted over the wire: its keys die at once.
		old = known(b->id);
		uint64_t revocations = m.rdma->counters().revocations;
		Waiter w;
		wire::Header h{};
		h.type = uint8_t(wire::MsgType::kRegionDelete);
		h.tclass = uint8_t(wire::TrafficClass::kControl);
		uint8_t name[2] = {1, 'b'};
		ch->call(h, name, &w);
		c(drive(loop.get(), [&] { return w.done; }) && w.status.is_ok(),
		  "delete: " + w.status.to_string());
		c(m.rdma->counters().revocations == revocations + 1 && !m.rdma->keys(b->id),
		  "b's keys outlived its delete");
		errors = ch->counters().errors;
		key_refusals = m.service->refusals().rdma_key;
		st = read(loop.get(), ch.get(), b->id, b->fa_offset, 1, got.data());
		c(st.code() == Code::kNotFound, "read of a deleted region: " + st.to_string());
		c(ch->counters().errors == errors + 1,
		  "the old key still worked: " + counters(*ch));
		c(key_refusals_reach(loop.get(), m, key_refusals + 1),
		  "the module did not count the dead key");
		c(rdma_comes_back(loop.get(), ch.get()),
		  "RDMA did not come back: " + ch->rdma_why());

		// A region made in the same space: new keys, its own zeros, then
		// its own bytes.
		auto n = store->create_region("n", 64 * kPageSize, 0, 0600, nullptr, {},
		                              pager_key->pub);
		c(n.is_ok(), "create n: " + n.status().to_string());
		if (n && n->fa_offset != old.fa)
			std::printf("MEMFED-INFO rdma-stale-key-after-delete: region n at FA %lu, "
			            "not b's %lu\n",
			            (unsigned long)n->fa_offset, (unsigned long)old.fa);
		c(learn_region(loop.get(), ch.get(), *n), "extent of n never known");
		const RdmaChannel::Extent *en = ch->extent(n->id);
		c(en != nullptr && en->data_rkey != old.data_rkey && en->meta_rkey != old.meta_rkey,
		  "region n got b's keys");
		reads = ch->counters().reads;
		std::vector<uint8_t> ten(10 * kPageSize, 0xee);
		c(read(loop.get(), ch.get(), n->id, n->fa_offset, 10, ten.data()).is_ok() &&
		          ch->counters().reads == reads + 1,
		  "region n not read over RDMA: " + counters(*ch));
		c(std::all_of(ten.begin(), ten.end(), [](uint8_t x) { return x == 0; }),
		  "region n shows bytes it never had");
		fill(page.data(), 11, 3);
		c(store->write_pages(n->id, n->fa_offset + 9 * kPageSize, 1, page.data()).is_ok(),
		  "store write n");
		c(read(loop.get(), ch.get(), n->id, n->fa_offset + 9 * kPageSize, 1, got.data())
		                  .is_ok() &&
		          ch->counters().reads == reads + 2 && got == page,
		  "region n's bytes not read over RDMA: " + counters(*ch));
	}
	{
		// RDMA_REGION gives a region's keys only to a node that may READ it,
		// refused and counted as a READ; a revoked grant kills the keys.
		Lap lap("rdma-region-needs-read-right");
		Check c("rdma-region-needs-read-right");
		auto g = store->create_region("g", 16 * kPageSize, 0, 0600);
		c(g.is_ok(), "create g: " + g.status().to_string());
		std::vector<uint8_t> page(kPageSize), got(kPageSize);
		fill(page.data(), 5, 9);
		c(store->write_pages(g->id, g->fa_offset, 1, page.data()).is_ok(), "store write");
		uint64_t read_refusals = m.service->refusals().read;
		uint64_t refused_here = m.rdma->counters().refused;
		Waiter w;
		wire::Header h{};
		h.type = uint8_t(wire::MsgType::kRdmaRegion);
		h.tclass = uint8_t(wire::TrafficClass::kControl);
		h.region_id = g->id;
		ch->call(h, {}, &w);
		c(drive(loop.get(), [&] { return w.done; }) && w.status.code() == Code::kPermission,
		  "RDMA_REGION without a grant: " + w.status.to_string());
		c(m.service->refusals().read == read_refusals + 1,
		  "the refusal was not counted as a read refusal");
		c(m.rdma->counters().refused == refused_here && !m.rdma->keys(g->id),
		  "a refused region was registered");
		// Through the channel: the read goes over TCP, which refuses it.
		Status st = read(loop.get(), ch.get(), g->id, g->fa_offset, 1, got.data());
		c(st.code() == Code::kPermission, "read without a grant: " + st.to_string());
		drive(loop.get(), [&] { return m.service->refusals().read >= read_refusals + 3; });
		c(!ch->knows_region(g->id), "keys given without a grant");

		c(grant_read(store, "g", pager_key->pub).is_ok(), "grant");
		usleep(150 * 1000); // the channel asks a refused region again after retry_ms
		c(learn_region(loop.get(), ch.get(), *g), "no keys after the grant");
		uint64_t reads = ch->counters().reads;
		c(read(loop.get(), ch.get(), g->id, g->fa_offset, 1, got.data()).is_ok() &&
		          ch->counters().reads == reads + 1 && got == page,
		  "g not read over RDMA after the grant: " + counters(*ch));

		uint64_t errors = ch->counters().errors;
		uint64_t key_refusals = m.service->refusals().rdma_key;
		c(store->set_grant("g", AccessGrant{pager_key->pub, kAnyUid, 0}).is_ok(), "revoke");
		c(!m.rdma->keys(g->id), "g's keys outlived the revoke");
		st = read(loop.get(), ch.get(), g->id, g->fa_offset, 1, got.data());
		c(st.code() == Code::kPermission, "read after the revoke: " + st.to_string());
		c(ch->counters().errors == errors + 1 && ch->counters().reads == reads + 1,
		  "the revoked key still worked: " + counters(*ch));
		c(key_refusals_reach(loop.get(), m, key_refusals + 1),
		  "the module did not count the revoked key");
		c(rdma_comes_back(loop.get(), ch.get()),
		  "RDMA did not come back: " + ch->rdma_why());
		st = read(loop.get(), ch.get(), g->id, g->fa_offset, 1, got.data());
		c(st.code() == Code::kPermission, "read after the revoke: " + st.to_string());
		c(!ch->knows_region(g->id) && !m.rdma->keys(g->id), "keys given after the revoke");
		random_reads(loop.get(), ch.get(), store, *a, 5, c);
	}
	{
		Lap lap("rdma-bad-token-refused");
		Check c("rdma-bad-token-refused");
		uint64_t refused = m.rdma->counters().refused;
		wire::WireRdmaHello h{wire::kRdmaHelloMagic, wire::kWireVersion, {}};
		std::memset(h.token, 0x42, sizeof(h.token));
		c(connect_rejected(m.rdma->endpoint(), &h, sizeof(h)), "forged token accepted");
		uint8_t junk[7] = {1, 2, 3, 4, 5, 6, 7};
		c(connect_rejected(m.rdma->endpoint(), junk, sizeof(junk)), "junk hello accepted");
		c(connect_rejected(m.rdma->endpoint(), nullptr, 0), "empty hello accepted");
		// Random private data of random lengths (rdma_cm carries up to 56
		// bytes): every one refused, and the server keeps serving.
		std::mt19937 rng(11);
		constexpr int kFuzz = 20;
		for (int i = 0; i < kFuzz && c.ok(); i++) {
			uint8_t blob[56];
			for (auto &b : blob)
				b = uint8_t(rng());
			if (i % 2 == 0) // a well-formed hello with a guessed token
				std::memcpy(blob, &h, 8);
			c(connect_rejected(m.rdma->endpoint(), blob, uint8_t(1 + rng() % 56)),
			  "random private data accepted (case " + std::to_string(i) + ")");
		}
		c(m.rdma->counters().refused == refused + 3 + kFuzz, "refusals not counted");
		c(rdma_comes_back(loop.get(), ch.get()),
		  "RDMA not up after the refusals: " + ch->rdma_why());
	}
	{
		Lap lap("rdma-auto-without-rdma");
		Check c("rdma-auto-without-rdma");
		TcpChannel::Options o;
		o.tls = *pager_tls;
		auto tcp = TcpChannel::connect(
		        loop.get(), "127.0.0.1:" + std::to_string(m.plain_port), kPagerId, o);
		if (c(tcp.is_ok(), "tcp: " + tcp.status().to_string())) {
			auto plain = RdmaChannel::wrap(loop.get(), std::move(*tcp), {});
			random_reads(loop.get(), plain.get(), store, *a, 5, c);
			c(!plain->rdma_up() && !plain->rdma_connecting() &&
			          plain->counters().connects == 0 && plain->counters().reads == 0,
			  "RDMA used with a module that does not offer it: " + counters(*plain));
		}
	}
	{
		Lap lap("rdma-key-needs-authentication");
		Check c("rdma-key-needs-authentication");
		uint64_t refused = m.rdma->counters().refused;
		auto tcp = TcpChannel::connect(
		        loop.get(), "127.0.0.1:" + std::to_string(m.notls_port), kPagerId);
		if (c(tcp.is_ok(), "tcp: " + tcp.status().to_string())) {
			Waiter w;
			wire::Header h{};
			h.type = uint8_t(wire::MsgType::kRdmaConnect);
			h.tclass = uint8_t(wire::TrafficClass::kControl);
			(*tcp)->call(h, {}, &w);
			c(drive(loop.get(), [&] { return w.done; }) &&
			          w.status.code() == Code::kPermission,
			  "RDMA_CONNECT without TLS: " + w.status.to_string());
			h.type = uint8_t(wire::MsgType::kRdmaRegion);
			h.region_id = a->id;
			Waiter w2;
			(*tcp)->call(h, {}, &w2);
			c(drive(loop.get(), [&] { return w2.done; }) &&
			          w2.status.code() == Code::kPermission,
			  "RDMA_REGION without TLS: " + w2.status.to_string());
			c(m.rdma->counters().refused == refused + 2, "refusals not counted");
		}
	}
	{
		Lap lap("rdma-torn-read");
		Check c("rdma-torn-read");
		constexpr uint64_t kPages = 16;
		auto t = store->create_region("t", kPages * kPageSize, 0, 0600);
		c(t.is_ok() && grant_read(store, "t", pager_key->pub).is_ok(),
		  "create and grant t: " + t.status().to_string());
		std::vector<uint8_t> page(kPageSize);
		for (uint64_t p = 0; p < kPages; p++) {
			fill(page.data(), p, 1);
			c(store->write_pages(t->id, t->fa_offset + p * kPageSize, 1, page.data())
			          .is_ok(),
			  "store write");
		}
		c(read(loop.get(), ch.get(), t->id, t->fa_offset, 1, page.data()).is_ok(),
		  "read t");
		c(drive(loop.get(), [&] { return ch->knows_region(t->id); }), "extent never known");
		std::atomic<bool> stop{false};
		std::atomic<uint64_t> writes{0};
		std::thread writer([&] {
			std::vector<uint8_t> buf(kPageSize);
			uint64_t v = 2;
			while (!stop.load()) {
				uint64_t p = v % kPages;
				fill(buf.data(), p, v++);
				if (!store->write_pages(t->id, t->fa_offset + p * kPageSize, 1,
				                        buf.data()))
					break;
				writes++;
			}
		});
		uint64_t torn0 = ch->counters().torn_retries, reads0 = ch->counters().reads;
		std::mt19937 rng(7);
		for (int i = 0; i < 400 && c.ok(); i++) {
			uint32_t n = 1 + rng() % 4;
			uint64_t first = rng() % (kPages - n + 1);
			std::vector<uint8_t> got(n * kPageSize);
			Status st = read(loop.get(), ch.get(), t->id,
			                 t->fa_offset + first * kPageSize, n, got.data());
			c(st.is_ok(), "read: " + st.to_string());
			for (uint32_t k = 0; k < n && c.ok(); k++) {
				uint64_t w0;
				std::memcpy(&w0, &got[k * kPageSize], 8);
				c(w0 >> 32 == first + k, "page " + std::to_string(first + k) +
				                                 " holds another page's pattern");
				for (size_t o = 8; o < kPageSize && c.ok(); o += 8) {
					uint64_t w;
					std::memcpy(&w, &got[k * kPageSize + o], 8);
					c(w == w0, "torn page " + std::to_string(first + k) +
					                   " delivered: versions " +
					                   std::to_string(w0 & 0xffffffff) +
					                   " and " +
					                   std::to_string(w & 0xffffffff));
				}
			}
		}
		stop = true;
		writer.join();
		c(ch->counters().reads > reads0, "no reads over RDMA: " + counters(*ch));
		std::printf("MEMFED-INFO rdma-torn-read: %lu writes meanwhile, %lu torn-read "
		            "retries; %s\n",
		            (unsigned long)writes.load(),
		            (unsigned long)(ch->counters().torn_retries - torn0),
		            counters(*ch).c_str());
	}
	// Write-back over RDMA: region "w" belongs to the pager's node.
	auto wreg =
	        store->create_region("w", 256 * kPageSize, 0, 0600, nullptr, {}, pager_key->pub);
	std::vector<uint8_t> wmodel(256 * kPageSize, 0);
	std::vector<uint64_t> wversions(256, 0);
	std::unique_ptr<Check> write_back; // its last check is the pool's, at the end
	{
		Lap lap("rdma-write-back");
		write_back = std::make_unique<Check>("rdma-write-back");
		Check &c = *write_back;
		c(wreg.is_ok(), "create w: " + wreg.status().to_string());
		usleep(150 * 1000);
		c(ch->rdma_up() || rdma_comes_up(loop.get(), ch.get()),
		  "RDMA not up: " + ch->rdma_why());
		c(ch->rdma_writes(), "the module takes no writes over RDMA");
		uint64_t w0 = ch->counters().writes, mw0 = m.rdma->counters().writes.writes;
		std::mt19937_64 rng(5);
		uint64_t issued = 0;
		for (int round = 0; round < 25 && c.ok(); round++) {
			std::vector<std::unique_ptr<TestWrite>> ws;
			for (int k = 0; k < 8; k++)
				ws.push_back(
				        random_write(rng, 256, 0, 16, uint64_t(round) * 8 + k + 1));
			issue_writes(ch.get(), *wreg, ws, wmodel, wversions);
			issued += ws.size();
			c(drive(loop.get(), [&] { return all_done(ws); }),
			  "writes never completed");
			for (auto &t : ws)
				c(t->w.status.is_ok(), "write failed: " + t->w.status.to_string());
		}
		c(ch->counters().writes - w0 == issued && ch->counters().write_fallbacks == 0,
		  "not every write went over RDMA: " + write_counters(*ch, *m.rdma));
		c(m.rdma->counters().writes.writes - mw0 == issued,
		  "the module did not count them as RDMA writes: " + write_counters(*ch, *m.rdma));
		// Read back over RDMA (once the extent is known), over TCP, and from the store.
		std::vector<uint8_t> got(256 * kPageSize);
		c(read(loop.get(), ch.get(), wreg->id, wreg->fa_offset, 1, got.data()).is_ok(),
		  "first read of w");
		c(drive(loop.get(), [&] { return ch->knows_region(wreg->id); }),
		  "extent never known");
		uint64_t reads = ch->counters().reads;
		Status st = read(loop.get(), ch.get(), wreg->id, wreg->fa_offset, 256, got.data());
		c(st.is_ok() && ch->counters().reads == reads + 1,
		  "read over RDMA: " + st.to_string());
		c(got == wmodel, "bytes read over RDMA differ from the last writes");
		Waiter tw;
		std::fill(got.begin(), got.end(), 0);
		ch->tcp()->read_pages(wire::TrafficClass::kFault, wreg->id, wreg->fa_offset, 256,
		                      got.data(), &tw);
		c(drive(loop.get(), [&] { return tw.done; }) && tw.status.is_ok(),
		  "read over TCP: " + tw.status.to_string());
		c(got == wmodel, "bytes read over TCP differ from the last writes");
		std::printf("MEMFED-INFO rdma-write-back: %lu writes; %s\n", (unsigned long)issued,
		            write_counters(*ch, *m.rdma).c_str());
	}
	{
		Lap lap("rdma-write-malformed-refused");
		Check c("rdma-write-malformed-refused");
		TcpChannel::Options o;
		o.tls = *pager_tls;
		auto tcp = TcpChannel::connect(loop.get(), "127.0.0.1:" + std::to_string(m.port),
		                               kPagerId, o);
		wire::WireRdmaConnect rc{};
		if (c(tcp.is_ok(), "tcp: " + tcp.status().to_string())) {
			struct : Completion {
				void on_reply(const Status &st, const wire::Header &,
				              std::span<const uint8_t> p) override
				{
					done = true;
					status = st;
					bytes.assign(p.begin(), p.end());
				}
				bool done = false;
				Status status;
				std::vector<uint8_t> bytes;
			} w;
			wire::Header h{};
			h.type = uint8_t(wire::MsgType::kRdmaConnect);
			h.tclass = uint8_t(wire::TrafficClass::kControl);
			(*tcp)->call(h, {}, &w);
			c(drive(loop.get(), [&] { return w.done; }) && w.status.is_ok() &&
			          w.bytes.size() == sizeof(rc),
			  "RDMA_CONNECT: " + w.status.to_string());
			if (w.bytes.size() == sizeof(rc))
				std::memcpy(&rc, w.bytes.data(), sizeof(rc));
			c(rc.write_depth > 0, "the module offers no RDMA writes");
		}
		RawQp q;
		Status st = c.ok() ? q.connect(rc) : Status(Code::kUnavailable, "no token");
		c(st.is_ok(), "raw queue pair: " + st.to_string());
		auto before = m.rdma->counters().writes;
		std::vector<uint8_t> snapshot(16 * kPageSize);
		c(store->read_pages(wreg->id, wreg->fa_offset, 16, snapshot.data()).is_ok(),
		  "store");
		uint64_t fa = wreg->fa_offset;
		struct Bad {
			const char *what;
			std::vector<uint8_t> msg;
			Code want;
		};
		std::vector<Bad> bad;
		auto good = write_message(wreg->id, fa, 2, 1001, 0xee);
		bad.push_back(
		        {"truncated header", {good.begin(), good.begin() + 40}, Code::kProtocol});
		bad.push_back(
		        {"truncated payload", {good.begin(), good.end() - 100}, Code::kProtocol});
		auto longer = good;
		longer.resize(longer.size() + 512, 0xee);
		bad.push_back({"longer than its header says", longer, Code::kProtocol});
		auto crc = good;
		crc[wire::kHeaderSize + 7] ^= 0xff;
		bad.push_back({"payload crc", crc, Code::kProtocol});
		auto hdr = good;
		hdr[48] = 3; // count 3 with 2 pages: the header crc fails first
		bad.push_back({"count against payload (header crc)", hdr, Code::kProtocol});
		{
			// Count 3, sealed, with 2 pages of payload.
			wire::Header h = wire::decode_header(good.data());
			h.count = 3;
			auto m2 = good;
			wire::encode_header_raw(h, m2.data());
			bad.push_back({"count against payload", m2, Code::kProtocol});
		}
		{
			wire::Header h = wire::decode_header(good.data());
			h.type = uint8_t(wire::MsgType::kRegionDelete);
			h.count = 0;
			std::vector<uint8_t> m2(wire::kHeaderSize);
			wire::encode_header(h, {}, m2.data());
			bad.push_back({"not a write", m2, Code::kProtocol});
		}
		bad.push_back({"unknown region", write_message(9999, fa, 2, 1002, 0xee),
		               Code::kNotFound});
		bad.push_back(
		        {"outside the region",
		         write_message(wreg->id, fa + wreg->size_bytes - kPageSize, 2, 1003, 0xee),
		         Code::kOutOfRange});
		bad.push_back({"another region's pages",
		               write_message(wreg->id, a->fa_offset, 1, 1004, 0xee),
		               Code::kOutOfRange});
		for (auto &b : bad) {
			if (!c.ok())
				break;
			wire::Header ans{};
			std::string text;
			Status x = q.exchange(b.msg, &ans, &text);
			c(x.is_ok(), std::string(b.what) + ": no answer: " + x.to_string());
			c(ans.status != 0, std::string(b.what) + ": accepted");
			if (b.want == Code::kProtocol)
				c(ans.status == uint16_t(b.want),
				  std::string(b.what) + ": status " + std::to_string(ans.status) +
				          " (" + text + ")");
			std::printf("MEMFED-INFO rdma-write-malformed-refused: %s: status %u: %s\n",
			            b.what, ans.status, text.c_str());
		}
		auto after = m.rdma->counters().writes;
		c(after.malformed - before.malformed == 7,
		  "malformed not counted: " + write_counters(*ch, *m.rdma));
		c(after.writes == before.writes, "a malformed write was applied");
		std::vector<uint8_t> now(16 * kPageSize);
		c(store->read_pages(wreg->id, wreg->fa_offset, 16, now.data()).is_ok() &&
		          now == snapshot,
		  "the pages changed");
		// The queue pair and the server still serve: a good write is applied.
		wire::Header ans{};
		std::string text;
		auto ok_msg = write_message(wreg->id, fa + 200 * kPageSize, 1, 1005, 0x77);
		c(q.exchange(ok_msg, &ans, &text).is_ok() && ans.status == 0 &&
		          ans.request_id == 1005,
		  "a good write after the bad ones: " + text);
		std::memset(wmodel.data() + 200 * kPageSize, 0x77, kPageSize);
		std::vector<uint8_t> pg(kPageSize);
		c(store->read_pages(wreg->id, fa + 200 * kPageSize, 1, pg.data()).is_ok() &&
		          std::memcmp(pg.data(), wmodel.data() + 200 * kPageSize, kPageSize) == 0,
		  "the good write was not applied");
		// Longer than any receive buffer: the device refuses it (the queue
		// pair breaks), the module counts it, applies nothing and serves on.
		auto huge = write_message(wreg->id, fa, 1, 1006, 0x55);
		huge.resize(wire::kRdmaWriteMessageMax + 64, 0x55);
		auto before_huge = m.rdma->counters().writes;
		c(!q.exchange(huge, &ans, &text).is_ok(),
		  "a SEND longer than a message was answered");
		// Counted as malformed (a length error) or as a device error,
		// whichever status the device gives the module's receive.
		auto refused_huge = [&] {
			auto n = m.rdma->counters().writes;
			return n.malformed > before_huge.malformed ||
			       n.qp_errors > before_huge.qp_errors;
		};
		for (int i = 0; i < 200 && !refused_huge(); i++)
			usleep(20 * 1000);
		c(refused_huge() && m.rdma->counters().writes.writes == before_huge.writes,
		  "the long SEND was not refused and counted: " + write_counters(*ch, *m.rdma));
	}
	{
		Lap lap("rdma-write-fallback");
		Check c("rdma-write-fallback");
		usleep(150 * 1000);
		c(ch->rdma_up() || rdma_comes_up(loop.get(), ch.get()),
		  "RDMA not up: " + ch->rdma_why());
		auto before = ch->counters();
		std::mt19937_64 rng(9);
		std::vector<std::unique_ptr<TestWrite>> ws;
		// Plain writes to pages 0..127, versioned ones to 128..255, with
		// overlaps; the version grows with the issue order.
		uint64_t version = 1000;
		for (int k = 0; k < 40; k++) {
			bool versioned = k % 2 == 1;
			auto t = random_write(rng, 128, versioned ? ++version : 0, 8, 5000 + k);
			if (versioned) {
				t->first += 128;
				for (uint32_t i = 0; i < t->count; i++)
					fill(t->bytes.data() + size_t{i} * kPageSize, t->first + i,
					     5000 + k);
			}
			ws.push_back(std::move(t));
		}
		issue_writes(ch.get(), *wreg, ws, wmodel, wversions);
		// Writes are in flight: a READ with a forged key breaks the queue pair.
		c(ch->writes_in_flight_rdma() > 0, "no write in flight over RDMA");
		break_with_writes_in_flight(loop.get(), ch.get(), *wreg, ws, c);
		auto k = ch->counters();
		c(k.errors > before.errors && k.fences > before.fences &&
		          k.write_fallbacks > before.write_fallbacks,
		  "the queue pair did not break with writes in flight: " +
		          write_counters(*ch, *m.rdma));
		std::vector<uint8_t> got(256 * kPageSize);
		c(store->read_pages(wreg->id, wreg->fa_offset, 256, got.data()).is_ok(),
		  "store read");
		for (uint64_t p = 0; p < 256 && c.ok(); p++)
			c(std::memcmp(got.data() + p * kPageSize, wmodel.data() + p * kPageSize,
			              kPageSize) == 0,
			  "page " + std::to_string(p) + " is not its last write's");
		std::vector<uint64_t> vs(128);
		c(store->read_versions(wreg->id, wreg->fa_offset + 128 * kPageSize, 128, vs.data())
		          .is_ok(),
		  "read versions");
		for (uint64_t p = 0; p < 128 && c.ok(); p++)
			c(vs[p] == wversions[128 + p],
			  "page " + std::to_string(128 + p) + " at version " +
			          std::to_string(vs[p]) + ", its last write's is " +
			          std::to_string(wversions[128 + p]));
		std::printf("MEMFED-INFO rdma-write-fallback: %s\n",
		            write_counters(*ch, *m.rdma).c_str());
		// RDMA comes back, and writes go over it again.
		usleep(150 * 1000);
		c(rdma_comes_up(loop.get(), ch.get()), "RDMA did not come back: " + ch->rdma_why());
		uint64_t w0 = ch->counters().writes;
		std::vector<std::unique_ptr<TestWrite>> more;
		for (int i = 0; i < 4; i++)
			more.push_back(random_write(rng, 128, 0, 4, 7000 + i));
		issue_writes(ch.get(), *wreg, more, wmodel, wversions);
		c(drive(loop.get(), [&] { return all_done(more); }), "writes never completed");
		c(ch->counters().writes == w0 + 4,
		  "writes not over RDMA after reconnecting: " + write_counters(*ch, *m.rdma));
	}
	{
		// A write the module received but had not handed to its write path
		// when the pager's fence came is dropped, never applied after the
		// re-issued copy (the module's receiver holds the messages here).
		Lap lap("rdma-write-fence-drops");
		Check c("rdma-write-fence-drops");
		std::vector<uint8_t> one(kPageSize);
		c(read(loop.get(), ch.get(), wreg->id, wreg->fa_offset, 1, one.data()).is_ok(),
		  "read of w");
		c(drive(loop.get(), [&] { return ch->knows_region(wreg->id); }),
		  "extent never known");
		c(ch->rdma_writes(), "writes not over RDMA");
		std::mutex gate_mu;
		std::condition_variable gate_cv;
		bool open = false;
		std::atomic<int> held{0};
		RdmaWriteReceiver *rx = m.rdma->writes_for_test();
		rx->set_receive_hook_for_test([&] {
			held++;
			std::unique_lock lk(gate_mu);
			gate_cv.wait_for(lk, std::chrono::seconds(30), [&] { return open; });
		});
		auto before = m.rdma->counters().writes;
		auto kb = ch->counters();
		std::vector<std::unique_ptr<TestWrite>> ws;
		for (uint64_t k = 0; k < 4; k++) {
			auto t = std::make_unique<TestWrite>();
			t->first = 32 + 8 * k;
			t->count = 2;
			t->bytes.resize(2 * kPageSize);
			for (uint32_t i = 0; i < 2; i++)
				fill(t->bytes.data() + i * kPageSize, t->first + i, 9000 + k);
			ws.push_back(std::move(t));
		}
		issue_writes(ch.get(), *wreg, ws, wmodel, wversions);
		c(drive(loop.get(), [&] { return held.load() > 0; }),
		  "the module never got a write");
		break_with_writes_in_flight(loop.get(), ch.get(), *wreg, ws, c);
		c(ch->counters().fences > kb.fences &&
		          ch->counters().write_fallbacks >= kb.write_fallbacks + 4,
		  "the writes were not fenced and re-issued: " + write_counters(*ch, *m.rdma));
		{
			std::lock_guard lk(gate_mu);
			open = true;
		}
		gate_cv.notify_all();
		for (int i = 0; i < 500 && m.rdma->counters().writes.dropped == before.dropped; i++)
			usleep(20 * 1000);
		rx->set_receive_hook_for_test(nullptr);
		auto after = m.rdma->counters().writes;
		c(after.dropped > before.dropped && after.writes == before.writes,
		  "the held write was not dropped: " + write_counters(*ch, *m.rdma));
		std::vector<uint8_t> got(256 * kPageSize);
		c(store->read_pages(wreg->id, wreg->fa_offset, 256, got.data()).is_ok() &&
		          got == wmodel,
		  "the pages are not the last writes'");
		std::printf("MEMFED-INFO rdma-write-fence-drops: %s\n",
		            write_counters(*ch, *m.rdma).c_str());
	}
	guest::run_rdma_channel_cases({loop.get(), store, pager_key->pub, *pager_tls,
	                               "127.0.0.1:" + std::to_string(m.port), kPagerId});
	ch.reset();
	if (write_back) {
		// The pool, closed, passes its consistency check.
		m.stop();
		auto rep = ModuleStore::check("/tmp/rdma-test.mfp");
		(*write_back)(rep.is_ok() && rep->clean,
		              "pool check: " +
		                      (rep.is_ok() ? (rep->problems.empty() ? std::string("?")
		                                                            : rep->problems.front())
		                                   : rep.status().to_string()));
		write_back.reset();
	}
	std::printf("MEMFED-INFO rdma: the RDMA cases took %.1f s\n",
	            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
	return 0;
}
