// NodeFederation: the Federation of one memfedd: its own module (if it has
// the module role) plus the peer modules named in config.
//
// Control-path requests to peers (region lookup, create, list, stat, and the
// byte-granular region reads and writes of memfedctl) go over one blocking
// SyncClient per peer, reconnected on demand; the data path (the pager) gets
// its own io_uring Channels from open_channel().
//
// Thread-safety: every public method is thread-safe; requests to one peer are
// serialised by that peer's lock.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "daemon/service/federation.h"
#include "daemon/service/module_service.h"
#include "daemon/service/quota.h"
#include "daemon/transport/sync_client.h"
#include "daemon/transport/tcp_channel.h"

namespace memfed {

class NodeFederation : public Federation {
public:
	// `store`/`service` are null on a pager-only node. `self` is the local
	// module's ID, or a node ID when there is no local module.
	// `tls`: how this node authenticates and encrypts its connections to
	// modules (null: plaintext, for tests only; memfedd always has one).
	NodeFederation(ModuleStore *store, ModuleService *service, ModuleId self,
		       std::vector<std::string> peers,
		       std::shared_ptr<trust::TlsContext> tls = nullptr);
	~NodeFederation() override;

	ModuleId self() const override { return self_; }
	Result<RegionLocation> locate_region(const std::string &name) override;
	std::vector<ModuleEntry> modules() override;
	Result<std::unique_ptr<Channel>> open_channel(EventLoop *loop, ModuleId module) override;
	// How open_channel() turns a connected TcpChannel into the Channel it
	// returns (memfedd --transport: an RdmaChannel around it); unset: as is.
	// Set before the first open_channel().
	using ChannelWrapper =
		std::function<std::unique_ptr<Channel>(EventLoop *, std::unique_ptr<TcpChannel>)>;
	void set_channel_wrapper(ChannelWrapper w) { wrap_channel_ = std::move(w); }

	// Creates a region on `module` (unset: the local module, or else the first
	// reachable peer with room). `admit` decides a create on the local module
	// (ModuleStore::AdmitFn: the control socket's quota); a peer decides its own.
	Result<RegionLocation> create_region(const std::string &name, uint64_t size, uint32_t uid,
					     uint32_t mode, std::optional<ModuleId> module,
					     const ModuleStore::AdmitFn &admit = nullptr);
	Status delete_region(const RegionLocation &loc);
	// Sets the region's length as a file (ModuleStore::set_length).
	Result<RegionLocation> set_length(const RegionLocation &loc, uint64_t length,
					  bool grow_only);
	// Every region on every reachable module, in name order (fetched page
	// by page with list_regions_page).
	std::vector<RegionLocation> list_regions();
	// One page of that list in name order: the regions whose names sort
	// after `after` (empty: from the first), at most `limit` (> 0). *more is
	// set when there may be more after the last one. A region name lives on
	// one module (create refuses a name any module has).
	std::vector<RegionLocation> list_regions_page(const std::string &after, size_t limit,
						      bool *more);
	// Whole pages of a region, through the local store or the peer's SyncClient.
	Status read_pages(const RegionLocation &loc, uint64_t first_page, uint32_t count, void *dst);
	Status write_pages(const RegionLocation &loc, uint64_t first_page, uint32_t count,
			   const void *src);
	bool has_local() const { return store_ != nullptr; }
	// The mesh found (up) or lost (down) the route to `module`, reachable at
	// `endpoint`; a module first seen this way becomes a peer, and a lost
	// one stays listed as unreachable with `why` and the time.
	void mesh_route(ModuleId module, const std::string &endpoint, bool up, uint32_t metric,
			uint32_t hops, const std::string &why);
	// Regions of the local module (0 without one).
	uint32_t local_region_count() const { return store_ ? store_->info().regions : 0; }
	// The local module's pool capacity and region table slots (zeros without one).
	ModuleSize local_size() const;
	// What each owner holds on the local module (empty without one).
	std::map<uint32_t, OwnerUsage> local_usage() const;

private:
	struct Peer;
	// Runs fn(client) against the peer holding `module`, reconnecting once if
	// the connection had gone stale.
	template <typename Fn> auto with_peer(Peer &p, Fn fn) -> decltype(fn(*(SyncClient *)nullptr));
	Peer *find_peer(ModuleId module);
	// The peers (mesh peers without a route only with include_down). Peers
	// are never destroyed while the federation lives, so the pointers stay valid.
	std::vector<Peer *> peer_list(bool include_down);
	static RegionLocation location(ModuleId module, const wire::WireRegion &r);

	ModuleStore *store_;
	ModuleService *service_;
	ModuleId self_;
	std::shared_ptr<trust::TlsContext> tls_;
	ChannelWrapper wrap_channel_;
	std::mutex peers_mu_;
	std::vector<std::unique_ptr<Peer>> peers_; // guarded by peers_mu_ (grows, never shrinks)
};

} // namespace memfed
