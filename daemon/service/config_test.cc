#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

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
	REQUIRE(apply_config_json(
	        R"({"state_dir":"/s","pool":{"size":"64M","module_id":"02:00:00:00:00:07"},
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
	REQUIRE(load(
	        {"--listen=0.0.0.0:9000", "--peer", "a:1", "--peer", "b:2", "--pool-size", "32M"},
	        &cfg));
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

TEST_CASE("a mesh interface's own hello interval, by flag or key, only on a mesh interface",
          "[config]")
{
	DaemonConfig cfg;
	REQUIRE(load({"--mesh", "radio,wire", "--mesh-iface-hello", "radio=20"}, &cfg));
	REQUIRE(cfg.mesh.interface_hello_ms.size() == 1);
	CHECK(cfg.mesh.interface_hello_ms.at("radio") == 20);
	CHECK(cfg.mesh.hello_interval_ms == 100);

	DaemonConfig c2;
	REQUIRE(apply_config_json(R"({"mesh":{"interfaces":["radio","wire"],
		"interface_hello_ms":{"radio":20,"wire":400}}})",
	                          "t.json", &c2));
	CHECK(c2.mesh.interface_hello_ms.at("wire") == 400);

	DaemonConfig c3;
	Status st = load({"--mesh", "wire", "--mesh-iface-hello", "radio=20"}, &c3);
	REQUIRE(st.code() == Code::kInvalidArgument);
	CHECK(st.message().find("'radio'") != std::string::npos);
	CHECK(st.message().find("mesh.interfaces") != std::string::npos);
	DaemonConfig c4;
	CHECK(load({"--mesh", "radio", "--mesh-iface-hello", "radio"}, &c4)
	              .message()
	              .find("IFACE=MS") != std::string::npos);
	DaemonConfig c5;
	CHECK(load({"--mesh", "radio", "--mesh-iface-hello", "radio=5"}, &c5).code() ==
	      Code::kInvalidArgument);
	DaemonConfig c6;
	st = apply_config_json(R"({"mesh":{"interface_hello_ms":{"radio":"fast"}}})", "t.json",
	                       &c6);
	CHECK(st.message().find("mesh.interface_hello_ms.radio") != std::string::npos);
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

TEST_CASE("the pager's switches take true or false, and say so when given anything else")
{
	DaemonConfig cfg;
	REQUIRE(cfg.pager_colocate);
	REQUIRE(apply_config_json(R"({"pager":{"colocate":false,"wp_async":false}})", "t.json",
	                          &cfg)
	                .is_ok());
	CHECK_FALSE(cfg.pager_colocate);
	CHECK_FALSE(cfg.pager_wp_async);
	for (const char *key : {"colocate", "wp_async", "evict_by_move"}) {
		INFO(key);
		std::string doc = std::string(R"({"pager":{")") + key + R"(":"no"}})";
		Status st = apply_config_json(doc, "t.json", &cfg);
		CHECK(st.message() ==
		      std::string("t.json: key \"pager.") + key + "\" must be true or false");
	}
}

TEST_CASE("pager.refault_turns defaults to 7 and takes 0 to 15, naming the key otherwise")
{
	DaemonConfig cfg;
	REQUIRE(cfg.pager_refault_turns == 7);
	REQUIRE(apply_config_json(R"({"pager":{"refault_turns":0}})", "t.json", &cfg).is_ok());
	CHECK(cfg.pager_refault_turns == 0);
	for (const char *bad : {"16", "-1", "\"7\""}) {
		INFO(bad);
		std::string doc = std::string(R"({"pager":{"refault_turns":)") + bad + "}}";
		Status st = apply_config_json(doc, "t.json", &cfg);
		CHECK(st.message().find("\"pager.refault_turns\"") != std::string::npos);
		CHECK(st.message().find("0 to 15") != std::string::npos);
	}
	CHECK(cfg.pager_refault_turns == 0); // unchanged by the bad ones
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
	REQUIRE(apply_config_json(R"({"metrics": 9477})", "t.json", &c2)
	                .message()
	                .find("\"metrics\"") != std::string::npos);
}

TEST_CASE("RDMA: rdma.listen off by default, transport auto; both set by flag or key", "[config]")
{
	DaemonConfig cfg;
	REQUIRE(load({}, &cfg));
	REQUIRE(cfg.rdma_listen.empty());
	REQUIRE(cfg.transport == "auto");
	REQUIRE(load({"--rdma-listen", "10.0.0.2:7800", "--transport", "rdma"}, &cfg));
	REQUIRE(cfg.rdma_listen == "10.0.0.2:7800");
	REQUIRE(cfg.transport == "rdma");
	REQUIRE(apply_config_json(R"({"rdma": {"listen": null}, "transport": "tcp"})", "t.json",
	                          &cfg));
	REQUIRE(cfg.rdma_listen.empty());
	REQUIRE(cfg.transport == "tcp");
	DaemonConfig c2;
	Status st = load({"--transport", "infiniband"}, &c2);
	REQUIRE(st.code() == Code::kInvalidArgument);
	REQUIRE(st.message().find("\"auto\", \"tcp\" or \"rdma\"") != std::string::npos);
	st = apply_config_json(R"({"rdma": {"port": 1}})", "t.json", &c2);
	REQUIRE(st.message().find("\"rdma.port\"") != std::string::npos);
	st = load({"--rdma-listen", "7800"}, &c2);
	REQUIRE(st.message().find("--rdma-listen") != std::string::npos);
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
	                                  R"(", "name": "lamp-7", "endpoint": "10.0.0.7:7700",
	                                  "transport": "tcp"}],
	                                  "rekey_seconds": 30, "rekey_bytes": "1G"}})",
	                          "t.json", &cfg)
	                .is_ok());
	REQUIRE(cfg.trust.peers.size() == 1);
	CHECK(cfg.trust.peers[0].key == key->pub);
	CHECK(cfg.trust.peers[0].name == "lamp-7");
	CHECK(cfg.trust.peers[0].endpoint == "10.0.0.7:7700");
	CHECK(cfg.trust.peers[0].transport == "tcp");
	CHECK(cfg.trust.rekey_seconds == 30);
	CHECK(cfg.trust.rekey_bytes == (uint64_t{1} << 30));

	// The printed config reads back to the same peers.
	DaemonConfig again;
	REQUIRE(apply_config_json(config_to_json(cfg).dump(), "printed", &again).is_ok());
	CHECK(again.trust.peers == cfg.trust.peers);
	CHECK(config_to_json(again)["trust"]["key_file"] == cfg.state_dir + "/node.key");

	Status bad =
	        apply_config_json(R"({"trust": {"peers": [{"key": "nope"}]}})", "t.json", &cfg);
	CHECK(bad.code() == Code::kInvalidArgument);
	CHECK(bad.message().find("trust.peers key") != std::string::npos);
	bad = apply_config_json(
	        R"({"trust": {"peers": [{"key": ")" + b64 + R"(", "transport": "ib"}]}})", "t.json",
	        &cfg);
	CHECK(bad.code() == Code::kInvalidArgument);
	CHECK(bad.message().find("\"trust.peers.transport\" must be \"auto\", \"tcp\" or \"rdma\"") !=
	      std::string::npos);
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

namespace
{

trust::TrustedPeer fresh_peer(const std::string &name, const std::string &endpoint = "")
{
	auto k = trust::generate_node_key();
	REQUIRE(k);
	return {k->pub, name, endpoint};
}

std::string read_text(const std::string &path)
{
	std::ifstream f(path);
	std::stringstream ss;
	ss << f.rdbuf();
	return ss.str();
}

// A scratch directory, removed with everything in it.
struct ScratchDir {
	std::string path;
	ScratchDir()
	{
		char tmpl[] = "/tmp/memfed-config-test.XXXXXX";
		REQUIRE(mkdtemp(tmpl) != nullptr);
		path = tmpl;
	}
	~ScratchDir() { std::filesystem::remove_all(path); }
};

} // namespace

TEST_CASE("a reload applies trust.peers and the rekey limits, not only log_level", "[config]")
{
	DaemonConfig running;
	REQUIRE(load({"--state-dir", "/tmp/x"}, &running));
	DaemonConfig fresh = running;
	fresh.trust.peers = {fresh_peer("a"), fresh_peer("b")};
	fresh.trust.rekey_seconds = 30;
	fresh.trust.rekey_bytes = uint64_t{1} << 30;
	fresh.listen = "0.0.0.0:7701";
	ConfigReload r = plan_reload(running, fresh);
	CHECK(r.applied == std::vector<std::string>{"trust.peers 0 -> 2 keys",
	                                            "trust.rekey_seconds 120 -> 30",
	                                            "trust.rekey_bytes 64G -> 1G"});
	CHECK(r.need_restart == std::vector<std::string>{"listen"});

	// A changed name or endpoint of the same key is a change too.
	DaemonConfig renamed = fresh;
	renamed.trust.peers[0].endpoint = "10.0.0.9:7700";
	r = plan_reload(fresh, renamed);
	CHECK(r.applied == std::vector<std::string>{"trust.peers 2 -> 2 keys"});
	CHECK(r.need_restart.empty());
}

TEST_CASE("--trust adds to the file's trust.peers; the flag's endpoint wins", "[config]")
{
	ScratchDir dir;
	trust::TrustedPeer a = fresh_peer("a", "10.0.0.1:7700"), b = fresh_peer("b");
	trust::TrustedPeer c = fresh_peer("");
	std::string file = dir.path + "/memfedd.json";
	std::ofstream(file)
	        << nlohmann::json{{"trust", {{"peers", trusted_peers_json({a, b})}}}}.dump();
	std::string flag_a = trust::encode_key(a.key) + "@10.0.0.2:7700";
	std::string flag_c = trust::encode_key(c.key);
	DaemonConfig cfg;
	REQUIRE(load(
	        {"--config", file.c_str(), "--trust", flag_a.c_str(), "--trust", flag_c.c_str()},
	        &cfg));
	CHECK(cfg.config_file == file);
	CHECK(cfg.trust.file_peers == std::vector<trust::TrustedPeer>{a, b});
	REQUIRE(cfg.trust.flag_peers.size() == 2);
	REQUIRE(cfg.trust.peers.size() == 3);
	CHECK(cfg.trust.peers[0].key == a.key);
	CHECK(cfg.trust.peers[0].name == "a");
	CHECK(cfg.trust.peers[0].endpoint == "10.0.0.2:7700");
	CHECK(cfg.trust.peers[1] == b);
	CHECK(cfg.trust.peers[2].key == c.key);

	// Without --config the file to write is the default one.
	DaemonConfig plain;
	REQUIRE(load({}, &plain));
	CHECK(plain.config_file == "/etc/memfed/memfedd.json");
}

TEST_CASE("save_trusted_peers keeps every other key, their order and the file's mode", "[config]")
{
	ScratchDir dir;
	std::string file = dir.path + "/memfedd.json";
	const std::string original = R"({
  "state_dir": "/srv/memfed",
  "pool": {"size": "64M"},
  "trust": {"rekey_seconds": 30, "key_file": "/srv/memfed/k"},
  "log_level": "debug"
})";
	std::ofstream(file) << original;
	REQUIRE(chmod(file.c_str(), 0640) == 0);
	trust::TrustedPeer a = fresh_peer("a", "10.0.0.1:7700");
	REQUIRE(save_trusted_peers(file, {a}));

	auto doc = nlohmann::ordered_json::parse(read_text(file));
	std::vector<std::string> keys;
	for (auto &[k, v] : doc.items())
		keys.push_back(k);
	CHECK(keys == std::vector<std::string>{"state_dir", "pool", "trust", "log_level"});
	CHECK(doc["pool"]["size"] == "64M");
	CHECK(doc["log_level"] == "debug");
	CHECK(doc["trust"]["rekey_seconds"] == 30);
	CHECK(doc["trust"]["key_file"] == "/srv/memfed/k");
	DaemonConfig back;
	REQUIRE(apply_config_json(read_text(file), file, &back));
	CHECK(back.trust.file_peers == std::vector<trust::TrustedPeer>{a});
	CHECK(back.state_dir == "/srv/memfed");
	struct stat st;
	REQUIRE(stat(file.c_str(), &st) == 0);
	CHECK((st.st_mode & 07777) == 0640);
	CHECK(!std::filesystem::exists(file + ".tmp"));

	// Emptied, the list stays as an empty array.
	REQUIRE(save_trusted_peers(file, {}));
	CHECK(nlohmann::json::parse(read_text(file))["trust"]["peers"] == nlohmann::json::array());
}

TEST_CASE("save_trusted_peers creates a missing file and refuses to clobber a broken one",
          "[config]")
{
	ScratchDir dir;
	std::string file = dir.path + "/etc/memfed/memfedd.json";
	trust::TrustedPeer a = fresh_peer("a");
	REQUIRE(save_trusted_peers(file, {a}));
	auto doc = nlohmann::json::parse(read_text(file));
	CHECK(doc.size() == 1);
	CHECK(doc["trust"]["peers"] == trusted_peers_json({a}));

	std::string broken = dir.path + "/broken.json";
	std::ofstream(broken) << "{\"log_level\": \"info\",";
	Status st = save_trusted_peers(broken, {a});
	CHECK(st.code() == Code::kInvalidArgument);
	CHECK(st.message().find(broken) != std::string::npos);
	CHECK(read_text(broken) == "{\"log_level\": \"info\",");

	// A file whose other keys do not load is not written either.
	std::string bad_key = dir.path + "/bad_key.json";
	std::ofstream(bad_key) << R"({"pool": {"sise": 1}})";
	st = save_trusted_peers(bad_key, {a});
	CHECK(st.code() == Code::kInvalidArgument);
	CHECK(st.message().find("pool.sise") != std::string::npos);
}
