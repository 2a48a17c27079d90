#include <catch2/catch.hpp>

#include "daemon/service/config.h"

using namespace memfed;

static Status load(std::vector<const char *> args, DaemonConfig *cfg)
{
	args.insert(args.begin(), "memfedd");
	bool help = false;
	return load_config(int(args.size()), const_cast<char **>(args.data()), cfg, &help);
}

TEST_CASE("no config gives a one-node federation")
{
	DaemonConfig cfg;
	REQUIRE(load({"--state-dir", "/tmp/x"}, &cfg));
	REQUIRE(cfg.role_module);
	REQUIRE(cfg.role_pager);
	REQUIRE(cfg.pool_path == "/tmp/x/pool.mfp");
	REQUIRE(cfg.listen == "127.0.0.1:7700");
}

TEST_CASE("config JSON sets every key and rejects unknown keys by name")
{
	DaemonConfig cfg;
	REQUIRE(apply_config_json(R"({"state_dir":"/s","pool":{"size":"64M","module_id":"02:00:00:00:00:07"},
		"peers":["127.0.0.1:7701"],"roles":["module"],"log_level":"warn","pager":{"budget":"1M"}})",
				  "t.json", &cfg));
	REQUIRE(cfg.pool_size == 64u << 20);
	REQUIRE(cfg.module_id.value == 0x020000000007ull);
	REQUIRE(cfg.peers.size() == 1);
	REQUIRE_FALSE(cfg.role_pager);
	REQUIRE(cfg.pager_budget == 1u << 20);

	Status st = apply_config_json(R"({"pool":{"sise":"1G"}})", "t.json", &cfg);
	REQUIRE(st.code() == Code::kInvalidArgument);
	REQUIRE(st.message().find("\"pool.sise\"") != std::string::npos);
	st = apply_config_json(R"({"listen": 7700})", "t.json", &cfg);
	REQUIRE(st.message().find("\"listen\"") != std::string::npos);
	st = apply_config_json(R"({"pool":{"size":"lots"}})", "t.json", &cfg);
	REQUIRE(st.message().find("pool.size") != std::string::npos);
	REQUIRE_FALSE(apply_config_json("[1]", "t.json", &cfg));
	REQUIRE_FALSE(apply_config_json("{", "t.json", &cfg));
	REQUIRE_FALSE(apply_config_json(R"({"roles":["relay-ish"]})", "t.json", &cfg));
}

TEST_CASE("flags override and are validated")
{
	DaemonConfig cfg;
	REQUIRE(load({"--listen=0.0.0.0:9000", "--peer", "a:1", "--peer", "b:2", "--pool-size", "32M"}, &cfg));
	REQUIRE(cfg.listen == "0.0.0.0:9000");
	REQUIRE(cfg.peers.size() == 2);
	DaemonConfig c2;
	REQUIRE(load({"--bogus"}, &c2).message().find("--bogus") != std::string::npos);
	REQUIRE(load({"--listen", "nope"}, &c2).code() == Code::kInvalidArgument);
	REQUIRE(load({"--listen", "h:99999"}, &c2).code() == Code::kInvalidArgument);
	REQUIRE(load({"--pool-size", "1M"}, &c2).message().find("minimum") != std::string::npos);
	REQUIRE(load({"--config", "/nonexistent.json"}, &c2).code() == Code::kNotFound);
	REQUIRE(load({"--pool-size"}, &c2).message().find("needs a value") != std::string::npos);
}

TEST_CASE("the printed config is a config file that gives the same config back")
{
	DaemonConfig cfg;
	REQUIRE(load({"--print-config", "--roles", "pager", "--peer", "10.0.0.2:7700",
	              "--module-id", "02:00:00:00:00:09", "--pager-cpus", "0,1", "--log-level",
	              "debug"},
	             &cfg));
	REQUIRE(cfg.print_config);
	nlohmann::json printed = config_to_json(cfg);
	DaemonConfig back;
	REQUIRE(apply_config_json(printed.dump(), "printed", &back));
	REQUIRE(config_to_json(back) == printed);
	REQUIRE(printed["pool"]["module_id"] == "02:00:00:00:00:09");
	REQUIRE(printed["pager"]["cpus"] == nlohmann::json::array({0, 1}));

	// The defaults print too: a random module ID is null, and null reads back.
	DaemonConfig dflt;
	nlohmann::json d = config_to_json(dflt);
	REQUIRE(d["pool"]["module_id"].is_null());
	REQUIRE(apply_config_json(d.dump(), "defaults", &back));
	REQUIRE_FALSE(back.module_id.valid());
}

TEST_CASE("a key the printed config does not have is unknown, nested or not")
{
	DaemonConfig cfg;
	Status st = apply_config_json(R"({"pager":{"threads":2,"treads":2}})", "t.json", &cfg);
	REQUIRE(st.message().find("unknown key \"pager.treads\"") != std::string::npos);
	st = apply_config_json(R"({"sockett":"/x"})", "t.json", &cfg);
	REQUIRE(st.message().find("unknown key \"sockett\"") != std::string::npos);
}

TEST_CASE("the metrics endpoint is off by default and set by flag or key")
{
	DaemonConfig cfg;
	REQUIRE(load({}, &cfg));
	REQUIRE(cfg.metrics.empty());
	REQUIRE(load({"--metrics", "127.0.0.1:0"}, &cfg));
	REQUIRE(cfg.metrics == "127.0.0.1:0");
	REQUIRE(apply_config_json(R"({"metrics": "[::1]:9477"})", "t.json", &cfg));
	REQUIRE(cfg.metrics == "[::1]:9477");
	DaemonConfig c2;
	Status st = load({"--metrics", "9477"}, &c2);
	REQUIRE(st.code() == Code::kInvalidArgument);
	REQUIRE(st.message().find("--metrics") != std::string::npos);
	REQUIRE(apply_config_json(R"({"metrics": 9477})", "t.json", &c2).message().find("\"metrics\"") !=
		std::string::npos);
}

TEST_CASE("a reload applies log_level and names every other changed key as needing a restart")
{
	DaemonConfig running;
	REQUIRE(load({"--state-dir", "/tmp/x"}, &running));

	DaemonConfig same = running;
	ConfigReload none = plan_reload(running, same);
	REQUIRE(none.applied.empty());
	REQUIRE(none.need_restart.empty());

	DaemonConfig fresh = running;
	REQUIRE(apply_config_json(R"({"log_level": "debug", "listen": "0.0.0.0:7701",
		"peers": ["10.0.0.3:7700"], "pager": {"budget": "64M"}})",
	                          "test", &fresh));
	ConfigReload r = plan_reload(running, fresh);
	REQUIRE(r.applied == std::vector<std::string>{"log_level info -> debug"});
	REQUIRE(r.need_restart == std::vector<std::string>{"listen", "pager.budget", "peers"});

	DaemonConfig quota = running;
	REQUIRE(apply_config_json(R"({"quota": {"uid_bytes": "8M", "uid_regions": null}})", "test",
	                          &quota));
	r = plan_reload(running, quota);
	REQUIRE(r.applied == std::vector<std::string>{"quota.uid_bytes \"50%\" -> 8388608",
	                                              "quota.uid_regions \"50%\" -> null"});
	REQUIRE(r.need_restart.empty());
}

TEST_CASE("trust: peers from the file and from --trust, bad keys named", "[config]")
{
	auto key = memfed::trust::generate_node_key();
	REQUIRE(key);
	std::string b64 = memfed::trust::encode_key(key->pub);
	DaemonConfig cfg;
	REQUIRE(apply_config_json(R"({"trust": {"peers": [{"key": ")" + b64 +
	                                  R"(", "name": "lamp-7", "endpoint": "10.0.0.7:7700"}],
	                                  "rekey_seconds": 30, "rekey_bytes": "1G"}})",
	                          "t.json", &cfg)
	                .is_ok());
	REQUIRE(cfg.trust.peers.size() == 1);
	CHECK(cfg.trust.peers[0].key == key->pub);
	CHECK(cfg.trust.peers[0].name == "lamp-7");
	CHECK(cfg.trust.peers[0].endpoint == "10.0.0.7:7700");
	CHECK(cfg.trust.rekey_seconds == 30);
	CHECK(cfg.trust.rekey_bytes == (uint64_t{1} << 30));

	// The printed config reads back to the same peers.
	DaemonConfig again;
	REQUIRE(apply_config_json(config_to_json(cfg).dump(), "printed", &again).is_ok());
	CHECK(again.trust.peers == cfg.trust.peers);
	CHECK(config_to_json(again)["trust"]["key_file"] == cfg.state_dir + "/node.key");

	Status bad = apply_config_json(R"({"trust": {"peers": [{"key": "nope"}]}})", "t.json", &cfg);
	CHECK(bad.code() == Code::kInvalidArgument);
	CHECK(bad.message().find("trust.peers key") != std::string::npos);
	bad = apply_config_json(R"({"trust": {"peers": [{"key": ")" + b64 + R"(", "port": 1}]}})",
	                        "t.json", &cfg);
	CHECK(bad.message().find("trust.peers.port") != std::string::npos);

	std::string flag = "--trust=" + b64 + "@127.0.0.1:7701";
	std::vector<std::string> args = {"memfedd", flag, "--key-file", "/tmp/k"};
	std::vector<char *> argv;
	for (auto &a : args)
		argv.push_back(a.data());
	DaemonConfig fromflags;
	bool help = false;
	REQUIRE(load_config(int(argv.size()), argv.data(), &fromflags, &help).is_ok());
	REQUIRE(fromflags.trust.peers.size() == 1);
	CHECK(fromflags.trust.peers[0].endpoint == "127.0.0.1:7701");
	CHECK(fromflags.trust.key_file == "/tmp/k");
}
