// memfed-bench-wire: 4 KiB page reads over TCP, memfed's transport against a
// raw io_uring baseline written for the purpose.
//
// raw:    a minimal io_uring ping-pong over loopback TCP, no memfed code: the
//         client sends 64-byte requests, the server answers each with 64 +
//         4096 bytes (the byte counts of a memfed READ of one page), copied
//         from a buffer of --span pages in the order memfed's READs take them,
//         so both pay the same memory traffic. The server is a separate
//         process when memfed's is (--target), a thread when it is one
//         (--self-serve): a switch between processes costs more than one
//         between threads.
// memfed: READ of one page through TcpChannel, against a module given by
//         --target (memfedd) or, with --self-serve, an in-process TcpServer
//         whose handler copies pages from memory.
// tls:    with --tls (and --self-serve), memfed plaintext is the baseline
//         and memfed over TLS 1.3 is measured against it: two in-process
//         TcpServers, one plaintext and one with a TlsContext, and two
//         TlsContexts with fresh Ed25519 keys that trust each other. The
//         runs alternate as raw and memfed do. It also times, on the
//         client vCPU, crc32c of a page (the wire's per-page check,
//         protocol.h), AES-128-GCM of a page, and the TLS records of one
//         READ through two TlsSessions in memory (what OpenSSL's record
//         layer costs with hot caches: a floor under TLS's depth-1 cost).
// Both run at depth 1 and 64 (requests in flight on one connection) and
// report p50/p99 latency, pages/s and the ratios measured/baseline.
//
// Where the threads run decides what a ratio says. Server and client on one
// vCPU: pages/s is 1 / (the CPU time both sides spend per page), so memfed's
// client-side work (the end-to-end crc of every page) counts against it as
// much as the module's. Server and client on their own vCPUs, as on two
// nodes: pages/s is set by the busier side, plus the cost of waking a halted
// vCPU, which this placement adds to every round trip (limits.md) and which
// is why depth 1 is measured on one vCPU.
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "daemon/common/crc32c.h"
#include "daemon/common/log.h"
#include "daemon/transport/endpoint.h"
#include "daemon/transport/tcp_channel.h"
#include "daemon/transport/tcp_server.h"
#include "daemon/trust/tls_context.h"
#include "daemon/trust/tls_session.h"

using namespace memfed;
using Clock = std::chrono::steady_clock;

namespace
{

constexpr size_t kReq = 64;
constexpr size_t kResp = 64 + 4096;

struct Options {
	std::string target;
	uint32_t region_id = 1;
	uint64_t fa_offset = 0;
	uint32_t span = 1;
	bool self_serve = false;
	double seconds = 2.0;
	int server_cpu = 0;
	int client_cpu = 0;
	bool pin = true;
	bool realtime = false; // SCHED_FIFO: builds sharing the vCPUs cannot preempt
	int repeat = 3;
	int depth = 0; // 0: both 1 and 64
	bool raw_only = false, memfed_only = false;
	bool tls = false; // memfed over TLS against memfed plaintext
	// A memfedd target speaks only TLS: this key, and the target's key.
	std::string key_file, trust_key;
	std::shared_ptr<trust::TlsContext> target_tls;
};

struct Stats {
	double p50_us = 0, p99_us = 0, pages_per_s = 0;
	double cpu_us_per_page = 0;    // this process: the client, and the server if a thread
	double client_us_per_page = 0; // the client's thread alone
	uint64_t n = 0;
};

double cpu_s(clockid_t clock)
{
	timespec ts;
	clock_gettime(clock, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

double process_cpu_s()
{
	return cpu_s(CLOCK_PROCESS_CPUTIME_ID);
}

// The calling thread's CPU time.
double thread_cpu_s()
{
	return cpu_s(CLOCK_THREAD_CPUTIME_ID);
}

void pin_self(const Options &o, int cpu)
{
	if (!o.pin)
		return;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) != 0)
		fprintf(stderr, "warning: cannot pin to cpu %d\n", cpu);
}

// Latency samples in ns, preallocated. Made and finished on the client's
// thread.
class Recorder
{
public:
	Recorder() : cpu0_(process_cpu_s()), thread_cpu0_(thread_cpu_s())
	{
		ns_.reserve(20'000'000);
	}
	void add(Clock::duration d)
	{
		if (ns_.size() < ns_.capacity())
			ns_.push_back(
			        std::chrono::duration_cast<std::chrono::nanoseconds>(d).count());
	}
	Stats finish(double seconds, uint64_t pages)
	{
		Stats s;
		s.n = ns_.size();
		s.pages_per_s = pages / seconds;
		s.cpu_us_per_page = pages ? (process_cpu_s() - cpu0_) * 1e6 / pages : 0;
		s.client_us_per_page = pages ? (thread_cpu_s() - thread_cpu0_) * 1e6 / pages : 0;
		if (ns_.empty())
			return s;
		auto pct = [&](double q) {
			size_t k = std::min(ns_.size() - 1, size_t(q * ns_.size()));
			std::nth_element(ns_.begin(), ns_.begin() + k, ns_.end());
			return ns_[k] / 1000.0;
		};
		s.p50_us = pct(0.50);
		s.p99_us = pct(0.99);
		return s;
	}

private:
	std::vector<int64_t> ns_;
	double cpu0_, thread_cpu0_;
};

void die(const char *what, int err)
{
	fprintf(stderr, "memfed-bench-wire: %s: %s\n", what, strerror(err));
	exit(1);
}

// ---- raw io_uring baseline ----

// Answers every 64-byte request on one connection with kResp bytes, the
// next of `pages` (span pages, cycled) after the request's 64.
void raw_server(int lfd, const Options &o, const std::vector<uint8_t> &pages)
{
	pin_self(o, o.server_cpu);
	fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) & ~O_NONBLOCK);
	int fd = accept(lfd, nullptr, nullptr);
	if (fd < 0)
		die("raw accept", errno);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, 1 /* TCP_NODELAY */, &one, sizeof(one));
	io_uring ring;
	if (int r = io_uring_queue_init(64, &ring, 0); r < 0)
		die("raw io_uring_queue_init", -r);
	std::vector<uint8_t> rx(256 * 1024), tx[2];
	tx[0].reserve(8 << 20);
	tx[1].reserve(8 << 20);
	uint64_t served = 0;
	size_t rx_len = 0, sent = 0;
	int fill = 0;
	bool sending = false;
	enum : uint64_t { kRecv = 1, kSend = 2 };
	auto arm_recv = [&] {
		io_uring_sqe *s = io_uring_get_sqe(&ring);
		io_uring_prep_recv(s, fd, rx.data() + rx_len, rx.size() - rx_len, 0);
		io_uring_sqe_set_data64(s, kRecv);
	};
	auto send_more = [&] {
		std::vector<uint8_t> &b = tx[1 - fill];
		io_uring_sqe *s = io_uring_get_sqe(&ring);
		io_uring_prep_send(s, fd, b.data() + sent, b.size() - sent, MSG_NOSIGNAL);
		io_uring_sqe_set_data64(s, kSend);
		sending = true;
	};
	auto flush = [&] {
		if (sending || tx[fill].empty())
			return;
		fill = 1 - fill;
		sent = 0;
		send_more();
	};
	arm_recv();
	for (;;) {
		io_uring_submit_and_wait(&ring, 1);
		io_uring_cqe *cqe;
		bool done = false;
		while (io_uring_peek_cqe(&ring, &cqe) == 0) {
			uint64_t what = io_uring_cqe_get_data64(cqe);
			int res = cqe->res;
			io_uring_cqe_seen(&ring, cqe);
			if (what == kRecv) {
				if (res <= 0) {
					done = true;
					break;
				}
				rx_len += res;
				size_t off = 0;
				for (; rx_len - off >= kReq; off += kReq) {
					auto &b = tx[fill];
					size_t at = b.size();
					b.resize(at + kResp);
					std::memcpy(&b[at], &rx[off], kReq);
					std::memcpy(&b[at + kReq],
					            &pages[(served++ % o.span) * 4096], 4096);
				}
				std::memmove(rx.data(), rx.data() + off, rx_len - off);
				rx_len -= off;
				flush();
				arm_recv();
			} else {
				sending = false;
				if (res < 0) {
					done = true;
					break;
				}
				sent += res;
				if (sent < tx[1 - fill].size()) {
					send_more();
				} else {
					tx[1 - fill].clear();
					flush();
				}
			}
		}
		if (done)
			break;
	}
	io_uring_queue_exit(&ring);
	close(fd);
}

Stats run_raw(const Options &o, unsigned depth)
{
	auto lfd = listen_tcp(*Endpoint::parse("127.0.0.1:0"));
	if (!lfd)
		die("raw listen", EADDRINUSE);
	uint16_t port = local_port(*lfd);
	std::vector<uint8_t> pages(size_t{o.span} * 4096, 0x5a);
	std::thread srv;
	pid_t child = -1;
	if (o.self_serve) {
		srv = std::thread([&] { raw_server(*lfd, o, pages); });
	} else {
		fflush(stdout);
		child = fork();
		if (child < 0)
			die("fork", errno);
		if (child == 0) {
			raw_server(*lfd, o, pages);
			_exit(0);
		}
	}
	pin_self(o, o.client_cpu);
	auto fd = connect_tcp(Endpoint{"127.0.0.1", port}, 5000);
	if (!fd)
		die("raw connect", ECONNREFUSED);
	io_uring ring;
	if (int r = io_uring_queue_init(64, &ring, 0); r < 0)
		die("raw client io_uring_queue_init", -r);
	std::vector<uint8_t> reqs(kReq * depth, 0x11);
	std::vector<uint8_t> rx(1 << 20);
	std::vector<Clock::time_point> sent_at(depth);
	Recorder rec;
	uint64_t issued = 0, completed = 0, rx_bytes = 0;
	unsigned to_send = depth, sending = 0;
	bool recv_armed = false;
	auto start = Clock::now();
	auto end = start + std::chrono::duration_cast<Clock::duration>(
	                           std::chrono::duration<double>(o.seconds));
	bool running = true;
	auto kick = [&] {
		if (sending || to_send == 0)
			return;
		auto now = Clock::now();
		for (unsigned i = 0; i < to_send; i++)
			sent_at[(issued + i) % depth] = now;
		issued += to_send;
		io_uring_sqe *s = io_uring_get_sqe(&ring);
		io_uring_prep_send(s, *fd, reqs.data(), kReq * to_send, MSG_NOSIGNAL);
		io_uring_sqe_set_data64(s, 2);
		sending = to_send;
		to_send = 0;
	};
	kick();
	while (running || completed < issued) {
		if (!recv_armed) {
			io_uring_sqe *s = io_uring_get_sqe(&ring);
			io_uring_prep_recv(s, *fd, rx.data(), rx.size(), 0);
			io_uring_sqe_set_data64(s, 1);
			recv_armed = true;
		}
		io_uring_submit_and_wait(&ring, 1);
		io_uring_cqe *cqe;
		while (io_uring_peek_cqe(&ring, &cqe) == 0) {
			uint64_t what = io_uring_cqe_get_data64(cqe);
			int res = cqe->res;
			io_uring_cqe_seen(&ring, cqe);
			if (res <= 0)
				die("raw client I/O", res ? -res : EPIPE);
			if (what == 2) {
				// Loopback sends of a few KiB complete whole.
				if (size_t(res) != kReq * sending)
					die("raw client short send", EIO);
				sending = 0;
			} else {
				recv_armed = false;
				rx_bytes += res;
				auto now = Clock::now();
				while (rx_bytes >= (completed + 1) * kResp) {
					rec.add(now - sent_at[completed % depth]);
					completed++;
					if (running)
						to_send++;
				}
				if (now >= end)
					running = false;
			}
		}
		if (running)
			kick();
	}
	double secs = std::chrono::duration<double>(Clock::now() - start).count();
	io_uring_queue_exit(&ring);
	close(*fd);
	if (srv.joinable())
		srv.join();
	if (child > 0)
		waitpid(child, nullptr, 0);
	close(*lfd);
	return rec.finish(secs, completed);
}

// ---- memfed TcpChannel ----

class MemHandler : public RequestHandler
{
public:
	MemHandler() : pool(256 * wire::kPageSize, 0x5a) {}
	void handle(const ConnInfo &, const wire::Header &req, std::span<const uint8_t> payload,
	            Reply &reply) override
	{
		size_t len = size_t{req.count} * wire::kPageSize;
		if (req.offset + len > pool.size())
			return reply.fail(Status(Code::kOutOfRange, "past the end of the pool"));
		if (req.type == uint8_t(wire::MsgType::kRead)) {
			auto out = reply.payload_buffer(len);
			std::memcpy(out.data(), &pool[req.offset], len);
		} else if (req.type == uint8_t(wire::MsgType::kWrite)) {
			std::memcpy(&pool[req.offset], payload.data(), len);
		} else {
			reply.fail(Status(Code::kInvalidArgument, "not supported by --self-serve"));
		}
	}
	std::vector<uint8_t> pool;
};

struct Reader : Completion {
	void on_reply(const Status &st, const wire::Header &, std::span<const uint8_t>) override;
	struct Run *run;
	unsigned slot;
	Clock::time_point sent;
};

struct Run {
	TcpChannel *ch;
	const Options *o;
	std::vector<Reader> readers;
	// Page-aligned, like the pager's fetch buffers: where a 4 KiB copy
	// lands relative to a page changes its speed by up to 1.5x here.
	std::unique_ptr<uint8_t, decltype(&free)> bufs{nullptr, &free};
	Recorder rec;
	uint64_t issued = 0, completed = 0;
	bool running = true;
	Clock::time_point end;
	Status error;
	// Like the raw client, one clock read per batch: the replies one
	// run_once() completes, and the requests they issue, share it.
	std::optional<Clock::time_point> batch_now;
	Clock::time_point now()
	{
		if (!batch_now)
			batch_now = Clock::now();
		return *batch_now;
	}

	void issue(Reader &r)
	{
		uint64_t off = o->fa_offset + (issued % o->span) * wire::kPageSize;
		issued++;
		r.sent = now();
		ch->read_pages(wire::TrafficClass::kFault, o->region_id, off, 1,
		               bufs.get() + size_t(r.slot) * wire::kPageSize, &r);
	}
};

void Reader::on_reply(const Status &st, const wire::Header &, std::span<const uint8_t>)
{
	auto now = run->now();
	if (!st.is_ok()) {
		run->error = st;
		run->running = false;
	}
	run->rec.add(now - sent);
	run->completed++;
	if (run->running && now >= run->end)
		run->running = false;
	if (run->running)
		run->issue(*this);
}

Stats run_memfed(const Options &o, const std::string &endpoint, unsigned depth,
                 std::shared_ptr<trust::TlsContext> tls = nullptr)
{
	pin_self(o, o.client_cpu);
	auto loop = EventLoop::create();
	if (!loop) {
		fprintf(stderr, "memfed-bench-wire: %s\n", loop.status().to_string().c_str());
		exit(1);
	}
	TcpChannel::Options copts;
	copts.tls = std::move(tls);
	auto ch = TcpChannel::connect(loop->get(), endpoint, ModuleId{0x02000000beef}, copts);
	if (!ch) {
		fprintf(stderr, "memfed-bench-wire: %s\n", ch.status().to_string().c_str());
		exit(1);
	}
	Run run;
	run.ch = ch->get();
	run.o = &o;
	run.readers.resize(depth);
	run.bufs.reset(static_cast<uint8_t *>(
	        aligned_alloc(wire::kPageSize, size_t{depth} * wire::kPageSize)));
	auto start = Clock::now();
	run.end = start + std::chrono::duration_cast<Clock::duration>(
	                          std::chrono::duration<double>(o.seconds));
	for (unsigned i = 0; i < depth; i++) {
		run.readers[i].run = &run;
		run.readers[i].slot = i;
		run.issue(run.readers[i]);
	}
	while (run.completed < run.issued) {
		run.batch_now.reset();
		(*loop)->run_once(-1);
	}
	double secs = std::chrono::duration<double>(Clock::now() - start).count();
	if (!run.error.is_ok()) {
		fprintf(stderr, "memfed-bench-wire: READ failed: %s\n",
		        run.error.to_string().c_str());
		exit(1);
	}
	ch->reset();
	return run.rec.finish(secs, run.completed);
}

// An in-process module for --self-serve, on its own (pinned) thread.
class SelfServer
{
public:
	explicit SelfServer(const Options &o, std::shared_ptr<trust::TlsContext> tls = nullptr)
	{
		std::promise<uint16_t> port;
		thread_ = std::thread([&, tls] {
			pin_self(o, o.server_cpu);
			auto loop = EventLoop::create();
			if (!loop)
				die("self-serve event loop", EIO);
			loop_ = loop->get();
			ServerIdentity id{ModuleId{0x020000000001}, wire::kCapModule,
			                  handler_.pool.size(), tls};
			auto srv = TcpServer::listen(loop_, "127.0.0.1:0", id, &handler_);
			if (!srv) {
				fprintf(stderr, "%s\n", srv.status().to_string().c_str());
				exit(1);
			}
			port.set_value((*srv)->port());
			loop_->run();
			srv->reset();
		});
		endpoint = "127.0.0.1:" + std::to_string(port.get_future().get());
	}
	~SelfServer()
	{
		loop_->stop();
		thread_.join();
	}
	std::string endpoint;

private:
	MemHandler handler_;
	EventLoop *loop_ = nullptr;
	std::thread thread_;
};

// Two TLS identities with fresh keys, each trusting the other: the
// module's and the client's.
struct TlsPair {
	std::shared_ptr<trust::TlsContext> server, client;
};

TlsPair make_tls_pair()
{
	auto make_key = [] {
		auto k = trust::generate_node_key();
		if (!k) {
			fprintf(stderr, "memfed-bench-wire: %s\n", k.status().to_string().c_str());
			exit(1);
		}
		return std::move(*k);
	};
	trust::NodeKey sk = make_key(), ck = make_key();
	auto context = [](const trust::NodeKey &own, const trust::NodeKey &peer, const char *name) {
		auto peers = std::make_shared<trust::TrustedPeers>(
		        std::vector<trust::TrustedPeer>{{peer.pub, name, ""}});
		auto c = trust::TlsContext::create(own, peers);
		if (!c) {
			fprintf(stderr, "memfed-bench-wire: %s\n", c.status().to_string().c_str());
			exit(1);
		}
		return *c;
	};
	return {context(sk, ck, "bench-client"), context(ck, sk, "bench-module")};
}

// CPU time of crc32c over one 4 KiB page (the wire's per-page check), in
// microseconds, on the calling (client) vCPU: the best of a few rounds.
double crc_us_per_page(const Options &o)
{
	pin_self(o, o.client_cpu);
	std::vector<uint8_t> pages(256 * wire::kPageSize, 0x5a);
	double best = 1e9;
	uint32_t sink = 0;
	for (int round = 0; round < 5; round++) {
		auto t0 = Clock::now();
		for (int k = 0; k < 20; k++)
			for (size_t p = 0; p < 256; p++)
				sink ^= crc32c(&pages[p * wire::kPageSize], wire::kPageSize);
		double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
		best = std::min(best, us / (20 * 256));
	}
	if (sink == 0x12345678) // keeps the loop
		printf(" ");
	return best;
}

// CPU time of AES-128-GCM (the suite TLS picks, through OpenSSL's EVP, as
// libssl uses it) over 16 KiB records, per 4 KiB page, in microseconds, on
// the client vCPU: the best of a few rounds. TLS pays it twice per page
// (the module encrypts, the client decrypts): a floor under its cost.
double gcm_us_per_page(const Options &o)
{
	pin_self(o, o.client_cpu);
	constexpr size_t kRecord = 16384;
	std::vector<uint8_t> in(kRecord, 0x5a), out(kRecord + 16);
	uint8_t key[16] = {1}, iv[12] = {2}, tag[16];
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	EVP_CIPHER *aes = EVP_CIPHER_fetch(nullptr, "AES-128-GCM", nullptr);
	if (!c || !aes || EVP_EncryptInit_ex2(c, aes, key, iv, nullptr) != 1)
		die("AES-128-GCM setup", EINVAL);
	double best = 1e9;
	for (int round = 0; round < 5; round++) {
		auto t0 = Clock::now();
		for (int k = 0; k < 64; k++) {
			int n = 0;
			iv[0] = uint8_t(k);
			if (EVP_EncryptInit_ex2(c, nullptr, nullptr, iv, nullptr) != 1 ||
			    EVP_EncryptUpdate(c, out.data(), &n, in.data(), int(kRecord)) != 1 ||
			    EVP_EncryptFinal_ex(c, out.data() + n, &n) != 1 ||
			    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag) != 1)
				die("AES-128-GCM", EIO);
		}
		double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
		best = std::min(best, us / (64 * (kRecord / wire::kPageSize)));
	}
	EVP_CIPHER_free(aes);
	EVP_CIPHER_CTX_free(c);
	return best;
}

// CPU time of the TLS records of one READ, through TlsSession and OpenSSL
// as the transport drives them but in memory (no socket) and with hot
// caches, in microseconds on the client vCPU, best of a few rounds: the
// request (64 bytes encrypted by the client, decrypted by the module) and
// the response (its header and page encrypted by the module, decrypted by
// the client into two buffers as TcpChannel does). Their sum is a floor
// under what TLS adds to a depth-1 READ on one vCPU; beyond the cipher on
// the page, it is OpenSSL's fixed cost per record.
struct RecordCost {
	double request_us = 0, response_us = 0;
};

RecordCost tls_record_us(const Options &o, const TlsPair &tls)
{
	pin_self(o, o.client_cpu);
	trust::TlsSession c(tls.client, trust::TlsRole::kClient, "bench-module");
	trust::TlsSession s(tls.server, trust::TlsRole::kServer, "bench-client");
	auto carry = [](trust::TlsSession &from, trust::TlsSession &to) {
		ByteBuffer &out = from.output();
		std::memcpy(to.input().append(out.readable()), out.read_ptr(), out.readable());
		out.clear();
	};
	for (int i = 0; i < 20 && !(c.established() && s.established()); i++) {
		if (c.handshake() == trust::TlsStep::kFailed ||
		    s.handshake() == trust::TlsStep::kFailed)
			break;
		carry(c, s);
		carry(s, c);
	}
	if (!c.established() || !s.established())
		die("in-memory TLS handshake", EPROTO);
	std::vector<uint8_t> req(wire::kHeaderSize, 1),
	        resp(wire::kHeaderSize + wire::kPageSize, 2), rx(64 * 1024), page(wire::kPageSize);
	// Decrypts exactly `n` bytes into `dst`.
	auto take = [](trust::TlsSession &t, uint8_t *dst, size_t n) {
		for (size_t got = 0; got < n;) {
			auto r = t.decrypt(dst + got, n - got);
			if (!r || *r == 0)
				die("in-memory TLS record", EPROTO);
			got += *r;
		}
	};
	RecordCost best{1e9, 1e9};
	constexpr int kRounds = 5, kPerRound = 200;
	for (int round = 0; round < kRounds; round++) {
		double q = 0, r = 0;
		for (int k = 0; k < kPerRound; k++) {
			auto t0 = Clock::now();
			if (!c.encrypt({req.data(), req.size()}).is_ok())
				die("in-memory TLS encrypt", EPROTO);
			carry(c, s);
			take(s, rx.data(), req.size());
			auto t1 = Clock::now();
			if (!s.encrypt({resp.data(), resp.size()}).is_ok())
				die("in-memory TLS encrypt", EPROTO);
			carry(s, c);
			take(c, rx.data(), wire::kHeaderSize);
			take(c, page.data(), wire::kPageSize);
			auto t2 = Clock::now();
			q += std::chrono::duration<double, std::micro>(t1 - t0).count();
			r += std::chrono::duration<double, std::micro>(t2 - t1).count();
		}
		best.request_us = std::min(best.request_us, q / kPerRound);
		best.response_us = std::min(best.response_us, r / kPerRound);
	}
	return best;
}

void usage()
{
	fprintf(stderr,
	        "usage: memfed-bench-wire (--self-serve | --target HOST:PORT --region-id N "
	        "--fa-offset X)\n"
	        "                         [--span PAGES] [--seconds S] [--server-cpu N] "
	        "[--client-cpu N] [--repeat N] [--no-pin]\n"
	        "  --self-serve      READ from an in-process TcpServer with an in-memory handler\n"
	        "  --target          READ from a running memfedd module\n"
	        "  --region-id N     region of the pages (--target)\n"
	        "  --fa-offset X     FA offset of the first page (decimal or 0x hex)\n"
	        "  --span PAGES      cycle over this many pages from --fa-offset (default 1)\n"
	        "  --seconds S       per measurement (default 2)\n"
	        "  --server-cpu N    vCPU of the server threads (default 0)\n"
	        "  --client-cpu N    vCPU of the client threads (default 0: same vCPU)\n"
	        "  --repeat N        runs per row; the run with the median pages/s is shown "
	        "(default 3)\n"
	        "  --no-pin          let the scheduler place the threads\n"
	        "  --realtime        run every thread SCHED_FIFO (needs CAP_SYS_NICE): on a "
	        "shared\n"
	        "                    machine, other work then cannot preempt the pinned "
	        "threads\n"
	        "  --depth N         only this depth (1 or 64)\n"
	        "  --only raw|memfed only one side (for profiling; no ratios)\n"
	        "  --tls             memfed over TLS 1.3 against memfed plaintext (needs "
	        "--self-serve)\n"
	        "  --key-file PATH   this benchmark's node key, which the --target trusts\n"
	        "  --trust KEY       the --target's public key (memfedctl key show)\n");
	exit(2);
}

void print_row(const char *what, unsigned depth, const Stats &s)
{
	printf("  %-24s %6u %9.1f %9.1f %12.0f %10.2f\n", what, depth, s.p50_us, s.p99_us,
	       s.pages_per_s, s.cpu_us_per_page);
}

} // namespace

int main(int argc, char **argv)
{
	Options o;
	for (int i = 1; i < argc; i++) {
		std::string a = argv[i];
		auto next = [&]() -> std::string {
			if (i + 1 >= argc)
				usage();
			return argv[++i];
		};
		if (a == "--self-serve")
			o.self_serve = true;
		else if (a == "--target")
			o.target = next();
		else if (a == "--region-id")
			o.region_id = std::stoul(next());
		else if (a == "--fa-offset")
			o.fa_offset = std::stoull(next(), nullptr, 0);
		else if (a == "--span")
			o.span = std::max(1ul, std::stoul(next()));
		else if (a == "--seconds")
			o.seconds = std::stod(next());
		else if (a == "--server-cpu")
			o.server_cpu = std::stoi(next());
		else if (a == "--client-cpu")
			o.client_cpu = std::stoi(next());
		else if (a == "--repeat")
			o.repeat = std::max(1, std::stoi(next()));
		else if (a == "--tls")
			o.tls = true;
		else if (a == "--key-file")
			o.key_file = next();
		else if (a == "--trust")
			o.trust_key = next();
		else if (a == "--realtime")
			o.realtime = true;
		else if (a == "--no-pin")
			o.pin = false;
		else if (a == "--depth")
			o.depth = std::stoi(next());
		else if (a == "--only") {
			std::string w = next();
			o.raw_only = w == "raw";
			o.memfed_only = w == "memfed";
			if (!o.raw_only && !o.memfed_only)
				usage();
		} else
			usage();
	}
	if (o.self_serve == !o.target.empty() || (o.depth != 0 && o.depth != 1 && o.depth != 64))
		usage();
	if (o.tls && !o.self_serve) {
		fprintf(stderr, "memfed-bench-wire: --tls needs --self-serve (a memfedd target "
		                "would have to trust the benchmark's key)\n");
		exit(2);
	}
	if (o.tls && o.raw_only) {
		fprintf(stderr, "memfed-bench-wire: --tls compares memfed with memfed; drop "
		                "--only raw\n");
		exit(2);
	}
	if (!o.target.empty()) {
		// memfedd speaks only TLS 1.3 with keys it trusts.
		if (o.key_file.empty() || o.trust_key.empty()) {
			fprintf(stderr, "memfed-bench-wire: a --target needs --key-file (a key it "
			                "trusts: memfedd --trust) and --trust (its key)\n");
			exit(2);
		}
		auto key = trust::load_node_key(o.key_file);
		auto theirs = trust::decode_public_key(o.trust_key, "--trust key");
		if (!key || !theirs) {
			fprintf(stderr, "memfed-bench-wire: %s\n",
			        (!key ? key.status() : theirs.status()).message().c_str());
			exit(2);
		}
		auto peers = std::make_shared<trust::TrustedPeers>(
		        std::vector<trust::TrustedPeer>{{*theirs, "target", o.target}});
		auto ctx = trust::TlsContext::create(*key, peers);
		if (!ctx) {
			fprintf(stderr, "memfed-bench-wire: %s\n", ctx.status().message().c_str());
			exit(2);
		}
		o.target_tls = *ctx;
	}
	set_log_level(LogLevel::kWarn);
	if (o.realtime) {
		// Before any thread starts: they inherit the policy.
		sched_param sp{};
		sp.sched_priority = 10;
		if (sched_setscheduler(0, SCHED_FIFO, &sp) != 0) {
			fprintf(stderr, "memfed-bench-wire: --realtime: %s; running SCHED_OTHER\n",
			        strerror(errno));
			o.realtime = false;
		}
	}

	std::unique_ptr<SelfServer> self, self_tls;
	TlsPair tls;
	std::string endpoint = o.target, tls_endpoint;
	if (o.tls) {
		tls = make_tls_pair();
		self_tls = std::make_unique<SelfServer>(o, tls.server);
		tls_endpoint = self_tls->endpoint;
	}
	if (o.self_serve) {
		self = std::make_unique<SelfServer>(o);
		endpoint = self->endpoint;
		o.region_id = 1;
		o.fa_offset = 0;
		o.span = std::min<uint32_t>(o.span, 256);
	}
	printf("memfed-bench-wire: 4 KiB READ over TCP, median of %d runs of %.1f s per row\n",
	       o.repeat, o.seconds);
	std::string placement = "unpinned";
	if (o.pin && o.server_cpu == o.client_cpu)
		placement = "server and client on vCPU " + std::to_string(o.client_cpu);
	else if (o.pin)
		placement = "server on vCPU " + std::to_string(o.server_cpu) + ", client on vCPU " +
		            std::to_string(o.client_cpu);
	if (o.realtime)
		placement += " (SCHED_FIFO)";
	printf("  target %s%s; threads: %s\n", endpoint.c_str(),
	       o.self_serve ? " (in-process TcpServer)" : "", placement.c_str());
	if (o.tls)
		printf("  TLS 1.3 target %s (in-process TcpServer with a TlsContext; pinned "
		       "Ed25519 keys)\n",
		       tls_endpoint.c_str());
	if (!o.self_serve)
		printf("  (memfedd is placed by you, e.g. taskset -a -p -c N PID; the raw server "
		       "is a\n"
		       "   child process on the server vCPU, serving the same %u-page span; cpu "
		       "us/pg\n"
		       "   counts the client only)\n",
		       o.span);
	printf("  %-24s %6s %9s %9s %12s %10s\n", "", "depth", "p50 us", "p99 us", "pages/s",
	       "cpu us/pg");
	if (o.raw_only || o.memfed_only) {
		// A profiling run: the rows asked for, no ratios.
		for (unsigned d : {1u, 64u}) {
			if (o.depth && unsigned(o.depth) != d)
				continue;
			for (int k = 0; k < o.repeat; k++) {
				if (!o.memfed_only)
					print_row("raw io_uring ping-pong", d, run_raw(o, d));
				if (!o.raw_only && o.tls)
					print_row("memfed TLS READ", d,
					          run_memfed(o, tls_endpoint, d, tls.client));
				else if (!o.raw_only)
					print_row("memfed TcpChannel READ", d,
					          run_memfed(o, endpoint, d, o.target_tls));
			}
		}
		return 0;
	}
	// The baseline and the measured side: raw and memfed, or memfed
	// plaintext and memfed over TLS.
	const char *base_name = o.tls ? "memfed plaintext READ" : "raw io_uring ping-pong";
	const char *subj_name = o.tls ? "memfed TLS 1.3 READ" : "memfed TcpChannel READ";
	auto run_base = [&](unsigned d) {
		return o.tls ? run_memfed(o, endpoint, d) : run_raw(o, d);
	};
	auto run_subj = [&](unsigned d) {
		return o.tls ? run_memfed(o, tls_endpoint, d, tls.client)
		             : run_memfed(o, endpoint, d, o.target_tls);
	};
	const double p50_target = o.tls ? 1.15 : 1.3;
	const double tput_target = o.tls ? 0.7 : 0.8;
	Stats raw[2], mf[2];
	const unsigned depths[2] = {1, 64};
	// The machine is shared and its speed drifts within seconds: raw and
	// memfed runs alternate, each memfed run is paired with the raw run just
	// before it, and a ratio is the median of the pairs' ratios.
	auto median = [](std::vector<double> v) {
		std::sort(v.begin(), v.end());
		return v[v.size() / 2];
	};
	auto median_run = [](std::vector<Stats> v) {
		std::sort(v.begin(), v.end(), [](const Stats &a, const Stats &b) {
			return a.pages_per_s < b.pages_per_s;
		});
		return v[v.size() / 2];
	};
	std::vector<double> q_p50[2], q_tput[2], q_cpu[2];
	for (int i = 0; i < 2; i++) {
		if (o.depth && unsigned(o.depth) != depths[i])
			continue;
		std::vector<Stats> r, m;
		for (int k = 0; k < o.repeat; k++) {
			r.push_back(run_base(depths[i]));
			m.push_back(run_subj(depths[i]));
			q_p50[i].push_back(m.back().p50_us / r.back().p50_us);
			q_tput[i].push_back(m.back().pages_per_s / r.back().pages_per_s);
			q_cpu[i].push_back(m.back().cpu_us_per_page / r.back().cpu_us_per_page);
		}
		raw[i] = median_run(r);
		mf[i] = median_run(m);
		print_row(base_name, depths[i], raw[i]);
		print_row(subj_name, depths[i], mf[i]);
	}
	printf("  ratios %s (medians of %d paired runs):\n", o.tls ? "TLS/plaintext" : "memfed/raw",
	       o.repeat);
	if (!q_p50[0].empty()) {
		double p50 = median(q_p50[0]);
		printf("    depth 1  p50        x%.2f  (target <= %.2f)  %s\n", p50, p50_target,
		       p50 <= p50_target ? "met" : "MISSED");
		printf("    depth 1  pages/s    x%.2f\n", median(q_tput[0]));
	}
	if (!q_p50[1].empty()) {
		double tput = median(q_tput[1]);
		printf("    depth 64 p50        x%.2f\n", median(q_p50[1]));
		printf("    depth 64 pages/s    x%.2f  (target >= %.2f)  %s\n", tput, tput_target,
		       tput >= tput_target ? "met" : "MISSED");
		printf("    depth 64 cpu/page   x%.2f  (%s)\n", median(q_cpu[1]),
		       o.self_serve ? "this process: client and server" : "the client's");
	}
	if (o.tls) {
		double gcm = gcm_us_per_page(o);
		bool one_cpu = o.pin && o.server_cpu == o.client_cpu;
		printf("  AES-128-GCM of one 4 KiB page (16 KiB records): %.3f us; TLS pays it "
		       "twice\n"
		       "  per page (the module encrypts, the client decrypts)\n",
		       gcm);
		RecordCost rec = tls_record_us(o, tls);
		printf("  the TLS records of one READ in memory (hot caches): request %.2f us, "
		       "response\n  %.2f us; beyond the cipher on the page, OpenSSL's fixed "
		       "cost per record\n  (four record operations per READ) takes %.2f\n",
		       rec.request_us, rec.response_us, rec.request_us + rec.response_us - 2 * gcm);
		if (one_cpu && mf[0].n) {
			// On one vCPU a READ's latency is mostly both sides' CPU
			// time for it, one after the other.
			printf("  depth 1 on one vCPU: p50 <= 1.15x allows TLS %.1f us over "
			       "plaintext (it adds %.1f);\n  it adds %.1f us of CPU per READ, of "
			       "which the cipher on the page takes %.1f\n  and the records "
			       "in memory %.1f: %s\n",
			       raw[0].p50_us * 0.15, mf[0].p50_us - raw[0].p50_us,
			       mf[0].cpu_us_per_page - raw[0].cpu_us_per_page, 2 * gcm,
			       rec.request_us + rec.response_us,
			       rec.request_us + rec.response_us > raw[0].p50_us * 0.15
			               ? "the target is out of reach with OpenSSL's record layer"
			               : "within reach");
		}
		if (one_cpu && mf[1].n) {
			// pages/s >= 0.7x  <=>  TLS cpu/page <= plaintext's / 0.7.
			double budget = raw[1].cpu_us_per_page * (1 / 0.7 - 1);
			printf("  on one vCPU, pages/s >= 0.7x allows TLS %.3f us/pg over "
			       "plaintext "
			       "(it adds %.3f);\n  the cipher alone takes %.3f: %s\n",
			       budget, mf[1].cpu_us_per_page - raw[1].cpu_us_per_page, 2 * gcm,
			       2 * gcm > budget ? "the target is out of reach at this cipher speed"
			                        : "within reach");
		}
		if (mf[1].n) {
			// Each side's share (median runs): the client's thread,
			// and the rest of the process (the module's thread).
			double ps = raw[1].cpu_us_per_page - raw[1].client_us_per_page;
			double pc = raw[1].client_us_per_page;
			double ts = mf[1].cpu_us_per_page - mf[1].client_us_per_page;
			double tc = mf[1].client_us_per_page;
			printf("  depth 64, CPU per page of the module / the client: plaintext "
			       "%.2f / %.2f us,\n  TLS %.2f / %.2f us\n",
			       ps, pc, ts, tc);
			if (o.pin && !one_cpu) {
				// Each side on its own vCPU: pages/s >= 0.7x needs
				// each to finish a page within 1 / (0.7 x plaintext's
				// pages/s), and under TLS each does its plaintext
				// work plus the cipher at least.
				double per_page = 1e6 / (0.7 * raw[1].pages_per_s);
				double floor = std::max(ps, pc) + gcm;
				printf("  on two vCPUs, pages/s >= 0.7x gives each side %.3f us "
				       "per "
				       "page; the busier\n  side's plaintext work and the cipher "
				       "alone take %.3f:\n  %s\n",
				       per_page, floor,
				       floor > per_page
				               ? "the target is out of reach at this cipher speed"
				               : "within reach");
			}
		}
		double crc = crc_us_per_page(o);
		printf("  crc32c of one 4 KiB page: %.3f us (checked once per page by the client;\n"
		       "  the wire's per-page check, kept under TLS: protocol.h says why)\n",
		       crc);
	}
	return 0;
}
