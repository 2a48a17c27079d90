// The command table itself (see command_table.h), and what is derived from
// it for the CLI: the top-level usage and the option check.
#include "tools/memfedctl/command_table.h"

#include "tools/memfedctl/commands.h"

namespace memfed::ctl
{

namespace
{

using K = ArgKind;

const Positional kRegionName{"NAME", K::kRegion};

std::vector<Command> build_table()
{
	return {
	        {"status",
	         cmd_status,
	         {{"", {}, {}, "the daemon: roles, module, pool, peers, table source"}}},
	        {"module", cmd_module, {{"ls", {}, {}, "every module this node can reach"}}},
	        {"region",
	         cmd_region,
	         {{"create",
	           {{"NAME"}, {"SIZE"}},
	           {{"--mode", "OCTAL", K::kNone, "permission bits (default 0600)"},
	            {"--length", "N", K::kNone, "its length as a file (default SIZE; 0: empty)"},
	            {"--replicas", "K", K::kNone,
	             "copies on K modules of distinct nodes (default: memfedd's \"replicas\")"},
	            {"--replicas-min", "M", K::kNone,
	             "create it with at least M copies when K cannot be placed (degraded)"},
	            {"--on", "MODULE[,MODULE...]", K::kNone,
	             "place it (its copies) on these modules"}},
	           "create a region on this node's module, or K copies nearest first"},
	          {"rm",
	           {kRegionName},
	           {{"--force", "", K::kNone, "delete it even while processes map it"}},
	           "delete a region and its data"},
	          {"ls", {}, {}, "regions on every reachable module (those you may read)"},
	          {"show",
	           {kRegionName},
	           {},
	           "one region in detail, with its owner node and grants"},
	          {"grant",
	           {kRegionName, {"PEER[:UID]"}, {"read|write"}},
	           {},
	           "let another node's user (every user without :UID) read or write it"},
	          {"revoke", {kRegionName, {"PEER[:UID]"}}, {}, "take a grant back"},
	          {"truncate", {kRegionName, {"LENGTH"}}, {}, "set the region's length as a file"},
	          {"read",
	           {kRegionName},
	           {{"--offset", "N", K::kNone, "where to start (default 0)"},
	            {"--length", "N", K::kNone, "how many bytes (default: to the end)"}},
	           "region bytes to stdout"},
	          {"write",
	           {kRegionName},
	           {{"--offset", "N", K::kNone, "where to store (default 0)"}},
	           "stdin into the region"},
	          {"copy",
	           {{"SRC", K::kRegion}, {"DST", K::kRegion}},
	           {{"--offset", "N", K::kNone, "where to start in SRC (default 0)"},
	            {"--to-offset", "N", K::kNone, "where to start in DST (default 0)"},
	            {"--length", "N", K::kNone, "how many bytes (default: to the end of SRC)"},
	            {"--sparse", "", K::kNone, "leave all-zero pages unwritten in DST"}},
	           "whole pages from SRC to DST, inside the daemon"},
	          {"clone",
	           {{"SRC", K::kRegion}, {"DST", K::kNone}},
	           {{"--offset", "N", K::kNone, "where the clone starts in SRC (default 0)"},
	            {"--length", "N", K::kNone, "how many bytes (default: to the end of SRC)"},
	            {"--mode", "OCTAL", K::kNone, "permission bits of DST (default 600)"}},
	           "DST: a copy-on-write clone of SRC on its module"}}},
	        {"quota",
	         cmd_quota,
	         {{"", {}, {}, "what each uid holds on this node's module, and its quota"}}},
	        {"pool",
	         cmd_pool,
	         {{"format",
	           {{"PATH", K::kFile}},
	           {{"--size", "SIZE", K::kNone, "the pool's size (required)"},
	            {"--module-id", "ID", K::kNone, "its module ID (default: random)"},
	            {"--force", "", K::kNone, "erase a pool that is already there"}},
	           "create an empty pool (memfedd stopped)"},
	          {"check",
	           {{"PATH", K::kFile}},
	           {},
	           "verify every page of a pool, fsck (memfedd stopped)"},
	          {"info",
	           {{"PATH", K::kFile}},
	           {},
	           "a pool's header and usage (memfedd stopped)"}}},
	        {"stats",
	         cmd_stats,
	         {{"",
	           {},
	           {{"--plot", "FILE.png", K::kFile,
	             "draw per-region fault latency and resident/dirty memory (gnuplot)"}},
	           "module and pager counters"}}},
	        {"top",
	         cmd_top,
	         {{"",
	           {},
	           {{"--interval", "SECONDS", K::kNone, "time between screens (default 1)"},
	            {"--iterations", "N", K::kNone, "stop after N screens (default: Ctrl-C)"}},
	           "a live view of the pager"}}},
	        {"run",
	         cmd_run,
	         {{"",
	           {{"PROG", K::kProgram}},
	           {{"--map", "NAME=PATH", K::kNone, "region NAME appears as the file PATH"},
	            {"--heap-budget", "SIZE", K::kNone, "heaps in regions, at most SIZE resident"},
	            {"--heap-size", "SIZE", K::kNone, "size of each heap region (default 64G)"},
	            {"--prefix", "DIR", K::kDir, "every region NAME appears as DIR/NAME"},
	            {"--preload", "LIB", K::kFile, "the shim to preload"},
	            {"--keep-heaps", "", K::kNone,
	             "leave the heap regions after the program exits"},
	            {"--stats", "FILE", K::kFile,
	             "at exit, write the pager's counters for the heaps to FILE (JSON)"},
	            {"--hard", "", K::kNone,
	             "if memfedd dies, wait for it however long (the default)"},
	            {"--soft", "GRACE", K::kNone,
	             "if memfedd is not back within GRACE (30s), SIGBUS on remote memory"}},
	           "run an unmodified program on remote memory"}}},
	        {"addr", cmd_addr, {{"", {{"EVA"}}, {}, "explain an extended address"}}},
	        {"window",
	         cmd_window,
	         {{"ls", {}, {}, "the window table"},
	          {"open", {{"REGION", K::kRegion}}, {}, "give a region a window, print its EVA"}}},
	        {"route", cmd_route, {{"ls", {}, {}, "how each module is reached"}}},
	        {"watch",
	         cmd_watch,
	         {{"",
	           {},
	           {{"--count", "N", K::kNone, "stop after N events (default: Ctrl-C)"},
	            {"--replicas", "", K::kNone,
	             "copies of replicated regions: lost, catching up, in sync, replaced"}},
	           "table changes as they happen (memfed.ko's, or the mesh's)"}}},
	        {"key",
	         cmd_key,
	         {{"generate",
	           {{"[PATH]", K::kFile}},
	           {},
	           "write a new private key (0600), print its public key"},
	          {"show",
	           {{"[PATH]", K::kFile}},
	           {},
	           "the public key of a key file, or of memfedd"},
	          {"pub", {}, {}, "the public key of the private key on stdin"}}},
	        {"peer",
	         cmd_peer,
	         {{"add",
	           {{"KEY"}},
	           {{"--endpoint", "HOST:PORT", K::kNone,
	             "where to dial it (default: it dials us)"},
	            {"--name", "NAME", K::kNone, "a name for logs and peer ls"},
	            {"--transport", "auto|tcp|rdma", K::kNone,
	             "how the pager reaches its module (default: memfedd --transport)"}},
	           "trust a node's public key (root)"},
	          {"rm", {{"KEY|NAME"}}, {}, "trust a key no more (root)"},
	          {"ls", {}, {}, "the keys this node trusts"}}},
	        {"completion",
	         cmd_completion,
	         {{"bash", {}, {}, "print the bash completion script"}}},
	        {"__commands",
	         cmd_commands,
	         {{"", {}, {}, "every command, subcommand and option, one a line", true}},
	         true},
	};
}

} // namespace

const Verb *Command::find(const std::string &sub) const
{
	for (const auto &v : verbs)
		if (v.sub == sub)
			return &v;
	return nullptr;
}

const std::vector<Option> &global_options()
{
	static const std::vector<Option> opts = {
	        {"--json", "", K::kNone, "JSON output (also -j, before or after the command)"},
	        {"--socket", "PATH", K::kFile,
	         "control socket (default $MEMFED_SOCKET or /run/memfed/memfedd.sock)"},
	        {"--help", "", K::kNone, "this text; COMMAND --help for each command"},
	};
	return opts;
}

const std::vector<Command> &command_table()
{
	static const std::vector<Command> table = build_table();
	return table;
}

const Command *find_command(const std::string &name)
{
	for (const auto &c : command_table())
		if (c.name == name)
			return &c;
	return nullptr;
}

std::string top_usage()
{
	std::string u = "usage: memfedctl [-j] [--socket PATH] COMMAND ...\n\nCommands:\n";
	for (const auto &c : command_table()) {
		if (c.hidden)
			continue;
		for (const auto &v : c.verbs) {
			std::string words = c.name + (v.sub.empty() ? "" : " " + v.sub);
			bool program = !v.args.empty() && v.args[0].kind == K::kProgram;
			if (program)
				words += " [options] -- " + v.args[0].name + " [ARGS...]";
			for (const auto &p : v.args)
				words += program ? "" : " " + p.name;
			if (!v.options.empty() && !program)
				words += " [options]";
			std::string line = "  " + words;
			line += line.size() < 34 ? std::string(34 - line.size(), ' ')
			                         : "\n" + std::string(34, ' ');
			u += line + v.summary + "\n";
		}
	}
	u += "\nOptions:\n  -j, --json                      JSON output\n";
	for (const auto &o : global_options()) {
		if (o.name == "--json")
			continue;
		std::string line = "  " + o.name + (o.value.empty() ? "" : " " + o.value);
		u += line + std::string(34 - line.size(), ' ') + o.help + "\n";
	}
	u += "\nExit codes: 0 ok, 2 invalid argument, 3 not found, 4 already exists, 5 no space,\n"
	     "6 permission, 7 corrupt, 8 I/O, 9 busy, 10 unavailable, 11 protocol, 12 out of "
	     "range,\n13 internal, 14 quota.\n";
	return u;
}

std::string verb_usage(const Command &c, const Verb &v)
{
	std::string u = "usage: memfedctl " + c.name + (v.sub.empty() ? "" : " " + v.sub);
	for (const auto &p : v.args)
		u += " " + p.name;
	u += v.options.empty() ? "\n" : " [options]\n";
	u += "  " + v.summary + " (-j: JSON output)\n";
	for (const auto &o : v.options) {
		std::string line = "  " + o.name + (o.value.empty() ? "" : " " + o.value);
		line += line.size() < 22 ? std::string(22 - line.size(), ' ')
		                         : "\n" + std::string(22, ' ');
		u += line + o.help + "\n";
	}
	return u;
}

const Verb *help_asked(const Command &c, const std::vector<std::string> &args)
{
	if (!c.has_subcommands() || args.empty())
		return nullptr;
	const Verb *v = c.find(args[0]);
	for (size_t i = 1; v && i < args.size() && args[i] != "--"; i++)
		if (args[i] == "--help" || args[i] == "-h")
			return v;
	return nullptr;
}

Status check_options(const Command &c, const std::vector<std::string> &args)
{
	size_t i = 0;
	const Verb *v = nullptr;
	if (c.has_subcommands()) {
		if (args.empty() || !(v = c.find(args[0])))
			return Status::ok(); // no or unknown subcommand: the command says so
		i = 1;
	} else {
		v = &c.verbs[0];
	}
	std::string where = "memfedctl " + c.name + (v->sub.empty() ? "" : " " + v->sub);
	bool program = !v->args.empty() && v->args[0].kind == K::kProgram;
	for (; i < args.size(); i++) {
		const std::string &a = args[i];
		if (a == "--")
			break;
		if (a == "--help" || a == "-h")
			continue;
		if (a.rfind("--", 0) != 0) {
			if (program)
				break; // the program's own arguments follow
			continue;
		}
		std::string name = a.substr(0, a.find('='));
		const Option *o = nullptr;
		for (const auto &opt : v->options)
			if (opt.name == name)
				o = &opt;
		if (!o)
			return usage_error("unknown option '" + name + "' for '" + where +
			                   "' (memfedctl " + c.name + " --help)");
		if (!o->value.empty() && name == a)
			i++; // its value
	}
	return Status::ok();
}

} // namespace memfed::ctl
