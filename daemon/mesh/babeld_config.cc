#include "daemon/mesh/babeld_config.h"

#include <cstdio>

#include "daemon/mesh/module_address.h"

namespace memfed::mesh
{
namespace
{

// babeld takes intervals in seconds with up to centisecond precision.
std::string seconds(uint32_t ms)
{
	char buf[32];
	std::snprintf(buf, sizeof(buf), "%u.%03u", ms / 1000, ms % 1000);
	return buf;
}

} // namespace

std::string babeld_config_text(const BabeldOptions &o)
{
	std::string t = "# Written by memfedd at each start; edits are lost.\n";
	t += "default hello-interval " + seconds(o.hello_interval_ms) + "\n";
	t += "smoothing-half-life " + std::to_string(o.smoothing_half_life_s) + "\n";
	if (o.update_interval_ms)
		t += "default update-interval " + seconds(o.update_interval_ms) + "\n";
	for (const auto &ifname : o.interfaces) {
		t += "interface " + ifname;
		if (auto it = o.interface_hello_ms.find(ifname); it != o.interface_hello_ms.end())
			t += " hello-interval " + seconds(it->second);
		t += "\n";
	}
	// Exactly this node's mesh addresses, and nothing else.
	for (const auto &a : o.announce)
		t += "redistribute local ip " + format_ipv6(a) + "/128 allow\n";
	t += "redistribute local deny\n";
	t += "redistribute deny\n";
	return t;
}

std::vector<std::string> babeld_argv(const BabeldOptions &o)
{
	// -c: config; -I: pid file; -S: state file; -G: local socket
	// (read-write: memfedd sends "monitor"); interfaces come from the config.
	return {o.babeld, "-c",         o.config_path, "-I",         o.pid_path,
	        "-S",     o.state_path, "-G",          o.socket_path};
}

} // namespace memfed::mesh
