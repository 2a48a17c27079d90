#include <catch2/catch.hpp>

#include "libclient/run_config.h"

using memfed::client::normalize_path;
using memfed::client::RunConfig;

TEST_CASE("run config round-trips through MEMFED_RUN's JSON")
{
	RunConfig c;
	c.socket = "/tmp/x/sock";
	c.run_id = "ab12";
	c.heap_size = 1 << 30;
	c.heap_budget = 64 << 20;
	c.maps["/data/db"] = "db";
	c.soft_grace_ms = 2500;
	auto back = RunConfig::from_json(c.to_json());
	REQUIRE(back);
	CHECK(back->soft_grace_ms == 2500);
	CHECK(back->socket == c.socket);
	CHECK(back->heap_size == c.heap_size);
	CHECK(back->heap_budget == c.heap_budget);
	CHECK(back->maps == c.maps);
	CHECK(back->heap_prefix() == "heap.ab12.");
}

TEST_CASE("run config without soft_grace_ms is hard mode")
{
	auto c = RunConfig::from_json("{\"run_id\":\"a\"}");
	REQUIRE(c);
	CHECK(c->soft_grace_ms == 0);
	CHECK(c->to_json().find("soft_grace_ms") == std::string::npos);
	CHECK_FALSE(RunConfig::from_json("{\"run_id\":\"a\",\"soft_grace_ms\":-1}"));
}

TEST_CASE("run config rejects garbage with a message naming MEMFED_RUN")
{
	for (const char *bad : {"", "[1]", "{\"heap_size\":\"big\",\"run_id\":\"a\"}",
	                        "{\"run_id\":\"a\",\"maps\":{\"rel/path\":\"r\"}}",
	                        "{\"run_id\":\"\"}", "{\"run_id\":\"a/b\"}"}) {
		auto r = RunConfig::from_json(bad);
		CHECK_FALSE(r);
		CHECK(r.status().message().find("MEMFED_RUN") != std::string::npos);
	}
}

TEST_CASE("paths map to regions through --map entries and the prefix")
{
	RunConfig c;
	c.run_id = "x";
	c.prefix = "/memfed";
	c.maps["/srv/data.bin"] = "data";
	CHECK(c.region_for("/memfed/cfg", "/") == "cfg");
	CHECK(c.region_for("/memfed//cfg", "/") == "cfg");
	CHECK(c.region_for("cfg", "/memfed") == "cfg");
	CHECK(c.region_for("../memfed/./cfg", "/tmp") == "cfg");
	CHECK(c.region_for("/srv/data.bin", "/") == "data");
	CHECK(c.region_for("/srv/../srv/data.bin", "/") == "data");
	CHECK_FALSE(c.region_for("/memfed", "/"));
	CHECK_FALSE(c.region_for("/memfed/", "/"));
	CHECK_FALSE(c.region_for("/memfed/a/b", "/"));     // nested: not a region name
	CHECK_FALSE(c.region_for("/memfedx/cfg", "/"));    // prefix is a whole component
	CHECK_FALSE(c.region_for("/memfed/.hidden", "/")); // invalid region name
	CHECK_FALSE(c.region_for("/etc/passwd", "/"));
	CHECK(normalize_path("/a//b/./c/") == "/a/b/c");
	CHECK(normalize_path("/..") == "/");
}
