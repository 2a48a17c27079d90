// Host-side tests of memfed_kmodlink. The host kernel cannot load modules, so
// the family is absent here: KmodLink must say so cleanly. The codec and the
// address arithmetic are tested directly; the round trips through memfed.ko
// run in the QEMU tier (tests/qemu/).
#include <catch2/catch.hpp>

#include <arpa/inet.h>

#include <cstring>
#include <filesystem>

#include <netlink/genl/genl.h>

#include "daemon/kmodlink/genl_socket.h"
#include "daemon/kmodlink/kmod_codec.h"
#include "daemon/kmodlink/kmodlink.h"
#include "kmod/uapi/memfed_netlink.h"

using namespace memfed;
using namespace memfed::kmod;

namespace
{

// A generic-netlink message as the kmod would send it, for the codec.
struct Msg {
	nl_msg *msg = nlmsg_alloc();
	explicit Msg(uint8_t cmd)
	{
		REQUIRE(genlmsg_put(msg, 0, 1, 0x20, 0, 0, cmd, MEMFED_GENL_VERSION));
	}
	~Msg() { nlmsg_free(msg); }
	nlmsghdr *hdr() { return nlmsg_hdr(msg); }
};

} // namespace

TEST_CASE("KmodLink reports the family absent exactly when memfed.ko is not loaded")
{
	bool loaded = std::filesystem::exists("/sys/module/memfed");
	CHECK(KmodLink::available() == loaded);
	if (loaded)
		return;
	auto link = KmodLink::open();
	REQUIRE_FALSE(link.is_ok());
	CHECK(link.status().code() == Code::kUnavailable);
	CHECK(link.status().message().find("memfed.ko") != std::string::npos);
	auto watch = KmodWatch::open();
	REQUIRE_FALSE(watch.is_ok());
	CHECK(watch.status().code() == Code::kUnavailable);
}

TEST_CASE("Layout splits and builds extended virtual addresses")
{
	Layout l;
	l.va_bits = 47;
	l.ext_bits = 17;
	uint64_t eva = l.eva_of(5) + 0x1234;
	CHECK(eva == ((uint64_t{5} << 47) | 0x1234));
	CHECK(l.index_of(eva) == 5);
	CHECK(l.offset_of(eva) == 0x1234);
	CHECK(l.index_of(0x7fffffffe000) == 0); // an ordinary pointer
	CHECK(l.index_of(~uint64_t{0}) == (uint64_t{1} << 17) - 1);
}

TEST_CASE("A module entry survives encoding and decoding")
{
	ModuleEntry m;
	m.id = *ModuleId::parse("02:00:00:00:00:07");
	m.state = ModuleState::kDegraded;
	m.capacity = uint64_t{1} << 40;
	m.endpoint = "tcp:10.0.0.7:7070";
	m.flags = kModuleLocal | kModuleRdma;
	Msg msg(MEMFED_CMD_SET_MODULE);
	REQUIRE(codec::put_module(msg.msg, m));
	auto back = codec::parse_module(msg.hdr());
	REQUIRE(back.is_ok());
	CHECK(back->id == m.id);
	CHECK(back->state == m.state);
	CHECK(back->capacity == m.capacity);
	CHECK(back->endpoint == m.endpoint);
	CHECK(back->flags == m.flags);

	auto ev = codec::parse_event(msg.hdr());
	REQUIRE(ev.is_ok());
	CHECK(ev->kind == Event::Kind::kModuleSet);
	CHECK(ev->module.endpoint == m.endpoint);
}

TEST_CASE("The version 2 attributes go only to a kmod that knows them")
{
	SECTION("a module's reason")
	{
		ModuleEntry m;
		m.id = *ModuleId::parse("02:00:00:00:00:07");
		m.state = ModuleState::kDown;
		m.reason = "route withdrawn (babeld: route gone)";
		Msg v2(MEMFED_CMD_SET_MODULE);
		REQUIRE(codec::put_module(v2.msg, m, 2));
		auto back = codec::parse_module(v2.hdr());
		REQUIRE(back.is_ok());
		CHECK(back->reason == m.reason);
		Msg v1(MEMFED_CMD_SET_MODULE);
		REQUIRE(codec::put_module(v1.msg, m, 1));
		back = codec::parse_module(v1.hdr());
		REQUIRE(back.is_ok());
		CHECK(back->reason.empty()); // a version 1 kmod would refuse it
	}
	SECTION("a route's next-hop address and interface")
	{
		RouteEntry r;
		r.dest.value = 0x020000000001;
		r.next_hop.value = 0x020000000002;
		REQUIRE(inet_pton(AF_INET6, "fe80::1:2", &r.via) == 1);
		r.dev = "veth-b";
		// The request carries them to a version 2 kmod, not to a version 1 one.
		auto attrs = [&](int version, int type) {
			Msg m(MEMFED_CMD_SET_ROUTE);
			REQUIRE(codec::put_route(m.msg, r, version));
			nlattr *top[MEMFED_A_MAX + 1];
			REQUIRE(genlmsg_parse(m.hdr(), 0, top, MEMFED_A_MAX, nullptr) == 0);
			nlattr *tb[MEMFED_ROUTE_A_MAX + 1];
			REQUIRE(nla_parse_nested(tb, MEMFED_ROUTE_A_MAX, top[MEMFED_A_ROUTE],
			                         nullptr) == 0);
			return tb[type] != nullptr;
		};
		CHECK(attrs(2, MEMFED_ROUTE_A_VIA));
		CHECK(attrs(2, MEMFED_ROUTE_A_DEV));
		CHECK(attrs(1, MEMFED_ROUTE_A_NEXT_HOP));
		CHECK_FALSE(attrs(1, MEMFED_ROUTE_A_VIA));
		CHECK_FALSE(attrs(1, MEMFED_ROUTE_A_DEV));

		// A reply (the kmod adds the age) decodes to the same route.
		Msg reply(MEMFED_CMD_GET_ROUTE);
		nlattr *nest = nla_nest_start(reply.msg, MEMFED_A_ROUTE);
		nla_put_u64(reply.msg, MEMFED_ROUTE_A_DEST, r.dest.value);
		nla_put_u32(reply.msg, MEMFED_ROUTE_A_CLASS, 0);
		nla_put_u64(reply.msg, MEMFED_ROUTE_A_NEXT_HOP, r.next_hop.value);
		nla_put_u32(reply.msg, MEMFED_ROUTE_A_METRIC, 7);
		nla_put_u32(reply.msg, MEMFED_ROUTE_A_HOPS, 2);
		nla_put_u64(reply.msg, MEMFED_ROUTE_A_AGE_MS, 5);
		nla_put(reply.msg, MEMFED_ROUTE_A_VIA, sizeof(r.via), &r.via);
		nla_put_string(reply.msg, MEMFED_ROUTE_A_DEV, "veth-b");
		nla_nest_end(reply.msg, nest);
		auto back = codec::parse_route(reply.hdr());
		REQUIRE(back.is_ok());
		CHECK(memcmp(&back->via, &r.via, sizeof(r.via)) == 0);
		CHECK(back->dev == "veth-b");
		CHECK(back->hops == 2);
	}
}

TEST_CASE("The decoder refuses entries the kmod never sends")
{
	SECTION("a route without its age")
	{
		RouteEntry r;
		r.dest.value = 0x020000000001;
		r.next_hop.value = 0x020000000002;
		Msg msg(MEMFED_CMD_GET_ROUTE);
		REQUIRE(codec::put_route(msg.msg, r));
		auto back = codec::parse_route(msg.hdr());
		REQUIRE_FALSE(back.is_ok());
		CHECK(back.status().code() == Code::kProtocol);
	}
	SECTION("a module ID of 4 bytes")
	{
		Msg msg(MEMFED_CMD_GET_MODULE);
		nlattr *nest = nla_nest_start(msg.msg, MEMFED_A_MODULE);
		REQUIRE(nla_put_u32(msg.msg, MEMFED_MODULE_A_ID, 1) == 0);
		nla_nest_end(msg.msg, nest);
		CHECK(codec::parse_module(msg.hdr()).status().code() == Code::kProtocol);
	}
	SECTION("an event with an unknown command")
	{
		Msg msg(MEMFED_CMD_GET_LAYOUT);
		CHECK(codec::parse_event(msg.hdr()).status().code() == Code::kProtocol);
	}
	SECTION("a window whose module ID has more than 48 bits")
	{
		Msg msg(MEMFED_CMD_GET_WINDOW);
		nlattr *nest = nla_nest_start(msg.msg, MEMFED_A_WINDOW);
		nla_put_u32(msg.msg, MEMFED_WINDOW_A_INDEX, 1);
		nla_put_u64(msg.msg, MEMFED_WINDOW_A_MODULE, uint64_t{1} << 50);
		nla_put_u64(msg.msg, MEMFED_WINDOW_A_OFFSET, 0);
		nla_put_u64(msg.msg, MEMFED_WINDOW_A_LENGTH, 4096);
		nla_put_u64(msg.msg, MEMFED_WINDOW_A_EVA, uint64_t{1} << 47);
		nla_nest_end(msg.msg, nest);
		CHECK(codec::parse_window(msg.hdr()).status().code() == Code::kProtocol);
	}
}

TEST_CASE("Kernel errors keep the extack message and name the fix")
{
	Status st = kernel_error(EPERM, "set module 02:00:00:00:00:01", "");
	CHECK(st.code() == Code::kPermission);
	CHECK(st.message().find("CAP_NET_ADMIN") != std::string::npos);
	st = kernel_error(EINVAL, "set window 3",
	                  "window offset must be a multiple of MEMFED_WINDOW_ALIGN");
	CHECK(st.code() == Code::kInvalidArgument);
	CHECK(st.message() == "set window 3: window offset must be a multiple of "
	                      "MEMFED_WINDOW_ALIGN (Invalid argument)");
	CHECK(kernel_error(ENOENT, "get window 9", "window not found").code() == Code::kNotFound);
	CHECK(kernel_error(ENOSPC, "set route", "").code() == Code::kNoSpace);
}
