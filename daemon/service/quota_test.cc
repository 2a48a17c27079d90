// Quota limits: config values, resolution against a module, and the refusal
// a user reads (quota.h).
#include <catch2/catch.hpp>

#include "daemon/service/config.h"
#include "daemon/service/quota.h"

using namespace memfed;
using nlohmann::json;

namespace
{

bool contains(const std::string &s, const std::string &part)
{
	return s.find(part) != std::string::npos;
}

constexpr uint64_t kMiB = 1 << 20;

} // namespace

TEST_CASE("quota limits parse as sizes, counts, percentages or null, and print back")
{
	QuotaLimit l;
	REQUIRE(parse_quota_limit("t", "quota.uid_bytes", json("512M"), true, &l));
	CHECK(l == QuotaLimit::amount(512 * kMiB));
	REQUIRE(parse_quota_limit("t", "quota.uid_bytes", json(4096), true, &l));
	CHECK(l == QuotaLimit::amount(4096));
	REQUIRE(parse_quota_limit("t", "quota.uid_regions", json("25%"), false, &l));
	CHECK(l == QuotaLimit::percent(25));
	CHECK(l.to_json() == json("25%"));
	REQUIRE(parse_quota_limit("t", "quota.uid_regions", json(nullptr), false, &l));
	CHECK(l == QuotaLimit::none());
	CHECK(l.to_json().is_null());

	for (json bad : {json("0%"), json("101%"), json("%"), json("5.5%"), json(-1), json(true),
	                 json("lots")}) {
		Status st = parse_quota_limit("t.json", "quota.uid_bytes", bad, true, &l);
		INFO(bad.dump());
		CHECK(st.code() == Code::kInvalidArgument);
		CHECK(contains(st.message(), "t.json: key \"quota.uid_bytes\""));
	}
	// A count of regions is not a size.
	CHECK_FALSE(parse_quota_limit("t", "quota.uid_regions", json("1K"), false, &l));
}

TEST_CASE("quota keys are in the config file's schema, with finite defaults")
{
	DaemonConfig cfg;
	json printed = config_to_json(cfg);
	CHECK(printed["quota"] == json{{"uid_bytes", "50%"},
	                               {"uid_regions", "50%"},
	                               {"node_bytes", "50%"},
	                               {"node_regions", "50%"},
	                               {"root_exempt", true}});
	REQUIRE(apply_config_json(
	        R"({"quota":{"uid_bytes":"8M","uid_regions":3,"node_bytes":null,"root_exempt":false}})",
	        "t.json", &cfg));
	CHECK(cfg.quota.uid_bytes == QuotaLimit::amount(8 * kMiB));
	CHECK(cfg.quota.uid_regions == QuotaLimit::amount(3));
	CHECK(cfg.quota.node_bytes == QuotaLimit::none());
	CHECK(cfg.quota.node_regions == QuotaLimit::percent(50));
	CHECK_FALSE(cfg.quota.root_exempt);
	// The printed form reads back as the same config.
	DaemonConfig again;
	REQUIRE(apply_config_json(config_to_json(cfg).dump(), "printed", &again));
	CHECK(config_to_json(again) == config_to_json(cfg));

	Status st = apply_config_json(R"({"quota":{"uid_byte":"8M"}})", "t.json", &cfg);
	CHECK(contains(st.message(), "\"quota.uid_byte\""));
	st = apply_config_json(R"({"quota":{"root_exempt":"yes"}})", "t.json", &cfg);
	CHECK(contains(st.message(), "\"quota.root_exempt\" must be true or false"));
}

TEST_CASE("a uid's limits resolve against the module; root is exempt by default")
{
	QuotaConfig q;
	ModuleSize m{1024 * kMiB, 32768};
	UidLimits l = uid_limits(q, 1000, m);
	CHECK(l.bytes == 512 * kMiB);
	CHECK(l.regions == 16384);
	CHECK_FALSE(l.exempt);
	UidLimits root = uid_limits(q, 0, m);
	CHECK(root.exempt);
	CHECK(root.bytes == kNoLimit);
	q.root_exempt = false;
	CHECK(uid_limits(q, 0, m).bytes == 512 * kMiB);
	q.uid_bytes = QuotaLimit::none();
	CHECK(uid_limits(q, 1000, m).bytes == kNoLimit);
	CHECK(QuotaLimit::percent(33).resolve(1000) == 330);
	CHECK(QuotaLimit::percent(100).resolve(uint64_t{1} << 56) == uint64_t{1} << 56);
}

TEST_CASE("a create over quota is refused naming the quota, the usage and the key to raise")
{
	QuotaConfig q;
	q.uid_bytes = QuotaLimit::amount(8 * kMiB);
	q.uid_regions = QuotaLimit::amount(3);
	ModuleSize m{64 * kMiB, 1024};
	const std::string mod = "02:00:00:00:00:01";
	OwnerUsage u{6 * kMiB, 2};
	CHECK(admit_region(q, 1000, u, "fits", 2 * kMiB, mod, m, "/etc/m.json"));

	Status st = admit_region(q, 1000, u, "big", 3 * kMiB, mod, m, "/etc/m.json");
	CHECK(st.code() == Code::kQuota);
	CHECK(st.message() ==
	      "cannot create region 'big' of 3M: uid 1000 holds 2 regions of 6M on module "
	      "02:00:00:00:00:01, and its quota is 8M (\"quota.uid_bytes\": \"8M\"); delete "
	      "regions it no longer needs (memfedctl quota shows usage and limits), or raise "
	      "\"quota.uid_bytes\" in /etc/m.json");

	u.regions = 3;
	st = admit_region(q, 1000, u, "r4", 4096, mod, m, "");
	CHECK(st.code() == Code::kQuota);
	CHECK(contains(st.message(), "uid 1000 holds 3 regions of 6M"));
	CHECK(contains(st.message(), "its quota is 3 regions (\"quota.uid_regions\": 3)"));
	CHECK(contains(st.message(), "raise \"quota.uid_regions\" in /etc/memfed/memfedd.json"));

	q.uid_regions = QuotaLimit::percent(50);
	u.regions = 512;
	st = admit_region(q, 1000, u, "r", 4096, mod, m, "");
	CHECK(contains(st.message(), "(\"quota.uid_regions\": \"50%\" of the module's 1024-region "
	                             "table)"));
	// Root is exempt; a size beyond the whole quota never wraps around.
	CHECK(admit_region(q, 0, u, "r", 4096, mod, m, ""));
	u = {};
	CHECK(admit_region(q, 1000, u, "huge", UINT64_MAX, mod, m, "").code() == Code::kQuota);
}

TEST_CASE("another node's creates are admitted within the node quota, root or not", "[quota]")
{
	QuotaConfig q;
	q.node_bytes = QuotaLimit::percent(25);
	q.node_regions = QuotaLimit::amount(2);
	ModuleSize m{64 * kMiB, 1024};
	const std::string mod = "02:00:00:00:00:01";
	NodeLimits l = node_limits(q, m);
	CHECK(l.bytes == 16 * kMiB);
	CHECK(l.regions == 2);
	CHECK(admit_node_region(q, "KEY=", OwnerUsage{kMiB, 1}, "r", kMiB, mod, m, ""));
	Status st =
	        admit_node_region(q, "KEY=", OwnerUsage{kMiB, 2}, "r3", kMiB, mod, m, "/m.json");
	CHECK(st.code() == Code::kQuota);
	CHECK(contains(st.message(),
	               "node KEY= holds 2 regions of 1M on module 02:00:00:00:00:01"));
	CHECK(contains(st.message(), "raise \"quota.node_regions\" in /m.json"));
	st = admit_node_region(q, "KEY=", OwnerUsage{15 * kMiB, 1}, "big", 2 * kMiB, mod, m, "");
	CHECK(contains(st.message(), "(\"quota.node_bytes\": \"25%\" of the module's 64M pool)"));
}

TEST_CASE("on a thin pool a write that takes new pages past the byte quota is refused", "[quota]")
{
	QuotaConfig q;
	q.uid_bytes = QuotaLimit::amount(8 * kMiB);
	q.node_bytes = QuotaLimit::percent(25);
	const ModuleSize m{64 * kMiB, 4096};
	const std::string mod = "02:00:00:00:00:01";
	RegionInfo r;
	r.name = "heap.1";
	r.owner_uid = 1000;
	CHECK(admit_write(q, r, "", OwnerUsage{6 * kMiB, 1}, 2 * kMiB, mod, m, ""));
	Status st =
	        admit_write(q, r, "", OwnerUsage{6 * kMiB, 1}, 2 * kMiB + 4096, mod, m, "/m.json");
	CHECK(st.code() == Code::kQuota);
	CHECK(contains(st.message(), "cannot write "));
	CHECK(contains(st.message(), " of new pages to region 'heap.1'"));
	CHECK(contains(st.message(), "uid 1000 has written 6M on module 02:00:00:00:00:01"));
	CHECK(contains(st.message(), "its quota is 8M"));
	CHECK(contains(st.message(), "raise \"quota.uid_bytes\" in /m.json"));
	// Root is exempt; another node's region counts against the node quota.
	r.owner_uid = 0;
	CHECK(admit_write(q, r, "", OwnerUsage{60 * kMiB, 1}, kMiB, mod, m, ""));
	r.owner_key[0] = 1;
	st = admit_write(q, r, "KEY=", OwnerUsage{16 * kMiB, 1}, 4096, mod, m, "");
	CHECK(st.code() == Code::kQuota);
	CHECK(contains(st.message(), "node KEY= has written 16M"));
	CHECK(contains(st.message(), "(\"quota.node_bytes\": \"25%\" of the module's 64M pool)"));
	CHECK(admit_write(q, r, "KEY=", OwnerUsage{15 * kMiB, 1}, kMiB, mod, m, ""));
}
