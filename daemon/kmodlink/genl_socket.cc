#include "daemon/kmodlink/genl_socket.h"

#include <cerrno>
#include <cstring>
#include <sys/socket.h>

#include <netlink/attr.h>
#include <netlink/cache.h>
#include <netlink/genl/ctrl.h>
#include <netlink/genl/family.h>
#include <netlink/genl/genl.h>
#include <netlink/socket.h>

#include "kmod/uapi/memfed_netlink.h"

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

namespace memfed::kmod
{

namespace
{

constexpr size_t kBufWords = 65536 / sizeof(uint64_t);

// The extack message of an error reply, or "".
std::string extack_message(const nlmsghdr *h)
{
	if (!(h->nlmsg_flags & NLM_F_ACK_TLVS))
		return "";
	auto *e = static_cast<const nlmsgerr *>(NLMSG_DATA(h));
	size_t off = sizeof(nlmsgerr);
	if (!(h->nlmsg_flags & NLM_F_CAPPED))
		off += NLMSG_ALIGN(e->msg.nlmsg_len) - sizeof(nlmsghdr);
	size_t payload = h->nlmsg_len - NLMSG_HDRLEN;
	if (off >= payload)
		return "";
	auto *a = reinterpret_cast<nlattr *>(const_cast<char *>(reinterpret_cast<const char *>(e)) +
	                                     off);
	int rem = static_cast<int>(payload - off);
	std::string msg;
	uint32_t miss = 0;
	for (; nla_ok(a, rem); a = nla_next(a, &rem)) {
		if (nla_type(a) == NLMSGERR_ATTR_MSG && nla_len(a) > 0) {
			auto *s = static_cast<const char *>(nla_data(a));
			msg.assign(s, strnlen(s, nla_len(a)));
		} else if (nla_type(a) == NLMSGERR_ATTR_MISS_TYPE && nla_len(a) >= 4) {
			miss = nla_get_u32(a);
		}
	}
	if (msg.empty() && miss)
		msg = "missing attribute type " + std::to_string(miss);
	return msg;
}

} // namespace

Status kernel_error(int err, const std::string &what, const std::string &extack)
{
	Code c = Code::kIo;
	std::string fix;
	switch (err) {
	case EPERM:
	case EACCES:
		c = Code::kPermission;
		fix = "; changing memfed.ko's tables needs CAP_NET_ADMIN (run as root)";
		break;
	case ENOENT:
		c = Code::kNotFound;
		break;
	case ENOSPC:
		c = Code::kNoSpace;
		break;
	case EEXIST:
		c = Code::kAlreadyExists;
		break;
	case EINVAL:
	case ERANGE:
	case EOPNOTSUPP:
		c = Code::kInvalidArgument;
		break;
	default:
		break;
	}
	std::string msg = what + ": ";
	if (!extack.empty())
		msg += extack + " (" + strerror(err) + ")";
	else
		msg += strerror(err);
	return Status(c, msg + fix);
}

Result<std::unique_ptr<GenlSocket>> GenlSocket::open()
{
	std::unique_ptr<GenlSocket> s(new GenlSocket());
	s->sock_ = nl_socket_alloc();
	if (!s->sock_)
		return Status(Code::kIo, "netlink: cannot allocate a socket");
	int err = genl_connect(s->sock_);
	if (err < 0)
		return Status(Code::kIo,
		              std::string("netlink: cannot open a generic-netlink socket: ") +
		                      nl_geterror(err));
	int one = 1;
	setsockopt(s->fd(), SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
	setsockopt(s->fd(), SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
	s->family_ = genl_ctrl_resolve(s->sock_, MEMFED_GENL_NAME);
	if (s->family_ < 0)
		return Status(Code::kUnavailable,
		              "generic-netlink family '" MEMFED_GENL_NAME
		              "' not found: load memfed.ko (insmod memfed.ko); it is "
		              "visible only in the initial network namespace");
	// The family's version says which attributes the kmod knows
	// (memfed_netlink.h, "Versions"); 1 when it cannot be read.
	s->version_ = 1;
	nl_cache *cache = nullptr;
	if (genl_ctrl_alloc_cache(s->sock_, &cache) == 0) {
		if (genl_family *f = genl_ctrl_search_by_name(cache, MEMFED_GENL_NAME)) {
			s->version_ = genl_family_get_version(f);
			genl_family_put(f);
		}
		nl_cache_free(cache);
	}
	s->buf_.resize(kBufWords);
	return s;
}

GenlSocket::~GenlSocket()
{
	if (sock_)
		nl_socket_free(sock_);
}

int GenlSocket::fd() const
{
	return nl_socket_get_fd(sock_);
}

Result<int> GenlSocket::group(const char *name)
{
	int g = genl_ctrl_resolve_grp(sock_, MEMFED_GENL_NAME, name);
	if (g < 0)
		return Status(Code::kNotFound, std::string("memfed.ko has no multicast group '") +
		                                       name + "': upgrade memfed.ko");
	return g;
}

Status GenlSocket::join(int group)
{
	nl_socket_disable_seq_check(sock_);
	int err = nl_socket_add_membership(sock_, group);
	if (err < 0)
		return Status(Code::kIo,
		              std::string("netlink: cannot join the memfed events group: ") +
		                      nl_geterror(err));
	// Room for bursts of events; overflows are reported as ENOBUFS.
	nl_socket_set_buffer_size(sock_, 1 << 20, 0);
	return Status::ok();
}

nl_msg *GenlSocket::request(uint8_t cmd, bool dump)
{
	nl_msg *msg = nlmsg_alloc();
	if (!msg)
		return nullptr;
	int flags = dump ? NLM_F_DUMP : NLM_F_ACK;
	if (!genlmsg_put(msg, NL_AUTO_PORT, NL_AUTO_SEQ, family_, 0, flags, cmd,
	                 MEMFED_GENL_VERSION)) {
		nlmsg_free(msg);
		return nullptr;
	}
	return msg;
}

Status GenlSocket::transact(nl_msg *msg, const std::string &what,
                            const std::function<Status(nlmsghdr *)> &on_reply)
{
	if (!msg)
		return Status(Code::kInternal, what + ": out of memory building the request");
	int err = nl_send_auto(sock_, msg);
	uint32_t seq = nlmsg_hdr(msg)->nlmsg_seq;
	nlmsg_free(msg);
	if (err < 0)
		return Status(Code::kIo, what + ": netlink send failed: " + nl_geterror(err));

	Status first = Status::ok(); // first reply the caller refused
	for (;;) {
		ssize_t n = recv(fd(), buf_.data(), buf_.size() * sizeof(uint64_t), 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return Status::from_errno(errno, what + ": netlink receive");
		}
		int len = static_cast<int>(n);
		for (auto *h = reinterpret_cast<nlmsghdr *>(buf_.data()); nlmsg_ok(h, len);
		     h = nlmsg_next(h, &len)) {
			if (h->nlmsg_seq != seq)
				continue;
			if (h->nlmsg_type == NLMSG_ERROR) {
				if (h->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr)))
					return Status(Code::kProtocol,
					              what + ": truncated netlink error");
				auto *e = static_cast<nlmsgerr *>(NLMSG_DATA(h));
				if (e->error == 0)
					return first;
				return kernel_error(-e->error, what, extack_message(h));
			}
			if (h->nlmsg_type == NLMSG_DONE) {
				if (h->nlmsg_len >= NLMSG_LENGTH(sizeof(int))) {
					int derr = *static_cast<int *>(NLMSG_DATA(h));
					if (derr < 0)
						return kernel_error(-derr, what, "");
				}
				return first;
			}
			if (h->nlmsg_type != family_)
				continue;
			Status st = on_reply(h);
			if (!st && first)
				first = st;
		}
	}
}

Result<size_t> GenlSocket::receive(std::vector<uint64_t> &buf, bool *overrun)
{
	*overrun = false;
	if (buf.size() < kBufWords)
		buf.resize(kBufWords);
	for (;;) {
		ssize_t n = recv(fd(), buf.data(), buf.size() * sizeof(uint64_t), MSG_DONTWAIT);
		if (n >= 0)
			return static_cast<size_t>(n);
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return size_t{0};
		if (errno == ENOBUFS) {
			*overrun = true;
			return size_t{0};
		}
		return Status::from_errno(errno, "memfed events: netlink receive");
	}
}

} // namespace memfed::kmod
