#include "daemon/mesh/hop_probe.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>

#include "daemon/common/log.h"

namespace memfed::mesh
{
namespace
{

constexpr uint8_t kMagic[4] = {'M', 'F', 'H', 'P'};
constexpr uint8_t kVersion = 1;

} // namespace

void encode_hop_probe(const HopProbeMessage &m, uint8_t out[kHopProbeSize])
{
	std::memcpy(out, kMagic, 4);
	out[4] = kVersion;
	out[5] = m.type;
	out[6] = m.received_hop_limit;
	out[7] = 0;
	for (int i = 0; i < 8; i++)
		out[8 + i] = uint8_t(m.nonce >> (8 * i));
}

std::optional<HopProbeMessage> decode_hop_probe(const uint8_t *p, size_t len)
{
	if (len != kHopProbeSize || std::memcmp(p, kMagic, 4) != 0 || p[4] != kVersion ||
	    (p[5] != 1 && p[5] != 2) || p[7] != 0 || (p[5] == 1 && p[6] != 0))
		return std::nullopt;
	HopProbeMessage m;
	m.type = p[5];
	m.received_hop_limit = p[6];
	for (int i = 0; i < 8; i++)
		m.nonce |= uint64_t(p[8 + i]) << (8 * i);
	return m;
}

Result<std::unique_ptr<HopResponder>> HopResponder::start(uint16_t port)
{
	std::unique_ptr<HopResponder> r(new HopResponder());
	r->fd_ = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (r->fd_ < 0)
		return Status::from_errno(errno, "hop probe socket");
	int one = 1;
	setsockopt(r->fd_, IPPROTO_IPV6, IPV6_RECVHOPLIMIT, &one, sizeof(one));
	setsockopt(r->fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	sockaddr_in6 sa{};
	sa.sin6_family = AF_INET6;
	sa.sin6_port = htons(port);
	sa.sin6_addr = in6addr_any;
	if (bind(r->fd_, reinterpret_cast<sockaddr *>(&sa), sizeof(sa)) < 0)
		return Status::from_errno(
		        errno, "hop probe responder on UDP port " + std::to_string(port) +
		                       " (is another memfedd using the mesh port?)");
	r->stop_fd_ = eventfd(0, EFD_CLOEXEC);
	if (r->stop_fd_ < 0)
		return Status::from_errno(errno, "eventfd");
	HopResponder *self = r.get();
	r->thread_ = std::thread([self] { self->run(); });
	return r;
}

HopResponder::~HopResponder()
{
	if (stop_fd_ >= 0) {
		uint64_t one = 1;
		(void)!write(stop_fd_, &one, sizeof(one));
	}
	if (thread_.joinable())
		thread_.join();
	if (fd_ >= 0)
		close(fd_);
	if (stop_fd_ >= 0)
		close(stop_fd_);
}

void HopResponder::run()
{
	while (true) {
		pollfd p[2] = {{fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		if (p[1].revents)
			return;
		uint8_t buf[64];
		alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int))];
		sockaddr_in6 from{};
		iovec iov{buf, sizeof(buf)};
		msghdr mh{};
		mh.msg_name = &from;
		mh.msg_namelen = sizeof(from);
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = ctrl;
		mh.msg_controllen = sizeof(ctrl);
		ssize_t n = recvmsg(fd_, &mh, MSG_DONTWAIT);
		if (n < 0)
			continue;
		auto m = decode_hop_probe(buf, size_t(n));
		if (!m || m->type != 1)
			continue;
		int hl = -1;
		for (cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
			if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_HOPLIMIT &&
			    c->cmsg_len >= CMSG_LEN(sizeof(int)))
				std::memcpy(&hl, CMSG_DATA(c), sizeof(int));
		}
		if (hl < 1 || hl > 255)
			continue;
		HopProbeMessage ans{2, uint8_t(hl), m->nonce};
		uint8_t out[kHopProbeSize];
		encode_hop_probe(ans, out);
		(void)sendto(fd_, out, sizeof(out), MSG_DONTWAIT,
		             reinterpret_cast<sockaddr *>(&from), mh.msg_namelen);
	}
}

std::optional<uint32_t> measure_hops(const in6_addr &dst, uint16_t port, int timeout_ms)
{
	int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return std::nullopt;
	int hl = kProbeHopLimit;
	setsockopt(fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &hl, sizeof(hl));
	sockaddr_in6 sa{};
	sa.sin6_family = AF_INET6;
	sa.sin6_port = htons(port);
	sa.sin6_addr = dst;
	HopProbeMessage probe{1, 0, 0};
	if (getrandom(&probe.nonce, sizeof(probe.nonce), 0) != sizeof(probe.nonce))
		probe.nonce = uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
	uint8_t out[kHopProbeSize];
	encode_hop_probe(probe, out);
	std::optional<uint32_t> hops;
	if (connect(fd, reinterpret_cast<sockaddr *>(&sa), sizeof(sa)) == 0 &&
	    send(fd, out, sizeof(out), 0) == ssize_t(sizeof(out))) {
		auto deadline =
		        std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
		while (!hops) {
			int left = int(std::chrono::duration_cast<std::chrono::milliseconds>(
			                       deadline - std::chrono::steady_clock::now())
			                       .count());
			pollfd p{fd, POLLIN, 0};
			if (left <= 0 || poll(&p, 1, left) <= 0)
				break;
			uint8_t buf[64];
			ssize_t n = recv(fd, buf, sizeof(buf), 0);
			auto m = n > 0 ? decode_hop_probe(buf, size_t(n)) : std::nullopt;
			if (m && m->type == 2 && m->nonce == probe.nonce &&
			    m->received_hop_limit <= kProbeHopLimit && m->received_hop_limit > 0)
				hops = uint32_t(kProbeHopLimit - m->received_hop_limit + 1);
		}
	}
	close(fd);
	return hops;
}

} // namespace memfed::mesh
