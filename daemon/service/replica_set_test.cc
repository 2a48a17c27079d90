// ReplicaSet: virtual module IDs, the version clock and the copies' states.
#include "daemon/service/replica_set.h"

#include <catch2/catch.hpp>

namespace memfed
{

TEST_CASE("a replica set's virtual module is never a module's ID")
{
	for (int i = 0; i < 1000; i++) {
		uint64_t g = new_replica_group();
		REQUIRE(g != 0);
		REQUIRE(g < (uint64_t{1} << 40));
		ModuleId v = replica_set_module(g);
		CHECK(v.valid());
		CHECK(is_replica_set(v));
		CHECK_FALSE(is_replica_set(ModuleId::random()));
		CHECK(replica_set_region_id(g) != 0);
	}
	CHECK(replica_set_module(0x0102030405).to_string() == "03:01:02:03:04:05");
	CHECK_FALSE(is_replica_set(ModuleId{}));
}

TEST_CASE("versions strictly grow and pass every version observed")
{
	ReplicaSet set(7, "r", 1 << 20, 3);
	uint64_t last = set.next_version();
	CHECK(last != 0);
	for (int i = 0; i < 10000; i++) {
		uint64_t v = set.next_version();
		REQUIRE(v > last);
		last = v;
	}
	// A version from a writer whose clock runs ahead.
	uint64_t ahead = last + (uint64_t{1} << 40);
	set.observe_version(ahead);
	CHECK(set.next_version() > ahead);
	set.observe_version(5); // an old one changes nothing
	CHECK(set.next_version() > ahead);
}

TEST_CASE("the first copy met is in sync, the others are compared first")
{
	ReplicaSet set(9, "r", 8 * 4096, 3);
	ModuleId a{0x020000000001}, b{0x020000000002}, c{0x020000000003};
	uint64_t g0 = set.generation();
	set.merge({{b, 5, 4096 * 10, 2}, {a, 6, 4096 * 20, 0}});
	CHECK(set.generation() != g0);
	auto s = set.snapshot();
	REQUIRE(s.size() == 2);
	// Nearest first, whatever the order found.
	CHECK(s[0].loc.module == a);
	CHECK(s[1].loc.module == b);
	CHECK(s[1].state == ReplicaSet::State::kInSync); // b was met first
	CHECK(s[0].state == ReplicaSet::State::kCatchingUp);
	CHECK(set.in_sync() == 1);
	CHECK(set.degraded());

	// Met again: nothing changes; a copy made anew is compared again.
	uint64_t g1 = set.generation();
	set.merge({{a, 6, 4096 * 20, 0}});
	CHECK(set.generation() == g1);
	set.set_state(a, ReplicaSet::State::kInSync, "");
	set.merge({{c, 1, 0, 1}});
	CHECK(set.in_sync() == 2);
	set.merge({{a, 7, 4096 * 30, 0}});
	s = set.snapshot();
	CHECK(s[0].loc.region_id == 7);
	CHECK(s[0].state == ReplicaSet::State::kCatchingUp);

	set.set_state(b, ReplicaSet::State::kLost, "connection lost");
	CHECK(set.counters().replicas_lost == 1);
	s = set.snapshot();
	CHECK(s[2].why == "connection lost");
}

TEST_CASE("the last copy to leave sync comes back in sync, and only that one")
{
	ReplicaSet set(9, "r", 8 * 4096, 3);
	ModuleId a{0x020000000001}, b{0x020000000002}, c{0x020000000003};
	set.merge({{a, 1, 0, 0}, {b, 2, 0, 1}, {c, 3, 0, 2}});
	set.set_state(b, ReplicaSet::State::kInSync, "");
	set.set_state(c, ReplicaSet::State::kInSync, "");
	REQUIRE(set.in_sync() == 3);
	// a, then c, then b (the last in sync) stop answering: none is in sync.
	set.set_state(a, ReplicaSet::State::kLost, "gone");
	set.set_state(c, ReplicaSet::State::kLost, "gone");
	set.set_state(b, ReplicaSet::State::kLost, "gone");
	REQUIRE(set.in_sync() == 0);
	// a and c answer first: they may lack writes b took, so they wait.
	set.set_state(a, ReplicaSet::State::kCatchingUp, "answering again");
	set.set_state(c, ReplicaSet::State::kCatchingUp, "answering again");
	CHECK(set.in_sync() == 0);
	// b answers: it holds every acknowledged write, so it is in sync.
	set.set_state(b, ReplicaSet::State::kCatchingUp, "answering again");
	CHECK(set.in_sync() == 1);
	auto s = set.snapshot();
	for (const auto &r : s) {
		if (r.loc.module == b) {
			CHECK(r.state == ReplicaSet::State::kInSync);
			CHECK(r.why.find("last copy in sync") != std::string::npos);
		} else {
			CHECK(r.state == ReplicaSet::State::kCatchingUp);
		}
	}
	// Lost again while a is in sync: not the last, so it catches up.
	set.set_state(a, ReplicaSet::State::kInSync, "");
	set.set_state(b, ReplicaSet::State::kLost, "gone");
	set.set_state(b, ReplicaSet::State::kCatchingUp, "answering again");
	for (const auto &r : set.snapshot())
		if (r.loc.module == b)
			CHECK(r.state == ReplicaSet::State::kCatchingUp);
	// The last one in sync made anew on its module (a fresh pool) held
	// nothing: it is compared like any other.
	set.set_state(b, ReplicaSet::State::kInSync, "");
	set.set_state(c, ReplicaSet::State::kLost, "gone");
	set.set_state(a, ReplicaSet::State::kLost, "gone");
	set.set_state(b, ReplicaSet::State::kLost, "gone");
	set.merge({{b, 9, 4096, 1}});
	set.set_state(b, ReplicaSet::State::kCatchingUp, "answering again");
	CHECK(set.in_sync() == 0);
}

TEST_CASE("a copy another node replaced leaves the set without a new one")
{
	ReplicaSet set(11, "r", 8 * 4096, 2);
	ModuleId a{0x020000000001}, b{0x020000000002}, c{0x020000000003};
	set.merge({{a, 1, 0, 1}, {b, 2, 0, 1}});
	set.set_state(b, ReplicaSet::State::kLost, "connection lost");
	set.merge({{c, 3, 0, 1}}); // the copy another node made in b's stead
	uint64_t g0 = set.generation();
	CHECK(set.drop(b, "replaced by another node"));
	CHECK(set.generation() != g0);
	auto s = set.snapshot();
	REQUIRE(s.size() == 2);
	CHECK(s[0].loc.module == a);
	CHECK(s[1].loc.module == c);
	CHECK(set.counters().replicas_replaced == 0); // this node replaced nothing
	CHECK_FALSE(set.drop(b, "again"));
}

TEST_CASE("copy state changes are numbered events for watch")
{
	ReplicaEvents events;
	uint64_t next = 0;
	CHECK(events.after(UINT64_MAX, &next).empty());
	CHECK(next == 0);
	ReplicaSet set(12, "ev", 8 * 4096, 2, &events);
	ModuleId a{0x020000000001}, b{0x020000000002}, c{0x020000000003};
	set.merge({{a, 1, 0, 1}, {b, 2, 0, 1}});
	auto first = events.after(0, &next);
	set.set_state(b, ReplicaSet::State::kLost, "connection lost");
	set.replace(b, {c, 3, 0, 1}, "new");
	set.set_state(c, ReplicaSet::State::kInSync, "");
	uint64_t mark = next;
	auto e = events.after(mark, &next);
	REQUIRE(e.size() == 4);
	CHECK(e[0].event == "lost");
	CHECK(e[0].was == "catching up");
	CHECK(e[0].module == b);
	CHECK(e[0].region == "ev");
	CHECK(e[0].in_sync == 1);
	CHECK(e[1].event == "replaced");
	CHECK(e[1].module == b);
	CHECK(e[2].event == "catching up");
	CHECK(e[2].module == c);
	CHECK(e[3].event == "in sync");
	CHECK(e[3].in_sync == 2);
	CHECK(e[3].seq == next);
	for (size_t i = 1; i < e.size(); i++)
		CHECK(e[i].seq == e[i - 1].seq + 1);
	CHECK(events.after(next, &next).empty());
	// A number from an earlier memfedd (above any here): all are new.
	CHECK(events.after(next + 100, &next).size() == first.size() + 4);
	// Only the last kKeep are kept.
	for (size_t i = 0; i < ReplicaEvents::kKeep + 10; i++)
		events.push({});
	CHECK(events.after(0, &next).size() == ReplicaEvents::kKeep);
}

TEST_CASE("one channel at a time catches copies up")
{
	ReplicaSet set(1, "r", 4096, 2);
	int x, y;
	CHECK(set.claim_catch_up(&x));
	CHECK(set.claim_catch_up(&x));
	CHECK_FALSE(set.claim_catch_up(&y));
	set.release_catch_up(&y); // not the owner: nothing
	CHECK_FALSE(set.claim_catch_up(&y));
	set.release_catch_up(&x);
	CHECK(set.claim_catch_up(&y));
}

} // namespace memfed
