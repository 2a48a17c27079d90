// NodeFederation: the Federation of one memfedd: its own module (if it has
// the module role) plus the peer modules named in config.
//
// Control-path requests to peers (region lookup, create, list, stat, and the
// byte-granular region reads and writes of memfedctl) go over one blocking
// SyncClient per peer, reconnected on demand; the data path (the pager) gets
// its own io_uring Channels from open_channel().
//
// Who a module is (decided): a module ID and the node key that TLS
// authenticated for it. The first HELLO from a module ID pins the key that
// answered; a later HELLO for the same ID from another key (a second pool
// announcing the ID, or the mesh route to the ID moving to another node) is
// refused, logged once, and shown by `memfedctl module ls` as a conflict
// naming both keys and endpoints: the two are never merged into one module.
// A module answering as this node's own module ID is refused the same way.
// (The pool's ctime would tell pools apart too, but HELLO does not carry
// it, and the key is authenticated while a ctime is only claimed.) The pins
// live as long as the daemon; a pinned key that is no longer trusted (`peer
// rm`, as when a node gets a new key) gives way to the key that answers now.
//
// Thread-safety: every public method is thread-safe; requests to one peer are
// serialised by that peer's lock.
#pragma once

#include <atomic>
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
#include "daemon/service/replica_keeper.h"
#include "daemon/service/replicated_regions.h"
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
	// The same for local user asker.uid needing asker.want: the module
	// holding the region (this one too) decides by the region's owner and
	// grants and refuses naming the grant that would allow it
	// (region_authz.h); the location's `access` is what it gives.
	Result<RegionLocation> locate_region(const std::string &name, const Asker &asker) override;
	// REGION_ACCESS (show, grant, revoke; wire::WireAccessRequest) of local
	// user `asker_uid` on the module holding `loc` (on every copy of a
	// replicated region: the first copy's answer is returned).
	Result<wire::WireAccessList> region_access(const RegionLocation &loc, uint32_t asker_uid,
						   wire::AccessOp op, const AccessGrant &g);
	// A region another node owns on the local module (not replicated): its
	// location and owner key; kNotFound when there is no such region here.
	Result<std::pair<RegionLocation, NodeKeyBytes>> local_region_owner(const std::string &name);
	// The bytes written to region `region_id` of the local module (a thin
	// pool's space used), nullopt when `module` is not the local one or it
	// has no such region.
	std::optional<uint64_t> local_used_bytes(ModuleId module, uint32_t region_id) const
	{
		if (store_ == nullptr || !(module == store_->module_id()))
			return std::nullopt;
		auto r = store_->region_by_id(region_id);
		return r ? std::optional(r->used_bytes) : std::nullopt;
	}
	// The region that region `region_id` of the local module is a clone of
	// (store/pool.h), by name; nullopt when `module` is not the local one,
	// or the region is not a clone.
	std::optional<std::string> local_clone_base(ModuleId module, uint32_t region_id) const
	{
		if (store_ == nullptr || !(module == store_->module_id()))
			return std::nullopt;
		auto r = store_->region_by_id(region_id);
		if (!r || !r->is_clone)
			return std::nullopt;
		auto b = store_->region_by_id(r->base_id);
		return b ? std::optional(b->name) : std::nullopt;
	}
	// The local module's pool (nullopt: no module role here).
	std::optional<PoolInfo> local_pool_info() const
	{
		return store_ ? std::optional(store_->info()) : std::nullopt;
	}
	// What each node (by key; zeros: this one) holds on the local module.
	std::map<NodeKeyBytes, OwnerUsage> local_node_usage() const
	{
		return store_ ? store_->usage_by_node() : std::map<NodeKeyBytes, OwnerUsage>{};
	}
	// The local module's refusals by reason (nullopt: no module role here).
	std::optional<RefusalCounts> refusals() const
	{
		return service_ ? std::optional(service_->refusals()) : std::nullopt;
	}
	// The local module's sequenced-write counters (nullopt: no module role).
	std::optional<SessionCounts> sessions() const
	{
		return service_ ? std::optional(service_->sessions()) : std::nullopt;
	}
	// Counts (and logs) a refusal of the local module's (no module: nothing).
	void count_refusal(const Status &st, Refusal why)
	{
		if (service_)
			service_->log_refusal(st, why);
	}
	std::vector<ModuleEntry> modules() override;
	Result<std::unique_ptr<Channel>> open_channel(EventLoop *loop, ModuleId module) override;
	// How open_channel() turns a connected TcpChannel into the Channel it
	// returns (memfedd --transport: an RdmaChannel around it); unset: as is.
	// Set before the first open_channel().
	using ChannelWrapper =
		std::function<std::unique_ptr<Channel>(EventLoop *, std::unique_ptr<TcpChannel>)>;
	void set_channel_wrapper(ChannelWrapper w) { wrap_channel_ = std::move(w); }
	// A module that leaves open_channel()'s requests unanswered this long
	// loses the channel (TcpChannel::Options::request_timeout_ms; 0: never).
	// Set before the first open_channel().
	void set_request_timeout_ms(unsigned ms) { request_timeout_ms_ = ms; }

	// Creates a region on `module` (unset: the local module, or else the first
	// reachable peer with room). `admit` decides a create on the local module
	// (ModuleStore::AdmitFn: the control socket's quota); a peer decides its own.
	// With placement.replicas > 1 the region is replicated: one copy on each
	// of that many modules, nearest first (the local module, then peers by
	// metric), each on a distinct node.
	Result<RegionLocation> create_region(const std::string &name, uint64_t size, uint32_t uid,
					     uint32_t mode, std::optional<ModuleId> module,
					     const ModuleStore::AdmitFn &admit = nullptr,
					     const Placement &placement = {});
	// Makes region `name` a copy-on-write clone of `base`'s bytes
	// [offset, offset + size) on the module holding it (store/pool.h), owned
	// by `uid`. Only a base on this node's own module: elsewhere
	// kInvalidArgument, naming the fix (copy it: region.copy).
	Result<RegionLocation> clone_region(const RegionLocation &base, uint64_t offset,
					    const std::string &name, uint64_t size, uint32_t uid,
					    uint32_t mode, const ModuleStore::AdmitFn &admit = nullptr);
	// The copies of a replicated region and their states as this node sees
	// them (null: no replicated region of that group was met).
	std::shared_ptr<ReplicaSet> replica_set(uint64_t group);
	// The recent state changes of the copies of replicated regions met.
	const ReplicaEvents &replica_events() const { return replica_events_; }
	// Replicated regions met whose copies in sync are fewer than wanted.
	unsigned degraded_regions();
	// A copy lost for longer than this is rebuilt on another module
	// (memfedd --replica-grace; 0: never). Default 60 s.
	void set_replica_grace_seconds(uint32_t s) { replica_grace_s_.store(s); }
	// Keeps the copies still to delete (replica_tombstones.h) in
	// `state_dir`/replica-tombstones.json: loads what a previous run left
	// there, and rewrites the file at each change. Without it they live in
	// memory only. Call before the federation is used.
	void keep_tombstones_in(const std::string &state_dir);
	// What decides whether a copy of region `name` that the federation
	// makes on the local module in a rebuild may be made, charged to `uid`
	// (the region's owner): the control socket's quota, as for a create of
	// theirs here. A refusal sends the copy to another module, or into
	// region show's "rebuild" note. Unset (null): admitted.
	using LocalAdmitFn =
		std::function<ModuleStore::AdmitFn(uint32_t uid, const std::string &name)>;
	void set_local_admit(LocalAdmitFn fn);
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
	// one module (create refuses a name any module has). Asked for local
	// user `asker_uid`, each region's `access` is what its module gives that
	// user (wire::kAccessAnswered and the rights, maybe none; region_authz.h),
	// so check_access() decides by its owner and grants.
	std::vector<RegionLocation> list_regions_page(const std::string &after, size_t limit,
						      bool *more,
						      std::optional<uint32_t> asker_uid = std::nullopt);
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
	template <typename Fn>
	auto ask_peers(const std::vector<Peer *> &peers, Fn fn)
	        -> std::vector<std::optional<decltype(fn(*(Peer *)nullptr))>>;
	// The reachable peers, nearest first: mesh peers by their route's
	// metric; static peers, direct neighbours, before them in the order
	// configured.
	std::vector<Peer *> peers_nearest_first();
	// The module a plain-name lookup last found `name` on, if any.
	std::optional<ModuleId> where_is(const std::string &name);
	void remember_where(const std::string &name, ModuleId module);
	void forget_where(const std::string &name);
	// The peers (mesh peers without a route only with include_down). Peers
	// are never destroyed while the federation lives, so the pointers stay valid.
	std::vector<Peer *> peer_list(bool include_down);
	RegionLocation location(ModuleId module, const wire::WireRegion &r);
	uint32_t preference_of(ModuleId module);
	// Runs fn on the copy's module: fn(store) locally, fn(client) on a peer.
	Status on_copy(const ReplicaLocation &copy,
		       const std::function<Status(ModuleStore &)> &local,
		       const std::function<Status(SyncClient &)> &remote);

	Result<RegionLocation> locate(const std::string &name, const Asker *asker);
	// REGION_LOOKUP on a peer, asked for `asker` if set.
	static Result<wire::WireRegion> lookup(SyncClient &c, const std::string &name,
					       const Asker *asker);

	// ---- Replicated regions (replicated_regions.cc) ----
	// A replicated region found on one module, completed with its other
	// copies (every reachable module is asked) and reached through its set.
	RegionLocation with_copies(RegionLocation first);
	bool is_deleted(uint64_t group);
	// mesh_route's update of the peer table; true if the route went down.
	bool mesh_route_locked(ModuleId module, const std::string &endpoint, bool up,
			       uint32_t metric, uint32_t hops, const std::string &why);
	// Marks every copy on `module` lost, in every replica set.
	void lose_copies_on(ModuleId module, const std::string &why);
	// Gives the copy of `name` on `to` the grants of its copy on `from`.
	Status copy_grants(const std::string &name, ModuleId from, ModuleId to);
	// Rewrites pages [first_page, +count) of copy `bad` from copy `good`.
	void repair_copy(ReplicaSet &set, const ReplicaLocation &good, const ReplicaLocation &bad,
			 uint64_t first_page, uint32_t count);
	// What the keeper does once a second, on its thread: the sweeps below,
	// then rebuild_lost().
	void keep_copies();
	// Deletes the copies left on modules that were unreachable (keeper thread).
	void sweep_deleted();
	// Deletes dropped copies whose modules answer again (keeper thread).
	void sweep_dropped();
	bool is_dropped(uint64_t group, ModuleId module, uint32_t region_id);
	// Rewrites the tombstone file (if kept) after deleted_ or dropped_
	// changed; call without sets_mu_.
	void save_tombstones();
	// Replaces each copy lost for longer than the grace by a new copy on
	// another eligible module (keeper thread); see replicated_regions.cc.
	void rebuild_lost();
	void rebuild_copy(ReplicaSet &set, ReplicaSet::Replica lost,
			  std::vector<ReplicaSet::Replica> copies, uint64_t lost_for_ms);
	// The copy `copy`, lost, leaves `set` and is deleted if its module
	// answers again (another node replaced it).
	void drop_copy(ReplicaSet &set, const ReplicaLocation &copy, const std::string &why);
	// The copies of group `group` (region `name` of `size_bytes`) that the
	// reachable modules but `skip` hold, dropped ones left out.
	std::vector<ReplicaLocation> look_up_copies(const std::string &name, uint64_t group,
						    uint64_t size_bytes, ModuleId skip);
	// Claims the rebuild of `set`'s lost copy on module `anchor` (a copy's
	// module): the claim region's id, or kAlreadyExists while another node
	// holds it (a stale claim is deleted then, for the next try).
	Result<uint32_t> claim_rebuild(const ReplicaSet &set, const ReplicaLocation &anchor,
				       uint32_t uid);
	// Deletes the claim of id `id` (0: whichever is there).
	void release_rebuild(const ReplicaSet &set, const ReplicaLocation &anchor, uint32_t id);
	// A module that may take a copy: the local one first, then every
	// reachable peer (met first if not yet), unsorted.
	struct CopyCandidate {
		ModuleId module;
		Peer *peer = nullptr; // null: the local module
		uint32_t preference = 0;
	};
	std::vector<CopyCandidate> copy_candidates();
	// Creates copy `spec` on candidate `c` (`admit`: the local module's quota).
	Result<wire::WireRegion> create_copy(const CopyCandidate &c, const wire::WireRegionSpec &spec,
					     const ModuleStore::AdmitFn &admit);
	// The node a module belongs to, as its authenticated key ("(this
	// node)" for the local module, "" if not yet known).
	std::string node_key_of(ModuleId module);
	// The set of replicated region `r` (made, and watched by the keeper, the
	// first time), with `copies` merged in.
	std::shared_ptr<ReplicaSet> set_for(const RegionLocation &r,
					    const std::vector<ReplicaLocation> &copies);
	Result<RegionLocation> create_replicated(const std::string &name, uint64_t size, uint32_t uid,
						 uint32_t mode, const ModuleStore::AdmitFn &admit,
						 const Placement &placement);
	// The replicated cases of open_channel, delete_region, set_length,
	// read_pages and write_pages: every copy, through the region's set.
	Result<std::unique_ptr<Channel>> open_replicated_channel(EventLoop *loop, ModuleId module);
	Status delete_replicated(const RegionLocation &loc);
	Result<RegionLocation> set_length_replicated(const RegionLocation &loc, uint64_t length,
						     bool grow_only);
	Status read_replicated(const RegionLocation &loc, uint64_t first_page, uint32_t count,
			       void *dst);
	Status write_replicated(const RegionLocation &loc, uint64_t first_page, uint32_t count,
				const void *src);
	// Regions listed by every module, in name order: the copies of each
	// replicated region become one entry reached through its set.
	std::vector<RegionLocation> merge_copies(std::vector<RegionLocation> sorted);

	// Checks who answered a HELLO of `p` (see the top): pins a first key
	// for its module ID, refuses (kAlreadyExists) another key for it, an
	// answer as another module than the mesh route's, or as our own module.
	Status admit_identity(Peer &p, const PeerInfo &info);

	struct Identity {
		std::string key; // base64, as trust::encode_key
		std::string key_name;
		std::string endpoint;
		trust::PublicKey raw{};
	};

	ModuleStore *store_;
	ModuleService *service_;
	ModuleId self_;
	std::shared_ptr<trust::TlsContext> tls_;
	ChannelWrapper wrap_channel_;
	unsigned request_timeout_ms_ = 0;
	std::mutex peers_mu_;
	std::vector<std::unique_ptr<Peer>> peers_; // guarded by peers_mu_ (grows, never shrinks)
	ReplicaEvents replica_events_; // before sets_: outlives them
	std::mutex sets_mu_;
	std::map<uint64_t, std::shared_ptr<ReplicaSet>> sets_; // by group, guarded by sets_mu_
	// Copies of deleted replicated regions whose modules were unreachable at
	// the delete, by group: deleted when their module is back
	// (sweep_deleted), and never listed or looked up meanwhile.
	std::map<uint64_t, DeletedCopies> deleted_; // guarded by sets_mu_
	std::vector<DroppedCopy> dropped_;	    // guarded by sets_mu_
	std::atomic<uint32_t> replica_grace_s_{60};
	std::string tombstone_path_; // set before use; "": not kept
	std::mutex admit_mu_;
	LocalAdmitFn local_admit_; // guarded by admit_mu_
	// Where each region found by its plain name lives: a lookup asks that
	// module alone before it searches the federation. A hint, not an answer:
	// the module is asked every time, so a stale entry costs one request and
	// never a wrong result. An entry goes when the region is not found there,
	// is deleted through this node, or its module's route is withdrawn.
	std::mutex where_mu_;
	std::map<std::string, ModuleId> where_; // guarded by where_mu_
	std::mutex tombstone_file_mu_; // one rewrite at a time, the newest last
	// Started with the first replicated region met; declared last, so it
	// stops before anything it uses goes.
	std::unique_ptr<ReplicaKeeper> keeper_; // guarded by sets_mu_
	std::map<ModuleId, Identity> identities_;  // guarded by peers_mu_: the pinned keys
	std::map<ModuleId, std::string>
	        conflicts_logged_; // guarded by peers_mu_: refused key, logged
};

} // namespace memfed
