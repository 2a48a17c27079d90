// memfedctl peer add|rm|ls: the public keys this node trusts (daemon side:
// daemon/service/trust_ops.h). add and rm need root; they take effect at
// once and are written to memfedd's config file.
#include <cstdio>
#include <iostream>

#include "tools/memfedctl/commands.h"

namespace memfed::ctl
{

using nlohmann::json;

namespace
{

constexpr const char *kUsage = R"(usage: memfedctl peer COMMAND
  add KEY [--endpoint HOST:PORT] [--name NAME] [--transport auto|tcp|rdma]
                    trust the node with public key KEY (as `memfedctl key show`
                    prints it), dialled at HOST:PORT; --transport: how this
                    node's pager reaches that peer's module, instead of memfedd's
                    --transport; adding a key again updates its name, endpoint
                    and transport (root only)
  rm KEY|NAME       trust it no more (root only; exit 3 if no such peer)
  ls                the trusted keys: key, name, endpoint, transport, and whether the config
                    file or a --trust flag of memfedd gives it
  add and rm apply at once and are written to memfedd's config file.
  (-j: JSON output)
)";

std::string or_dash(const json &p, const char *key)
{
	std::string v = p.value(key, "");
	return v.empty() ? "-" : v;
}

} // namespace

int cmd_peer(const Globals &g, Args &a)
{
	if (a.empty() || a.peek() == "--help" || a.peek() == "-h") {
		std::cout << kUsage;
		return a.empty() ? 2 : 0;
	}
	std::string sub = a.next();
	if (sub == "add") {
		std::string endpoint, name, transport;
		bool has_ep = a.take_flag("--endpoint", &endpoint);
		bool has_name = a.take_flag("--name", &name);
		bool has_transport = a.take_flag("--transport", &transport);
		Status st = a.expect_positional(1, "memfedctl peer add KEY [--endpoint HOST:PORT] "
		                                   "[--name NAME] [--transport auto|tcp|rdma]");
		if (!st)
			return fail(g, st);
		json req = {{"key", a.next()}};
		if (has_ep)
			req["endpoint"] = endpoint;
		if (has_name)
			req["name"] = name;
		if (has_transport)
			req["transport"] = transport;
		auto r = request(g, "peer.add", req);
		if (!r)
			return fail(g, r.status());
		r->body.erase("ok");
		if (g.json)
			return print_json(r->body);
		return 0;
	}
	if (sub == "rm") {
		Status st = a.expect_positional(1, "memfedctl peer rm KEY|NAME");
		if (!st)
			return fail(g, st);
		auto r = request(g, "peer.rm", {{"peer", a.next()}});
		if (!r)
			return fail(g, r.status());
		r->body.erase("ok");
		if (g.json)
			return print_json(r->body);
		if (r->body.value("still_trusted", false))
			std::cerr << "memfedctl: removed from the config file; still trusted by "
			             "memfedd's --trust flag\n";
		return 0;
	}
	Status st =
	        sub == "ls"
	                ? a.expect_positional(0, "memfedctl peer ls")
	                : usage_error("unknown peer command '" + sub + "' (memfedctl peer --help)");
	if (!st)
		return fail(g, st);
	auto r = request(g, "peer.list");
	if (!r)
		return fail(g, r.status());
	const json &peers = r->body["peers"];
	if (g.json)
		return print_json(peers);
	std::printf("%-44s %-16s %-24s %-9s %s\n", "KEY", "NAME", "ENDPOINT", "TRANSPORT", "FROM");
	for (const auto &p : peers)
		std::printf("%-44s %-16s %-24s %-9s %s\n", or_dash(p, "key").c_str(),
		            or_dash(p, "name").c_str(), or_dash(p, "endpoint").c_str(),
		            or_dash(p, "transport").c_str(), or_dash(p, "source").c_str());
	return 0;
}

} // namespace memfed::ctl
