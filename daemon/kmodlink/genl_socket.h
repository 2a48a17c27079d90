// A generic-netlink socket bound to memfed.ko's family.
//
// Internal to memfed_kmodlink. Opens a libnl-genl socket with extended ACKs,
// resolves the "memfed" family, and runs one request at a time: send, collect
// the replies, end at the ACK or at the end of a dump, and turn a kernel error
// into a Status that carries the kmod's extack message.
// Not thread-safe: one request at a time per socket.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <linux/netlink.h>
#include <netlink/msg.h>

#include "daemon/common/status.h"

namespace memfed::kmod
{

class GenlSocket
{
public:
	// kUnavailable when the family does not exist here (memfed.ko not
	// loaded, or not the initial network namespace).
	static Result<std::unique_ptr<GenlSocket>> open();
	~GenlSocket();
	GenlSocket(const GenlSocket &) = delete;
	GenlSocket &operator=(const GenlSocket &) = delete;

	int fd() const;
	// The family's version (MEMFED_GENL_VERSION of the loaded kmod).
	int version() const { return version_; }
	// Multicast group ID of the family's group `name`.
	Result<int> group(const char *name);
	// Join a multicast group; the socket then also receives events.
	Status join(int group);

	// A request for `cmd`; `dump` asks for every entry.
	nl_msg *request(uint8_t cmd, bool dump);
	// Sends msg (always freed) and feeds each reply message to on_reply.
	// `what` names the operation in errors ("set window 3").
	Status transact(nl_msg *msg, const std::string &what,
	                const std::function<Status(nlmsghdr *)> &on_reply);

	// Non-blocking receive of one datagram. Returns the bytes read, 0 if
	// nothing was queued; sets *overrun when the kernel dropped messages.
	Result<size_t> receive(std::vector<uint64_t> &buf, bool *overrun);

private:
	GenlSocket() = default;
	struct nl_sock *sock_ = nullptr;
	int family_ = 0;
	int version_ = 1;
	std::vector<uint64_t> buf_;
};

// errno → Status: "<what>: <extack message> (<strerror>)".
Status kernel_error(int err, const std::string &what, const std::string &extack);

} // namespace memfed::kmod
