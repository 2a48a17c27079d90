// ModuleService: the memory-module role on the wire. Serves READ, WRITE,
// REGION_* and STAT requests from peers out of the local ModuleStore.
//
// Regions created over the wire are owned by the uid in the request's spec;
// the wire carries no credentials of its own, so a module trusts the nodes
// that can reach its port (access control on the wire is a later step).
//
// Thread-safety: handle() runs on the module's EventLoop thread; the store is
// thread-safe, so control ops may use it concurrently.
#pragma once

#include <chrono>

#include "daemon/store/pool.h"
#include "daemon/transport/tcp_server.h"

namespace memfed {

// RegionInfo (store) -> WireRegion and back to the federation's view.
wire::WireRegion to_wire(const RegionInfo &r);

class ModuleService : public RequestHandler {
public:
	explicit ModuleService(ModuleStore *store) : store_(store) {}
	void handle(const ConnInfo &conn, const wire::Header &req, std::span<const uint8_t> payload,
		    Reply &reply) override;
	wire::WireStat stat() const;

private:
	ModuleStore *store_;
	std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
};

} // namespace memfed
