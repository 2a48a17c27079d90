#include "daemon/kmodlink/kmodlink.h"

#include <cerrno>
#include <poll.h>

#include "daemon/kmodlink/genl_socket.h"
#include "daemon/kmodlink/kmod_codec.h"
#include "kmod/uapi/memfed_netlink.h"

namespace memfed::kmod
{

namespace
{

std::string module_what(const char *op, ModuleId id)
{
	return std::string(op) + " module " + id.to_string();
}

std::string route_what(const char *op, ModuleId dest, uint32_t tclass)
{
	return std::string(op) + " route to " + dest.to_string() + " (" +
	       traffic_class_name(tclass) + ")";
}

std::string window_what(const char *op, uint32_t index)
{
	return std::string(op) + " window " + std::to_string(index);
}

Status no_room(const std::string &what)
{
	return Status(Code::kInternal, what + ": request does not fit in a netlink message");
}

// A GET that expects exactly one entry back.
template <typename T>
Result<T> get_one(GenlSocket &s, nl_msg *msg, const std::string &what,
                  Result<T> (*parse)(nlmsghdr *))
{
	std::optional<T> out;
	Status st = s.transact(msg, what, [&](nlmsghdr *h) -> Status {
		auto r = parse(h);
		if (!r)
			return r.status();
		out = std::move(*r);
		return Status::ok();
	});
	if (!st)
		return st;
	if (!out)
		return Status(Code::kProtocol, what + ": memfed.ko acknowledged without a reply");
	return std::move(*out);
}

template <typename T>
Result<std::vector<T>> dump_all(GenlSocket &s, uint8_t cmd, const std::string &what,
                                Result<T> (*parse)(nlmsghdr *))
{
	std::vector<T> out;
	Status st = s.transact(s.request(cmd, true), what, [&](nlmsghdr *h) -> Status {
		auto r = parse(h);
		if (!r)
			return r.status();
		out.push_back(std::move(*r));
		return Status::ok();
	});
	if (!st)
		return st;
	return out;
}

Status no_reply(nlmsghdr *)
{
	return Status::ok();
}

} // namespace

bool KmodLink::available()
{
	return GenlSocket::open().is_ok();
}

Result<std::unique_ptr<KmodLink>> KmodLink::open()
{
	auto s = GenlSocket::open();
	if (!s)
		return s.status();
	return std::unique_ptr<KmodLink>(new KmodLink(std::move(*s)));
}

KmodLink::KmodLink(std::unique_ptr<GenlSocket> sock) : sock_(std::move(sock)) {}
KmodLink::~KmodLink() = default;

Result<Layout> KmodLink::layout()
{
	return get_one<Layout>(*sock_, sock_->request(MEMFED_CMD_GET_LAYOUT, false), "get layout",
	                       codec::parse_layout);
}

Status KmodLink::set_module(const ModuleEntry &m)
{
	std::string what = module_what("set", m.id);
	nl_msg *msg = sock_->request(MEMFED_CMD_SET_MODULE, false);
	if (msg && !codec::put_module(msg, m, sock_->version())) {
		nlmsg_free(msg);
		return no_room(what);
	}
	return sock_->transact(msg, what, no_reply);
}

Result<ModuleEntry> KmodLink::get_module(ModuleId id)
{
	std::string what = module_what("get", id);
	nl_msg *msg = sock_->request(MEMFED_CMD_GET_MODULE, false);
	if (msg && !codec::put_module_key(msg, id)) {
		nlmsg_free(msg);
		return no_room(what);
	}
	return get_one<ModuleEntry>(*sock_, msg, what, codec::parse_module);
}

Result<std::vector<ModuleEntry>> KmodLink::modules()
{
	return dump_all<ModuleEntry>(*sock_, MEMFED_CMD_GET_MODULE, "dump modules",
	                             codec::parse_module);
}

Status KmodLink::del_module(ModuleId id)
{
	std::string what = module_what("delete", id);
	nl_msg *msg = sock_->request(MEMFED_CMD_DEL_MODULE, false);
	if (msg && !codec::put_module_key(msg, id)) {
		nlmsg_free(msg);
		return no_room(what);
	}
	return sock_->transact(msg, what, no_reply);
}

Status KmodLink::set_route(const RouteEntry &r)
{
	std::string what = route_what("set", r.dest, r.tclass);
	nl_msg *msg = sock_->request(MEMFED_CMD_SET_ROUTE, false);
	if (msg && !codec::put_route(msg, r, sock_->version())) {
		nlmsg_free(msg);
		return no_room(what);
	}
	return sock_->transact(msg, what, no_reply);
}

Result<RouteEntry> KmodLink::get_route(ModuleId dest, uint32_t tclass)
{
	std::string what = route_what("get", dest, tclass);
	nl_msg *msg = sock_->request(MEMFED_CMD_GET_ROUTE, false);
	if (msg && !codec::put_route_key(msg, dest, tclass)) {
		nlmsg_free(msg);
		return no_room(what);
	}
	return get_one<RouteEntry>(*sock_, msg, what, codec::parse_route);
}

Result<std::vector<RouteEntry>> KmodLink::routes()
{
	return dump_all<RouteEntry>(*sock_, MEMFED_CMD_GET_ROUTE, "dump routes",
	                            codec::parse_route);
}

Status KmodLink::del_route(ModuleId dest, uint32_t tclass)
{
	std::string what = route_what("delete", dest, tclass);
	nl_msg *msg = sock_->request(MEMFED_CMD_DEL_ROUTE, false);
	if (msg && !codec::put_route_key(msg, dest, tclass)) {
		nlmsg_free(msg);
		return no_room(what);
	}
	return sock_->transact(msg, what, no_reply);
}

Status KmodLink::set_window(const WindowEntry &w)
{
	std::string what = window_what("set", w.index);
	nl_msg *msg = sock_->request(MEMFED_CMD_SET_WINDOW, false);
	if (msg && !codec::put_window(msg, w)) {
		nlmsg_free(msg);
		return no_room(what);
	}
	return sock_->transact(msg, what, no_reply);
}

Result<WindowEntry> KmodLink::get_window(uint32_t index)
{
	std::string what = window_what("get", index);
	nl_msg *msg = sock_->request(MEMFED_CMD_GET_WINDOW, false);
	if (msg && !codec::put_window_key(msg, index)) {
		nlmsg_free(msg);
		return no_room(what);
	}
	return get_one<WindowEntry>(*sock_, msg, what, codec::parse_window);
}

Result<std::vector<WindowEntry>> KmodLink::windows()
{
	return dump_all<WindowEntry>(*sock_, MEMFED_CMD_GET_WINDOW, "dump windows",
	                             codec::parse_window);
}

Status KmodLink::del_window(uint32_t index)
{
	std::string what = window_what("delete", index);
	nl_msg *msg = sock_->request(MEMFED_CMD_DEL_WINDOW, false);
	if (msg && !codec::put_window_key(msg, index)) {
		nlmsg_free(msg);
		return no_room(what);
	}
	return sock_->transact(msg, what, no_reply);
}

Result<std::unique_ptr<KmodWatch>> KmodWatch::open()
{
	auto s = GenlSocket::open();
	if (!s)
		return s.status();
	auto g = (*s)->group(MEMFED_MCGRP_EVENTS);
	if (!g)
		return g.status();
	MF_RETURN_IF_ERROR((*s)->join(*g));
	return std::unique_ptr<KmodWatch>(new KmodWatch(std::move(*s)));
}

KmodWatch::KmodWatch(std::unique_ptr<GenlSocket> sock) : sock_(std::move(sock)) {}
KmodWatch::~KmodWatch() = default;

int KmodWatch::fd() const
{
	return sock_->fd();
}

Result<std::vector<Event>> KmodWatch::read(int timeout_ms)
{
	std::vector<Event> out;
	pollfd p{fd(), POLLIN, 0};
	int n;
	do
		n = poll(&p, 1, timeout_ms);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return Status::from_errno(errno, "memfed events: poll");
	if (n == 0)
		return out;
	for (;;) {
		bool overrun = false;
		auto got = sock_->receive(buf_, &overrun);
		if (!got)
			return got.status();
		if (overrun) {
			Event ev;
			ev.kind = Event::Kind::kOverrun;
			out.push_back(ev);
			continue;
		}
		if (*got == 0)
			return out;
		int len = static_cast<int>(*got);
		for (auto *h = reinterpret_cast<nlmsghdr *>(buf_.data()); nlmsg_ok(h, len);
		     h = nlmsg_next(h, &len)) {
			if (h->nlmsg_type < NLMSG_MIN_TYPE)
				continue;
			auto ev = codec::parse_event(h);
			if (!ev)
				return ev.status();
			out.push_back(std::move(*ev));
		}
	}
}

} // namespace memfed::kmod
