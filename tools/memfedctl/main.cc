// memfedctl: inspect and control memfed. Terse human output by default, JSON
// with -j on every command, --help everywhere, distinct exit codes (see
// daemon/common/status.h: 2 invalid argument, 3 not found, 4 exists, 5 no
// space, 6 permission, 7 corrupt, 8 I/O, 9 busy, 10 unavailable, ...).
// Commands are dispatched through the command table (command_table.h).
#include <iostream>
#include <string>
#include <vector>

#include "tools/memfedctl/command_table.h"
#include "tools/memfedctl/commands.h"

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
			std::cout << top_usage();
			return 0;
		} else
			break;
	}
	if (i >= argc) {
		std::cerr << top_usage();
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
	const Command *c = find_command(cmd);
	if (!c)
		return fail(g, usage_error("unknown command '" + cmd + "' (memfedctl --help)"));
	memfed::Status st = check_options(*c, args);
	if (!st)
		return fail(g, st);
	if (const Verb *v = help_asked(*c, args)) {
		std::cout << verb_usage(*c, *v);
		return 0;
	}
	Args a(args);
	return c->run(g, a);
}
