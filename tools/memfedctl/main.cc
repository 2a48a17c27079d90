// memfedctl: inspect and control memfed. Terse human output by default, JSON
// with -j on every command, --help everywhere, distinct exit codes (see
// daemon/common/status.h: 2 invalid argument, 3 not found, 4 exists, 5 no
// space, 6 permission, 7 corrupt, 8 I/O, 9 busy, 10 unavailable, ...).
#include <iostream>
#include <string>
#include <vector>

#include "tools/memfedctl/commands.h"
#include "tools/memfedctl/run.h"

namespace {

constexpr const char *kUsage = R"(usage: memfedctl [-j] [--socket PATH] COMMAND ...

Commands:
  status                         the daemon: roles, module, pool, peers
  module ls                      every module this node can reach
  region create|rm|ls|show|read|write ...
                                 regions (memfedctl region --help)
  pool format|check|info PATH    offline pool operations and fsck
  stats                          module and pager counters
  run [--map NAME=PATH] [--heap-budget SIZE] -- PROG ARGS
                                 run an unmodified program on remote memory
                                 (memfedctl run --help)
  top                            a live view of the pager
  addr EVA                       explain an extended address
  window ls | route ls           the window and route tables
  watch                          memfed.ko's table changes as they happen
  run [--map NAME=PATH ...] [--heap-budget SIZE] -- PROG ARGS
                                 run an unmodified program on remote memory
  -j, --json                     JSON output
  --socket PATH                  control socket (default $MEMFED_SOCKET or
                                 /run/memfed/memfedd.sock)
  --help                         this text; COMMAND --help for each command
)";

} // namespace

int main(int argc, char **argv)
{
	using namespace memfed::ctl;
	Globals g;
	g.socket = memfed::control::default_socket_path();
	std::vector<std::string> args;
	int i = 1;
	for (; i < argc; i++) {
		std::string a = argv[i];
		if (a == "-j" || a == "--json")
			g.json = true;
		else if (a == "--socket" && i + 1 < argc)
			g.socket = argv[++i];
		else if (a.rfind("--socket=", 0) == 0)
			g.socket = a.substr(9);
		else if (a == "--help" || a == "-h") {
			std::cout << kUsage;
			return 0;
		} else
			break;
	}
	if (i >= argc) {
		std::cerr << kUsage;
		return 2;
	}
	std::string cmd = argv[i++];
	for (; i < argc; i++) {
		std::string a = argv[i];
		// `run` passes everything to its program untouched.
		if (cmd == "run")
			args.push_back(a);
		// -j is accepted after the command too ("memfedctl region ls -j").
		else if (a == "-j" || a == "--json")
			g.json = true;
		else
			args.push_back(a);
	}
	Args a(args);
	if (cmd == "status")
		return cmd_status(g, a);
	if (cmd == "module")
		return cmd_module(g, a);
	if (cmd == "region")
		return cmd_region(g, a);
	if (cmd == "pool")
		return cmd_pool(g, a);
	if (cmd == "stats")
		return cmd_stats(g, a);
	if (cmd == "top")
		return cmd_top(g, a);
	if (cmd == "run")
		return cmd_run(g, a);
	if (cmd == "addr")
		return cmd_addr(g, a);
	if (cmd == "window")
		return cmd_window(g, a);
	if (cmd == "route")
		return cmd_route(g, a);
	if (cmd == "watch")
		return cmd_watch(g, a);
	if (cmd == "run")
		return cmd_run(g, a);
	return fail(g, usage_error("unknown command '" + cmd + "' (memfedctl --help)"));
}
