#include "daemon/transport/endpoint.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "daemon/common/log.h"

namespace memfed
{

std::string Endpoint::to_string() const
{
	if (host.find(':') != std::string::npos)
		return "[" + host + "]:" + std::to_string(port);
	return host + ":" + std::to_string(port);
}

Result<Endpoint> Endpoint::parse(const std::string &text)
{
	auto bad = [&](const char *why) {
		return Status(Code::kInvalidArgument, "endpoint '" + text + "': " + why +
		                                              " (expected host:port, e.g. "
		                                              "127.0.0.1:7700 or [::1]:7700)");
	};
	Endpoint ep;
	std::string port;
	if (!text.empty() && text[0] == '[') {
		size_t close = text.find(']');
		if (close == std::string::npos || close + 1 >= text.size() ||
		    text[close + 1] != ':')
			return bad("unterminated [address]");
		ep.host = text.substr(1, close - 1);
		port = text.substr(close + 2);
	} else {
		size_t colon = text.rfind(':');
		if (colon == std::string::npos)
			return bad("no port");
		ep.host = text.substr(0, colon);
		port = text.substr(colon + 1);
		if (ep.host.find(':') != std::string::npos)
			return bad("IPv6 addresses need brackets");
	}
	if (ep.host.empty())
		return bad("empty host");
	if (port.empty() || port.size() > 5 ||
	    port.find_first_not_of("0123456789") != std::string::npos)
		return bad("port is not a number");
	unsigned long p = std::stoul(port);
	if (p > 65535)
		return bad("port out of range 0..65535");
	ep.port = static_cast<uint16_t>(p);
	return ep;
}

namespace
{

struct AddrInfo {
	addrinfo *ai = nullptr;
	~AddrInfo()
	{
		if (ai)
			freeaddrinfo(ai);
	}
};

Status resolve(const Endpoint &ep, bool passive, AddrInfo *out)
{
	addrinfo hints{};
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = passive ? AI_PASSIVE : 0;
	std::string port = std::to_string(ep.port);
	int r = getaddrinfo(ep.host.c_str(), port.c_str(), &hints, &out->ai);
	if (r != 0)
		return Status(Code::kInvalidArgument,
		              "cannot resolve host '" + ep.host + "': " + gai_strerror(r));
	return Status::ok();
}

} // namespace

void set_nodelay(int fd)
{
	int one = 1;
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		LOG_WARN("transport", "TCP_NODELAY on fd %d: %s", fd, strerror(errno));
}

Result<int> listen_tcp(const Endpoint &ep, int backlog)
{
	AddrInfo ai;
	MF_RETURN_IF_ERROR(resolve(ep, true, &ai));
	Status last(Code::kUnavailable, "no address for " + ep.to_string());
	for (addrinfo *a = ai.ai; a != nullptr; a = a->ai_next) {
		int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
		                a->ai_protocol);
		if (fd < 0) {
			last = Status::from_errno(errno, "socket for " + ep.to_string());
			continue;
		}
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		// A daemon killed a moment ago may still hold the port: the kernel
		// tears its io_uring down after the process is gone, and the
		// listening socket an accept was armed on goes with it. A restart
		// waits that out before it calls the port taken.
		int r = -1, err = 0;
		for (int tries = 0; tries < 40; tries++) {
			r = bind(fd, a->ai_addr, a->ai_addrlen);
			err = errno;
			if (r == 0 || err != EADDRINUSE || ep.port == 0)
				break;
			usleep(50'000);
		}
		if (r < 0) {
			close(fd);
			if (err == EADDRINUSE)
				return Status(Code::kBusy,
				              "port " + std::to_string(ep.port) + " on " + ep.host +
				                      " is in use (another memfedd? set --listen)");
			last = Status::from_errno(err, "bind " + ep.to_string());
			continue;
		}
		if (listen(fd, backlog) < 0) {
			last = Status::from_errno(errno, "listen on " + ep.to_string());
			close(fd);
			continue;
		}
		return fd;
	}
	return last;
}

Result<int> connect_tcp(const Endpoint &ep, int timeout_ms)
{
	AddrInfo ai;
	MF_RETURN_IF_ERROR(resolve(ep, false, &ai));
	std::string why = "no address";
	for (addrinfo *a = ai.ai; a != nullptr; a = a->ai_next) {
		int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
		                a->ai_protocol);
		if (fd < 0) {
			why = strerror(errno);
			continue;
		}
		int r = connect(fd, a->ai_addr, a->ai_addrlen);
		if (r < 0 && errno == EINPROGRESS) {
			pollfd pfd{fd, POLLOUT, 0};
			do
				r = poll(&pfd, 1, timeout_ms);
			while (r < 0 && errno == EINTR);
			if (r == 0) {
				errno = ETIMEDOUT;
				r = -1;
			} else if (r > 0) {
				int err = 0;
				socklen_t len = sizeof(err);
				getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
				errno = err;
				r = err == 0 ? 0 : -1;
			}
		}
		if (r < 0) {
			why = strerror(errno);
			close(fd);
			continue;
		}
		int flags = fcntl(fd, F_GETFL);
		fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
		set_nodelay(fd);
		return fd;
	}
	return Status(Code::kUnavailable, "cannot connect to memfed module at " + ep.to_string() +
	                                          ": " + why + " (is memfedd running there?)");
}

std::string peer_name(int fd)
{
	sockaddr_storage ss{};
	socklen_t len = sizeof(ss);
	char host[INET6_ADDRSTRLEN] = "?";
	char out[INET6_ADDRSTRLEN + 16];
	if (getpeername(fd, reinterpret_cast<sockaddr *>(&ss), &len) == 0) {
		if (ss.ss_family == AF_INET) {
			auto *in = reinterpret_cast<sockaddr_in *>(&ss);
			inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
			snprintf(out, sizeof(out), "%s:%u", host, ntohs(in->sin_port));
			return out;
		}
		if (ss.ss_family == AF_INET6) {
			auto *in6 = reinterpret_cast<sockaddr_in6 *>(&ss);
			inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
			snprintf(out, sizeof(out), "[%s]:%u", host, ntohs(in6->sin6_port));
			return out;
		}
	}
	snprintf(out, sizeof(out), "fd %d", fd);
	return out;
}

uint16_t local_port(int fd)
{
	sockaddr_storage ss{};
	socklen_t len = sizeof(ss);
	if (getsockname(fd, reinterpret_cast<sockaddr *>(&ss), &len) < 0)
		return 0;
	if (ss.ss_family == AF_INET)
		return ntohs(reinterpret_cast<sockaddr_in *>(&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(reinterpret_cast<sockaddr_in6 *>(&ss)->sin6_port);
	return 0;
}

} // namespace memfed
