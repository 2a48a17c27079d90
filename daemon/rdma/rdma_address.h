// Addresses for rdma_cm: "host:port" text (endpoint.h's forms) to a socket
// address, and back to text for the RDMA_CONNECT answer and logs.
#pragma once

#include <sys/socket.h>

#include <string>

#include "daemon/common/status.h"

namespace memfed
{

struct RdmaAddress {
	sockaddr_storage ss{};
};

// kInvalidArgument naming `what` (the flag or config key) and the form.
Result<RdmaAddress> resolve_rdma_address(const std::string &host_port, const char *what);
// "ip:port" ("[ip6]:port") of `sa`.
std::string format_rdma_endpoint(const sockaddr *sa);

} // namespace memfed
