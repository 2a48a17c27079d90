// DaemonConfig: everything memfedd can be told, from one JSON file plus
// command-line flags (flags win). With neither, memfedd is a one-node
// federation: module + pager, listening on loopback, pool under the state dir.
//
// Every key is listed in config_usage(), which `memfedd --help` prints, and
// written by config_to_json(), which is the file's schema: a new key goes into
// both, and into doc/man/memfed.json.5.scd (the man page test checks). Unknown
// keys and values of the wrong type are errors that name the key.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "daemon/common/ids.h"
#include "daemon/common/log.h"
#include "daemon/common/status.h"
#include "daemon/service/quota.h"
#include "daemon/trust/trusted_peers.h"

namespace memfed {

struct DaemonConfig {
	std::string config_path; // where it was read from, "" for built-in defaults
	// The file memfedd reads and `memfedctl peer add` writes: --config FILE,
	// else /etc/memfed/memfedd.json, whether or not it exists yet.
	std::string config_file;
	std::string state_dir = "/var/lib/memfed";
	std::string socket = "/run/memfed/memfedd.sock";
	bool role_module = true;
	bool role_pager = true;
	bool role_relay = false; // a mesh node that only forwards (no module, no pager)
	std::string pool_path;			 // default: <state_dir>/pool.mfp
	uint64_t pool_size = uint64_t{1} << 30;	 // bytes
	ModuleId module_id;			 // used when formatting a new pool
	std::string listen = "127.0.0.1:7700";	 // wire protocol endpoint
	std::vector<std::string> peers;		 // modules to reach, "host:port"
	std::string metrics;			 // Prometheus endpoint "host:port", "" = off
	std::string rdma_listen;		 // module: rdma_cm endpoint, "" = no RDMA
	std::string transport = "auto";		 // pager: auto, tcp or rdma (daemon/rdma/)
	uint32_t request_timeout_ms = 15000;	 // silence that loses a module's connection
	LogLevel log_level = LogLevel::kInfo;
	std::string kmod = "auto";		 // "auto": use memfed.ko when loaded; "off"
	uint32_t kmod_refresh_ms = 3000;	 // tables synced with memfed.ko at least this often
	uint32_t replicas = 1;			 // copies a new region gets (1..8)
	uint32_t replica_grace_seconds = 60;	 // a copy lost longer is rebuilt elsewhere; 0 = never
	uint64_t pager_budget = 0;	    // default resident budget per mapping, 0 = none
	uint64_t pager_process_budget = 0;  // default resident budget per process, 0 = none
	uint32_t pager_prefetch_pages = 256; // pages kept ahead of a stream, 0 = no prefetch
	bool pager_evict_by_move = true;     // PagerConfig::evict_by_move
	bool pager_wp_async = true;          // PagerConfig::wp_async
	uint32_t pager_threads = 1;
	bool pager_colocate = true;         // PagerConfig::colocate
	uint32_t pager_refault_turns = 7;   // PagerConfig::refault_turns
	std::vector<int> pager_cpus;	    // pin fault threads to these CPUs; empty = no pinning
	bool print_config = false;          // --print-config: print config_to_json() and exit
	struct Mesh {
		std::vector<std::string> interfaces; // empty: not in a mesh
		std::string prefix = "fd6d:6564::/64";
		uint32_t hello_interval_ms = 100;
		// Interfaces whose babel hellos go at their own interval (ms).
		std::map<std::string, uint32_t> interface_hello_ms;
		// babeld's smoothing-half-life: 0 switches to a better route at once
		uint32_t smoothing_half_life_s = 0;
		uint32_t leave_grace_ms = 1000;
		std::string babeld = "babeld";
		// A DSCP priority qdisc on each mesh interface (priority_qdisc.h),
		// shaping at qos_rate_mbit (the link's rate).
		bool qos = true;
		uint32_t qos_rate_mbit = 10000;
	} mesh;
	QuotaConfig quota; // what one uid (or node) may hold on this module (quota.h)
	// Trust between nodes: this node's key and the keys it talks to.
	struct Trust {
		std::string key_file;                   // default: <state_dir>/node.key
		// The keys this node trusts: the config file's list, then the
		// --trust flags (a flag's endpoint wins for a key in both).
		std::vector<trust::TrustedPeer> peers;
		std::vector<trust::TrustedPeer> file_peers; // "trust.peers": `peer add` edits these
		std::vector<trust::TrustedPeer> flag_peers; // --trust KEY[@HOST:PORT]
		uint32_t rekey_seconds = 120;           // new session keys this often...
		uint64_t rekey_bytes = uint64_t{1} << 36; // ...or after this many bytes (64 GiB)
	} trust;
};

// Parses argv into `cfg`: reads --config FILE (or /etc/memfed/memfedd.json if
// it exists and no --config is given), then applies flags. Sets *help when
// --help was given (the caller prints usage and exits 0).
Status load_config(int argc, char **argv, DaemonConfig *cfg, bool *help);
// Applies one JSON document (exposed for tests).
Status apply_config_json(const std::string &text, const std::string &origin, DaemonConfig *cfg);
std::string config_usage();
// The whole configuration as a config-file document: every key the file
// accepts, with its value in `cfg`. It is also the file's schema:
// apply_config_json() rejects any key this document does not have, so
// `memfedd --print-config` lists every key (the man page test relies on it).
nlohmann::json config_to_json(const DaemonConfig &cfg);
// "trust.peers" as the config file writes it, and parsed back (errors name
// `origin` and `key`).
nlohmann::json trusted_peers_json(const std::vector<trust::TrustedPeer> &peers);
Status parse_trusted_peers(const nlohmann::json &v, const std::string &origin,
                           const std::string &key, std::vector<trust::TrustedPeer> *out);
// The trusted set from the file's list and the flags': the file's entries in
// order, a flag's key added or, when the file has it too, given the flag's
// endpoint.
std::vector<trust::TrustedPeer> merge_trusted_peers(std::vector<trust::TrustedPeer> file,
                                                    const std::vector<trust::TrustedPeer> &flags);
// Writes `peers` as "trust.peers" into the config file at `path`, keeping
// every other key and their order: the file is read, changed, checked to load
// as a config, and replaced atomically with its mode and owner. A missing
// file (and its directory) is created, holding only the trust section. A
// file that does not parse is left alone (kInvalidArgument naming it).
Status save_trusted_peers(const std::string &path, const std::vector<trust::TrustedPeer> &peers);

// What a reload (SIGHUP, `systemctl reload memfedd`) does with a freshly
// loaded config. Keys that can change while memfedd runs are applied:
// "log_level", the "quota.*" keys, "trust.peers" (the next handshake sees the
// new set) and "trust.rekey_seconds"/"trust.rekey_bytes" (sessions keyed
// after the reload use them). Every other key that differs is listed in
// `need_restart`: it keeps its running value until memfedd restarts.
struct ConfigReload {
	std::vector<std::string> applied;      // "log_level info -> debug"
	std::vector<std::string> need_restart; // config keys, e.g. "listen", "peers"
};
ConfigReload plan_reload(const DaemonConfig &running, const DaemonConfig &fresh);

} // namespace memfed
