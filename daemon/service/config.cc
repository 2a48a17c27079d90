#include "daemon/service/config.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <unistd.h>

#include "daemon/common/size.h"

namespace memfed {

using nlohmann::json;

namespace {

constexpr const char *kDefaultConfigPath = "/etc/memfed/memfedd.json";

Status type_error(const std::string &origin, const std::string &key, const char *want)
{
	return Status(Code::kInvalidArgument,
		      origin + ": key \"" + key + "\" must be " + want);
}

Status set_bool(const std::string &origin, const std::string &key, const json &v, bool *out)
{
	if (!v.is_boolean())
		return type_error(origin, key, "true or false");
	*out = v.get<bool>();
	return Status::ok();
}

Status set_size(const std::string &origin, const std::string &key, const json &v, uint64_t *out)
{
	if (v.is_number_unsigned()) {
		*out = v.get<uint64_t>();
		return Status::ok();
	}
	if (v.is_string()) {
		auto s = parse_size(v.get<std::string>());
		if (s) {
			*out = *s;
			return Status::ok();
		}
	}
	return type_error(origin, key, "a size (bytes, or a string like \"512M\")");
}

Status set_string(const std::string &origin, const std::string &key, const json &v, std::string *out)
{
	if (!v.is_string() || v.get<std::string>().empty())
		return type_error(origin, key, "a non-empty string");
	*out = v.get<std::string>();
	return Status::ok();
}

Status set_endpoint(const std::string &origin, const std::string &key, const std::string &v,
		    std::string *out)
{
	auto colon = v.rfind(':');
	if (colon == std::string::npos || colon == 0 || colon + 1 == v.size())
		return Status(Code::kInvalidArgument,
			      origin + ": \"" + key + "\" value '" + v + "' is not HOST:PORT");
	for (size_t i = colon + 1; i < v.size(); i++)
		if (v[i] < '0' || v[i] > '9')
			return Status(Code::kInvalidArgument, origin + ": \"" + key +
								      "\" port in '" + v + "' is not a number");
	if (std::stoul(v.substr(colon + 1, 6)) > 65535)
		return Status(Code::kInvalidArgument,
			      origin + ": \"" + key + "\" port in '" + v + "' is above 65535");
	*out = v;
	return Status::ok();
}

Status set_roles(const std::string &origin, const std::string &key,
		 const std::vector<std::string> &roles, DaemonConfig *cfg)
{
	cfg->role_module = cfg->role_pager = cfg->role_relay = false;
	for (const auto &r : roles) {
		if (r == "module")
			cfg->role_module = true;
		else if (r == "pager")
			cfg->role_pager = true;
		else if (r == "relay")
			cfg->role_relay = true;
		else
			return Status(Code::kInvalidArgument, origin + ": \"" + key + "\" has unknown role '" +
								      r + "' (known: module, pager, relay)");
	}
	if (cfg->role_relay && (cfg->role_module || cfg->role_pager))
		return Status(Code::kInvalidArgument,
			      origin + ": \"" + key +
				      "\": relay is a node that only forwards; it takes no other role");
	return Status::ok();
}

Status set_log_level(const std::string &origin, const std::string &key, const std::string &v,
		     DaemonConfig *cfg)
{
	if (!parse_log_level(v.c_str(), &cfg->log_level))
		return Status(Code::kInvalidArgument, origin + ": \"" + key + "\" value '" + v +
							      "' is not one of debug, info, warn, error");
	return Status::ok();
}

Status set_module_id(const std::string &origin, const std::string &key, const std::string &v,
		     DaemonConfig *cfg)
{
	auto id = ModuleId::parse(v);
	if (!id)
		return Status(Code::kInvalidArgument, origin + ": \"" + key + "\" value '" + v +
							      "' is not a module ID like 02:00:00:00:00:01");
	cfg->module_id = *id;
	return Status::ok();
}

Status set_kmod(const std::string &origin, const std::string &key, const std::string &v,
		DaemonConfig *cfg)
{
	if (v != "auto" && v != "off")
		return Status(Code::kInvalidArgument,
			      origin + ": \"" + key + "\" must be \"auto\" or \"off\", not '" + v + "'");
	cfg->kmod = v;
	return Status::ok();
}

bool valid_transport(const std::string &v)
{
	return v == "auto" || v == "tcp" || v == "rdma";
}

Status transport_error(const std::string &origin, const std::string &key, const std::string &v)
{
	return Status(Code::kInvalidArgument,
		      origin + ": \"" + key + "\" must be \"auto\", \"tcp\" or \"rdma\", not '" + v + "'");
}

Status set_transport(const std::string &origin, const std::string &key, const std::string &v,
		     DaemonConfig *cfg)
{
	if (!valid_transport(v))
		return transport_error(origin, key, v);
	cfg->transport = v;
	return Status::ok();
}

Status set_u32(const std::string &origin, const std::string &key, const json &v, uint32_t lo,
	       uint32_t hi, uint32_t *out)
{
	if (!v.is_number_unsigned() || v.get<uint64_t>() < lo || v.get<uint64_t>() > hi)
		return type_error(origin, key,
				  ("an integer from " + std::to_string(lo) + " to " + std::to_string(hi))
					  .c_str());
	*out = uint32_t(v.get<uint64_t>());
	return Status::ok();
}

} // namespace

std::string config_usage()
{
	return R"(usage: memfedd [options]

memfedd is the memfed node daemon: it exports this node's NVM pool as a memory
module, and pages remote regions into local processes.

Options (each has a config-file key; flags override the file):
  --config FILE        JSON config (default /etc/memfed/memfedd.json if present)
  --state-dir DIR      "state_dir"   state directory (default /var/lib/memfed)
  --socket PATH        "socket"      control socket (default /run/memfed/memfedd.sock)
  --roles LIST         "roles"       comma list of module,pager (default both), or
                                     relay: a mesh node that only forwards
  --pool PATH          "pool.path"   pool file or DAX device (default STATE_DIR/pool.mfp)
  --pool-size SIZE     "pool.size"   pool size, e.g. 1G (default 1G)
  --module-id ID       "pool.module_id" ID for a newly formatted pool
                                     (default: random, locally administered)
  --listen HOST:PORT   "listen"      wire protocol endpoint (default 127.0.0.1:7700)
  --peer HOST:PORT     "peers"       a module to federate with (repeatable)
  --metrics HOST:PORT  "metrics"     serve Prometheus metrics at http://HOST:PORT/metrics
                                     (default off; port 0 picks a free port)
  --rdma-listen HOST:PORT  "rdma.listen" module: serve one-sided RDMA reads of
                                     the pool via rdma_cm on this address of an
                                     RDMA device (default off)
  --transport MODE     "transport"   pager: auto (RDMA reads where a module
                                     offers them, else TCP), tcp or rdma
                                     (default auto)
  --request-timeout MS "request_timeout_ms" a module that leaves requests
                                     unanswered this long (stopped, hung,
                                     unreachable) loses its connection, which
                                     is then dialled again (15000; 0 = wait
                                     forever)
  --log-level LEVEL    "log_level"   debug, info, warn or error (default info)
  --kmod MODE          "kmod"        auto (use memfed.ko when loaded) or off
                       "kmod_refresh_ms" sync with memfed.ko at least this
                                     often; mesh changes at once (3000)
  --replicas N         "replicas"    copies a new region gets, on distinct nodes
                                     (1 to 8, default 1; memfedctl region create
                                     --replicas overrides it)
  --replica-grace S    "replica_grace_seconds" a copy lost for longer than S
                                     seconds is rebuilt on another module
                                     (0 = never, at most 86400; default 60)
  --pager-budget SIZE  "pager.budget" default resident budget per mapping
                                     (0 = none; clients may ask for one)
  --pager-process-budget SIZE  "pager.process_budget" default per process (0 = none)
  --pager-prefetch N   "pager.prefetch_pages" pages kept ahead of a detected
                                     stream (256; 0 = no prefetch)
  --pager-threads N    "pager.threads" fault-serving threads (1)
  --pager-cpus LIST    "pager.cpus"  CPUs to pin fault threads to, e.g. 0,1
                                     (default: not pinned)
                       "pager.colocate" pin a thread that raises nearly all of
                                     its process's faults beside its pager
                                     thread while it does (true)
                       "pager.refault_turns" extra turns of the eviction
                                     clock for a page that comes back soon
                                     after it was evicted (0 to 15; 7)
                       "pager.evict_by_move" evict with UFFDIO_MOVE where the
                                     kernel has it (true)
                       "pager.wp_async" find written pages without a fault
                                     each, where the kernel can (true)
  --mesh IFACES        "mesh.interfaces" join the mesh on these interfaces
                                     (comma list): babeld routes, modules are
                                     found by their routes
  --mesh-prefix P      "mesh.prefix" the mesh's ULA /64 (default fd6d:6564::/64)
  --mesh-hello-ms N    "mesh.hello_interval_ms" babel hello interval (100)
  --mesh-iface-hello IFACE=N
                       "mesh.interface_hello_ms" {"IFACE": N}: the hello
                                     interval on one mesh interface (a
                                     radio link to a moving node: 20);
                                     repeat for more
  --mesh-smoothing-s N "mesh.smoothing_half_life_s" babeld's metric smoothing
                                     half-life; 0 (default) takes a better
                                     route at once (a car reaching a new
                                     lamp post), babeld's own default is 4
  --babeld PATH        "mesh.babeld" the babeld binary (default: babeld in PATH)
  --no-mesh-qos        "mesh.qos" put a priority qdisc keyed on DSCP (faults
                                     first, bulk last) on each mesh interface,
                                     removed on exit (true)
  --mesh-qos-rate-mbit N  "mesh.qos_rate_mbit" the rate that qdisc shapes to:
                                     the link's rate (10000)
                       "mesh.leave_grace_ms" how long a module's route may be
                                     gone before the module is (1000)
  --key-file PATH      "trust.key_file" this node's private key (default
                                     STATE_DIR/node.key, created on first start)
  --trust KEY[@HOST:PORT]  trust the node with this public key, and dial
                                     it at HOST:PORT (repeatable); added to the
                                     file's "trust.peers", never written to it
                       "trust.peers" entries: {"key": KEY, "name": NAME,
                                     "endpoint": "HOST:PORT"}; name and
                                     endpoint are optional
                       "trust.rekey_seconds" new session keys this often (120)
                       "trust.rekey_bytes" ...or after this many bytes (64G)
                       "quota.uid_bytes" bytes one local user (uid) may hold on
                                     this node's module: a size, "N%" of the
                                     pool, or null for no limit (default "50%")
                       "quota.uid_regions" regions one uid may hold: a number,
                                     "N%" of the region table, or null ("50%")
                       "quota.root_exempt" uid 0 has no quota (default true)
                       "quota.node_bytes", "quota.node_regions" the same for each
                                     remote node, once peers are authenticated
                                     (not enforced yet; default "50%")
  --print-config       print the configuration these flags and the config file
                       give, as a config file with every key, and exit
  --help               this text

SIGHUP (systemctl reload memfedd) re-reads the config file and applies
"log_level", "quota.*", "trust.peers" and "trust.rekey_*" at once; other
changed keys are logged and wait for a restart. `memfedctl peer add|rm` change
the trusted peers at once and write "trust.peers" into the config file
(--config FILE, else /etc/memfed/memfedd.json, created if missing).

Example config:
  {"state_dir": "/var/lib/memfed", "pool": {"path": "/dev/dax0.0", "size": "16G"},
   "listen": "10.0.0.2:7700", "peers": ["10.0.0.3:7700"], "roles": ["module", "pager"]}
)";
}

json trusted_peers_json(const std::vector<trust::TrustedPeer> &peers)
{
	json out = json::array();
	for (const auto &p : peers) {
		json e = {{"key", trust::encode_key(p.key)}};
		if (!p.name.empty())
			e["name"] = p.name;
		if (!p.endpoint.empty())
			e["endpoint"] = p.endpoint;
		if (!p.transport.empty())
			e["transport"] = p.transport;
		out.push_back(e);
	}
	return out;
}

Status parse_trusted_peers(const json &v, const std::string &origin, const std::string &key,
                           std::vector<trust::TrustedPeer> *out)
{
	const char *want = "an array of {\"key\": KEY, \"name\": NAME, \"endpoint\": "
	                   "\"HOST:PORT\", \"transport\": \"auto|tcp|rdma\"} (all but key "
	                   "optional)";
	if (!v.is_array())
		return type_error(origin, key, want);
	std::vector<trust::TrustedPeer> peers;
	for (const auto &e : v) {
		if (!e.is_object() || !e.contains("key") || !e["key"].is_string())
			return type_error(origin, key, want);
		trust::TrustedPeer p;
		for (auto &[field, fv] : e.items()) {
			std::string k = key + "." + field;
			if (field == "key") {
				auto pk = trust::decode_public_key(fv.get<std::string>(),
				                                   origin + ": " + key + " key");
				if (!pk)
					return pk.status();
				p.key = *pk;
			} else if (field == "name") {
				MF_RETURN_IF_ERROR(set_string(origin, k, fv, &p.name));
			} else if (field == "endpoint") {
				std::string ep;
				if (!fv.is_string())
					return type_error(origin, k, "a string \"HOST:PORT\"");
				MF_RETURN_IF_ERROR(set_endpoint(origin, k, fv.get<std::string>(), &ep));
				p.endpoint = ep;
			} else if (field == "transport") {
				MF_RETURN_IF_ERROR(set_string(origin, k, fv, &p.transport));
				if (!valid_transport(p.transport))
					return transport_error(origin, k, p.transport);
			} else {
				return Status(Code::kInvalidArgument,
				              origin + ": unknown key \"" + k +
				                      "\" (a trusted peer has key, name, endpoint and "
				                      "transport)");
			}
		}
		peers.push_back(std::move(p));
	}
	*out = std::move(peers);
	return Status::ok();
}

std::vector<trust::TrustedPeer> merge_trusted_peers(std::vector<trust::TrustedPeer> file,
                                                    const std::vector<trust::TrustedPeer> &flags)
{
	for (const auto &f : flags) {
		auto same = std::find_if(file.begin(), file.end(),
		                         [&](const trust::TrustedPeer &p) { return p.key == f.key; });
		if (same == file.end())
			file.push_back(f);
		else if (!f.endpoint.empty())
			same->endpoint = f.endpoint;
	}
	return file;
}

json config_to_json(const DaemonConfig &cfg)
{
	static const char *const kLevels[] = {"debug", "info", "warn", "error"};
	json roles = json::array();
	if (cfg.role_module)
		roles.push_back("module");
	if (cfg.role_pager)
		roles.push_back("pager");
	if (cfg.role_relay)
		roles.push_back("relay");
	return {{"state_dir", cfg.state_dir},
	        {"metrics", cfg.metrics.empty() ? json(nullptr) : json(cfg.metrics)},
	        {"socket", cfg.socket},
	        {"roles", roles},
	        {"pool",
	         {{"path", cfg.pool_path.empty() ? cfg.state_dir + "/pool.mfp" : cfg.pool_path},
	          {"size", cfg.pool_size},
	          {"module_id",
	           cfg.module_id.valid() ? json(cfg.module_id.to_string()) : json(nullptr)}}},
	        {"listen", cfg.listen},
	        {"rdma",
	         {{"listen", cfg.rdma_listen.empty() ? json(nullptr) : json(cfg.rdma_listen)}}},
	        {"transport", cfg.transport},
	        {"request_timeout_ms", cfg.request_timeout_ms},
	        {"peers", cfg.peers},
	        {"log_level", kLevels[int(cfg.log_level)]},
	        {"kmod", cfg.kmod},
	        {"kmod_refresh_ms", cfg.kmod_refresh_ms},
	        {"replicas", cfg.replicas},
	        {"replica_grace_seconds", cfg.replica_grace_seconds},
	        {"pager",
	         {{"budget", cfg.pager_budget},
	          {"process_budget", cfg.pager_process_budget},
	          {"prefetch_pages", cfg.pager_prefetch_pages},
	          {"evict_by_move", cfg.pager_evict_by_move},
	          {"wp_async", cfg.pager_wp_async},
	          {"threads", cfg.pager_threads},
	          {"cpus", cfg.pager_cpus},
	          {"colocate", cfg.pager_colocate},
	          {"refault_turns", cfg.pager_refault_turns}}},
	        {"mesh",
	         {{"interfaces", cfg.mesh.interfaces},
	          {"prefix", cfg.mesh.prefix},
	          {"hello_interval_ms", cfg.mesh.hello_interval_ms},
	          {"interface_hello_ms", cfg.mesh.interface_hello_ms},
	          {"smoothing_half_life_s", cfg.mesh.smoothing_half_life_s},
	          {"leave_grace_ms", cfg.mesh.leave_grace_ms},
	          {"babeld", cfg.mesh.babeld},
	          {"qos", cfg.mesh.qos},
	          {"qos_rate_mbit", cfg.mesh.qos_rate_mbit}}},
	        {"quota",
	         {{"uid_bytes", cfg.quota.uid_bytes.to_json()},
	          {"uid_regions", cfg.quota.uid_regions.to_json()},
	          {"node_bytes", cfg.quota.node_bytes.to_json()},
	          {"node_regions", cfg.quota.node_regions.to_json()},
	          {"root_exempt", cfg.quota.root_exempt}}},
	        {"trust",
	         {{"key_file",
	           cfg.trust.key_file.empty() ? cfg.state_dir + "/node.key" : cfg.trust.key_file},
	          {"peers", trusted_peers_json(cfg.trust.peers)},
	          {"rekey_seconds", cfg.trust.rekey_seconds},
	          {"rekey_bytes", cfg.trust.rekey_bytes}}}};
}

Status apply_config_json(const std::string &text, const std::string &origin, DaemonConfig *cfg)
{
	json doc = json::parse(text, nullptr, false);
	if (doc.is_discarded())
		return Status(Code::kInvalidArgument, origin + ": not valid JSON");
	if (!doc.is_object())
		return Status(Code::kInvalidArgument, origin + ": must be a JSON object");

	auto str = [&](const std::string &k, const json &v, std::function<Status(const std::string &)> f) {
		if (!v.is_string())
			return type_error(origin, k, "a string");
		return f(v.get<std::string>());
	};
	// Every key must be one config_to_json() writes: that document is the schema.
	static const json schema = config_to_json(DaemonConfig{});
	auto unknown = [&](const std::string &k) {
		return Status(Code::kInvalidArgument,
		              origin + ": unknown key \"" + k +
		                      "\" (memfedd --help lists every key)");
	};
	for (auto &[key, v] : doc.items()) {
		auto known = schema.find(key);
		if (known == schema.end())
			return unknown(key);
		if (known->is_object() && v.is_object())
			for (auto &[sub, sv] : v.items())
				if (!known->contains(sub))
					return unknown(key + "." + sub);
	}
	for (auto &item : doc.items()) {
		// Plain copies: clang 14 cannot capture structured bindings in lambdas.
		const std::string key = item.key();
		const json &v = item.value();
		Status st;
		if (key == "state_dir")
			st = set_string(origin, key, v, &cfg->state_dir);
		else if (key == "socket")
			st = set_string(origin, key, v, &cfg->socket);
		else if (key == "listen")
			st = str(key, v, [&](const std::string &s) { return set_endpoint(origin, key, s, &cfg->listen); });
		else if (key == "metrics" && v.is_null())
			cfg->metrics.clear(); // off
		else if (key == "metrics")
			st = str(key, v, [&](const std::string &s) { return set_endpoint(origin, key, s, &cfg->metrics); });
		else if (key == "log_level")
			st = str(key, v, [&](const std::string &s) { return set_log_level(origin, key, s, cfg); });
		else if (key == "kmod")
			st = str(key, v, [&](const std::string &s) { return set_kmod(origin, key, s, cfg); });
		else if (key == "kmod_refresh_ms")
			st = set_u32(origin, key, v, 100, 3600000, &cfg->kmod_refresh_ms);
		else if (key == "replicas")
			st = set_u32(origin, key, v, 1, 8, &cfg->replicas);
		else if (key == "request_timeout_ms")
			st = set_u32(origin, key, v, 0, 3600000, &cfg->request_timeout_ms);
		else if (key == "replica_grace_seconds")
			st = set_u32(origin, key, v, 0, 86400, &cfg->replica_grace_seconds);
		else if (key == "transport")
			st = str(key, v, [&](const std::string &s) { return set_transport(origin, key, s, cfg); });
		else if (key == "rdma") {
			if (!v.is_object())
				return type_error(origin, key, "an object");
			for (auto &[sub, sv] : v.items()) {
				std::string k = key + "." + sub;
				if (k == "rdma.listen" && sv.is_null())
					cfg->rdma_listen.clear();
				else if (k == "rdma.listen")
					st = str(k, sv, [&](const std::string &s) { return set_endpoint(origin, k, s, &cfg->rdma_listen); });
				else
					return Status(Code::kInvalidArgument, origin + ": unknown key \"" + k +
										      "\" (memfedd --help lists every key)");
				MF_RETURN_IF_ERROR(st);
			}
		}
		else if (key == "roles" || key == "peers") {
			if (!v.is_array())
				return type_error(origin, key, "an array of strings");
			std::vector<std::string> items;
			for (const auto &e : v) {
				if (!e.is_string())
					return type_error(origin, key, "an array of strings");
				items.push_back(e.get<std::string>());
			}
			if (key == "roles") {
				st = set_roles(origin, key, items, cfg);
			} else {
				cfg->peers.clear();
				for (const auto &p : items) {
					std::string ep;
					MF_RETURN_IF_ERROR(set_endpoint(origin, key, p, &ep));
					cfg->peers.push_back(ep);
				}
			}
		} else if (key == "mesh") {
			if (!v.is_object())
				return type_error(origin, key, "an object");
			for (auto &[sub, sv] : v.items()) {
				std::string k = key + "." + sub;
				if (k == "mesh.interfaces") {
					if (!sv.is_array())
						return type_error(origin, k, "an array of interface names");
					cfg->mesh.interfaces.clear();
					for (const auto &e : sv) {
						if (!e.is_string() || e.get<std::string>().empty())
							return type_error(origin, k,
									  "an array of interface names");
						cfg->mesh.interfaces.push_back(e.get<std::string>());
					}
				} else if (k == "mesh.prefix")
					st = set_string(origin, k, sv, &cfg->mesh.prefix);
				else if (k == "mesh.hello_interval_ms")
					st = set_u32(origin, k, sv, 10, 60000, &cfg->mesh.hello_interval_ms);
				else if (k == "mesh.interface_hello_ms") {
					if (!sv.is_object())
						return type_error(
						        origin, k,
						        "an object of interface: milliseconds");
					cfg->mesh.interface_hello_ms.clear();
					for (auto &[ifname, ms] : sv.items()) {
						uint32_t v = 0;
						MF_RETURN_IF_ERROR(set_u32(origin, k + "." + ifname,
						                           ms, 10, 60000, &v));
						cfg->mesh.interface_hello_ms[ifname] = v;
					}
				} else if (k == "mesh.smoothing_half_life_s")
					st = set_u32(origin, k, sv, 0, 3600, &cfg->mesh.smoothing_half_life_s);
				else if (k == "mesh.leave_grace_ms")
					st = set_u32(origin, k, sv, 0, 3600000, &cfg->mesh.leave_grace_ms);
				else if (k == "mesh.babeld")
					st = set_string(origin, k, sv, &cfg->mesh.babeld);
				else if (k == "mesh.qos")
					st = set_bool(origin, k, sv, &cfg->mesh.qos);
				else if (k == "mesh.qos_rate_mbit")
					st = set_u32(origin, k, sv, 1, 1000000, &cfg->mesh.qos_rate_mbit);
				else
					return Status(Code::kInvalidArgument, origin + ": unknown key \"" + k +
										      "\" (memfedd --help lists every key)");
				MF_RETURN_IF_ERROR(st);
			}
		} else if (key == "quota") {
			if (!v.is_object())
				return type_error(origin, key, "an object");
			for (auto &[sub, sv] : v.items()) {
				std::string k = key + "." + sub;
				if (k == "quota.uid_bytes")
					st = parse_quota_limit(origin, k, sv, true, &cfg->quota.uid_bytes);
				else if (k == "quota.uid_regions")
					st = parse_quota_limit(origin, k, sv, false, &cfg->quota.uid_regions);
				else if (k == "quota.node_bytes")
					st = parse_quota_limit(origin, k, sv, true, &cfg->quota.node_bytes);
				else if (k == "quota.node_regions")
					st = parse_quota_limit(origin, k, sv, false,
					                       &cfg->quota.node_regions);
				else if (k == "quota.root_exempt")
					st = set_bool(origin, k, sv, &cfg->quota.root_exempt);
				else
					return Status(Code::kInvalidArgument, origin + ": unknown key \"" + k +
										      "\" (memfedd --help lists every key)");
				MF_RETURN_IF_ERROR(st);
			}
		} else if (key == "trust") {
			if (!v.is_object())
				return type_error(origin, key, "an object");
			for (auto &[sub, sv] : v.items()) {
				std::string k = key + "." + sub;
				if (k == "trust.key_file")
					st = set_string(origin, k, sv, &cfg->trust.key_file);
				else if (k == "trust.peers") {
					st = parse_trusted_peers(sv, origin, k, &cfg->trust.file_peers);
					cfg->trust.peers = cfg->trust.file_peers;
				}
				else if (k == "trust.rekey_seconds")
					st = set_u32(origin, k, sv, 1, 86400, &cfg->trust.rekey_seconds);
				else if (k == "trust.rekey_bytes")
					st = set_size(origin, k, sv, &cfg->trust.rekey_bytes);
				MF_RETURN_IF_ERROR(st);
			}
		} else if (key == "pool" || key == "pager") {
			if (!v.is_object())
				return type_error(origin, key, "an object");
			for (auto &[sub, sv] : v.items()) {
				std::string k = key + "." + sub;
				if (k == "pool.path")
					st = set_string(origin, k, sv, &cfg->pool_path);
				else if (k == "pool.size")
					st = set_size(origin, k, sv, &cfg->pool_size);
				else if (k == "pool.module_id" && sv.is_null())
					cfg->module_id = ModuleId(); // a random ID
				else if (k == "pool.module_id")
					st = str(k, sv, [&](const std::string &s) { return set_module_id(origin, k, s, cfg); });
				else if (k == "pager.budget")
					st = set_size(origin, k, sv, &cfg->pager_budget);
				else if (k == "pager.process_budget")
					st = set_size(origin, k, sv, &cfg->pager_process_budget);
				else if (k == "pager.prefetch_pages")
					st = set_u32(origin, k, sv, 0, 4096, &cfg->pager_prefetch_pages);
				else if (k == "pager.evict_by_move")
					st = set_bool(origin, k, sv, &cfg->pager_evict_by_move);
				else if (k == "pager.wp_async")
					st = set_bool(origin, k, sv, &cfg->pager_wp_async);
				else if (k == "pager.colocate")
					st = set_bool(origin, k, sv, &cfg->pager_colocate);
				else if (k == "pager.refault_turns")
					st = set_u32(origin, k, sv, 0, 15,
					             &cfg->pager_refault_turns);
				else if (k == "pager.cpus") {
					if (!sv.is_array())
						return type_error(origin, k, "an array of CPU numbers");
					cfg->pager_cpus.clear();
					for (const auto &c : sv) {
						uint32_t cpu = 0;
						MF_RETURN_IF_ERROR(set_u32(origin, k, c, 0, 4095, &cpu));
						cfg->pager_cpus.push_back(int(cpu));
					}
				}
				else if (k == "pager.threads")
					st = set_u32(origin, k, sv, 1, 64, &cfg->pager_threads);
				else
					return Status(Code::kInvalidArgument, origin + ": unknown key \"" + k +
										      "\" (memfedd --help lists every key)");
				MF_RETURN_IF_ERROR(st);
			}
		} else {
			return Status(Code::kInvalidArgument, origin + ": unknown key \"" + key +
								      "\" (memfedd --help lists every key)");
		}
		MF_RETURN_IF_ERROR(st);
	}
	return Status::ok();
}

namespace {

const char *level_name(LogLevel l)
{
	static const char *names[] = {"debug", "info", "warn", "error"};
	return names[int(l)];
}

} // namespace

namespace
{

// {"pager": {"budget": 0}} -> "pager.budget": 0 (arrays are values).
void flatten_config(const json &j, const std::string &prefix, std::map<std::string, json> *out)
{
	for (auto &[k, v] : j.items()) {
		std::string key = prefix.empty() ? k : prefix + "." + k;
		if (v.is_object())
			flatten_config(v, key, out);
		else
			(*out)[key] = v;
	}
}

} // namespace

ConfigReload plan_reload(const DaemonConfig &running, const DaemonConfig &fresh)
{
	ConfigReload r;
	if (running.log_level != fresh.log_level)
		r.applied.push_back(std::string("log_level ") + level_name(running.log_level) +
		                    " -> " + level_name(fresh.log_level));
	if (running.trust.peers != fresh.trust.peers)
		r.applied.push_back("trust.peers " + std::to_string(running.trust.peers.size()) +
		                    " -> " + std::to_string(fresh.trust.peers.size()) + " keys");
	if (running.trust.rekey_seconds != fresh.trust.rekey_seconds)
		r.applied.push_back("trust.rekey_seconds " +
		                    std::to_string(running.trust.rekey_seconds) + " -> " +
		                    std::to_string(fresh.trust.rekey_seconds));
	if (running.trust.rekey_bytes != fresh.trust.rekey_bytes)
		r.applied.push_back("trust.rekey_bytes " + format_size(running.trust.rekey_bytes) +
		                    " -> " + format_size(fresh.trust.rekey_bytes));
	static const char *const kLive[] = {"log_level", "trust.peers", "trust.rekey_seconds",
	                                    "trust.rekey_bytes"};
	// Everything else is fixed while memfedd runs: the pool and its listener,
	// the federation's peers, the mesh and the pager's threads are built at
	// start. The keys compared are the printed config's, the one schema.
	std::map<std::string, json> before, after;
	flatten_config(config_to_json(running), "", &before);
	flatten_config(config_to_json(fresh), "", &after);
	// The quotas are read at each region create, so they apply at once too.
	for (const auto &[key, v] : after) {
		bool live = std::find(std::begin(kLive), std::end(kLive), key) != std::end(kLive);
		if (live || before[key] == v)
			continue;
		if (key.rfind("quota.", 0) == 0)
			r.applied.push_back(key + " " + before[key].dump() + " -> " + v.dump());
		else
			r.need_restart.push_back(key);
	}
	return r;
}

Status load_config(int argc, char **argv, DaemonConfig *cfg, bool *help)
{
	*help = false;
	std::string path;
	for (int i = 1; i < argc; i++) {
		std::string a = argv[i];
		if (a == "--config" && i + 1 < argc)
			path = argv[i + 1];
		else if (a.rfind("--config=", 0) == 0)
			path = a.substr(9);
	}
	bool explicit_path = !path.empty();
	cfg->config_file = explicit_path ? path : kDefaultConfigPath;
	if (!explicit_path && access(kDefaultConfigPath, F_OK) == 0)
		path = kDefaultConfigPath;
	if (!path.empty()) {
		std::ifstream f(path);
		if (!f)
			return Status(Code::kNotFound, "config file " + path + " cannot be read");
		std::stringstream ss;
		ss << f.rdbuf();
		MF_RETURN_IF_ERROR(apply_config_json(ss.str(), path, cfg));
		cfg->config_path = path;
	}

	bool peers_from_flags = false;
	for (int i = 1; i < argc; i++) {
		std::string a = argv[i], val;
		if (a == "--help" || a == "-h") {
			*help = true;
			return Status::ok();
		}
		auto eq = a.find('=');
		bool has_inline = a.rfind("--", 0) == 0 && eq != std::string::npos;
		if (has_inline) {
			val = a.substr(eq + 1);
			a = a.substr(0, eq);
		}
		auto need = [&]() -> Status {
			if (has_inline)
				return Status::ok();
			if (i + 1 >= argc)
				return Status(Code::kInvalidArgument, "flag " + a + " needs a value");
			val = argv[++i];
			return Status::ok();
		};
		const std::string origin = "command line";
		Status st;
		if (a == "--config") {
			st = need();
		} else if (a == "--print-config") {
			cfg->print_config = true;
		} else if (a == "--state-dir") {
			MF_RETURN_IF_ERROR(need());
			cfg->state_dir = val;
		} else if (a == "--socket") {
			MF_RETURN_IF_ERROR(need());
			cfg->socket = val;
		} else if (a == "--pool") {
			MF_RETURN_IF_ERROR(need());
			cfg->pool_path = val;
		} else if (a == "--pool-size") {
			MF_RETURN_IF_ERROR(need());
			st = set_size(origin, a, json(val), &cfg->pool_size);
		} else if (a == "--module-id") {
			MF_RETURN_IF_ERROR(need());
			st = set_module_id(origin, a, val, cfg);
		} else if (a == "--listen") {
			MF_RETURN_IF_ERROR(need());
			st = set_endpoint(origin, a, val, &cfg->listen);
		} else if (a == "--metrics") {
			MF_RETURN_IF_ERROR(need());
			st = set_endpoint(origin, a, val, &cfg->metrics);
		} else if (a == "--rdma-listen") {
			MF_RETURN_IF_ERROR(need());
			st = set_endpoint(origin, a, val, &cfg->rdma_listen);
		} else if (a == "--transport") {
			MF_RETURN_IF_ERROR(need());
			st = set_transport(origin, a, val, cfg);
		} else if (a == "--peer") {
			MF_RETURN_IF_ERROR(need());
			if (!peers_from_flags)
				cfg->peers.clear();
			peers_from_flags = true;
			std::string ep;
			st = set_endpoint(origin, a, val, &ep);
			cfg->peers.push_back(ep);
		} else if (a == "--key-file") {
			MF_RETURN_IF_ERROR(need());
			cfg->trust.key_file = val;
		} else if (a == "--trust") {
			MF_RETURN_IF_ERROR(need());
			trust::TrustedPeer p;
			auto at = val.find('@');
			auto pk = trust::decode_public_key(val.substr(0, at), "--trust key");
			if (!pk)
				return pk.status();
			p.key = *pk;
			if (at != std::string::npos)
				st = set_endpoint(origin, a, val.substr(at + 1), &p.endpoint);
			cfg->trust.flag_peers.push_back(std::move(p));
		} else if (a == "--roles") {
			MF_RETURN_IF_ERROR(need());
			std::vector<std::string> roles;
			std::stringstream ss(val);
			for (std::string r; std::getline(ss, r, ',');)
				roles.push_back(r);
			st = set_roles(origin, a, roles, cfg);
		} else if (a == "--log-level") {
			MF_RETURN_IF_ERROR(need());
			st = set_log_level(origin, a, val, cfg);
		} else if (a == "--kmod") {
			MF_RETURN_IF_ERROR(need());
			st = set_kmod(origin, a, val, cfg);
		} else if (a == "--request-timeout") {
			MF_RETURN_IF_ERROR(need());
			st = set_u32(origin, a, json::parse(val, nullptr, false), 0, 3600000,
				     &cfg->request_timeout_ms);
		} else if (a == "--replicas") {
			MF_RETURN_IF_ERROR(need());
			st = set_u32(origin, a, json::parse(val, nullptr, false), 1, 8,
				     &cfg->replicas);
		} else if (a == "--replica-grace") {
			MF_RETURN_IF_ERROR(need());
			st = set_u32(origin, a, json::parse(val, nullptr, false), 0, 86400,
				     &cfg->replica_grace_seconds);
		} else if (a == "--pager-budget") {
			MF_RETURN_IF_ERROR(need());
			st = set_size(origin, a, json(val), &cfg->pager_budget);
		} else if (a == "--pager-process-budget") {
			MF_RETURN_IF_ERROR(need());
			st = set_size(origin, a, json(val), &cfg->pager_process_budget);
		} else if (a == "--pager-cpus") {
			MF_RETURN_IF_ERROR(need());
			cfg->pager_cpus.clear();
			std::stringstream ss(val);
			for (std::string c; std::getline(ss, c, ',');) {
				uint32_t cpu = 0;
				MF_RETURN_IF_ERROR(set_u32(origin, a, json::parse(c, nullptr, false), 0, 4095, &cpu));
				cfg->pager_cpus.push_back(int(cpu));
			}
		} else if (a == "--mesh") {
			MF_RETURN_IF_ERROR(need());
			cfg->mesh.interfaces.clear();
			std::stringstream ss(val);
			for (std::string i; std::getline(ss, i, ',');) {
				if (!i.empty())
					cfg->mesh.interfaces.push_back(i);
			}
		} else if (a == "--mesh-prefix") {
			MF_RETURN_IF_ERROR(need());
			cfg->mesh.prefix = val;
		} else if (a == "--mesh-hello-ms") {
			MF_RETURN_IF_ERROR(need());
			st = set_u32(origin, a, json::parse(val, nullptr, false), 10, 60000,
				     &cfg->mesh.hello_interval_ms);
		} else if (a == "--mesh-iface-hello") {
			MF_RETURN_IF_ERROR(need());
			size_t eq = val.find('=');
			if (eq == 0 || eq == std::string::npos)
				return Status(Code::kInvalidArgument,
				              origin + ": --mesh-iface-hello '" + val +
				                      "' is not IFACE=MS (e.g. wlan0=20)");
			uint32_t ms = 0;
			st = set_u32(origin, a, json::parse(val.substr(eq + 1), nullptr, false), 10,
			             60000, &ms);
			if (st)
				cfg->mesh.interface_hello_ms[val.substr(0, eq)] = ms;
		} else if (a == "--no-mesh-qos") {
			cfg->mesh.qos = false;
		} else if (a == "--mesh-qos-rate-mbit") {
			MF_RETURN_IF_ERROR(need());
			st = set_u32(origin, a, json::parse(val, nullptr, false), 1, 1000000,
				     &cfg->mesh.qos_rate_mbit);
		} else if (a == "--mesh-smoothing-s") {
			MF_RETURN_IF_ERROR(need());
			st = set_u32(origin, a, json::parse(val, nullptr, false), 0, 3600,
				     &cfg->mesh.smoothing_half_life_s);
		} else if (a == "--babeld") {
			MF_RETURN_IF_ERROR(need());
			cfg->mesh.babeld = val;
		} else if (a == "--pager-prefetch" || a == "--pager-threads") {
			MF_RETURN_IF_ERROR(need());
			json n = json::parse(val, nullptr, false);
			if (a == "--pager-prefetch")
				st = set_u32(origin, a, n, 0, 4096, &cfg->pager_prefetch_pages);
			else
				st = set_u32(origin, a, n, 1, 64, &cfg->pager_threads);
		} else {
			return Status(Code::kInvalidArgument,
				      std::string("unknown option '") + argv[i] + "' (memfedd --help lists them)");
		}
		MF_RETURN_IF_ERROR(st);
	}
	cfg->trust.peers = merge_trusted_peers(cfg->trust.file_peers, cfg->trust.flag_peers);
	if (!cfg->role_module && !cfg->role_pager && !cfg->role_relay)
		return Status(Code::kInvalidArgument, "no roles enabled: give --roles module, pager or both");
	if (cfg->role_relay && cfg->mesh.interfaces.empty())
		return Status(Code::kInvalidArgument,
			      "a relay forwards in the mesh: give it --mesh IFACE[,IFACE...]");
	for (const auto &[ifname, ms] : cfg->mesh.interface_hello_ms)
		if (std::find(cfg->mesh.interfaces.begin(), cfg->mesh.interfaces.end(), ifname) ==
		    cfg->mesh.interfaces.end())
			return Status(
			        Code::kInvalidArgument,
			        "mesh.interface_hello_ms names '" + ifname +
			                "', which is not a mesh interface (add it to "
			                "mesh.interfaces / --mesh, or drop its hello interval)");
	if (cfg->pool_path.empty())
		cfg->pool_path = cfg->state_dir + "/pool.mfp";
	if (cfg->pool_size < (uint64_t{16} << 20))
		return Status(Code::kInvalidArgument, "pool size " + format_size(cfg->pool_size) +
							      " is below the minimum of 16M (set pool.size)");
	return Status::ok();
}

} // namespace memfed
