#include "daemon/rdma/rdma_address.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>

#include <cstdio>
#include <cstring>

#include "daemon/transport/endpoint.h"

namespace memfed
{

Result<RdmaAddress> resolve_rdma_address(const std::string &host_port, const char *what)
{
	auto ep = Endpoint::parse(host_port);
	if (!ep)
		return Status(Code::kInvalidArgument,
		              std::string(what) + ": " + ep.status().message());
	addrinfo hints{};
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	addrinfo *res = nullptr;
	int rc = getaddrinfo(ep->host.c_str(), std::to_string(ep->port).c_str(), &hints, &res);
	if (rc != 0 || res == nullptr)
		return Status(Code::kInvalidArgument, std::string(what) + ": cannot resolve '" +
		                                              ep->host + "': " + gai_strerror(rc));
	RdmaAddress a;
	std::memcpy(&a.ss, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	return a;
}

std::string format_rdma_endpoint(const sockaddr *sa)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	char out[INET6_ADDRSTRLEN + 16];
	if (sa->sa_family == AF_INET) {
		auto *in = reinterpret_cast<const sockaddr_in *>(sa);
		inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
		std::snprintf(out, sizeof(out), "%s:%u", ip, unsigned(ntohs(in->sin_port)));
	} else {
		auto *in6 = reinterpret_cast<const sockaddr_in6 *>(sa);
		inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
		std::snprintf(out, sizeof(out), "[%s]:%u", ip, unsigned(ntohs(in6->sin6_port)));
	}
	return out;
}

} // namespace memfed
