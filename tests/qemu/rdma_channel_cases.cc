// The TcpChannel cases of daemon/transport/transport_test.cc (random orders,
// errors, damaged pages, random cuts) against an RdmaChannel in the QEMU
// guest. Written for RDMA rather than shared with transport_test.cc: those
// cases script a raw module's byte stream (reordered, damaged and cut
// responses), which one-sided reads do not have; here the module is a real
// store behind an RdmaServer, so the same properties are asserted against
// its bytes:
//   rdma-channel-random-order  reads of random regions, offsets and sizes,
//                              issued in random order, more in flight than
//                              the channel has staging slots (the rest go
//                              over TCP), each complete once with the
//                              store's bytes;
//   rdma-channel-errors        an unknown region, reads past either end, a
//                              count of 0 or too large, an unaligned offset:
//                              the same Status code as over TCP;
//   rdma-channel-damaged-page  a page whose bytes change in the pool behind
//                              the store's back (its crc unchanged) is never
//                              delivered: its reads end kCorrupt as over
//                              TCP, its neighbours read fine;
//   rdma-channel-random-cuts   under load, at a random moment: the TLS
//                              connection closed, the QP broken by a forged
//                              key, or the channel destroyed. Every read
//                              completes once, with the right bytes or an
//                              error, never wrong bytes;
//   rdma-channel-destroy-completes  the channel destroyed with reads in
//                              flight has completed them all (the Channel
//                              contract; TcpChannel keeps it).
#include "tests/qemu/rdma_channel_cases.h"

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "tests/qemu/guest_check.h"

namespace memfed::guest
{
namespace
{

using wire::kPageSize;

struct Done : Completion {
	void on_reply(const Status &st, const wire::Header &, std::span<const uint8_t>) override
	{
		calls++;
		status = st;
	}
	int calls = 0;
	Status status;
};

template <typename Pred> bool drive(EventLoop *loop, Pred pred)
{
	for (int i = 0; i < 3000 && !pred(); i++)
		loop->run_once(10);
	return pred();
}

Status read_one(EventLoop *loop, Channel *ch, uint32_t region, uint64_t fa, uint32_t count,
                void *dst)
{
	Done d;
	ch->read_pages(wire::TrafficClass::kFault, region, fa, count, dst, &d);
	if (!drive(loop, [&] { return d.calls != 0; }))
		return Status(Code::kUnavailable, "read never completed");
	return d.status;
}

std::unique_ptr<RdmaChannel> open_channel(const RdmaChannelCaseEnv &env, bool rdma)
{
	TcpChannel::Options o;
	o.tls = env.tls;
	auto tcp = TcpChannel::connect(env.loop, env.endpoint, env.self, o);
	if (!tcp)
		return nullptr;
	RdmaChannel::Options ro;
	ro.mode = rdma ? RdmaChannel::Mode::kRdma : RdmaChannel::Mode::kTcp;
	ro.retry_ms = 100;
	return RdmaChannel::wrap(env.loop, std::move(*tcp), ro);
}

// RDMA up and the extents of `regions` known (their first reads go over TCP).
bool warm(const RdmaChannelCaseEnv &env, RdmaChannel *ch, const std::vector<RegionInfo> &regions)
{
	ch->try_rdma();
	if (!drive(env.loop, [&] { return !ch->rdma_connecting(); }) || !ch->rdma_up())
		return false;
	std::vector<uint8_t> page(kPageSize);
	for (const RegionInfo &r : regions) {
		if (!read_one(env.loop, ch, r.id, r.fa_offset, 1, page.data()))
			return false;
		if (!drive(env.loop, [&] { return ch->knows_region(r.id); }))
			return false;
	}
	return true;
}

// A region of random bytes, readable by the channels' node; its bytes in *copy.
Result<RegionInfo> make_region(const RdmaChannelCaseEnv &env, const std::string &name,
                               uint64_t pages, std::mt19937_64 &rng, std::vector<uint8_t> *copy)
{
	auto r = env.store->create_region(name, pages * kPageSize, 0, 0600);
	if (!r)
		return r.status();
	Status st = env.store->set_grant(name, AccessGrant{env.pager_key, kAnyUid, kRightRead})
	                    .status();
	if (!st)
		return st;
	copy->resize(pages * kPageSize);
	for (size_t i = 0; i < copy->size(); i += 8) {
		uint64_t w = rng();
		std::memcpy(copy->data() + i, &w, 8);
	}
	for (uint64_t p = 0; p < pages; p += wire::kMaxPagesPerRequest) {
		uint32_t n = uint32_t(std::min<uint64_t>(wire::kMaxPagesPerRequest, pages - p));
		st = env.store->write_pages(r->id, r->fa_offset + p * kPageSize, n,
		                            copy->data() + p * kPageSize);
		if (!st)
			return st;
	}
	return r;
}

std::string counters(const RdmaChannel &ch)
{
	const auto &c = ch.counters();
	return "reads " + std::to_string(c.reads) + " pages " + std::to_string(c.pages) +
	       " torn_retries " + std::to_string(c.torn_retries) + " fallbacks " +
	       std::to_string(c.fallbacks) + " errors " + std::to_string(c.errors) + " refused " +
	       std::to_string(c.refused) + " connects " + std::to_string(c.connects);
}

// One read of a test: where, its buffer and its completion.
struct Read {
	size_t region = 0; // index into the case's regions
	uint64_t first = 0;
	uint32_t count = 0;
	std::vector<uint8_t> buf;
	Done done;
};

struct Region {
	RegionInfo info;
	std::vector<uint8_t> bytes; // what the store holds
};

std::unique_ptr<Read> random_read(const std::vector<Region> &regions, std::mt19937_64 &rng,
                                  uint32_t max_count)
{
	auto r = std::make_unique<Read>();
	r->region = rng() % regions.size();
	uint64_t pages = regions[r->region].info.size_bytes / kPageSize;
	r->count = uint32_t(1 + rng() % std::min<uint64_t>(max_count, pages));
	r->first = rng() % (pages - r->count + 1);
	r->buf.assign(size_t{r->count} * kPageSize, 0xee);
	return r;
}

void issue(Channel *ch, const std::vector<Region> &regions, Read *r, std::mt19937_64 &rng)
{
	const RegionInfo &info = regions[r->region].info;
	ch->read_pages(rng() % 2 ? wire::TrafficClass::kFault : wire::TrafficClass::kBulk, info.id,
	               info.fa_offset + r->first * kPageSize, r->count, r->buf.data(), &r->done);
}

bool same_bytes(const std::vector<Region> &regions, const Read &r)
{
	const auto &want = regions[r.region].bytes;
	return std::memcmp(r.buf.data(), want.data() + r.first * kPageSize, r.buf.size()) == 0;
}

std::string where(const std::vector<Region> &regions, const Read &r)
{
	return regions[r.region].info.name + " pages [" + std::to_string(r.first) + ", " +
	       std::to_string(r.first + r.count) + ")";
}

void random_order(const RdmaChannelCaseEnv &env, RdmaChannel *ch, std::vector<Region> &regions,
                  std::mt19937_64 &rng)
{
	Check c("rdma-channel-random-order");
	// 40 reads in flight (the channel has 8 staging slots: the others go
	// over TCP), of 1 to 32 pages, in random order; between rounds a few
	// pages change in the store.
	constexpr int kRounds = 6, kPerRound = 40;
	uint64_t rdma_reads = ch->counters().reads;
	for (int round = 0; round < kRounds && c.ok(); round++) {
		std::vector<std::unique_ptr<Read>> reads;
		for (int i = 0; i < kPerRound; i++)
			reads.push_back(random_read(regions, rng, 32));
		for (auto &r : reads)
			issue(ch, regions, r.get(), rng);
		c(drive(env.loop,
		        [&] {
			        return std::all_of(reads.begin(), reads.end(),
			                           [](auto &r) { return r->done.calls != 0; });
		        }),
		  "reads never completed in round " + std::to_string(round));
		env.loop->run_once(0); // a late second completion would show now
		for (auto &r : reads) {
			c(r->done.calls == 1, where(regions, *r) + " completed " +
			                              std::to_string(r->done.calls) + " times");
			c(r->done.status.is_ok(),
			  where(regions, *r) + ": " + r->done.status.to_string());
			c(!r->done.status.is_ok() || same_bytes(regions, *r),
			  where(regions, *r) + ": not the store's bytes");
		}
		// Rewrite a few pages: the next rounds must see the new bytes.
		for (int k = 0; k < 4; k++) {
			Region &g = regions[rng() % regions.size()];
			uint64_t p = rng() % (g.info.size_bytes / kPageSize);
			uint8_t *page = g.bytes.data() + p * kPageSize;
			for (size_t i = 0; i < kPageSize; i += 8) {
				uint64_t w = rng();
				std::memcpy(page + i, &w, 8);
			}
			c(env.store
			          ->write_pages(g.info.id, g.info.fa_offset + p * kPageSize, 1,
			                        page)
			          .is_ok(),
			  "store write");
		}
	}
	c(ch->counters().reads >= rdma_reads + kRounds * 4,
	  "too few reads over RDMA: " + counters(*ch));
	std::printf("MEMFED-INFO rdma-channel-random-order: %s\n", counters(*ch).c_str());
}

void errors(const RdmaChannelCaseEnv &env, RdmaChannel *ch, const RegionInfo &a)
{
	Check c("rdma-channel-errors");
	auto tcp = open_channel(env, false);
	if (!c(tcp != nullptr, "no TCP channel"))
		return;
	struct Case {
		const char *what;
		uint32_t region;
		uint64_t fa;
		uint32_t count;
	};
	const uint64_t end = a.fa_offset + a.size_bytes;
	const Case cases[] = {
	        {"an unknown region", 0x7fff0001, a.fa_offset, 1},
	        {"the last page and one past the end", a.id, end - kPageSize, 2},
	        {"the page past the end", a.id, end, 1},
	        {"far past the end", a.id, end + (64ull << 20), 4},
	        {"the page before the start", a.id, a.fa_offset - kPageSize, 1},
	        {"0 pages", a.id, a.fa_offset, 0},
	        {"more pages than a request may hold", a.id, a.fa_offset,
	         wire::kMaxPagesPerRequest + 1},
	        {"an unaligned offset", a.id, a.fa_offset + 512, 1},
	};
	std::vector<uint8_t> buf(size_t{wire::kMaxPagesPerRequest + 1} * kPageSize);
	for (const Case &k : cases) {
		Status over_tcp =
		        read_one(env.loop, tcp.get(), k.region, k.fa, k.count, buf.data());
		Status over_rdma = read_one(env.loop, ch, k.region, k.fa, k.count, buf.data());
		c(!over_tcp.is_ok(), std::string(k.what) + ": TCP read succeeded");
		c(over_rdma.code() == over_tcp.code(),
		  std::string(k.what) + ": over RDMA " + over_rdma.to_string() + ", over TCP " +
		          over_tcp.to_string());
		std::printf("MEMFED-INFO rdma-channel-errors: %s: %s\n", k.what,
		            over_rdma.to_string().c_str());
	}
	// The channel goes on reading over RDMA.
	uint64_t reads = ch->counters().reads;
	c(read_one(env.loop, ch, a.id, a.fa_offset, 4, buf.data()).is_ok() &&
	          ch->counters().reads == reads + 1 && ch->rdma_up(),
	  "no RDMA read after the errors: " + counters(*ch));
	tcp.reset();
}

void damaged_page(const RdmaChannelCaseEnv &env, RdmaChannel *ch, const Region &d)
{
	Check c("rdma-channel-damaged-page");
	auto tcp = open_channel(env, false);
	if (!c(tcp != nullptr, "no TCP channel"))
		return;
	const RegionInfo &r = d.info;
	constexpr uint64_t kBad = 10;
	// Behind the store's back: the pool's bytes change, its crc does not.
	uint8_t *byte = env.store->base() + r.fa_offset + kBad * kPageSize + 123;
	*byte ^= 0x40;
	uint64_t fallbacks = ch->counters().fallbacks, torn = ch->counters().torn_retries;
	std::vector<uint8_t> buf(8 * kPageSize);
	struct Span {
		uint64_t first;
		uint32_t count;
	};
	for (Span s : {Span{kBad, 1}, Span{kBad - 2, 4}, Span{kBad - 7, 8}}) {
		std::string what = "pages [" + std::to_string(s.first) + ", " +
		                   std::to_string(s.first + s.count) + ")";
		Status over_rdma = read_one(env.loop, ch, r.id, r.fa_offset + s.first * kPageSize,
		                            s.count, buf.data());
		Status over_tcp = read_one(env.loop, tcp.get(), r.id,
		                           r.fa_offset + s.first * kPageSize, s.count, buf.data());
		c(over_rdma.code() == Code::kCorrupt,
		  what + " holding the damaged page over RDMA: " + over_rdma.to_string());
		c(over_tcp.code() == Code::kCorrupt,
		  what + " holding the damaged page over TCP: " + over_tcp.to_string());
	}
	c(ch->counters().fallbacks >= fallbacks + 3 && ch->counters().torn_retries > torn,
	  "the RDMA side did not refuse the damaged page: " + counters(*ch));
	// Its neighbours read fine, over RDMA.
	uint64_t reads = ch->counters().reads;
	for (Span s : {Span{0, 8}, Span{kBad + 1, 8}}) {
		Status st = read_one(env.loop, ch, r.id, r.fa_offset + s.first * kPageSize, s.count,
		                     buf.data());
		c(st.is_ok() && std::memcmp(buf.data(), d.bytes.data() + s.first * kPageSize,
		                            size_t{s.count} * kPageSize) == 0,
		  "a neighbour of the damaged page: " + st.to_string());
	}
	c(ch->counters().reads == reads + 2, "neighbours not read over RDMA: " + counters(*ch));
	// Repaired, it reads again.
	*byte ^= 0x40;
	Status st = read_one(env.loop, ch, r.id, r.fa_offset + kBad * kPageSize, 1, buf.data());
	c(st.is_ok() && std::memcmp(buf.data(), d.bytes.data() + kBad * kPageSize, kPageSize) == 0,
	  "the repaired page: " + st.to_string());
	std::printf("MEMFED-INFO rdma-channel-damaged-page: %s\n", counters(*ch).c_str());
	tcp.reset();
}

void random_cuts(const RdmaChannelCaseEnv &env, const std::vector<Region> &regions,
                 std::mt19937_64 &rng)
{
	Check c("rdma-channel-random-cuts");
	Check destroy("rdma-channel-destroy-completes");
	// Each round: a fresh channel keeps 12 reads in flight, 60 in all; after
	// a random number of them it is cut one of three ways. A destroyed
	// channel must have completed its reads by the time its destructor
	// returns (the Channel contract, as TcpChannel keeps it): that is the
	// second marker, so a failure there is told apart from wrong bytes.
	enum Cut { kCloseTls, kForgedKey, kDestroy, kCuts };
	const char *cut_names[] = {"TLS closed", "forged key", "channel destroyed"};
	constexpr int kRounds = 6, kTotal = 60, kInFlight = 12;
	int ok_reads = 0, failed_reads = 0;
	for (int round = 0; round < kRounds; round++) {
		Cut cut = Cut(round % kCuts);
		auto ch = open_channel(env, true);
		std::vector<RegionInfo> infos;
		for (const Region &g : regions)
			infos.push_back(g.info);
		if (!c(ch != nullptr && warm(env, ch.get(), infos),
		       "round " + std::to_string(round) + ": RDMA did not come up"))
			continue;
		uint64_t errors0 = ch->counters().errors;
		int cut_at = int(rng() % (kTotal - kInFlight));
		std::vector<std::unique_ptr<Read>> reads;
		auto pending = [&] {
			return std::count_if(reads.begin(), reads.end(),
			                     [](auto &r) { return r->done.calls == 0; });
		};
		bool cut_done = false;
		for (int i = 0; i < kTotal && ch;) {
			if (pending() >= kInFlight) {
				env.loop->run_once(10);
				continue;
			}
			if (i == cut_at && !cut_done) {
				cut_done = true;
				if (cut == kCloseTls)
					ch->tcp()->close();
				else if (cut == kForgedKey)
					ch->set_rkey_for_test(0x5a000000u |
					                      uint32_t(rng() & 0xffffff));
				else
					ch.reset(); // completes what is pending, inside
				continue;
			}
			reads.push_back(random_read(regions, rng, 16));
			issue(ch.get(), regions, reads.back().get(), rng);
			i++;
		}
		std::string tag = "round " + std::to_string(round) + " (" + cut_names[cut] +
		                  " after " + std::to_string(cut_at) + " reads)";
		if (cut == kDestroy) {
			// Nothing is left to answer them: give the loop a moment only.
			for (int k = 0; k < 20 && pending() != 0; k++)
				env.loop->run_once(10);
			destroy(pending() == 0, tag + ": " + std::to_string(pending()) +
			                                " reads in flight never completed");
		} else {
			c(drive(env.loop, [&] { return pending() == 0; }),
			  tag + ": " + std::to_string(pending()) + " reads never completed");
		}
		env.loop->run_once(0);
		int ok = 0, failed = 0;
		for (auto &r : reads) {
			if (r->done.calls == 0)
				continue; // reported above
			c(r->done.calls == 1, tag + ": " + where(regions, *r) + " completed " +
			                              std::to_string(r->done.calls) + " times");
			if (r->done.status.is_ok()) {
				ok++;
				c(same_bytes(regions, *r),
				  tag + ": " + where(regions, *r) + ": wrong bytes delivered");
			} else {
				failed++;
			}
		}
		// A forged key breaks the RDMA side only: TCP serves every read.
		if (cut == kForgedKey && ch) {
			c(failed == 0, tag + ": " + std::to_string(failed) + " reads failed");
			c(ch->counters().errors > errors0,
			  tag + ": the forged key was not refused: " + counters(*ch));
		}
		if (cut == kCloseTls)
			c(failed > 0, tag + ": every read succeeded on a closed connection");
		ok_reads += ok;
		failed_reads += failed;
		ch.reset();
	}
	c(ok_reads > 0, "no read succeeded");
	std::printf("MEMFED-INFO rdma-channel-random-cuts: %d reads with the right bytes, %d "
	            "failed, none wrong\n",
	            ok_reads, failed_reads);
}

} // namespace

void run_rdma_channel_cases(const RdmaChannelCaseEnv &env)
{
	auto t0 = std::chrono::steady_clock::now();
	std::mt19937_64 rng(12);
	std::vector<Region> regions(3);
	const char *names[] = {"ch-a", "ch-b", "ch-d"};
	const uint64_t sizes[] = {1536, 384, 64};
	for (int i = 0; i < 3; i++) {
		auto r = make_region(env, names[i], sizes[i], rng, &regions[i].bytes);
		if (!r) {
			std::printf("MEMFED-DETAIL rdma-channel: region %s: %s\n", names[i],
			            r.status().to_string().c_str());
			Check("rdma-channel-random-order")(false, "no regions");
			return;
		}
		regions[i].info = *r;
	}
	Region damaged = regions.back();
	regions.pop_back();
	auto ch = open_channel(env, true);
	if (!ch || !warm(env, ch.get(), {regions[0].info, regions[1].info, damaged.info})) {
		Check("rdma-channel-random-order")(false, "RDMA did not come up");
		return;
	}
	random_order(env, ch.get(), regions, rng);
	errors(env, ch.get(), regions[0].info);
	damaged_page(env, ch.get(), damaged);
	ch.reset();
	random_cuts(env, regions, rng);
	std::printf("MEMFED-INFO rdma-channel: the channel cases took %.1f s\n",
	            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}

} // namespace memfed::guest
