// Shared plumbing for memfedctl's commands: argument cursor, global options,
// output in human (terse, `wg show`-like) or JSON (-j) form, and the mapping
// from Status to distinct exit codes.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdio>
#include <string>
#include <vector>

#include "daemon/common/status.h"
#include "daemon/control/client.h"

namespace memfed::ctl {

struct Globals {
	bool json = false;
	std::string socket; // control socket path
};

// Positional arguments and flags after the command words.
class Args {
public:
	explicit Args(std::vector<std::string> v) : v_(std::move(v)) {}
	bool empty() const { return i_ >= v_.size(); }
	const std::string &peek() const { return v_[i_]; }
	std::string next() { return v_[i_++]; }
	// Takes "--name VALUE" or "--name=VALUE" anywhere in the remaining args.
	bool take_flag(const std::string &name, std::string *value);
	// Takes a boolean "--name" anywhere in the remaining args.
	bool take_switch(const std::string &name);
	// Remaining args; after all flags are taken, anything starting with '-'
	// is an unknown option.
	Status expect_positional(size_t n, const char *usage);
	std::vector<std::string> rest() const { return {v_.begin() + long(i_), v_.end()}; }

private:
	std::vector<std::string> v_;
	size_t i_ = 0;
};

// Connects to the daemon named by Globals::socket.
Result<control::Client> connect(const Globals &g);
// call_ok with {"op": op} merged into `fields`.
Result<control::Message> call(control::Client &c, const std::string &op,
			      nlohmann::json fields = nlohmann::json::object());

// connect() and call() in one: a single request to the daemon.
Result<control::Message> request(const Globals &g, const std::string &op,
				 nlohmann::json fields = nlohmann::json::object());

// "stats", the pager's part gathered through as many pages as it takes:
// one body with every region and process ("ok" left out).
Result<nlohmann::json> stats_all(control::Client &c);

// Prints `st` as "memfedctl: <message>" (or JSON with -j) and returns its exit code.
int fail(const Globals &g, const Status &st);
// Prints a JSON document (pretty) to stdout; returns 0.
int print_json(const nlohmann::json &j);
Status usage_error(const std::string &msg);

} // namespace memfed::ctl
