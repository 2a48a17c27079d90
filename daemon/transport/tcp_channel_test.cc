// Tests of TcpChannel and SyncClient against a TcpServer and against raw
// peers: pipelining, ordering, errors, timeouts, class priority and payloads
// received straight into the caller's buffers.
#include "daemon/transport/test_transport.h"

using namespace memfed;
using namespace memfed::transport_test;
using wire::kPageSize;

TEST_CASE("SyncClient: HELLO, page I/O, errors and stat against TcpServer")
{
	ServerThread srv;
	auto c = SyncClient::connect(srv.endpoint(), kClientId);
	REQUIRE(c.is_ok());
	REQUIRE((*c)->hello(0).to_string() == "ok");
	CHECK((*c)->peer().module == kServerId);
	CHECK((*c)->peer().version == wire::kWireVersion);
	CHECK((*c)->peer().capacity_bytes == uint64_t{kPages} * kPageSize);
	CHECK(((*c)->peer().capabilities & wire::kCapModule) != 0);

	std::vector<uint8_t> page(2 * kPageSize);
	REQUIRE((*c)->read_pages(kRegion, 3 * kPageSize, 2, page.data()).is_ok());
	std::vector<uint8_t> want(2 * kPageSize);
	MemHandler::fill_page(want.data(), 3, 0);
	MemHandler::fill_page(want.data() + kPageSize, 4, 0);
	CHECK(page == want);

	MemHandler::fill_page(want.data(), 3, 77);
	REQUIRE((*c)->write_pages(kRegion, 3 * kPageSize, 1, want.data()).is_ok());
	REQUIRE((*c)->read_pages(kRegion, 3 * kPageSize, 1, page.data()).is_ok());
	CHECK(std::memcmp(page.data(), want.data(), kPageSize) == 0);
	CHECK(srv.on_loop([&] { return srv.handler.last_module; }) == kClientId);

	Status st = (*c)->read_pages(99, 0, 1, page.data());
	CHECK(st.code() == Code::kNotFound);
	CHECK(st.message() == "no such region");
	st = (*c)->read_pages(kRegion, uint64_t{kPages} * kPageSize, 1, page.data());
	CHECK(st.code() == Code::kOutOfRange);

	auto stat = (*c)->stat();
	REQUIRE(stat.is_ok());
	CHECK(stat->writes == 1);
	CHECK(stat->capacity_bytes == uint64_t{kPages} * kPageSize);
	// Requests the protocol forbids are refused locally.
	st = (*c)->read_pages(kRegion, 0, 0, page.data());
	CHECK(st.code() == Code::kInvalidArgument);
	CHECK(st.message() == "READ request not sent: READ with count 0");
	CHECK((*c)->write_pages(kRegion, 1, 1, page.data()).code() == Code::kInvalidArgument);
	// The connection survives error responses.
	REQUIRE((*c)->read_pages(kRegion, 0, 1, page.data()).is_ok());
}

TEST_CASE("TcpChannel: 64 reads in flight, then writes read back")
{
	ServerThread srv;
	auto loop = EventLoop::create();
	REQUIRE(loop.is_ok());
	auto ch = TcpChannel::connect(loop->get(), srv.endpoint(), kClientId);
	REQUIRE(ch.is_ok());
	CHECK((*ch)->connected());
	CHECK((*ch)->peer().module == kServerId);

	constexpr int kDepth = 64;
	std::vector<uint8_t> bufs(size_t{kDepth} * kPageSize);
	std::vector<Waiter> w(kDepth);
	int counter = 0;
	for (int i = 0; i < kDepth; i++) {
		w[i].counter = &counter;
		auto tc = i % 2 ? wire::TrafficClass::kBulk : wire::TrafficClass::kFault;
		(*ch)->read_pages(tc, kRegion, uint64_t(i * 5) * kPageSize, 1,
		                  &bufs[size_t(i) * kPageSize], &w[i]);
	}
	CHECK((*ch)->in_flight() == kDepth);
	drive(loop->get(), [&] { return counter == kDepth; });
	std::vector<uint8_t> want(kPageSize);
	for (int i = 0; i < kDepth; i++) {
		REQUIRE(w[i].status.is_ok());
		MemHandler::fill_page(want.data(), i * 5, 0);
		CHECK(std::memcmp(&bufs[size_t(i) * kPageSize], want.data(), kPageSize) == 0);
	}

	// Multi-page writes in flight, then read back in one READ each.
	std::vector<uint8_t> src(size_t{kDepth} * 4 * kPageSize);
	for (int i = 0; i < kDepth * 4; i++)
		MemHandler::fill_page(&src[size_t(i) * kPageSize], i, 9);
	counter = 0;
	for (int i = 0; i < kDepth; i++)
		(*ch)->write_pages(wire::TrafficClass::kBulk, kRegion, uint64_t(i) * 4 * kPageSize,
		                   4, &src[size_t(i) * 4 * kPageSize], &w[i]);
	drive(loop->get(), [&] { return counter == kDepth; });
	for (auto &x : w)
		REQUIRE(x.status.is_ok());
	std::vector<uint8_t> back(src.size());
	counter = 0;
	for (int i = 0; i < kDepth; i++)
		(*ch)->read_pages(wire::TrafficClass::kFault, kRegion, uint64_t(i) * 4 * kPageSize,
		                  4, &back[size_t(i) * 4 * kPageSize], &w[i]);
	drive(loop->get(), [&] { return counter == kDepth; });
	CHECK(back == src);

	// call(): a STAT through the channel, and an error response.
	wire::Header h{};
	h.type = static_cast<uint8_t>(wire::MsgType::kStat);
	h.tclass = 1;
	counter = 0;
	(*ch)->call(h, {}, &w[0]);
	h.type = static_cast<uint8_t>(wire::MsgType::kRegionList);
	(*ch)->call(h, {}, &w[1]);
	drive(loop->get(), [&] { return counter == 2; });
	REQUIRE(w[0].status.is_ok());
	auto st = wire::decode_stat(w[0].data);
	REQUIRE(st.is_ok());
	CHECK(st->writes == kDepth);
	CHECK(w[1].status.code() == Code::kInvalidArgument);
	CHECK(w[1].status.message() == "unsupported");
	CHECK((*ch)->in_flight() == 0);

	// Requests the protocol forbids fail locally; the connection stays up.
	counter = 0;
	(*ch)->read_pages(wire::TrafficClass::kFault, kRegion, 0, 0, bufs.data(), &w[0]);
	(*ch)->read_pages(wire::TrafficClass::kFault, kRegion, 0, wire::kMaxPagesPerRequest + 1,
	                  bufs.data(), &w[1]);
	(*ch)->read_pages(wire::TrafficClass::kFault, kRegion, 100, 1, bufs.data(), &w[2]);
	(*ch)->read_pages(wire::TrafficClass::kFault, kRegion, 7 * kPageSize, 1, bufs.data(),
	                  &w[3]);
	drive(loop->get(), [&] { return counter == 4; });
	CHECK(w[0].status.code() == Code::kInvalidArgument);
	CHECK(w[0].status.message() == "READ request not sent: READ with count 0");
	CHECK(w[1].status.code() == Code::kInvalidArgument);
	CHECK(w[2].status.code() == Code::kInvalidArgument);
	REQUIRE(w[3].status.is_ok());
	MemHandler::fill_page(want.data(), 7, 9); // as written above
	CHECK(std::memcmp(bufs.data(), want.data(), kPageSize) == 0);
	CHECK((*ch)->connected());
}

TEST_CASE("TcpChannel: responses out of order complete the right requests")
{
	constexpr int kN = 32;
	RawModule mod([](int fd, std::vector<wire::Header> &reqs) {
		for (int i = 0; i < kN; i++) {
			wire::Header h;
			if (!RawModule::read_request(fd, &h))
				return;
			reqs.push_back(h);
		}
		// Answer in reverse order; page content tags the request's offset.
		for (int i = kN - 1; i >= 0; i--) {
			std::vector<uint8_t> page(kPageSize);
			MemHandler::fill_page(page.data(), uint32_t(reqs[i].offset / kPageSize), 1);
			RawModule::reply(fd, reqs[i], page);
		}
		peer_closed(fd);
	});
	auto loop = EventLoop::create();
	REQUIRE(loop.is_ok());
	auto ch = TcpChannel::connect(loop->get(), mod.endpoint(), kClientId);
	REQUIRE(ch.is_ok());
	std::vector<uint8_t> bufs(size_t{kN} * kPageSize);
	std::vector<Waiter> w(kN);
	int counter = 0;
	for (int i = 0; i < kN; i++) {
		w[i].counter = &counter;
		(*ch)->read_pages(wire::TrafficClass::kFault, 1, uint64_t(i + 100) * kPageSize, 1,
		                  &bufs[size_t(i) * kPageSize], &w[i]);
	}
	drive(loop->get(), [&] { return counter == kN; });
	std::vector<uint8_t> want(kPageSize);
	for (int i = 0; i < kN; i++) {
		REQUIRE(w[i].status.is_ok());
		CHECK(w[i].order == kN - 1 - i);
		MemHandler::fill_page(want.data(), i + 100, 1);
		CHECK(std::memcmp(&bufs[size_t(i) * kPageSize], want.data(), kPageSize) == 0);
	}
	ch->reset();
}

// Answers `reqs` in the order given (swapping the entries named in `swap`),
// READ pages tagged with their offset; response `corrupt` gets a flipped
// byte after its crc was taken and response `failed` is an error. The
// first response goes alone (the channel's receive armed before any request
// takes it into its buffer); the rest follow in pieces of 1 to 9000 bytes.
void answer_in_pieces(int fd, std::vector<wire::Header> reqs, std::pair<int, int> swap, int corrupt,
                      int failed)
{
	if (swap.first >= 0)
		std::swap(reqs[swap.first], reqs[swap.second]);
	std::vector<uint8_t> stream;
	size_t first_len = 0;
	for (size_t i = 0; i < reqs.size(); i++) {
		wire::Header r = RawModule::response(reqs[i]);
		std::vector<uint8_t> payload(size_t{r.count} * kPageSize);
		for (uint32_t k = 0; k < r.count; k++)
			MemHandler::fill_page(&payload[size_t{k} * kPageSize],
			                      uint32_t(r.offset / kPageSize) + k, 1);
		if (int(i) == failed) {
			r.status = static_cast<uint16_t>(Code::kOutOfRange);
			std::string why = "no such page";
			payload.assign(why.begin(), why.end());
		}
		auto b = encode(r, payload);
		if (int(i) == corrupt)
			b[wire::kHeaderSize + 100] ^= 0x01;
		stream.insert(stream.end(), b.begin(), b.end());
		if (i == 0)
			first_len = stream.size();
	}
	(void)!send(fd, stream.data(), first_len, MSG_NOSIGNAL);
	std::this_thread::sleep_for(std::chrono::milliseconds(50));
	uint32_t rnd = 12345;
	for (size_t at = first_len; at < stream.size();) {
		rnd = rnd * 1103515245 + 12345;
		size_t n = std::min<size_t>(stream.size() - at, 1 + (rnd >> 8) % 9000);
		(void)!send(fd, &stream[at], n, MSG_NOSIGNAL);
		at += n;
		if (rnd % 4 == 0)
			std::this_thread::sleep_for(std::chrono::microseconds(200));
	}
}

TEST_CASE("TcpChannel: READ responses in request order land straight in the callers' buffers")
{
	// 48 READs of 1 to 3 pages in flight. In order, every response after
	// the first is received straight into its dst, however the stream is
	// cut; a page damaged on the way fails its READ alone. Out of order (or
	// with an error response among them), the channel falls back to its
	// receive buffer and every READ still gets its own pages.
	constexpr int kN = 48;
	struct Case {
		const char *what;
		std::pair<int, int> swap;
		int corrupt, failed;
	};
	for (Case c : {Case{"in order", {-1, -1}, 17, -1}, Case{"two swapped", {9, 30}, -1, -1},
	               Case{"an error among them", {-1, -1}, -1, 12}}) {
		SECTION(c.what)
		{
			RawModule mod([c](int fd, std::vector<wire::Header> &reqs) {
				for (int i = 0; i < kN; i++) {
					wire::Header h;
					if (!RawModule::read_request(fd, &h))
						return;
					reqs.push_back(h);
				}
				answer_in_pieces(fd, reqs, c.swap, c.corrupt, c.failed);
				peer_closed(fd);
			});
			auto loop = EventLoop::create();
			REQUIRE(loop.is_ok());
			auto ch = TcpChannel::connect(loop->get(), mod.endpoint(), kClientId);
			REQUIRE(ch.is_ok());
			std::vector<std::vector<uint8_t>> bufs(kN);
			std::vector<Waiter> w(kN);
			int counter = 0;
			size_t pages_after_first = 0;
			for (int i = 0; i < kN; i++) {
				uint32_t count = 1 + i % 3;
				bufs[i].assign(size_t{count} * kPageSize, 0);
				w[i].counter = &counter;
				(*ch)->read_pages(wire::TrafficClass::kFault, 1,
				                  uint64_t(10 * i) * kPageSize, count,
				                  bufs[i].data(), &w[i]);
				if (i > 0)
					pages_after_first += count;
			}
			drive(loop->get(), [&] { return counter == kN; });
			std::vector<uint8_t> want(kPageSize);
			for (int i = 0; i < kN; i++) {
				INFO("READ " << i << ": " << w[i].status.to_string());
				if (i == c.corrupt) {
					CHECK(w[i].status.code() == Code::kCorrupt);
					continue;
				}
				if (i == c.failed) {
					CHECK(w[i].status.code() == Code::kOutOfRange);
					continue;
				}
				REQUIRE(w[i].status.is_ok());
				for (uint32_t k = 0; k < bufs[i].size() / kPageSize; k++) {
					MemHandler::fill_page(want.data(), 10 * i + k, 1);
					CHECK(std::memcmp(&bufs[i][size_t{k} * kPageSize],
					                  want.data(), kPageSize) == 0);
				}
			}
			uint64_t landed = (*ch)->bytes_received_into_dst();
			if (c.swap.first < 0 && c.failed < 0)
				CHECK(landed == pages_after_first * kPageSize);
			else
				CHECK(landed < pages_after_first * kPageSize);
			ch->reset();
		}
	}
}

TEST_CASE("TcpChannel: random orders, errors, damaged pages and cuts, round after round")
{
	// Rounds of 40 requests (READs of 1 to 4 pages and WRITEs) on one
	// connection. The module answers each round mostly in order, with some
	// neighbours swapped (and one round shuffled whole); some READs fail
	// and some carry a damaged page; the stream is cut at random. Every
	// request must complete exactly once, a READ with its own pages.
	constexpr int kRounds = 8, kPerRound = 40;
	auto fate = [](int round, int i) { // 0 fine, 1 error, 2 damaged page
		uint32_t h = uint32_t(round * 7919 + i * 104729) * 2654435761u;
		return (h >> 24) % 16 == 0 ? 1 : (h >> 24) % 16 == 1 ? 2 : 0;
	};
	auto is_write = [](int round, int i) { return (round + i) % 7 == 3; };
	RawModule mod([&](int fd, std::vector<wire::Header> &reqs) {
		std::mt19937 rng(42);
		for (int round = 0; round < kRounds; round++) {
			reqs.clear();
			for (int i = 0; i < kPerRound; i++) {
				wire::Header h;
				if (!RawModule::read_request(fd, &h))
					return;
				reqs.push_back(h);
			}
			std::vector<int> order(kPerRound);
			for (int i = 0; i < kPerRound; i++)
				order[i] = i;
			if (round == 5)
				std::shuffle(order.begin(), order.end(), rng);
			else
				for (int i = 0; i + 1 < kPerRound; i++)
					if (rng() % 10 == 0)
						std::swap(order[i], order[i + 1]);
			std::vector<uint8_t> stream;
			for (int i : order) {
				const wire::Header &q = reqs[i];
				// The request's index rides in its offset: 64 pages apart.
				int idx = int(q.offset / kPageSize / 64) % kPerRound;
				wire::Header r = RawModule::response(q);
				std::vector<uint8_t> payload;
				bool read = q.type == static_cast<uint8_t>(wire::MsgType::kRead);
				if (read && fate(round, idx) == 1) {
					r.status = static_cast<uint16_t>(Code::kOutOfRange);
					std::string why = "not here";
					payload.assign(why.begin(), why.end());
				} else if (read) {
					payload.resize(size_t{q.count} * kPageSize);
					for (uint32_t k = 0; k < q.count; k++)
						MemHandler::fill_page(
						        &payload[size_t{k} * kPageSize],
						        uint32_t(q.offset / kPageSize) + k,
						        uint8_t(round));
				}
				auto b = encode(r, payload);
				if (read && fate(round, idx) == 2)
					b[wire::kHeaderSize + 7] ^= 0x40;
				stream.insert(stream.end(), b.begin(), b.end());
			}
			for (size_t at = 0; at < stream.size();) {
				size_t n = std::min<size_t>(stream.size() - at, 1 + rng() % 12000);
				(void)!send(fd, &stream[at], n, MSG_NOSIGNAL);
				at += n;
				if (rng() % 3 == 0)
					std::this_thread::sleep_for(std::chrono::microseconds(100));
			}
		}
		peer_closed(fd);
	});
	auto loop = EventLoop::create();
	REQUIRE(loop.is_ok());
	auto ch = TcpChannel::connect(loop->get(), mod.endpoint(), kClientId);
	REQUIRE(ch.is_ok());
	std::vector<uint8_t> want(kPageSize), src(kPageSize, 0x5a);
	for (int round = 0; round < kRounds; round++) {
		std::vector<std::vector<uint8_t>> bufs(kPerRound);
		std::vector<Waiter> w(kPerRound);
		int counter = 0;
		for (int i = 0; i < kPerRound; i++) {
			w[i].counter = &counter;
			uint64_t off = uint64_t(i) * 64 * kPageSize;
			if (is_write(round, i)) {
				(*ch)->write_pages(wire::TrafficClass::kBulk, 1, off, 1, src.data(),
				                   &w[i]);
				continue;
			}
			uint32_t count = 1 + uint32_t(round + i) % 4;
			bufs[i].assign(size_t{count} * kPageSize, 0);
			(*ch)->read_pages(i % 2 ? wire::TrafficClass::kFault
			                        : wire::TrafficClass::kBulk,
			                  1, off, count, bufs[i].data(), &w[i]);
		}
		drive(loop->get(), [&] { return counter == kPerRound; });
		for (int i = 0; i < kPerRound; i++) {
			INFO("round " << round << ", request " << i << ": "
			              << w[i].status.to_string());
			REQUIRE(w[i].done);
			if (is_write(round, i)) {
				CHECK(w[i].status.is_ok());
				continue;
			}
			int f = fate(round, i);
			if (f == 1) {
				CHECK(w[i].status.code() == Code::kOutOfRange);
				continue;
			}
			if (f == 2) {
				CHECK(w[i].status.code() == Code::kCorrupt);
				continue;
			}
			REQUIRE(w[i].status.is_ok());
			for (size_t k = 0; k < bufs[i].size() / kPageSize; k++) {
				MemHandler::fill_page(want.data(), uint32_t(i * 64 + k),
				                      uint8_t(round));
				CHECK(std::memcmp(&bufs[i][k * kPageSize], want.data(),
				                  kPageSize) == 0);
			}
		}
		// Each request completed once: no late second completion.
		loop->get()->run_once(0);
		CHECK(counter == kPerRound);
	}
	CHECK((*ch)->bytes_received_into_dst() > 0);
	ch->reset();
}

TEST_CASE("TcpChannel: after an idle spell, a large READ behind a small one still lands")
{
	// The receive armed while idle runs before the requests go out; the
	// module answers both at once, so both responses are queued when it
	// runs. It takes the first (one page, copied) and the 32 pages of the
	// second land in their buffer.
	RawModule mod([](int fd, std::vector<wire::Header> &reqs) {
		for (int round = 0; round < 2; round++) {
			reqs.clear();
			for (int i = 0; i < 2; i++) {
				wire::Header h;
				if (!RawModule::read_request(fd, &h))
					return;
				reqs.push_back(h);
			}
			std::vector<uint8_t> stream;
			for (const wire::Header &q : reqs) {
				std::vector<uint8_t> pages(size_t{q.count} * kPageSize,
				                           uint8_t(q.count));
				auto b = encode(RawModule::response(q), pages);
				stream.insert(stream.end(), b.begin(), b.end());
			}
			(void)!send(fd, stream.data(), stream.size(), MSG_NOSIGNAL);
		}
		peer_closed(fd);
	});
	auto loop = EventLoop::create();
	REQUIRE(loop.is_ok());
	auto ch = TcpChannel::connect(loop->get(), mod.endpoint(), kClientId);
	REQUIRE(ch.is_ok());
	std::vector<uint8_t> small(kPageSize), large(32 * kPageSize);
	for (int round = 1; round <= 2; round++) {
		Waiter w[2];
		int counter = 0;
		w[0].counter = w[1].counter = &counter;
		(*ch)->read_pages(wire::TrafficClass::kFault, 1, 0, 1, small.data(), &w[0]);
		(*ch)->read_pages(wire::TrafficClass::kBulk, 1, 64 * kPageSize, 32, large.data(),
		                  &w[1]);
		drive(loop->get(), [&] { return counter == 2; });
		REQUIRE(w[0].status.is_ok());
		REQUIRE(w[1].status.is_ok());
		CHECK(small[kPageSize - 1] == 1);
		CHECK(large[0] == 32);
		CHECK(large[large.size() - 1] == 32);
		CHECK((*ch)->bytes_received_into_dst() == uint64_t(round) * large.size());
	}
	ch->reset();
}

TEST_CASE("TcpChannel: a READ whose pages fail their crc fails alone with kCorrupt")
{
	// One page (parsed from the receive buffer) and 32 pages (received
	// straight into the caller's buffer), each answered with one byte
	// flipped after the crc was taken, then a good READ on the same channel.
	RawModule mod([](int fd, std::vector<wire::Header> &reqs) {
		for (int i = 0; i < 3; i++) {
			wire::Header h;
			if (!RawModule::read_request(fd, &h))
				return;
			reqs.push_back(h);
			std::vector<uint8_t> pages(size_t{h.count} * kPageSize, 0x3c);
			auto b = encode(RawModule::response(h), pages);
			if (i < 2)
				b[wire::kHeaderSize + 4000] ^= 0x10;
			(void)!send(fd, b.data(), b.size(), MSG_NOSIGNAL);
		}
		peer_closed(fd);
	});
	auto loop = EventLoop::create();
	REQUIRE(loop.is_ok());
	auto ch = TcpChannel::connect(loop->get(), mod.endpoint(), kClientId);
	REQUIRE(ch.is_ok());
	std::vector<uint8_t> buf(32 * kPageSize);
	for (uint32_t count : {1u, 32u, 2u}) {
		Waiter w;
		int counter = 0;
		w.counter = &counter;
		(*ch)->read_pages(wire::TrafficClass::kFault, 1, 7 * kPageSize, count, buf.data(),
		                  &w);
		drive(loop->get(), [&] { return counter == 1; });
		INFO(count << " pages: " << w.status.to_string());
		if (count != 2) {
			CHECK(w.status.code() == Code::kCorrupt);
			CHECK(w.status.message().find("pool check") != std::string::npos);
		} else {
			CHECK(w.status.is_ok());
			CHECK(buf[kPageSize + 5] == 0x3c);
		}
	}
	ch->reset();
}

TEST_CASE("TcpChannel: fault-class requests overtake queued bulk ones")
{
	std::vector<uint8_t> classes;
	RawModule mod([&](int fd, std::vector<wire::Header> &reqs) {
		for (int i = 0; i < 6; i++) {
			wire::Header h;
			if (!RawModule::read_request(fd, &h))
				return;
			reqs.push_back(h);
			classes.push_back(h.tclass);
		}
		for (auto &h : reqs)
			RawModule::reply(fd, h);
		peer_closed(fd);
	});
	auto loop = EventLoop::create();
	REQUIRE(loop.is_ok());
	auto ch = TcpChannel::connect(loop->get(), mod.endpoint(), kClientId);
	REQUIRE(ch.is_ok());
	std::vector<uint8_t> src(kPageSize, 0x5a);
	std::vector<uint8_t> dst(kPageSize);
	std::vector<Waiter> w(6);
	int counter = 0;
	for (auto &x : w)
		x.counter = &counter;
	// The first bulk write goes out at once; the next four queue behind it,
	// and the fault read queued last must be sent before them.
	for (int i = 0; i < 5; i++)
		(*ch)->write_pages(wire::TrafficClass::kBulk, 1, uint64_t(i) * kPageSize, 1,
		                   src.data(), &w[i]);
	wire::Header stat{};
	stat.type = static_cast<uint8_t>(wire::MsgType::kStat);
	stat.tclass = static_cast<uint8_t>(wire::TrafficClass::kFault);
	(*ch)->call(stat, {}, &w[5]);
	drive(loop->get(), [&] { return counter == 6; });
	for (auto &x : w)
		CHECK(x.status.is_ok());
	ch->reset();
	mod.join();
	CHECK(classes == std::vector<uint8_t>{2, 0, 2, 2, 2, 2});
}

TEST_CASE("TcpChannel: connection loss completes pending requests with kUnavailable")
{
	std::atomic<int> seen{0};
	RawModule mod([&](int fd, std::vector<wire::Header> &) {
		// Read the 64 requests, answer none, drop the connection.
		for (int i = 0; i < 64; i++) {
			wire::Header h;
			if (!RawModule::read_request(fd, &h))
				return;
			seen++;
		}
	});
	auto loop = EventLoop::create();
	REQUIRE(loop.is_ok());
	auto ch = TcpChannel::connect(loop->get(), mod.endpoint(), kClientId);
	REQUIRE(ch.is_ok());
	std::vector<uint8_t> bufs(64 * size_t{kPageSize});
	std::vector<Waiter> w(65);
	int counter = 0;
	for (int i = 0; i < 64; i++) {
		w[i].counter = &counter;
		(*ch)->read_pages(wire::TrafficClass::kFault, 1, 0, 1, &bufs[size_t(i) * kPageSize],
		                  &w[i]);
	}
	drive(loop->get(), [&] { return counter == 64; });
	CHECK(seen == 64);
	for (int i = 0; i < 64; i++)
		CHECK(w[i].status.code() == Code::kUnavailable);
	CHECK_FALSE((*ch)->connected());
	CHECK((*ch)->in_flight() == 0);
	// Later requests fail too, asynchronously.
	w[64].counter = &counter;
	(*ch)->read_pages(wire::TrafficClass::kFault, 1, 0, 1, bufs.data(), &w[64]);
	CHECK_FALSE(w[64].done);
	drive(loop->get(), [&] { return counter == 65; });
	CHECK(w[64].status.code() == Code::kUnavailable);
	// Nothing is in flight on a broken channel: destroying it does not run
	// the loop (which would dispatch other components' work).
	bool ran = false;
	(*loop)->post([&] { ran = true; });
	ch->reset();
	CHECK_FALSE(ran);
}

TEST_CASE("TcpChannel: a module that goes silent is cut off after request_timeout_ms")
{
	// The module answers two READs, then reads six more and says nothing,
	// keeping the connection open (a stopped or hung process).
	RawModule mod([](int fd, std::vector<wire::Header> &) {
		for (int i = 0; i < 8; i++) {
			wire::Header h;
			if (!RawModule::read_request(fd, &h))
				return;
			if (i < 2)
				RawModule::reply(fd, h, std::vector<uint8_t>(kPageSize, uint8_t(i)));
		}
		peer_closed(fd);
	});
	auto loop = EventLoop::create();
	REQUIRE(loop.is_ok());
	TcpChannel::Options opts;
	opts.request_timeout_ms = 300;
	auto ch = TcpChannel::connect(loop->get(), mod.endpoint(), kClientId, opts);
	REQUIRE(ch.is_ok());
	std::vector<uint8_t> bufs(8 * size_t{kPageSize});
	std::vector<Waiter> w(8);
	int counter = 0;
	for (int i = 0; i < 8; i++) {
		w[i].counter = &counter;
		(*ch)->read_pages(wire::TrafficClass::kFault, 1, uint64_t(i) * kPageSize, 1,
		                  &bufs[size_t(i) * kPageSize], &w[i]);
	}
	drive(loop->get(), [&] { return counter == 8; });
	for (int i = 0; i < 2; i++)
		CHECK(w[i].status.is_ok());
	for (int i = 2; i < 8; i++) {
		CHECK(w[i].status.code() == Code::kUnavailable);
		CHECK(w[i].status.message().find("no answer for") != std::string::npos);
	}
	CHECK_FALSE((*ch)->connected());
	ch->reset(); // closes the connection: the module's thread ends
}

TEST_CASE("TcpChannel: a slow module that keeps answering, or an idle one, is not cut off")
{
	// 40 answers 50 ms apart take 2 s, more than the 1 s of silence the
	// channel allows: progress, not the age of a request, is what counts.
	constexpr int kN = 40;
	RawModule mod([](int fd, std::vector<wire::Header> &reqs) {
		for (int i = 0; i < kN + 1; i++) {
			wire::Header h;
			if (!RawModule::read_request(fd, &h))
				return;
			reqs.push_back(h);
			if (i == kN) // after the idle spell
				RawModule::reply(fd, h, std::vector<uint8_t>(kPageSize, 7));
			if (i != kN - 1)
				continue;
			for (auto &r : reqs) {
				std::this_thread::sleep_for(std::chrono::milliseconds(50));
				RawModule::reply(fd, r, std::vector<uint8_t>(kPageSize, 1));
			}
		}
		peer_closed(fd);
	});
	auto loop = EventLoop::create();
	REQUIRE(loop.is_ok());
	TcpChannel::Options opts;
	opts.request_timeout_ms = 1000;
	auto ch = TcpChannel::connect(loop->get(), mod.endpoint(), kClientId, opts);
	REQUIRE(ch.is_ok());
	std::vector<uint8_t> bufs((kN + 1) * size_t{kPageSize});
	std::vector<Waiter> w(kN + 1);
	int counter = 0;
	for (int i = 0; i < kN; i++) {
		w[i].counter = &counter;
		(*ch)->read_pages(wire::TrafficClass::kFault, 1, 0, 1, &bufs[size_t(i) * kPageSize],
		                  &w[i]);
	}
	drive(loop->get(), [&] { return counter == kN; });
	for (int i = 0; i < kN; i++)
		CHECK(w[i].status.is_ok());
	// Idle for three times the timeout: nothing waits, nothing is cut.
	auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(3000);
	while (std::chrono::steady_clock::now() < until)
		(*loop)->run_once(100);
	REQUIRE((*ch)->connected());
	w[kN].counter = &counter;
	(*ch)->read_pages(wire::TrafficClass::kFault, 1, 0, 1, &bufs[size_t(kN) * kPageSize],
	                  &w[kN]);
	drive(loop->get(), [&] { return counter == kN + 1; });
	CHECK(w[kN].status.is_ok());
	CHECK(bufs[size_t(kN) * kPageSize] == 7);
	ch->reset();
}

TEST_CASE("TcpChannel: write_versioned sends the prefix and the caller's pages as one payload")
{
	std::vector<uint8_t> pages(3 * size_t{kPageSize});
	for (size_t i = 0; i < pages.size(); i++)
		pages[i] = uint8_t(i * 7 + 3);
	wire::Header got{};
	std::vector<uint8_t> got_payload;
	RawModule mod([&](int fd, std::vector<wire::Header> &) {
		if (!RawModule::read_request(fd, &got, &got_payload))
			return;
		uint8_t applied[wire::kAppliedSize];
		wire::encode_applied(3, applied);
		RawModule::reply(fd, got, applied);
		peer_closed(fd);
	});
	auto loop = EventLoop::create();
	REQUIRE(loop.is_ok());
	auto ch = TcpChannel::connect(loop->get(), mod.endpoint(), kClientId);
	REQUIRE(ch.is_ok());
	wire::WireVersionedWrite vw{};
	vw.version = 0x1122334455667788ull;
	vw.flags = wire::kVersionedRepair;
	Waiter w;
	int counter = 0;
	w.counter = &counter;
	(*ch)->write_versioned(wire::TrafficClass::kBulk, 9, 5 * kPageSize, 3, vw, pages.data(), &w);
	drive(loop->get(), [&] { return counter == 1; });
	REQUIRE(w.status.is_ok());
	CHECK(*wire::decode_applied(3, w.data) == 3);
	ch->reset(); // the module's thread ends at the close
	mod.join();
	CHECK(got.type == uint8_t(wire::MsgType::kWriteVersioned));
	CHECK(got.region_id == 9);
	CHECK(got.offset == 5 * kPageSize);
	CHECK(got.count == 3);
	REQUIRE(got_payload.size() == sizeof(vw) + pages.size());
	CHECK(got.payload_crc == crc32c(got_payload.data(), got_payload.size()));
	auto w2 = wire::decode_versioned_write(3, got_payload);
	REQUIRE(w2.is_ok());
	CHECK(w2->prefix.version == vw.version);
	CHECK(w2->prefix.flags == wire::kVersionedRepair);
	CHECK(std::memcmp(w2->pages.data(), pages.data(), pages.size()) == 0);
}

// Records whether on_reply ran while the test was inside an issuing call
// (the Channel contract forbids it).
struct Reentry : Completion {
	void on_reply(const Status &st, const wire::Header &, std::span<const uint8_t>) override
	{
		calls++;
		inside_issue |= *inside;
		status = st;
	}
	bool *inside = nullptr;
	int calls = 0;
	bool inside_issue = false;
	Status status;
};

TEST_CASE("TcpChannel: no completion runs inside the call that issued it, errors included")
{
	ServerThread srv;
	auto loop = EventLoop::create();
	REQUIRE(loop.is_ok());
	auto ch = TcpChannel::connect(loop->get(), srv.endpoint(), kClientId);
	REQUIRE(ch.is_ok());
	bool inside = false;
	std::vector<Reentry> r(8);
	for (auto &x : r)
		x.inside = &inside;
	std::vector<uint8_t> buf(size_t{kPageSize}), src(size_t{kPageSize}, 0x5c);
	wire::Header stat{};
	stat.type = static_cast<uint8_t>(wire::MsgType::kStat);
	stat.tclass = 1;
	auto issue_all = [&](size_t from) {
		inside = true;
		(*ch)->read_pages(wire::TrafficClass::kFault, kRegion, 0, 1, buf.data(), &r[from]);
		(*ch)->write_pages(wire::TrafficClass::kBulk, kRegion, kPageSize, 1, src.data(),
		                   &r[from + 1]);
		(*ch)->call(stat, {}, &r[from + 2]);
		// Not sent (count 0): fails locally.
		(*ch)->read_pages(wire::TrafficClass::kFault, kRegion, 0, 0, buf.data(),
		                  &r[from + 3]);
		inside = false;
	};
	issue_all(0);
	drive(loop->get(), [&] { return r[0].calls && r[1].calls && r[2].calls && r[3].calls; });
	for (int i = 0; i < 3; i++) {
		INFO(i << ": " << r[i].status.to_string());
		CHECK(r[i].status.is_ok());
	}
	CHECK(r[3].status.code() == Code::kInvalidArgument);
	// A closed channel fails every request, later.
	(*ch)->close();
	issue_all(4);
	drive(loop->get(), [&] { return r[4].calls && r[5].calls && r[6].calls && r[7].calls; });
	for (int i = 4; i < 8; i++)
		CHECK(r[i].status.code() == Code::kUnavailable);
	for (auto &x : r) {
		CHECK(x.calls == 1);
		CHECK_FALSE(x.inside_issue);
	}
}

TEST_CASE("TcpChannel: destroying the channel completes pending requests")
{
	RawModule mod([&](int fd, std::vector<wire::Header> &) { peer_closed(fd); });
	auto loop = EventLoop::create();
	REQUIRE(loop.is_ok());
	auto ch = TcpChannel::connect(loop->get(), mod.endpoint(), kClientId);
	REQUIRE(ch.is_ok());
	std::vector<uint8_t> buf(kPageSize);
	Waiter w;
	int counter = 0;
	w.counter = &counter;
	(*ch)->read_pages(wire::TrafficClass::kFault, 1, 0, 1, buf.data(), &w);
	ch->reset();
	CHECK(counter == 1);
	CHECK(w.status.code() == Code::kUnavailable);
}

TEST_CASE("TcpChannel: 1 MiB READs and WRITEs (payload received straight into dst)")
{
	ServerThread srv;
	auto loop = EventLoop::create();
	REQUIRE(loop.is_ok());
	auto ch = TcpChannel::connect(loop->get(), srv.endpoint(), kClientId);
	REQUIRE(ch.is_ok());
	constexpr uint32_t kMax = wire::kMaxPagesPerRequest;
	std::vector<uint8_t> src(size_t{kMax} * kPageSize * 2);
	for (uint32_t i = 0; i < 2 * kMax; i++)
		MemHandler::fill_page(&src[size_t(i) * kPageSize], i, 3);
	Waiter w[4];
	int counter = 0;
	for (auto &x : w)
		x.counter = &counter;
	(*ch)->write_pages(wire::TrafficClass::kBulk, kRegion, 0, kMax, src.data(), &w[0]);
	(*ch)->write_pages(wire::TrafficClass::kBulk, kRegion, uint64_t{kMax} * kPageSize, kMax,
	                   &src[size_t{kMax} * kPageSize], &w[1]);
	drive(loop->get(), [&] { return counter == 2; });
	REQUIRE(w[0].status.is_ok());
	REQUIRE(w[1].status.is_ok());
	std::vector<uint8_t> back(src.size(), 0);
	(*ch)->read_pages(wire::TrafficClass::kBulk, kRegion, 0, kMax, back.data(), &w[2]);
	(*ch)->read_pages(wire::TrafficClass::kBulk, kRegion, uint64_t{kMax} * kPageSize, kMax,
	                  &back[size_t{kMax} * kPageSize], &w[3]);
	drive(loop->get(), [&] { return counter == 4; });
	REQUIRE(w[2].status.is_ok());
	REQUIRE(w[3].status.is_ok());
	CHECK(back == src);
}
