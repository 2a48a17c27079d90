// PriorityQdisc: htb classes by DSCP with u32 filters, over rtnetlink
// (priority_qdisc.h).
#include "daemon/mesh/priority_qdisc.h"

#include <linux/if_ether.h>
#include <linux/pkt_sched.h>
#include <net/if.h>
#include <netlink/netlink.h>
#include <netlink/route/class.h>
#include <netlink/route/classifier.h>
#include <netlink/route/cls/u32.h>
#include <netlink/route/link.h>
#include <netlink/route/qdisc.h>
#include <netlink/route/qdisc/htb.h>

#include <algorithm>
#include <memory>

#include "daemon/common/log.h"

namespace memfed::mesh
{
namespace
{

constexpr uint32_t handle(uint32_t minor)
{
	return (PriorityQdisc::kMajor << 16) | minor;
}

// One leaf per class of traffic: its minor, htb prio and DSCP (-1: the
// default class, no filter).
struct Leaf {
	uint32_t minor;
	uint32_t prio;
	int dscp;
	const char *what;
};
constexpr Leaf kLeaves[] = {
        {0x10, 0, 46, "EF faults"},
        {0x20, 1, 16, "CS2 control"},
        {0x40, 1, -1, "unmarked"},
        {0x30, 2, 8, "CS1 bulk"},
};

struct Sock {
	nl_sock *sk = nl_socket_alloc();
	~Sock()
	{
		if (sk)
			nl_socket_free(sk);
	}
};

Status nl_error(const std::string &iface, const std::string &step, int err)
{
	return Status(Code::kIo, "cannot put the DSCP priority qdisc on mesh interface '" + iface +
	                                 "': " + step + ": " + nl_geterror(err) +
	                                 " (needs CAP_NET_ADMIN and the htb qdisc and u32 "
	                                 "classifier; mesh.qos false switches it off)");
}

// The root qdisc's handle on `ifindex` (0: the kernel's default), and kind.
int root_qdisc(nl_sock *sk, int ifindex, uint32_t *h, std::string *kind)
{
	nl_cache *cache = nullptr;
	int err = rtnl_qdisc_alloc_cache(sk, &cache);
	if (err < 0)
		return err;
	*h = 0;
	kind->clear();
	if (rtnl_qdisc *q = rtnl_qdisc_get_by_parent(cache, ifindex, TC_H_ROOT)) {
		*h = rtnl_tc_get_handle(TC_CAST(q));
		if (const char *k = rtnl_tc_get_kind(TC_CAST(q)))
			*kind = k;
		rtnl_qdisc_put(q);
	}
	nl_cache_free(cache);
	return 0;
}

// The root qdisc of `ifindex` with memfedd's handle, as delete_root and
// add_htb_root address it.
struct QdiscPut {
	void operator()(rtnl_qdisc *q) const { rtnl_qdisc_put(q); }
};
using QdiscPtr = std::unique_ptr<rtnl_qdisc, QdiscPut>;

QdiscPtr our_root(int ifindex)
{
	QdiscPtr q(rtnl_qdisc_alloc());
	if (q) {
		rtnl_tc_set_ifindex(TC_CAST(q.get()), ifindex);
		rtnl_tc_set_parent(TC_CAST(q.get()), TC_H_ROOT);
		rtnl_tc_set_handle(TC_CAST(q.get()), handle(0));
	}
	return q;
}

int delete_root(nl_sock *sk, int ifindex)
{
	QdiscPtr q = our_root(ifindex);
	return q ? rtnl_qdisc_delete(sk, q.get()) : -NLE_NOMEM;
}

int add_htb_root(nl_sock *sk, int ifindex)
{
	QdiscPtr q = our_root(ifindex);
	if (!q)
		return -NLE_NOMEM;
	int err = rtnl_tc_set_kind(TC_CAST(q.get()), "htb");
	if (err == 0)
		err = rtnl_htb_set_defcls(q.get(), handle(0x40));
	if (err == 0)
		err = rtnl_qdisc_add(sk, q.get(), NLM_F_CREATE | NLM_F_EXCL);
	return err;
}

int add_class(nl_sock *sk, int ifindex, uint32_t parent, uint32_t minor, uint64_t rate_Bps,
              uint64_t ceil_Bps, uint32_t prio)
{
	rtnl_class *c = rtnl_class_alloc();
	if (!c)
		return -NLE_NOMEM;
	rtnl_tc_set_ifindex(TC_CAST(c), ifindex);
	rtnl_tc_set_parent(TC_CAST(c), parent);
	rtnl_tc_set_handle(TC_CAST(c), handle(minor));
	int err = rtnl_tc_set_kind(TC_CAST(c), "htb");
	if (err == 0)
		err = rtnl_htb_set_rate64(c, rate_Bps);
	if (err == 0)
		err = rtnl_htb_set_ceil64(c, ceil_Bps);
	if (err == 0)
		err = rtnl_htb_set_prio(c, prio);
	// Within one prio, classes take turns a quantum at a time; a few
	// full frames each (a small rate's computed quantum would be tiny).
	if (err == 0)
		err = rtnl_htb_set_quantum(c, 4 * 1514);
	if (err == 0)
		err = rtnl_class_add(sk, c, NLM_F_CREATE | NLM_F_EXCL);
	rtnl_class_put(c);
	return err;
}

// A u32 filter sending packets whose DSCP is `dscp` to class `minor`:
// IPv6, the traffic-class byte (bits 4..11 of the first word); IPv4, TOS.
int add_filter(nl_sock *sk, int ifindex, bool v6, uint32_t prio, int dscp, uint32_t minor)
{
	rtnl_cls *f = rtnl_cls_alloc();
	if (!f)
		return -NLE_NOMEM;
	rtnl_tc_set_ifindex(TC_CAST(f), ifindex);
	rtnl_tc_set_parent(TC_CAST(f), handle(0));
	int err = rtnl_tc_set_kind(TC_CAST(f), "u32");
	if (err == 0) {
		rtnl_cls_set_prio(f, uint16_t(prio));
		rtnl_cls_set_protocol(f, v6 ? ETH_P_IPV6 : ETH_P_IP);
		uint32_t tos = uint32_t(dscp) << 2; // the DS field: DSCP, then ECN
		uint32_t val = v6 ? tos << 20 : tos << 16;
		uint32_t mask = v6 ? 0xfcu << 20 : 0xfcu << 16;
		err = rtnl_u32_add_key_uint32(f, val, mask, 0, 0);
	}
	if (err == 0)
		err = rtnl_u32_set_classid(f, handle(minor));
	if (err == 0)
		err = rtnl_u32_set_cls_terminal(f);
	if (err == 0)
		err = rtnl_cls_add(sk, f, NLM_F_CREATE | NLM_F_EXCL);
	rtnl_cls_put(f);
	return err;
}

// The most segments one GSO packet of `ifindex` may carry, read.
int get_gso_max_segs(nl_sock *sk, int ifindex, uint32_t *segs)
{
	rtnl_link *l = nullptr;
	int err = rtnl_link_get_kernel(sk, ifindex, nullptr, &l);
	if (err < 0)
		return err;
	err = rtnl_link_get_gso_max_segs(l, segs);
	rtnl_link_put(l);
	return err;
}

// ... and set (libnl has no setter: RTM_NEWLINK with IFLA_GSO_MAX_SEGS).
int set_gso_max_segs(nl_sock *sk, int ifindex, uint32_t segs)
{
	nl_msg *msg = nlmsg_alloc_simple(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK);
	if (!msg)
		return -NLE_NOMEM;
	ifinfomsg ifi{};
	ifi.ifi_family = AF_UNSPEC;
	ifi.ifi_index = ifindex;
	int err = nlmsg_append(msg, &ifi, sizeof(ifi), NLMSG_ALIGNTO);
	if (err == 0)
		err = nla_put_u32(msg, IFLA_GSO_MAX_SEGS, segs);
	if (err == 0)
		err = nl_send_auto(sk, msg);
	if (err >= 0)
		err = nl_wait_for_ack(sk);
	nlmsg_free(msg);
	return err < 0 ? err : 0;
}

} // namespace

Result<std::unique_ptr<PriorityQdisc>> PriorityQdisc::install(const std::string &iface,
                                                              const Options &o)
{
	int ifindex = int(if_nametoindex(iface.c_str()));
	if (ifindex == 0)
		return Status(Code::kNotFound, "mesh interface '" + iface + "' does not exist");
	if (o.rate_bps < 8000)
		return Status(Code::kInvalidArgument,
		              "mesh.qos_rate_mbit too small for the priority qdisc on '" + iface +
		                      "' (at least 1)");
	Sock s;
	if (!s.sk)
		return nl_error(iface, "netlink socket", -NLE_NOMEM);
	if (int err = nl_connect(s.sk, NETLINK_ROUTE); err < 0)
		return nl_error(iface, "netlink connect", err);
	uint32_t h = 0;
	std::string kind;
	if (int err = root_qdisc(s.sk, ifindex, &h, &kind); err < 0)
		return nl_error(iface, "listing its qdiscs", err);
	if (h == handle(0)) {
		LOG_INFO("mesh", "replacing the priority qdisc a previous memfedd left on %s",
		         iface.c_str());
		if (int err = delete_root(s.sk, ifindex); err < 0)
			return nl_error(iface, "removing the leftover qdisc", err);
	} else if (h != 0) {
		char hs[16];
		std::snprintf(hs, sizeof(hs), "%x:", h >> 16);
		return Status(
		        Code::kAlreadyExists,
		        "mesh interface '" + iface + "' already has a root qdisc (" + kind + " " +
		                hs +
		                ") that memfedd did not put there: the DSCP priority qdisc is "
		                "not installed (tc qdisc del dev " +
		                iface + " root, or mesh.qos false to keep yours)");
	}
	std::unique_ptr<PriorityQdisc> q(new PriorityQdisc(iface, ifindex));
	if (int err = add_htb_root(s.sk, ifindex); err < 0)
		return nl_error(iface, "htb root qdisc", err);
	// From here on the destructor removes what was added.
	uint64_t link_Bps = o.rate_bps / 8;
	uint64_t sliver_Bps = std::max<uint64_t>(link_Bps / 1000, 125);
	if (int err = add_class(s.sk, ifindex, handle(0), 1, link_Bps, link_Bps, 0); err < 0)
		return nl_error(iface, "htb class 1", err);
	for (const Leaf &l : kLeaves)
		if (int err = add_class(s.sk, ifindex, handle(1), l.minor, sliver_Bps, link_Bps,
		                        l.prio);
		    err < 0)
			return nl_error(iface, std::string("htb class for ") + l.what, err);
	uint32_t prio = 1;
	for (const Leaf &l : kLeaves) {
		if (l.dscp < 0)
			continue;
		for (bool v6 : {true, false})
			if (int err = add_filter(s.sk, ifindex, v6, prio++, l.dscp, l.minor);
			    err < 0)
				return nl_error(iface, std::string("u32 filter for ") + l.what,
				                err);
	}
	// One segment per packet: a GSO packet of 64 KiB, taken from a bulk
	// class at once, would hold a shaped link for as long (17 ms at
	// 30 Mbit/s) and a fault behind it. Restored on exit.
	uint32_t segs = 0;
	if (int err = get_gso_max_segs(s.sk, ifindex, &segs); err < 0)
		return nl_error(iface, "reading its GSO limit", err);
	if (segs != 1) {
		if (int err = set_gso_max_segs(s.sk, ifindex, 1); err < 0)
			return nl_error(iface, "limiting GSO to one segment", err);
		q->gso_max_segs_ = segs;
	}
	LOG_INFO("mesh", "priority qdisc on %s: EF > CS2, unmarked > CS1, at %llu Mbit/s",
	         iface.c_str(), (unsigned long long)(o.rate_bps / 1'000'000));
	return q;
}

PriorityQdisc::~PriorityQdisc()
{
	Sock s;
	int err = s.sk ? nl_connect(s.sk, NETLINK_ROUTE) : -NLE_NOMEM;
	if (err == 0 && gso_max_segs_ != 0)
		(void)set_gso_max_segs(s.sk, ifindex_, gso_max_segs_);
	if (err == 0)
		err = delete_root(s.sk, ifindex_);
	// The interface may be gone with its qdisc (a veth whose peer left).
	if (err < 0 && err != -NLE_OBJ_NOTFOUND && err != -NLE_NODEV && err != -NLE_INVAL)
		LOG_WARN("mesh",
		         "cannot remove the priority qdisc from %s: %s (tc qdisc del dev %s root)",
		         iface_.c_str(), nl_geterror(err), iface_.c_str());
}

} // namespace memfed::mesh
