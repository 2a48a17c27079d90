// memfedctl's command table: every command, subcommand and option the CLI
// accepts, in one place. main() dispatches through it and rejects options the
// table does not list for the (sub)command given; `memfedctl --help`, the bash
// completion (`memfedctl completion bash`) and the man-page test
// (`memfedctl __commands`) are all generated from it, so none of them can
// drift from what the CLI parses.
//
// The command files still take their own flags (Args::take_flag); an option
// they take must be listed here, or main() refuses it before they run.
#pragma once

#include <string>
#include <vector>

#include "tools/memfedctl/cli.h"

namespace memfed::ctl
{

// What a positional argument or option value is, for completion.
enum class ArgKind {
	kNone,    // free text (sizes, numbers, names of new things)
	kRegion,  // an existing region's name (completed by asking the daemon)
	kFile,    // a path
	kDir,     // a directory
	kProgram, // a program and its arguments (`run`)
};

struct Option {
	std::string name;  // "--offset"
	std::string value; // placeholder ("N"), empty for a switch
	ArgKind kind = ArgKind::kNone;
	std::string help;
};

struct Positional {
	std::string name; // placeholder as printed: "NAME", "SIZE"
	ArgKind kind = ArgKind::kNone;
};

// One thing a user can type after `memfedctl`: a command without
// subcommands ("status") or one subcommand of a group ("region create").
struct Verb {
	std::string sub; // "" for a command without subcommands
	std::vector<Positional> args;
	std::vector<Option> options;
	std::string summary;
	bool hidden = false; // not in --help or completion (e.g. __commands)
};

using Handler = int (*)(const Globals &, Args &);

struct Command {
	std::string name;
	Handler run;
	std::vector<Verb> verbs; // one with sub == "" for a command without subcommands
	bool hidden = false;
	bool has_subcommands() const { return !verbs.empty() && !verbs[0].sub.empty(); }
	const Verb *find(const std::string &sub) const;
};

// Options every command accepts, before or after the command word.
const std::vector<Option> &global_options();
const std::vector<Command> &command_table();
const Command *find_command(const std::string &name);

// `memfedctl --help`, from the table.
std::string top_usage();
// `memfedctl region copy --help`: one subcommand's usage and options.
std::string verb_usage(const Command &c, const Verb &v);
// The subcommand whose --help (or -h) `args` asks for, else null.
const Verb *help_asked(const Command &c, const std::vector<std::string> &args);

// Checks the words after the command word against the table: every "--opt"
// before "--" (and, for `run`, before the program) must be listed for that
// (sub)command. An unknown subcommand is left to the command to report.
Status check_options(const Command &c, const std::vector<std::string> &args);

} // namespace memfed::ctl
