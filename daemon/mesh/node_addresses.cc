#include "daemon/mesh/node_addresses.h"

#include <net/if.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>

#include <fstream>

#include "daemon/common/log.h"
#include "daemon/mesh/module_address.h"

namespace memfed::mesh
{
namespace
{

// One address change on lo over rtnetlink; returns libnl's error (0 = ok).
int change_address(const in6_addr &a, bool add)
{
	nl_sock *sk = nl_socket_alloc();
	if (!sk)
		return -NLE_NOMEM;
	int err = nl_connect(sk, NETLINK_ROUTE);
	rtnl_addr *ra = rtnl_addr_alloc();
	nl_addr *local = nl_addr_build(AF_INET6, &a, sizeof(a));
	if (err == 0 && (!ra || !local))
		err = -NLE_NOMEM;
	if (err == 0) {
		nl_addr_set_prefixlen(local, 128);
		rtnl_addr_set_ifindex(ra, int(if_nametoindex("lo")));
		rtnl_addr_set_family(ra, AF_INET6);
		rtnl_addr_set_local(ra, local);
		rtnl_addr_set_prefixlen(ra, 128);
		// No duplicate address detection on a /128 of our own.
		rtnl_addr_set_flags(ra, IFA_F_NODAD);
		err = add ? rtnl_addr_add(sk, ra, NLM_F_REPLACE) : rtnl_addr_delete(sk, ra, 0);
	}
	if (local)
		nl_addr_put(local);
	if (ra)
		rtnl_addr_put(ra);
	nl_socket_free(sk);
	return err;
}

} // namespace

Status check_interfaces(const std::vector<std::string> &interfaces)
{
	if (interfaces.empty())
		return Status(Code::kInvalidArgument,
		              "the mesh needs at least one interface (--mesh IFACE[,IFACE...])");
	for (const auto &i : interfaces) {
		if (if_nametoindex(i.c_str()) == 0)
			return Status(Code::kNotFound,
			              "mesh interface '" + i +
			                      "' does not exist here (ip link shows "
			                      "the interfaces; fix --mesh / mesh.interfaces)");
	}
	return Status::ok();
}

Status link_local_at_once(const std::vector<std::string> &interfaces)
{
	for (const auto &i : interfaces) {
		std::string path = "/proc/sys/net/ipv6/conf/" + i + "/accept_dad";
		std::ofstream f(path);
		f << "0\n";
		f.close();
		if (!f)
			return Status(Code::kPermission,
			              "cannot set " + path + ": routes over " + i +
			                      " come back 1-2 s late each time it comes up "
			                      "(duplicate address detection)");
	}
	return Status::ok();
}

Status enable_ipv6_forwarding()
{
	const char *path = "/proc/sys/net/ipv6/conf/all/forwarding";
	std::ofstream f(path);
	f << "1\n";
	f.close();
	if (!f)
		return Status(Code::kPermission, std::string("cannot switch on IPv6 forwarding (") +
		                                         path +
		                                         "): the mesh needs root or CAP_NET_ADMIN");
	return Status::ok();
}

Status NodeAddresses::add(const std::vector<in6_addr> &addrs)
{
	for (const auto &a : addrs) {
		int err = change_address(a, true);
		if (err < 0 && err != -NLE_EXIST)
			return Status(Code::kIo, "cannot add mesh address " + format_ipv6(a) +
			                                 "/128 to lo: " + nl_geterror(err));
		added_.push_back(a);
		LOG_INFO("mesh", "address %s/128 on lo", format_ipv6(a).c_str());
	}
	return Status::ok();
}

NodeAddresses::~NodeAddresses()
{
	for (const auto &a : added_)
		(void)change_address(a, false);
}

} // namespace memfed::mesh
