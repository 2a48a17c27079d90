// The babeld configuration memfedd generates for its node.
//
// memfedd never reuses a babeld config written by hand: it writes one file
// per start, from its own settings, that makes babeld announce exactly the
// node's own mesh addresses (its modules' addresses and, for a node without
// a module, the node's own address) and nothing else: every other local
// address and every kernel route is denied. babeld's pid file, state file and
// local socket are given on its command line (babeld_argv), so several
// daemons side by side (network namespaces in tests) never share them.
#pragma once

#include <netinet/in.h>

#include <map>
#include <string>
#include <vector>

namespace memfed::mesh
{

struct BabeldOptions {
	std::string babeld = "babeld"; // the binary (PATH is searched)
	std::vector<std::string> interfaces;
	std::vector<in6_addr> announce;   // the /128s this node originates
	uint32_t hello_interval_ms = 100; // babel "hello-interval"
	// Interfaces whose hellos go at another interval than the default: a
	// radio link to something that moves wants fast hellos (the car's
	// 20 ms), a wired backbone can keep the default.
	std::map<std::string, uint32_t> interface_hello_ms;
	uint32_t update_interval_ms = 0;  // 0: babeld's default (4 × hello)
	// babel "smoothing-half-life": babeld moves to a better route only once
	// the better route's smoothed metric (which starts at infinity for a
	// route just learnt) is below the installed one's; with babeld's 4 s a
	// car keeps the two-hop route through the lamp post behind it for tens
	// of seconds after it reached the next one. 0 turns smoothing off.
	uint32_t smoothing_half_life_s = 0;
	std::string config_path;          // where the generated config is written
	std::string pid_path;
	std::string state_path;
	std::string socket_path; // the local interface (-G)
};

// The config file's text.
std::string babeld_config_text(const BabeldOptions &o);
// The command line that runs babeld in the foreground with that config.
std::vector<std::string> babeld_argv(const BabeldOptions &o);

} // namespace memfed::mesh
