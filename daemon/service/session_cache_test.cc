#include "daemon/service/session_cache.h"

#include <catch2/catch.hpp>

using namespace memfed;
using V = SessionCache::Admission::Verdict;

namespace
{
SessionCache::Key key(uint64_t session, uint8_t node = 1)
{
	SessionCache::Key k;
	k.node[0] = node;
	k.session = session;
	return k;
}
} // namespace

TEST_CASE("session cache: a write is admitted once; its retry is answered with the recorded "
          "result, never admitted again",
          "[service]")
{
	SessionCache c;
	auto a = c.admit(key(7), 1, false, 10, 1000);
	REQUIRE(a.verdict == V::kApply);
	// Asked again before it is durable: refused, not applied twice.
	auto busy = c.admit(key(7), 1, true, 11, 1001);
	CHECK(busy.verdict == V::kRefused);
	CHECK(busy.status.code() == Code::kBusy);
	CHECK_THAT(busy.status.message(), Catch::Contains("still being applied"));
	c.record(key(7), 1, Code::kOk, 3);
	auto again = c.admit(key(7), 1, true, 11, 1002);
	CHECK(again.verdict == V::kAnswered);
	CHECK(again.status.is_ok());
	CHECK(again.applied == 3);
	// A failure is answered as the failure it was.
	REQUIRE(c.admit(key(7), 2, false, 11, 1003).verdict == V::kApply);
	c.record(key(7), 2, Code::kNotFound, 0);
	auto failed = c.admit(key(7), 2, true, 12, 1004);
	CHECK(failed.verdict == V::kAnswered);
	CHECK(failed.status.code() == Code::kNotFound);
	SessionCounts n = c.counts();
	CHECK(n.sequenced == 2);
	CHECK(n.retries_answered == 2);
	CHECK(n.refused_in_progress == 1);
	CHECK(n.sessions == 1);
}

TEST_CASE("session cache: a late request of a connection the session left is refused; one of "
          "the newest connection in any order is applied",
          "[service]")
{
	SessionCache c;
	REQUIRE(c.admit(key(7), 1, false, 10, 1).verdict == V::kApply);
	// The writer moved to connection 20 and wrote seq 3 there.
	REQUIRE(c.admit(key(7), 3, false, 20, 2).verdict == V::kApply);
	// Seq 2, still in connection 10's socket, comes late: refused.
	auto late = c.admit(key(7), 2, false, 10, 3);
	CHECK(late.verdict == V::kRefused);
	CHECK_THAT(late.status.message(), Catch::Contains("connection its session has left"));
	// On the newest connection a request may overtake another (classes are
	// sent by priority): seq 4 then seq 2 are both applied.
	REQUIRE(c.admit(key(7), 5, false, 20, 4).verdict == V::kApply);
	CHECK(c.admit(key(7), 4, false, 20, 5).verdict == V::kApply);
	CHECK(c.counts().refused_superseded == 1);
	// Another node's session with the same id is another session.
	CHECK(c.admit(key(7, 2), 1, false, 10, 6).verdict == V::kApply);
}

TEST_CASE("session cache: a retry it cannot place is refused, never applied", "[service]")
{
	SessionCache c;
	// An unknown session (a restarted module): refused.
	auto unknown = c.admit(key(9), 4, true, 10, 1);
	CHECK(unknown.verdict == V::kRefused);
	CHECK_THAT(unknown.status.message(), Catch::Contains("does not know the session"));
	// A retry of a write never received, after a newer one was applied.
	REQUIRE(c.admit(key(9), 5, false, 10, 2).verdict == V::kApply);
	auto overtaken = c.admit(key(9), 4, true, 11, 3);
	CHECK(overtaken.verdict == V::kRefused);
	CHECK_THAT(overtaken.status.message(), Catch::Contains("a newer one (5) was applied"));
	// A retry of a write newer than any received is its first application.
	CHECK(c.admit(key(9), 6, true, 11, 4).verdict == V::kApply);
	// Out of the window: refused.
	REQUIRE(c.admit(key(9), 6 + SessionCache::kWindow, false, 11, 5).verdict == V::kApply);
	auto old = c.admit(key(9), 6, true, 11, 6);
	CHECK(old.verdict == V::kRefused);
	CHECK_THAT(old.status.message(), Catch::Contains("older than the session's window"));
	CHECK(c.counts().refused_unknown == 3);
}

TEST_CASE("session cache: sessions expire when idle and the table is capped", "[service]")
{
	SessionCache c(SessionCache::Limits{2, 1000});
	REQUIRE(c.admit(key(1), 1, false, 1, 0).verdict == V::kApply);
	c.record(key(1), 1, Code::kOk, 0);
	REQUIRE(c.admit(key(2), 1, false, 1, 10).verdict == V::kApply);
	// A third session evicts the one idle longest (1).
	REQUIRE(c.admit(key(3), 1, false, 1, 20).verdict == V::kApply);
	CHECK(c.counts().sessions == 2);
	CHECK(c.counts().expired == 1);
	// Its retry is then refused, not applied.
	CHECK(c.admit(key(1), 1, true, 2, 30).verdict == V::kRefused);
	// Idle past the expiry: forgotten too.
	c.record(key(2), 1, Code::kOk, 0);
	auto a = c.admit(key(2), 1, true, 2, 5000);
	CHECK(a.verdict == V::kRefused);
	CHECK_THAT(a.status.message(), Catch::Contains("does not know the session"));
}
