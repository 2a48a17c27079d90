// The channel cases that daemon/transport/transport_test.cc runs against a
// TcpChannel, run against an RdmaChannel over soft-RoCE in the QEMU guest
// (rdma_channel_cases.cc): random orders, errors, damaged pages and random
// cuts. Called from memfed_rdma_test (rdma_test.cc) once its module is up.
#pragma once

#include <memory>
#include <string>

#include "daemon/rdma/rdma_channel.h"
#include "daemon/store/pool.h"
#include "daemon/trust/tls_context.h"

namespace memfed::guest
{

struct RdmaChannelCaseEnv {
	EventLoop *loop = nullptr;              // the channels' loop (this thread's)
	ModuleStore *store = nullptr;           // the module's store, behind an RdmaServer
	NodeKeyBytes pager_key{};               // the channels' node key (granted read here)
	std::shared_ptr<trust::TlsContext> tls; // the channels' node TLS
	std::string endpoint;                   // the module's TLS TcpServer
	ModuleId self;                          // the channels' module id
};

// Prints the markers rdma-channel-random-order, rdma-channel-errors,
// rdma-channel-damaged-page, rdma-channel-random-cuts and
// rdma-channel-destroy-completes.
void run_rdma_channel_cases(const RdmaChannelCaseEnv &env);

} // namespace memfed::guest
