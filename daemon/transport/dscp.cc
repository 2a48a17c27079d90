// Socket marking for traffic classes (dscp.h).
#include "daemon/transport/dscp.h"

#include <netinet/in.h>
#include <netinet/ip.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace memfed
{

Status mark_socket(int fd, wire::TrafficClass tc)
{
	int tos = dscp_of(tc) << 2; // DSCP is the upper six bits; ECN stays 0
	sockaddr_storage ss{};
	socklen_t len = sizeof(ss);
	if (getsockname(fd, reinterpret_cast<sockaddr *>(&ss), &len) < 0)
		return Status(Code::kIo, std::string("getsockname: ") + strerror(errno));
	int r = 0;
	if (ss.ss_family == AF_INET6) {
		r = setsockopt(fd, IPPROTO_IPV6, IPV6_TCLASS, &tos, sizeof(tos));
		(void)setsockopt(fd, IPPROTO_IP, IP_TOS, &tos, sizeof(tos)); // v4-mapped
	} else {
		r = setsockopt(fd, IPPROTO_IP, IP_TOS, &tos, sizeof(tos));
	}
	if (r < 0)
		return Status(Code::kIo, "marking a socket with DSCP " +
		                                 std::to_string(dscp_of(tc)) + ": " +
		                                 strerror(errno));
	return Status::ok();
}

} // namespace memfed
