#include "daemon/kmodlink/kmod_codec.h"

#include <cstring>

#include <net/if.h>

#include <netlink/attr.h>
#include <netlink/genl/genl.h>

#include "kmod/uapi/memfed_netlink.h"

namespace memfed::kmod::codec
{

namespace
{

Status bad(const char *what)
{
	return Status(Code::kProtocol, std::string("memfed.ko sent a malformed ") + what +
	                                       ": upgrade memfed.ko and memfedd together");
}

// The nest `type` of a generic-netlink message, parsed with `policy`.
template <size_t N>
bool parse_nest(nlmsghdr *hdr, int type, nla_policy (&policy)[N], nlattr *(&tb)[N])
{
	nlattr *top[MEMFED_A_MAX + 1];
	if (genlmsg_parse(hdr, 0, top, MEMFED_A_MAX, nullptr) < 0 || !top[type])
		return false;
	return nla_parse_nested(tb, N - 1, top[type], policy) == 0;
}

bool has_all(nlattr *const *tb, std::initializer_list<int> types)
{
	for (int t : types)
		if (!tb[t])
			return false;
	return true;
}

} // namespace

bool put_module_key(nl_msg *msg, ModuleId id)
{
	nlattr *nest = nla_nest_start(msg, MEMFED_A_MODULE);
	if (!nest || nla_put_u64(msg, MEMFED_MODULE_A_ID, id.value) < 0)
		return false;
	return nla_nest_end(msg, nest) == 0;
}

static_assert(kCodecVersion == MEMFED_GENL_VERSION, "the codec speaks the uapi's version");

bool put_module(nl_msg *msg, const ModuleEntry &m, int version)
{
	nlattr *nest = nla_nest_start(msg, MEMFED_A_MODULE);
	if (!nest || nla_put_u64(msg, MEMFED_MODULE_A_ID, m.id.value) < 0 ||
	    nla_put_u32(msg, MEMFED_MODULE_A_STATE, static_cast<uint32_t>(m.state)) < 0 ||
	    nla_put_u64(msg, MEMFED_MODULE_A_CAPACITY, m.capacity) < 0 ||
	    nla_put_string(msg, MEMFED_MODULE_A_ENDPOINT, m.endpoint.c_str()) < 0 ||
	    nla_put_u32(msg, MEMFED_MODULE_A_FLAGS, m.flags) < 0)
		return false;
	if (version >= 2 && !m.reason.empty() &&
	    nla_put_string(msg, MEMFED_MODULE_A_REASON,
	                   m.reason.substr(0, MEMFED_REASON_MAX - 1).c_str()) < 0)
		return false;
	return nla_nest_end(msg, nest) == 0;
}

bool put_route_key(nl_msg *msg, ModuleId dest, uint32_t tclass)
{
	nlattr *nest = nla_nest_start(msg, MEMFED_A_ROUTE);
	if (!nest || nla_put_u64(msg, MEMFED_ROUTE_A_DEST, dest.value) < 0 ||
	    nla_put_u32(msg, MEMFED_ROUTE_A_CLASS, tclass) < 0)
		return false;
	return nla_nest_end(msg, nest) == 0;
}

bool put_route(nl_msg *msg, const RouteEntry &r, int version)
{
	nlattr *nest = nla_nest_start(msg, MEMFED_A_ROUTE);
	if (!nest || nla_put_u64(msg, MEMFED_ROUTE_A_DEST, r.dest.value) < 0 ||
	    nla_put_u32(msg, MEMFED_ROUTE_A_CLASS, r.tclass) < 0 ||
	    nla_put_u64(msg, MEMFED_ROUTE_A_NEXT_HOP, r.next_hop.value) < 0 ||
	    nla_put_u32(msg, MEMFED_ROUTE_A_METRIC, r.metric) < 0 ||
	    nla_put_u32(msg, MEMFED_ROUTE_A_HOPS, r.hops) < 0)
		return false;
	if (version >= 2 &&
	    (nla_put(msg, MEMFED_ROUTE_A_VIA, sizeof(r.via), &r.via) < 0 ||
	     (!r.dev.empty() && nla_put_string(msg, MEMFED_ROUTE_A_DEV, r.dev.c_str()) < 0)))
		return false;
	return nla_nest_end(msg, nest) == 0;
}

bool put_window_key(nl_msg *msg, uint32_t index)
{
	nlattr *nest = nla_nest_start(msg, MEMFED_A_WINDOW);
	if (!nest || nla_put_u32(msg, MEMFED_WINDOW_A_INDEX, index) < 0)
		return false;
	return nla_nest_end(msg, nest) == 0;
}

bool put_window(nl_msg *msg, const WindowEntry &w)
{
	nlattr *nest = nla_nest_start(msg, MEMFED_A_WINDOW);
	if (!nest || nla_put_u32(msg, MEMFED_WINDOW_A_INDEX, w.index) < 0 ||
	    nla_put_u64(msg, MEMFED_WINDOW_A_MODULE, w.fa.module.value) < 0 ||
	    nla_put_u64(msg, MEMFED_WINDOW_A_OFFSET, w.fa.offset) < 0 ||
	    nla_put_u64(msg, MEMFED_WINDOW_A_LENGTH, w.length) < 0)
		return false;
	if (w.mapped() && (nla_put_u32(msg, MEMFED_WINDOW_A_PID, w.pid) < 0 ||
	                   nla_put_u64(msg, MEMFED_WINDOW_A_ADDR, w.addr) < 0))
		return false;
	return nla_nest_end(msg, nest) == 0;
}

Result<Layout> parse_layout(nlmsghdr *hdr)
{
	nla_policy pol[MEMFED_LAYOUT_A_MAX + 1] = {};
	for (int t = 1; t <= MEMFED_LAYOUT_A_MAX; t++)
		pol[t].type = NLA_U32;
	nlattr *tb[MEMFED_LAYOUT_A_MAX + 1];
	if (!parse_nest(hdr, MEMFED_A_LAYOUT, pol, tb) ||
	    !has_all(tb, {MEMFED_LAYOUT_A_VA_BITS, MEMFED_LAYOUT_A_EXT_BITS,
	                  MEMFED_LAYOUT_A_INDEX_MAX, MEMFED_LAYOUT_A_MODULES_MAX,
	                  MEMFED_LAYOUT_A_ROUTES_MAX, MEMFED_LAYOUT_A_WINDOWS_MAX}))
		return bad("layout");
	Layout l;
	l.va_bits = nla_get_u32(tb[MEMFED_LAYOUT_A_VA_BITS]);
	l.ext_bits = nla_get_u32(tb[MEMFED_LAYOUT_A_EXT_BITS]);
	l.index_max = nla_get_u32(tb[MEMFED_LAYOUT_A_INDEX_MAX]);
	l.modules_max = nla_get_u32(tb[MEMFED_LAYOUT_A_MODULES_MAX]);
	l.routes_max = nla_get_u32(tb[MEMFED_LAYOUT_A_ROUTES_MAX]);
	l.windows_max = nla_get_u32(tb[MEMFED_LAYOUT_A_WINDOWS_MAX]);
	if (l.va_bits == 0 || l.va_bits >= 64 || l.va_bits + l.ext_bits != 64)
		return bad("layout");
	return l;
}

Result<ModuleEntry> parse_module(nlmsghdr *hdr)
{
	nla_policy pol[MEMFED_MODULE_A_MAX + 1] = {};
	pol[MEMFED_MODULE_A_ID].type = NLA_U64;
	pol[MEMFED_MODULE_A_STATE].type = NLA_U32;
	pol[MEMFED_MODULE_A_CAPACITY].type = NLA_U64;
	pol[MEMFED_MODULE_A_ENDPOINT].type = NLA_STRING;
	pol[MEMFED_MODULE_A_ENDPOINT].maxlen = MEMFED_ENDPOINT_MAX;
	pol[MEMFED_MODULE_A_FLAGS].type = NLA_U32;
	pol[MEMFED_MODULE_A_REASON].type = NLA_STRING;
	pol[MEMFED_MODULE_A_REASON].maxlen = MEMFED_REASON_MAX;
	nlattr *tb[MEMFED_MODULE_A_MAX + 1];
	if (!parse_nest(hdr, MEMFED_A_MODULE, pol, tb) ||
	    !has_all(tb, {MEMFED_MODULE_A_ID, MEMFED_MODULE_A_STATE, MEMFED_MODULE_A_CAPACITY,
	                  MEMFED_MODULE_A_ENDPOINT, MEMFED_MODULE_A_FLAGS}))
		return bad("module entry");
	ModuleEntry m;
	m.id.value = nla_get_u64(tb[MEMFED_MODULE_A_ID]);
	uint32_t state = nla_get_u32(tb[MEMFED_MODULE_A_STATE]);
	if (!m.id.valid() || state > MEMFED_MODULE_STATE_MAX)
		return bad("module entry");
	m.state = static_cast<ModuleState>(state);
	m.capacity = nla_get_u64(tb[MEMFED_MODULE_A_CAPACITY]);
	// NLA_STRING with maxlen checked the length; the kmod always sends the NUL.
	const char *ep = static_cast<const char *>(nla_data(tb[MEMFED_MODULE_A_ENDPOINT]));
	m.endpoint.assign(ep, strnlen(ep, nla_len(tb[MEMFED_MODULE_A_ENDPOINT])));
	m.flags = nla_get_u32(tb[MEMFED_MODULE_A_FLAGS]);
	if (tb[MEMFED_MODULE_A_REASON]) { // a version 1 kmod has none
		const char *why = static_cast<const char *>(nla_data(tb[MEMFED_MODULE_A_REASON]));
		m.reason.assign(why, strnlen(why, nla_len(tb[MEMFED_MODULE_A_REASON])));
	}
	return m;
}

Result<RouteEntry> parse_route(nlmsghdr *hdr)
{
	nla_policy pol[MEMFED_ROUTE_A_MAX + 1] = {};
	pol[MEMFED_ROUTE_A_DEST].type = NLA_U64;
	pol[MEMFED_ROUTE_A_CLASS].type = NLA_U32;
	pol[MEMFED_ROUTE_A_NEXT_HOP].type = NLA_U64;
	pol[MEMFED_ROUTE_A_METRIC].type = NLA_U32;
	pol[MEMFED_ROUTE_A_HOPS].type = NLA_U32;
	pol[MEMFED_ROUTE_A_AGE_MS].type = NLA_U64;
	pol[MEMFED_ROUTE_A_VIA].minlen = MEMFED_VIA_LEN;
	pol[MEMFED_ROUTE_A_VIA].maxlen = MEMFED_VIA_LEN;
	pol[MEMFED_ROUTE_A_DEV].type = NLA_STRING;
	pol[MEMFED_ROUTE_A_DEV].maxlen = IFNAMSIZ;
	nlattr *tb[MEMFED_ROUTE_A_MAX + 1];
	if (!parse_nest(hdr, MEMFED_A_ROUTE, pol, tb) ||
	    !has_all(tb, {MEMFED_ROUTE_A_DEST, MEMFED_ROUTE_A_CLASS, MEMFED_ROUTE_A_NEXT_HOP,
	                  MEMFED_ROUTE_A_METRIC, MEMFED_ROUTE_A_HOPS, MEMFED_ROUTE_A_AGE_MS}))
		return bad("route entry");
	RouteEntry r;
	r.dest.value = nla_get_u64(tb[MEMFED_ROUTE_A_DEST]);
	r.tclass = nla_get_u32(tb[MEMFED_ROUTE_A_CLASS]);
	r.next_hop.value = nla_get_u64(tb[MEMFED_ROUTE_A_NEXT_HOP]);
	r.metric = nla_get_u32(tb[MEMFED_ROUTE_A_METRIC]);
	r.hops = nla_get_u32(tb[MEMFED_ROUTE_A_HOPS]);
	r.age_ms = nla_get_u64(tb[MEMFED_ROUTE_A_AGE_MS]);
	// A version 1 kmod sends neither.
	if (tb[MEMFED_ROUTE_A_VIA])
		memcpy(&r.via, nla_data(tb[MEMFED_ROUTE_A_VIA]), sizeof(r.via));
	if (tb[MEMFED_ROUTE_A_DEV]) {
		const char *dev = static_cast<const char *>(nla_data(tb[MEMFED_ROUTE_A_DEV]));
		r.dev.assign(dev, strnlen(dev, nla_len(tb[MEMFED_ROUTE_A_DEV])));
	}
	if (!r.dest.valid() || !r.next_hop.valid() || r.tclass > MEMFED_CLASS_MAX)
		return bad("route entry");
	return r;
}

Result<WindowEntry> parse_window(nlmsghdr *hdr)
{
	nla_policy pol[MEMFED_WINDOW_A_MAX + 1] = {};
	pol[MEMFED_WINDOW_A_INDEX].type = NLA_U32;
	pol[MEMFED_WINDOW_A_MODULE].type = NLA_U64;
	pol[MEMFED_WINDOW_A_OFFSET].type = NLA_U64;
	pol[MEMFED_WINDOW_A_LENGTH].type = NLA_U64;
	pol[MEMFED_WINDOW_A_PID].type = NLA_U32;
	pol[MEMFED_WINDOW_A_ADDR].type = NLA_U64;
	pol[MEMFED_WINDOW_A_EVA].type = NLA_U64;
	nlattr *tb[MEMFED_WINDOW_A_MAX + 1];
	if (!parse_nest(hdr, MEMFED_A_WINDOW, pol, tb) ||
	    !has_all(tb, {MEMFED_WINDOW_A_INDEX, MEMFED_WINDOW_A_MODULE, MEMFED_WINDOW_A_OFFSET,
	                  MEMFED_WINDOW_A_LENGTH, MEMFED_WINDOW_A_EVA}) ||
	    !tb[MEMFED_WINDOW_A_PID] != !tb[MEMFED_WINDOW_A_ADDR])
		return bad("window entry");
	WindowEntry w;
	w.index = nla_get_u32(tb[MEMFED_WINDOW_A_INDEX]);
	w.fa.module.value = nla_get_u64(tb[MEMFED_WINDOW_A_MODULE]);
	w.fa.offset = nla_get_u64(tb[MEMFED_WINDOW_A_OFFSET]);
	w.length = nla_get_u64(tb[MEMFED_WINDOW_A_LENGTH]);
	w.eva = nla_get_u64(tb[MEMFED_WINDOW_A_EVA]);
	if (tb[MEMFED_WINDOW_A_PID]) {
		w.pid = nla_get_u32(tb[MEMFED_WINDOW_A_PID]);
		w.addr = nla_get_u64(tb[MEMFED_WINDOW_A_ADDR]);
	}
	if (w.index == 0 || !w.fa.module.valid() || w.length == 0)
		return bad("window entry");
	return w;
}

Result<Event> parse_event(nlmsghdr *hdr)
{
	if (!genlmsg_valid_hdr(hdr, 0))
		return bad("event");
	Event ev;
	auto *gh = static_cast<genlmsghdr *>(nlmsg_data(hdr));
	switch (gh->cmd) {
	case MEMFED_CMD_SET_MODULE:
	case MEMFED_CMD_DEL_MODULE: {
		auto m = parse_module(hdr);
		if (!m)
			return m.status();
		ev.kind = gh->cmd == MEMFED_CMD_SET_MODULE ? Event::Kind::kModuleSet
		                                           : Event::Kind::kModuleDel;
		ev.module = std::move(*m);
		return ev;
	}
	case MEMFED_CMD_SET_ROUTE:
	case MEMFED_CMD_DEL_ROUTE: {
		auto r = parse_route(hdr);
		if (!r)
			return r.status();
		ev.kind = gh->cmd == MEMFED_CMD_SET_ROUTE ? Event::Kind::kRouteSet
		                                          : Event::Kind::kRouteDel;
		ev.route = *r;
		return ev;
	}
	case MEMFED_CMD_SET_WINDOW:
	case MEMFED_CMD_DEL_WINDOW: {
		auto w = parse_window(hdr);
		if (!w)
			return w.status();
		ev.kind = gh->cmd == MEMFED_CMD_SET_WINDOW ? Event::Kind::kWindowSet
		                                           : Event::Kind::kWindowDel;
		ev.window = *w;
		return ev;
	}
	}
	return bad("event");
}

} // namespace memfed::kmod::codec
