// memfedctl's command groups. Each returns the process exit code. A command,
// subcommand or option is accepted only once it is in the command table
// (command_table.cc), which also feeds --help, completion and the man page test.
#pragma once

#include "tools/memfedctl/cli.h"
#include "tools/memfedctl/run.h"

namespace memfed::ctl {

int cmd_region(const Globals &g, Args &a);
int cmd_pool(const Globals &g, Args &a);
int cmd_status(const Globals &g, Args &a);
int cmd_module(const Globals &g, Args &a);
int cmd_stats(const Globals &g, Args &a);
int cmd_top(const Globals &g, Args &a);
int cmd_addr(const Globals &g, Args &a);
int cmd_window(const Globals &g, Args &a);
int cmd_route(const Globals &g, Args &a);
int cmd_watch(const Globals &g, Args &a);
int cmd_quota(const Globals &g, Args &a);
// key_cmd.cc: `key generate|show`; peer_cmd.cc: `peer add|rm|ls`.
int cmd_key(const Globals &g, Args &a);
int cmd_peer(const Globals &g, Args &a);
// completion.cc: `completion bash` and the hidden `__commands`.
int cmd_completion(const Globals &g, Args &a);
int cmd_commands(const Globals &g, Args &a);

} // namespace memfed::ctl
