// Federation: this daemon's view of the memory modules it can reach.
//
// It knows the local module (when this memfedd exports a pool) and the peers
// from config, finds which module holds a region, and opens Channels to
// modules. A channel to the local module is served in-process without a
// socket; a channel to a remote module is a TcpChannel (later: RDMA).
//
// Thread-safety: locate_region() and modules() may be called from any thread
// (they may block on a remote request); open_channel() runs on the thread of
// the EventLoop it is given.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "daemon/common/ids.h"
#include "daemon/common/status.h"
#include "daemon/service/replica_set.h"
#include "daemon/transport/channel.h"
#include "daemon/transport/event_loop.h"

namespace memfed {

// Where a region lives and what it is.
struct RegionLocation {
	ModuleId module;
	uint32_t region_id = 0;
	std::string name;
	uint64_t fa_offset = 0;	 // first byte of the region in the module's pool
	uint64_t size_bytes = 0; // multiple of the page size
	uint32_t owner_uid = 0;
	uint32_t mode = 0;
	uint64_t ctime_ns = 0;
	uint64_t length = 0; // as a file: bytes before end of file, <= size_bytes
	// Located for a local user (NodeFederation::locate_region with an
	// Asker): the rights (wire::kAccess*) the module holding it gives that
	// user, decided by its owner and grants (region_authz.h); 0 when not
	// asked, and the region's owner uid and mode decide.
	uint8_t access = 0;
	// A replicated region (replica_set.h): `module` is its replica set's
	// virtual module, the region starts at fa_offset 0 there, and `copies`
	// lists the copies found; `replicas` is how many it should have.
	uint64_t replica_group = 0; // 0: an ordinary region, on `module`
	uint8_t replicas = 0;
	std::vector<ReplicaLocation> copies;
};

// A local user (the control socket's SO_PEERCRED uid) locating a region, and
// the access it needs (wire::kAccess*).
struct Asker {
	uint32_t uid = 0;
	uint8_t want = 0;
};

struct ModuleEntry {
	ModuleId module;
	std::string endpoint; // "host:port", empty for the local module
	bool local = false;
	bool reachable = false;
	uint64_t capacity_bytes = 0;
	uint64_t free_bytes = 0;
	uint32_t hops = 0; // 0: local, 1: direct peer; mesh peers: measured, 0 = not yet
	std::string error; // why it is unreachable, if it is
	bool mesh = false;		 // found by its route in the mesh
	uint32_t metric = 0;		 // the mesh route's babel metric
	uint64_t down_since_unix_ms = 0; // when its route went, if it did
	std::string key;		 // its node's authenticated public key, "" if unknown
	std::string key_name;		 // that key's name among the trusted peers
	// Two pools answer for this module ID (NodeFederation's identity
	// check): the refused one's key and endpoint; `key` is the one pinned.
	std::string conflict_key;
	std::string conflict_endpoint;
	std::string pinned_endpoint;
};

class Federation {
public:
	virtual ~Federation() = default;
	virtual ModuleId self() const = 0;
	// kNotFound "region 'x' not found on any module (memfedctl region ls)";
	// kUnavailable when it is on no module that answers but a module did
	// not answer.
	virtual Result<RegionLocation> locate_region(const std::string &name) = 0;
	// The same for local user asker.uid needing asker.want (wire::kAccess*):
	// the module holding the region decides by its owner node and grants
	// (region_authz.h), refuses naming the grant that would allow it, and
	// the location's `access` is what it gives. A federation that cannot
	// ask (a test's) locates as above, `access` 0: owner uid and mode decide.
	virtual Result<RegionLocation> locate_region(const std::string &name, const Asker &asker)
	{
		(void)asker;
		return locate_region(name);
	}
	virtual std::vector<ModuleEntry> modules() = 0;
	virtual Result<std::unique_ptr<Channel>> open_channel(EventLoop *loop, ModuleId module) = 0;
};

} // namespace memfed
