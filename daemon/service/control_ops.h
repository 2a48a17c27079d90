// ControlOps: the daemon's own control-socket ops, served for memfedctl and
// libmemfed: hello, status, stats, module.list and region.* (create, delete,
// show, list, read, write, copy). The pager and the kmod link register their
// own.
//
// Permissions follow a file's: a region belongs to the uid that created it;
// the owner (and root) may do anything; others get the mode's "other" bits
// (4: read and map read-only, 2: write). Deleting needs ownership, and a
// region some local process maps (the pager's mappings, the window table's
// mapped windows) is "busy" (kBusy naming the pids) unless "force" is set;
// forced, the pager poisons its mappings (SIGBUS on their next access).
//
// Quotas (quota.h): a region.create on this node's module is admitted only
// within the caller's quota ("quota.uid_bytes", "quota.uid_regions"; root is
// exempt by default), checked under the store's table lock; "quota.show" gives
// a user their usage and limits (root: every uid's). region.list shows a user
// only the regions they may read (their own, and those whose mode lets others
// read); root sees every region.
//
// Authorization by node (region_authz.h): a region is located for the
// caller's uid and the access it needs, and the module holding it (this one
// too) decides by the region's owner node and grants; region.grant and
// region.revoke change those grants on that module ("peer": a trusted key,
// or a trusted peer's name, with ":UID" for one user; "rights": "read" or
// "write"), and region.show lists them.
//
// Thread-safety: handlers run on control connection threads concurrently;
// everything they touch is thread-safe.
#pragma once

#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "daemon/control/server.h"
#include "daemon/service/config.h"
#include "daemon/service/node_federation.h"
#include "daemon/trust/trusted_peers.h"

namespace memfed {

// Access a peer asks for, checked against a region's owner and mode.
enum class Access { kRead, kWrite, kOwner };
// wire::kAccess* bits of `want`.
uint8_t access_bits(Access want);
// OK or kPermission naming the region, the caller and what is missing: by
// the module's answer (r.access) when it gave one, else by owner and mode.
Status check_access(const RegionLocation &r, uid_t uid, Access want);
// The JSON form of a region used by every op and by memfedctl -j.
nlohmann::json region_json(const RegionLocation &r);

class ControlOps {
public:
	// `extra_status` adds fields to "status" (the kmod link's table source);
	// `pager_stats` supplies the "pager" part of "stats" (null: no pager).
	// It lets the federation's rebuilds of lost copies on the local module
	// ask the quotas in force (NodeFederation::set_local_admit) while it lives.
	ControlOps(const DaemonConfig &cfg, NodeFederation *fed, std::string listen_endpoint);
	~ControlOps();
	void set_status_hook(std::function<void(nlohmann::json &)> f) { status_hook_ = std::move(f); }
	// It is paged (Pager::stats): called with the request's "after" (the
	// previous page's "next") and a byte budget for the page.
	void set_pager_stats(std::function<nlohmann::json(const std::string &after, size_t max_bytes)> f)
	{
		pager_stats_ = std::move(f);
	}
	// How the pager's channels reach each module ("transport" in module ls
	// and status).
	void set_transport_states(std::function<std::vector<TransportState>()> f)
	{
		transport_states_ = std::move(f);
	}
	// The RDMA transport's counters ("rdma" in stats); unset: no RDMA.
	void set_rdma_stats(std::function<nlohmann::json()> f) { rdma_stats_ = std::move(f); }
	// The bound Prometheus endpoint "host:port", shown by "status" as
	// "metrics" (null while there is none).
	void set_metrics_endpoint(std::string ep) { metrics_ = std::move(ep); }
	// The trusted peers, to name grantees by a peer's name and to show
	// keys by their names. Set before register_ops().
	void set_trusted_peers(std::shared_ptr<trust::TrustedPeers> peers)
	{
		trusted_ = std::move(peers);
	}
	// Adds a source of the pids that use a region (sorted, each once);
	// region.delete refuses with kBusy while any names one.
	void add_region_users(std::function<std::vector<pid_t>(const std::string &)> f)
	{
		region_users_.push_back(std::move(f));
	}
	// Called once a region is deleted (the pager poisons its mappings).
	void on_region_deleted(std::function<void(const RegionLocation &)> f)
	{
		region_deleted_ = std::move(f);
	}
	void register_ops(control::Server &server);
	// The quotas in force from now on (a reload); they start as cfg.quota.
	void set_quota(const QuotaConfig &q);
	// The "stats" body and the module table in the Prometheus text format
	// (metrics_format.h); kUnavailable if the pager does not answer.
	Result<std::string> metrics_text();

private:
	control::Message status();
	control::Message stats(control::Message &req);
	nlohmann::json stats_body(const std::string &after, size_t max_bytes);
	nlohmann::json modules_body();
	// Adds each module's "transport" (and "transport_why") to `mods`.
	void add_transports(nlohmann::json &mods);
	// The region named by the request's `key` located and checked for
	// `want` access.
	Result<RegionLocation> find_region(const control::Peer &peer, const control::Message &req,
					   Access want, const char *key = "name");
	control::Message region_create(const control::Peer &peer, control::Message &req);
	control::Message region_delete(const control::Peer &peer, control::Message &req);
	control::Message region_show(const control::Peer &peer, control::Message &req);
	control::Message region_truncate(const control::Peer &peer, control::Message &req);
	control::Message region_list(const control::Peer &peer, control::Message &req);
	control::Message quota_show(const control::Peer &peer);
	// region.grant and region.revoke (grant_ops.cc).
	control::Message region_grant(const control::Peer &peer, control::Message &req, bool grant);
	// The region's owner node and grants as region.show lists them (null
	// when the module cannot say).
	nlohmann::json access_json(const RegionLocation &loc, uint32_t uid);
	std::string key_name(const trust::PublicKey &key) const;
	QuotaConfig quota() const;
	control::Message region_read(const control::Peer &peer, control::Message &req);
	control::Message region_write(const control::Peer &peer, control::Message &req);
	control::Message region_copy(const control::Peer &peer, control::Message &req);
	control::Message region_clone(const control::Peer &peer, control::Message &req);

	const DaemonConfig &cfg_;
	NodeFederation *fed_;
	std::string listen_;
	std::string metrics_;
	std::function<void(nlohmann::json &)> status_hook_;
	std::function<nlohmann::json(const std::string &, size_t)> pager_stats_;
	std::function<std::vector<TransportState>()> transport_states_;
	std::function<nlohmann::json()> rdma_stats_;
	std::vector<std::function<std::vector<pid_t>(const std::string &)>> region_users_;
	mutable std::mutex quota_mu_;
	QuotaConfig quota_; // guarded by quota_mu_
	std::function<void(const RegionLocation &)> region_deleted_;
	std::shared_ptr<trust::TrustedPeers> trusted_;
};

} // namespace memfed
