// Endpoints: "host:port" text to sockets, for the TCP transport.
//
// Accepted forms: "127.0.0.1:7700", "localhost:7700", "[::1]:7700". Port 0
// asks the kernel for an ephemeral port when listening. Thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include "daemon/common/status.h"

namespace memfed
{

struct Endpoint {
	std::string host;
	uint16_t port = 0;

	std::string to_string() const;
	// kInvalidArgument naming the text and the expected form.
	static Result<Endpoint> parse(const std::string &host_port);
};

// A listening, non-blocking TCP socket bound to `ep` (SO_REUSEADDR).
// kBusy if the port is taken.
Result<int> listen_tcp(const Endpoint &ep, int backlog = 512);
// A connected blocking TCP socket with TCP_NODELAY; kUnavailable naming the
// endpoint if nothing answers within `timeout_ms`.
Result<int> connect_tcp(const Endpoint &ep, int timeout_ms);
// TCP_NODELAY on; failure is logged and ignored (it only costs latency).
void set_nodelay(int fd);
// "ip:port" of the socket's peer, for logs.
std::string peer_name(int fd);
// Bound port of a socket.
uint16_t local_port(int fd);

} // namespace memfed
