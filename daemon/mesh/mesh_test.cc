#include <catch2/catch.hpp>

#include <cstring>

#include "daemon/mesh/babel_event.h"
#include "daemon/mesh/babeld_config.h"
#include "daemon/mesh/hop_probe.h"
#include "daemon/mesh/module_address.h"
#include "daemon/mesh/route_table.h"

using namespace memfed;
using namespace memfed::mesh;

namespace
{

ModuleId mid(const char *text)
{
	return *ModuleId::parse(text);
}

BabelEvent line(const std::string &text)
{
	auto ev = parse_babel_line(text);
	REQUIRE(ev.is_ok());
	return *ev;
}

} // namespace

TEST_CASE("a module's address is the prefix plus the modified EUI-64 of its ID")
{
	MeshPrefix p = default_mesh_prefix();
	in6_addr a = module_address(p, mid("02:00:00:00:00:01"));
	// 02 -> 00 (the universal/local bit inverted), ff:fe in the middle.
	CHECK(format_ipv6(a) == "fd6d:6564::ff:fe00:1");
	CHECK(format_ipv6(module_address(p, mid("0a:1b:2c:3d:4e:5f"))) ==
	      "fd6d:6564::81b:2cff:fe3d:4e5f");
	CHECK(module_of_address(p, a) == mid("02:00:00:00:00:01"));
}

TEST_CASE("every module ID survives the round trip through its address")
{
	MeshPrefix p = *MeshPrefix::parse("fd00:1:2:3::/64");
	for (int i = 0; i < 1000; i++) {
		ModuleId id = ModuleId::random();
		auto back = module_of_address(p, module_address(p, id));
		REQUIRE(back.has_value());
		CHECK(back->value == id.value);
	}
}

TEST_CASE("addresses that are not module addresses name no module")
{
	MeshPrefix p = default_mesh_prefix();
	CHECK_FALSE(module_of_address(p, *parse_ipv6("fd6d:6564::1")).has_value());
	// A module address, but in another prefix.
	in6_addr other = module_address(*MeshPrefix::parse("fd00::/64"), mid("02:00:00:00:00:01"));
	CHECK_FALSE(module_of_address(p, other).has_value());
	// A node's own address is never a module's.
	CHECK(format_ipv6(node_address(p, mid("02:00:00:00:00:01"))) == "fd6d:6564::fe:fd00:1");
	CHECK_FALSE(module_of_address(p, node_address(p, mid("02:00:00:00:00:01"))).has_value());
	// ff:fe present but the ID would be zero.
	CHECK_FALSE(module_of_address(p, *parse_ipv6("fd6d:6564::200:ff:fe00:0")).has_value());
}

TEST_CASE("a mesh prefix must be a /64 network and says how to write one")
{
	CHECK(MeshPrefix::parse("fd6d:6564::/64").is_ok());
	auto wrong_len = MeshPrefix::parse("fd6d:6564::/48");
	REQUIRE_FALSE(wrong_len.is_ok());
	CHECK(wrong_len.status().message().find("/64") != std::string::npos);
	auto host_bits = MeshPrefix::parse("fd6d:6564::1/64");
	REQUIRE_FALSE(host_bits.is_ok());
	CHECK(host_bits.status().message().find("host bits") != std::string::npos);
	CHECK_FALSE(MeshPrefix::parse("10.0.0.0/64").is_ok());
	CHECK_FALSE(MeshPrefix::parse("fd6d:6564::").is_ok());
}

TEST_CASE("babeld's route, neighbour and interface lines parse")
{
	auto r = line("add route 5629a3c7e2b0 prefix fd6d:6564::ff:fe00:1/128 from ::/0 "
	              "installed yes id 02:00:00:ff:fe:00:00:01 metric 192 refmetric 96 "
	              "via fe80::a4b3:1ff:fe22:3344 if v12");
	CHECK(r.action == BabelEvent::Action::kAdd);
	CHECK(r.object == BabelEvent::Object::kRoute);
	CHECK(r.id == "5629a3c7e2b0");
	CHECK(format_ipv6(r.prefix) == "fd6d:6564::ff:fe00:1");
	CHECK(r.prefix_len == 128);
	CHECK(r.installed);
	CHECK(r.metric == 192);
	CHECK(r.refmetric == 96);
	CHECK(format_ipv6(r.via) == "fe80::a4b3:1ff:fe22:3344");
	CHECK(r.ifname == "v12");

	auto n = line("change neighbour 5629a3c7f010 address fe80::1 if v12 reach ffff "
	              "ureach 0000 rxcost 96 txcost 96 rtt 0.120 rttcost 0 cost 96");
	CHECK(n.object == BabelEvent::Object::kNeighbour);
	CHECK(n.action == BabelEvent::Action::kChange);
	CHECK(n.cost == 96);
	CHECK(n.ifname == "v12");

	auto i = line("add interface v12 up true ipv6 fe80::1");
	CHECK(i.object == BabelEvent::Object::kInterface);
	CHECK(i.up);

	auto f = line("flush route 5629a3c7e2b0");
	CHECK(f.action == BabelEvent::Action::kFlush);
	CHECK(f.id == "5629a3c7e2b0");
}

TEST_CASE("header and reply lines are skipped, unknown keys are ignored")
{
	for (const char *l : {"BABEL 1.0", "version babeld-1.12.1", "my-id 02:00:00:ff:fe:00:00:01",
	                      "ok", "", "add frobnicator 1 x y"})
		CHECK(line(l).object == BabelEvent::Object::kOther);
	auto r = line("add route 1 prefix fd6d:6564::ff:fe00:1/128 installed no metric 96 "
	              "shiny new via fe80::1 if v1");
	CHECK(r.metric == 96);
	CHECK_FALSE(r.installed);
}

TEST_CASE("malformed babeld lines are refused and name what is wrong")
{
	const char *bad[] = {
	        "add route 1 prefix fd6d::1/129 metric 1 via fe80::1 if v1",
	        "add route 1 prefix fd6d::1/128 metric 65536 via fe80::1 if v1",
	        "add route 1 prefix fd6d::1/128 metric -1 via fe80::1 if v1",
	        "add route 1 prefix fd6d::1/128 metric 12x via fe80::1 if v1",
	        "add route 1 prefix not-an-address/128 metric 1 via fe80::1 if v1",
	        "add route 1 prefix fd6d::1/128 metric 1 via fe80::1 if averyveryverylongifname",
	        "add route 1 prefix fd6d::1/128 metric 1 via fe80::1",
	        "add route 1 prefix fd6d::1/128 installed maybe metric 1 via fe80::1 if v1",
	        "add neighbour 1 if v1",
	};
	for (const char *l : bad) {
		auto ev = parse_babel_line(l);
		INFO(l);
		REQUIRE_FALSE(ev.is_ok());
		CHECK(ev.status().code() == Code::kProtocol);
		CHECK(ev.status().message().find("babeld sent a bad line") != std::string::npos);
	}
	CHECK_FALSE(parse_babel_line(std::string(kMaxBabelLine + 1, 'a')).is_ok());
}

TEST_CASE("the route table follows installed module routes: join, move, leave")
{
	RouteTable t(default_mesh_prefix());
	std::vector<RouteChange> ch;
	std::string dst = "fd6d:6564::ff:fe00:1/128";

	// A route babeld learnt but did not install is no module yet.
	t.apply(line("add route a prefix " + dst + " installed no metric 288 via fe80::2 if v2"),
	        10, &ch);
	CHECK(ch.empty());
	t.apply(line("add route b prefix " + dst + " installed yes metric 192 via fe80::1 if v1"),
	        20, &ch);
	REQUIRE(ch.size() == 1);
	CHECK(ch[0].kind == RouteChange::Kind::kJoined);
	CHECK(ch[0].route.module == mid("02:00:00:00:00:01"));
	CHECK(ch[0].route.ifname == "v1");
	CHECK(ch[0].route.since_ns == 20);
	t.set_hops(mid("02:00:00:00:00:01"), 2);

	// Same next hop, new metric: reported, hop count kept on show but to be
	// measured again (the path behind the neighbour may have changed).
	ch.clear();
	t.apply(line("change route b prefix " + dst +
	             " installed yes metric 200 via fe80::1 if v1"),
	        30, &ch);
	REQUIRE(ch.size() == 1);
	CHECK(ch[0].kind == RouteChange::Kind::kMoved);
	CHECK(ch[0].route.hops == 2);
	CHECK(ch[0].route.hops_stale);
	CHECK(ch[0].route.since_ns == 20);
	t.set_hops(mid("02:00:00:00:00:01"), 4);
	CHECK(t.find(mid("02:00:00:00:00:01"))->hops == 4);
	CHECK_FALSE(t.find(mid("02:00:00:00:00:01"))->hops_stale);

	// The link goes: babeld installs the other route, then flushes the first.
	ch.clear();
	t.apply(line("change route b prefix " + dst +
	             " installed no metric 65535 via fe80::1 if v1"),
	        40, &ch);
	t.apply(line("change route a prefix " + dst +
	             " installed yes metric 288 via fe80::2 if v2"),
	        41, &ch);
	t.apply(line("flush route b"), 42, &ch);
	REQUIRE(ch.size() == 2);
	CHECK(ch[0].kind == RouteChange::Kind::kLeft);
	CHECK(ch[1].kind == RouteChange::Kind::kJoined);
	CHECK(ch[1].route.ifname == "v2");
	CHECK(t.find(mid("02:00:00:00:00:01"))->hops == 0);

	ch.clear();
	t.apply(line("flush route a"), 50, &ch);
	REQUIRE(ch.size() == 1);
	CHECK(ch[0].kind == RouteChange::Kind::kLeft);
	CHECK(t.modules().empty());
}

TEST_CASE("a module address with routes from two routers has two originators")
{
	RouteTable t(default_mesh_prefix());
	std::vector<RouteChange> ch;
	std::string dst = "fd6d:6564::ff:fe00:1/128";
	// Two routes through two neighbours from one router: one originator.
	t.apply(line("add route a prefix " + dst +
	             " installed yes id 02:aa metric 192 via fe80::1 if v1"),
	        10, &ch);
	t.apply(line("add route b prefix " + dst +
	             " installed no id 02:aa metric 288 via fe80::2 if v2"),
	        10, &ch);
	REQUIRE(t.modules().size() == 1);
	CHECK(t.modules()[0].originators == std::vector<std::string>{"02:aa"});
	// A second router announces the same address: two nodes claim the ID.
	t.apply(line("add route c prefix " + dst +
	             " installed no id 02:bb metric 96 via fe80::3 if v3"),
	        20, &ch);
	CHECK(t.modules()[0].originators == std::vector<std::string>{"02:aa", "02:bb"});
	// Its route retracted (infinite metric): one again.
	t.apply(line("change route c prefix " + dst +
	             " installed no id 02:bb metric 65535 via fe80::3 if v3"),
	        30, &ch);
	CHECK(t.originators(mid("02:00:00:00:00:01")) == std::vector<std::string>{"02:aa"});
}

TEST_CASE("routes to addresses that are not modules stay out of the module view")
{
	RouteTable t(default_mesh_prefix());
	std::vector<RouteChange> ch;
	t.apply(line("add route a prefix fd6d:6564::1/128 installed yes metric 96 via fe80::1 if "
	             "v1"),
	        1, &ch);
	t.apply(line("add route b prefix fd6d:6564::/64 installed yes metric 96 via fe80::1 if v1"),
	        1, &ch);
	t.apply(line("add route c prefix fd00::ff:fe00:1/128 installed yes metric 96 via fe80::1 "
	             "if v1"),
	        1, &ch);
	CHECK(ch.empty());
	CHECK(t.modules().empty());
}

TEST_CASE("losing babeld loses every module route")
{
	RouteTable t(default_mesh_prefix());
	std::vector<RouteChange> ch;
	t.apply(line("add route a prefix fd6d:6564::ff:fe00:1/128 installed yes metric 96 "
	             "via fe80::1 if v1"),
	        1, &ch);
	t.apply(line("add route b prefix fd6d:6564::ff:fe00:2/128 installed yes metric 96 "
	             "via fe80::1 if v1"),
	        1, &ch);
	ch.clear();
	t.clear(&ch);
	CHECK(ch.size() == 2);
	CHECK(t.modules().empty());
}

TEST_CASE("the generated babeld config announces exactly the node's addresses")
{
	BabeldOptions o;
	o.interfaces = {"v1", "v2"};
	o.announce = {module_address(default_mesh_prefix(), mid("02:00:00:00:00:01"))};
	o.hello_interval_ms = 50;
	o.config_path = "/x/babeld.conf";
	std::string t = babeld_config_text(o);
	CHECK(t.find("default hello-interval 0.050\n") != std::string::npos);
	// No metric smoothing by default: a better route is taken at once.
	CHECK(t.find("smoothing-half-life 0\n") != std::string::npos);
	CHECK(t.find("interface v1\n") != std::string::npos);
	CHECK(t.find("interface v2\n") != std::string::npos);
	o.interface_hello_ms = {{"v2", 20}};
	t = babeld_config_text(o);
	CHECK(t.find("interface v1\n") != std::string::npos);
	CHECK(t.find("interface v2 hello-interval 0.020\n") != std::string::npos);
	CHECK(t.find("redistribute local ip fd6d:6564::ff:fe00:1/128 allow\n") !=
	      std::string::npos);
	// The denies come after the allows: babeld takes the first match.
	CHECK(t.find("redistribute local deny\n") > t.find("allow"));
	CHECK(t.find("redistribute deny\n") > t.find("allow"));
	auto argv = babeld_argv(o);
	REQUIRE(argv.size() >= 3);
	CHECK(argv[1] == "-c");
	CHECK(argv[2] == "/x/babeld.conf");
}

TEST_CASE("hop probe messages round-trip and anything else is dropped")
{
	uint8_t buf[kHopProbeSize];
	encode_hop_probe({2, 63, 0x0102030405060708ull}, buf);
	auto m = decode_hop_probe(buf, sizeof(buf));
	REQUIRE(m.has_value());
	CHECK(m->type == 2);
	CHECK(m->received_hop_limit == 63);
	CHECK(m->nonce == 0x0102030405060708ull);
	CHECK_FALSE(decode_hop_probe(buf, sizeof(buf) - 1).has_value());
	uint8_t bad[kHopProbeSize];
	for (size_t i : {0, 4, 5, 7}) {
		std::memcpy(bad, buf, sizeof(buf));
		bad[i] ^= 0x40;
		CHECK_FALSE(decode_hop_probe(bad, sizeof(bad)).has_value());
	}
	encode_hop_probe({1, 5, 1}, bad); // a probe never carries a hop limit
	CHECK_FALSE(decode_hop_probe(bad, sizeof(bad)).has_value());
}

TEST_CASE("a module on this very node is one hop away, measured")
{
	auto fixed = HopResponder::start(47731);
	REQUIRE(fixed.is_ok());
	auto hops = measure_hops(in6addr_loopback, 47731, 1000);
	REQUIRE(hops.has_value());
	CHECK(*hops == 1);
	// Nobody answers on another port: no figure, rather than a guess.
	CHECK_FALSE(measure_hops(in6addr_loopback, 47732, 200).has_value());
}
