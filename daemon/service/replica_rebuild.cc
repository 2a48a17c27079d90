// Rebuilding lost copies of replicated regions, the part of NodeFederation
// (node_federation.h) that replaces a copy whose module stays away past the
// grace: only the region's owner node rebuilds (a copy belongs to the node
// that creates it), it claims the rebuild with a one-page region on a copy's
// module so that two daemons run with one key never both rebuild, places
// the new copy like a create would (nearest first, one per node, within the
// local module's quota for the owner's uid), gives it the grants of the copy
// it is filled from, and drops the lost copy. replicated_regions.cc holds
// the rest of replicated regions: placement, the sets, the control path's
// fan-out, repair, and the records of copies still to delete.
//
// Threads: rebuild_lost() runs on the ReplicaKeeper's thread
// (replica_keeper.h), once a second, as sweep_deleted() does; the locking
// is replicated_regions.cc's.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <optional>

#include "daemon/common/log.h"
#include "daemon/service/module_service.h"
#include "daemon/service/node_federation.h"
#include "daemon/service/node_federation_peer.h"
#include "daemon/service/replicated_channel.h"
#include "daemon/wire/codec.h"

namespace memfed
{

namespace
{
// How often a set with a lost copy asks the modules for its copies again.
constexpr uint64_t kRereadEveryMs = 3000;
// How often a rebuild that found no module to go to is tried again.
constexpr uint64_t kRetryRebuildMs = 10'000;
// The claim of a group's rebuild (see rebuild_copy): a one-page region of
// this name on the module of the copy in sync with the lowest module ID.
constexpr const char *kClaimPrefix = "memfed-rebuild.";
// A claim older than this was left by a node that died while rebuilding: it
// is deleted, and the rebuild claimed anew. A rebuild holds its claim only
// while it makes the new copy (the copy is filled afterwards), seconds.
constexpr uint64_t kClaimStaleMs = 60'000;

std::string claim_name(uint64_t group)
{
	char buf[48];
	std::snprintf(buf, sizeof(buf), "%s%010llx", kClaimPrefix, (unsigned long long)group);
	return buf;
}
} // namespace

std::string NodeFederation::node_key_of(ModuleId module)
{
	if (store_ && module == store_->module_id())
		return "(this node)";
	Peer *peer = nullptr;
	{
		std::lock_guard<std::mutex> lk(peers_mu_);
		for (auto &p : peers_)
			if (p->module == module && p->conflict.empty())
				peer = p.get();
	}
	if (!peer)
		return "";
	std::lock_guard<std::mutex> lk(peer->mu);
	return peer->key;
}

std::vector<NodeFederation::CopyCandidate> NodeFederation::copy_candidates()
{
	std::vector<CopyCandidate> out;
	if (store_)
		out.push_back({store_->module_id(), nullptr, 0});
	for (Peer *p : peer_list(false)) {
		if (!p->module.valid())
			(void)with_peer(*p, [](SyncClient &) -> Result<int> { return 0; });
		if (p->module.valid())
			out.push_back({p->module, p, preference_of(p->module)});
	}
	return out;
}

Result<wire::WireRegion> NodeFederation::create_copy(const CopyCandidate &c,
                                                     const wire::WireRegionSpec &spec,
                                                     const ModuleStore::AdmitFn &admit)
{
	if (c.peer)
		return with_peer(*c.peer, [&](SyncClient &cl) { return cl.region_create(spec); });
	auto info = store_->create_region(wire::region_name(spec), spec.size_bytes, spec.owner_uid,
	                                  spec.mode, admit,
	                                  ReplicaSpec{spec.replica_group, spec.replicas});
	if (!info)
		return info.status();
	return to_wire(*info);
}

void NodeFederation::rebuild_lost()
{
	const uint64_t grace_ms = uint64_t{replica_grace_s_.load()} * 1000;
	std::vector<std::shared_ptr<ReplicaSet>> sets;
	{
		std::lock_guard<std::mutex> lk(sets_mu_);
		for (auto &entry : sets_)
			sets.push_back(entry.second);
	}
	const uint64_t now = unix_ms();
	for (auto &set : sets) {
		auto copies = set->snapshot();
		bool any_lost = std::any_of(copies.begin(), copies.end(), [](const auto &r) {
			return r.state == ReplicaSet::State::kLost;
		});
		// Another node may have replaced a copy this node sees lost: the
		// modules are asked again for the group's copies (every few seconds
		// while one is lost), so its new copy joins this node's set too,
		// and this node's writes reach it.
		if (any_lost && now - set->last_reread_unix_ms() >= kRereadEveryMs) {
			set->set_last_reread_unix_ms(now);
			set->merge(
			        look_up_copies(set->name(), set->group(), set->size_bytes(), {}));
			copies = set->snapshot();
		}
		unsigned live = 0, in_sync = 0;
		const ReplicaSet::Replica *oldest = nullptr; // lost longest, past the grace
		for (const auto &r : copies) {
			live += r.state != ReplicaSet::State::kLost;
			in_sync += r.state == ReplicaSet::State::kInSync;
			uint64_t since = r.out_of_sync_since_unix_ms;
			if (r.state == ReplicaSet::State::kLost && since != 0 &&
			    now - since >= grace_ms &&
			    (!oldest || since < oldest->out_of_sync_since_unix_ms))
				oldest = &r;
		}
		if (live >= set->wanted()) {
			// K copies without the lost ones: another node replaced them.
			// They leave this set too, and are deleted if their modules
			// answer again (this node keeps the record as well, in case
			// the node that replaced them is gone by then).
			for (const auto &r : copies)
				if (r.state == ReplicaSet::State::kLost)
					drop_copy(*set, r.loc,
					          "the set has its " +
					                  std::to_string(set->wanted()) +
					                  " copies without it (another "
					                  "node replaced it)");
			set->set_rebuild_note(""); // nothing to rebuild (any more)
			continue;
		}
		if (grace_ms == 0 || !oldest) {
			// --replica-grace 0: lost copies wait for their modules
			set->set_rebuild_note("");
			continue;
		}
		if (in_sync == 0) {
			set->set_rebuild_note(
			        "the copy lost on module " + oldest->loc.module.to_string() +
			        " cannot be rebuilt: no copy is in sync to fill a new one from");
			continue;
		}
		// A try that found no module (each claims the rebuild, a region
		// made and deleted on a module) is repeated only now and then.
		if (!set->rebuild_note().empty() &&
		    now - set->last_rebuild_try_unix_ms() < kRetryRebuildMs)
			continue;
		set->set_last_rebuild_try_unix_ms(now);
		rebuild_copy(*set, *oldest, copies, now - oldest->out_of_sync_since_unix_ms);
	}
}

void NodeFederation::drop_copy(ReplicaSet &set, const ReplicaLocation &copy, const std::string &why)
{
	{
		std::lock_guard<std::mutex> lk(sets_mu_);
		bool known = std::any_of(dropped_.begin(), dropped_.end(), [&](const auto &d) {
			return d.group == set.group() && d.copy.module == copy.module &&
			       d.copy.region_id == copy.region_id;
		});
		if (!known)
			dropped_.push_back({set.group(), set.name(), copy});
	}
	save_tombstones();
	set.drop(copy.module, why);
}

bool is_rebuild_claim(const std::string &region_name)
{
	return region_name.rfind(kClaimPrefix, 0) == 0;
}

Result<uint32_t> NodeFederation::claim_rebuild(const ReplicaSet &set, const ReplicaLocation &anchor,
                                               uint32_t uid)
{
	const std::string name = claim_name(set.group());
	auto spec = wire::make_region_spec(name, wire::kPageSize, uid, 0600);
	if (!spec)
		return spec.status();
	uint32_t id = 0;
	Status st = on_copy(
	        anchor,
	        [&](ModuleStore &s) -> Status {
		        auto r = s.create_region(name, wire::kPageSize, uid, 0600);
		        if (r)
			        id = r->id;
		        return r.status();
	        },
	        [&](SyncClient &c) -> Status {
		        auto r = c.region_create(*spec);
		        if (r)
			        id = r->id;
		        return r.status();
	        });
	if (st)
		return id;
	if (st.code() != Code::kAlreadyExists)
		return st;
	// Held: by a node rebuilding now, or left by one that died meanwhile.
	uint64_t ctime_ns = 0;
	(void)on_copy(
	        anchor,
	        [&](ModuleStore &s) -> Status {
		        auto r = s.lookup_region(name);
		        if (r)
			        ctime_ns = r->ctime_ns;
		        return r.status();
	        },
	        [&](SyncClient &c) -> Status {
		        auto r = c.region_lookup(name);
		        if (r)
			        ctime_ns = r->ctime_ns;
		        return r.status();
	        });
	if (ctime_ns != 0 && unix_ms() > ctime_ns / 1'000'000 + kClaimStaleMs) {
		LOG_WARN("replica",
		         "region '%s': the rebuild claim on module %s is %llu s old (its node "
		         "died while rebuilding?): deleted, the rebuild is claimed anew",
		         set.name().c_str(), anchor.module.to_string().c_str(),
		         (unsigned long long)((unix_ms() - ctime_ns / 1'000'000) / 1000));
		release_rebuild(set, anchor, 0);
	}
	return st;
}

void NodeFederation::release_rebuild(const ReplicaSet &set, const ReplicaLocation &anchor,
                                     uint32_t id)
{
	// Only our claim (id), or any (0: a stale one).
	const std::string name = claim_name(set.group());
	Status st = on_copy(
	        anchor,
	        [&](ModuleStore &s) -> Status {
		        auto r = s.lookup_region(name);
		        if (!r)
			        return r.status();
		        return id == 0 || r->id == id ? s.delete_region(name) : Status::ok();
	        },
	        [&](SyncClient &c) -> Status {
		        auto r = c.region_lookup(name);
		        if (!r)
			        return r.status();
		        return id == 0 || r->id == id ? c.region_delete(name) : Status::ok();
	        });
	if (!st && st.code() != Code::kNotFound)
		LOG_WARN("replica",
		         "region '%s': the rebuild claim on module %s is not released (%s); it "
		         "goes stale in %llu s",
		         set.name().c_str(), anchor.module.to_string().c_str(),
		         st.message().c_str(), (unsigned long long)(kClaimStaleMs / 1000));
}

// A lost copy's replacement: a new, empty region of the same name, group
// and size on an eligible module (reachable, holding no copy of the set,
// on a node holding none: distinct authenticated keys), nearest first. It
// joins the set catching up, so the catch-up pass (replicated_channel.h)
// copies every page written so far into it from a copy in sync; the lost
// copy leaves the set and is deleted if its module answers again.
// The grants of the copy on `from` given to the new copy on `to`, so that
// the nodes the owner granted reach the new copy as they did the lost one.
Status NodeFederation::copy_grants(const std::string &name, ModuleId from, ModuleId to)
{
	RegionLocation src;
	src.module = from;
	src.name = name;
	auto list = region_access(src, 0, wire::AccessOp::kShow, AccessGrant{});
	if (!list)
		return list.status();
	RegionLocation dst;
	dst.module = to;
	dst.name = name;
	for (const wire::WireGrant &w : list->grants) {
		AccessGrant g;
		std::memcpy(g.key.data(), w.key, g.key.size());
		g.uid = w.uid;
		g.rights = uint8_t(((w.rights & wire::kAccessRead) ? kRightRead : 0) |
		                   ((w.rights & wire::kAccessWrite) ? kRightWrite : 0));
		auto r = region_access(dst, 0, wire::AccessOp::kGrant, g);
		if (!r)
			return r.status();
	}
	return Status::ok();
}

void NodeFederation::rebuild_copy(ReplicaSet &set, const ReplicaSet::Replica lost,
                                  std::vector<ReplicaSet::Replica> copies, uint64_t lost_for_ms)
{
	const std::string &name = set.name();
	const std::string lost_on = lost.loc.module.to_string();
	// The region's owner, mode and length, from a copy in sync, and
	// whether this node owns it. Only the owner's node rebuilds: a copy is
	// owned by the node that creates it (region_authz.h), so a copy another
	// node made would refuse the owner. Asked as root for admin, a module
	// answers with the rights only the owner's node has.
	std::optional<wire::WireRegion> facts;
	bool owner_here = false;
	ModuleId source;
	for (const auto &r : copies) {
		if (r.state != ReplicaSet::State::kInSync || facts)
			continue;
		Status st = on_copy(
		        r.loc,
		        [&](ModuleStore &s) -> Status {
			        auto x = s.lookup_region(name);
			        if (!x)
				        return x.status();
			        auto a = s.region_access(name);
			        if (!a)
				        return a.status();
			        facts = to_wire(*x);
			        owner_here = is_zero_key(a->owner_key) ||
			                     (service_ && a->owner_key == service_->node_key());
			        return Status::ok();
		        },
		        [&](SyncClient &c) -> Status {
			        Asker root{0, wire::kAccessAdmin};
			        auto x = lookup(c, name, &root);
			        if (x) {
				        facts = *x;
				        owner_here = (x->access & wire::kAccessAdmin) != 0;
				        return Status::ok();
			        }
			        if (x.status().code() != Code::kPermission)
				        return x.status();
			        auto y = c.region_lookup(name);
			        if (y)
				        facts = *y;
			        return y.status();
		        });
		if (st)
			source = r.loc.module;
	}
	if (!facts) {
		set.set_rebuild_note("the copy lost on module " + lost_on +
		                     " cannot be rebuilt yet: no copy in sync answered a lookup");
		return;
	}
	if (!owner_here) {
		set.set_rebuild_note("the copy lost on module " + lost_on +
		                     " is rebuilt by the region's owner node, not this one");
		return;
	}
	auto spec = wire::make_region_spec(name, facts->size_bytes, facts->owner_uid, facts->mode);
	if (!spec) {
		set.set_rebuild_note("the copy lost on module " + lost_on +
		                     " cannot be rebuilt: " + spec.status().message());
		return;
	}
	spec->replica_group = set.group();
	spec->replicas = uint8_t(set.wanted());

	// One node rebuilds a lost copy, not every node that met the region
	// (else two could each make a new copy, and leave K+1): the rebuild is
	// claimed by creating the group's claim region on the module of the
	// copy in sync with the lowest module ID (every node that sees the
	// same copies picks the same module; a module creates one region of a
	// name, atomically). The node holding the claim asks every module for
	// the group's copies again before it acts, so a copy another node made
	// meanwhile is found, and then makes the new copy, and only then
	// releases the claim: a node that claims later finds that copy.
	// Only the owner's node gets here (above), so under authorization the
	// claim guards against two daemons run with one node key; without
	// authorization (every region the module node's own) against every
	// node that met the region. Nodes that see different copies in sync (a
	// partition) may pick different modules, and each rebuild one.
	const ReplicaSet::Replica *anchor = nullptr;
	for (const auto &r : copies)
		if (r.state == ReplicaSet::State::kInSync &&
		    (!anchor || r.loc.module.value < anchor->loc.module.value))
			anchor = &r;
	if (!anchor)
		return; // rebuild_lost calls only with a copy in sync
	const ReplicaLocation anchor_loc = anchor->loc;
	auto claim = claim_rebuild(set, anchor_loc, facts->owner_uid);
	if (!claim) {
		if (claim.status().code() != Code::kAlreadyExists)
			set.set_rebuild_note(
			        "the copy lost on module " + lost_on +
			        " cannot be rebuilt yet: claiming the rebuild on module " +
			        anchor_loc.module.to_string() +
			        " failed: " + claim.status().message());
		return; // else another node rebuilds it now
	}
	struct Release {
		std::function<void()> fn;
		~Release() { fn(); }
	} release{[&] { release_rebuild(set, anchor_loc, *claim); }};
	set.merge(look_up_copies(name, set.group(), set.size_bytes(), {}));
	copies = set.snapshot();
	unsigned live = 0;
	bool still_lost = false;
	for (const auto &r : copies) {
		live += r.state != ReplicaSet::State::kLost;
		still_lost |= r.loc.module == lost.loc.module &&
		              r.loc.region_id == lost.loc.region_id &&
		              r.state == ReplicaSet::State::kLost;
	}
	if (live >= set.wanted() || !still_lost)
		return; // another node rebuilt it (its copy joined this set), or it is back

	// The nodes that hold the copies staying in the set.
	std::vector<std::string> taken_keys;
	for (const auto &r : copies)
		if (!(r.loc.module == lost.loc.module))
			if (std::string k = node_key_of(r.loc.module); !k.empty())
				taken_keys.push_back(k);
	std::vector<CopyCandidate> candidates = copy_candidates();
	std::stable_sort(candidates.begin(), candidates.end(),
	                 [](const CopyCandidate &a, const CopyCandidate &b) {
		                 return a.preference < b.preference;
	                 });
	unsigned reachable = 0;
	std::string refusals;
	for (const CopyCandidate &c : candidates) {
		bool holds = std::any_of(copies.begin(), copies.end(),
		                         [&](const auto &r) { return r.loc.module == c.module; });
		bool dropped_here;
		{
			std::lock_guard<std::mutex> lk(sets_mu_);
			dropped_here =
			        std::any_of(dropped_.begin(), dropped_.end(), [&](const auto &d) {
				        return d.group == set.group() && d.copy.module == c.module;
			        });
		}
		if (c.peer) {
			std::lock_guard<std::mutex> lk(peers_mu_);
			if (!c.peer->conflict.empty())
				continue;
		}
		reachable++;
		// The lost copy's own module is eligible again once it answers
		// without that copy (a pool made anew under the same module ID).
		bool gone_here = false;
		if (c.module == lost.loc.module) {
			Status there = on_copy(
			        lost.loc,
			        [&](ModuleStore &s) { return s.lookup_region(name).status(); },
			        [&](SyncClient &cl) -> Status {
				        auto x = cl.region_lookup(name);
				        if (x && (x->replica_group != set.group() ||
				                  x->id != lost.loc.region_id))
					        return Status(Code::kNotFound, "another region");
				        return x.status();
			        });
			gone_here = there.code() == Code::kNotFound;
			holds = !gone_here;
		}
		std::string key = node_key_of(c.module);
		if (holds || dropped_here ||
		    (!key.empty() &&
		     std::find(taken_keys.begin(), taken_keys.end(), key) != taken_keys.end()))
			continue;
		// The local module takes it within the owner's quota there; a
		// peer's module decides for itself.
		ModuleStore::AdmitFn admit;
		if (!c.peer) {
			std::lock_guard<std::mutex> lk(admit_mu_);
			if (local_admit_) {
				// The catch-up fills the copy: on a thin pool, whose
				// creates are charged nothing, it is charged its size
				// here, or a copy over the quota would be made and
				// then lost again at its first write.
				auto within = local_admit_(facts->owner_uid, name);
				admit = [within, size = facts->size_bytes](const OwnerUsage &u,
				                                           uint64_t bytes) {
					return within(u, std::max(bytes, size));
				};
			}
		}
		Result<wire::WireRegion> made = create_copy(c, *spec, admit);
		if (!made) {
			refusals +=
			        "; module " + c.module.to_string() + ": " + made.status().message();
			continue;
		}
		ReplicaLocation fresh{c.module, made->id, made->fa_offset, c.preference};
		Status granted = copy_grants(name, source, c.module);
		if (!granted) {
			(void)on_copy(
			        fresh, [&](ModuleStore &s) { return s.delete_region(name); },
			        [&](SyncClient &cl) { return cl.region_delete(name); });
			refusals += "; module " + c.module.to_string() +
			            ": giving it the region's grants: " + granted.message();
			continue;
		}
		if (facts->length != 0) {
			Status st = on_copy(
			        fresh,
			        [&](ModuleStore &s) {
				        return s.set_length(name, facts->length, false).status();
			        },
			        [&](SyncClient &cl) {
				        return cl.region_set_length(name, facts->length, false)
				                .status();
			        });
			if (!st) {
				(void)on_copy(
				        fresh,
				        [&](ModuleStore &s) { return s.delete_region(name); },
				        [&](SyncClient &cl) { return cl.region_delete(name); });
				refusals += "; module " + c.module.to_string() +
				            ": setting its length: " + st.message();
				continue;
			}
		}
		if (!gone_here) { // else nothing is left of it to delete
			{
				std::lock_guard<std::mutex> lk(sets_mu_);
				dropped_.push_back({set.group(), name, lost.loc});
			}
			save_tombstones();
		}
		char why[160];
		std::snprintf(why, sizeof(why),
		              "new, replacing the copy lost on module %s for %.0f s",
		              lost_on.c_str(), double(lost_for_ms) / 1000.0);
		set.replace(lost.loc.module, fresh, why);
		LOG_WARN("replica",
		         "region '%s': the copy on module %s was lost for %.0f s (grace %u s): a "
		         "new "
		         "copy on module %s replaces it and is filled from module %s's; the old "
		         "copy is deleted if its module returns",
		         name.c_str(), lost_on.c_str(), double(lost_for_ms) / 1000.0,
		         replica_grace_s_.load(), c.module.to_string().c_str(),
		         source.to_string().c_str());
		return;
	}
	set.set_rebuild_note("the copy lost on module " + lost_on +
	                     " cannot be rebuilt elsewhere: no eligible module (" +
	                     std::to_string(reachable) +
	                     " reachable, each holding a copy or on a node that holds one" +
	                     refusals + "; memfedctl module ls)");
}

} // namespace memfed
