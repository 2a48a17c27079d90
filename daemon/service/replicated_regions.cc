// Replicated regions, the half of NodeFederation (node_federation.h) that
// keeps K copies of a region on modules of distinct nodes: placing the
// copies of a new region, finding every copy of one met (with_copies) and
// its ReplicaSet, the control path's reads, writes, length changes and
// deletes fanned out over the copies, repairing damaged pages, and the
// records of copies still to delete on modules that were unreachable.
// replica_rebuild.cc rebuilds lost copies elsewhere. node_federation.cc
// holds the other half: peers, lookup, and single-module regions;
// node_federation_peer.h what the two share.
//
// Threads: the public entry points run on the caller's thread (control
// socket handlers, a pager thread opening a channel); sweep_deleted() runs
// on the ReplicaKeeper's thread (replica_keeper.h), once a second. The
// sets, the records and the keeper are guarded by sets_mu_; a request to a
// copy's module takes that peer's lock only (never sets_mu_ with it).
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>

#include "daemon/common/atomic_file.h"
#include "daemon/common/log.h"
#include "daemon/service/module_service.h"
#include "daemon/service/node_federation.h"
#include "daemon/service/node_federation_peer.h"
#include "daemon/service/replica_tombstones.h"
#include "daemon/service/replicated_channel.h"
#include "daemon/wire/codec.h"

namespace memfed
{

std::vector<ReplicaLocation> NodeFederation::look_up_copies(const std::string &name, uint64_t group,
                                                            uint64_t size_bytes, ModuleId skip)
{
	// A copy dropped from the set (rebuilt elsewhere) is not one of them,
	// even while its module still has it.
	std::vector<ReplicaLocation> found;
	auto consider = [&](ModuleId m, const wire::WireRegion &r) {
		if (r.replica_group == group && r.size_bytes == size_bytes &&
		    !is_dropped(r.replica_group, m, r.id))
			found.push_back({m, r.id, r.fa_offset, preference_of(m)});
	};
	if (store_ && !(store_->module_id() == skip))
		if (auto r = store_->lookup_region(name))
			consider(store_->module_id(), to_wire(*r));
	for (Peer *p : peer_list(false)) {
		if (p->module.valid() && p->module == skip)
			continue;
		auto r = with_peer(*p, [&](SyncClient &c) { return c.region_lookup(name); });
		if (r)
			consider(p->module, *r);
	}
	return found;
}

RegionLocation NodeFederation::with_copies(RegionLocation first)
{
	if (first.replica_group == 0 || first.replicas <= 1 || is_replica_set(first.module))
		return first;
	std::vector<ReplicaLocation> found;
	if (!is_dropped(first.replica_group, first.module, first.region_id))
		found.push_back({first.module, first.region_id, first.fa_offset,
		                 preference_of(first.module)});
	for (auto &c :
	     look_up_copies(first.name, first.replica_group, first.size_bytes, first.module))
		found.push_back(c);
	auto set = set_for(first, found);
	RegionLocation v = std::move(first);
	v.module = set->module();
	v.region_id = replica_set_region_id(v.replica_group);
	v.fa_offset = 0;
	v.copies = std::move(found);
	return v;
}

std::shared_ptr<ReplicaSet> NodeFederation::set_for(const RegionLocation &r,
                                                    const std::vector<ReplicaLocation> &copies)
{
	std::shared_ptr<ReplicaSet> set;
	bool made = false;
	{
		std::lock_guard<std::mutex> lk(sets_mu_);
		auto &slot = sets_[r.replica_group];
		if (!slot || slot->size_bytes() != r.size_bytes || slot->name() != r.name) {
			slot = std::make_shared<ReplicaSet>(r.replica_group, r.name, r.size_bytes,
			                                    r.replicas, &replica_events_);
			made = true;
		}
		set = slot;
		if (!keeper_)
			keeper_ = std::make_unique<ReplicaKeeper>(this, [this] { keep_copies(); });
		if (made)
			keeper_->watch(set);
	}
	set->merge(copies);
	return set;
}

bool NodeFederation::is_deleted(uint64_t group)
{
	std::lock_guard<std::mutex> lk(sets_mu_);
	return group != 0 && deleted_.count(group) != 0;
}

void NodeFederation::sweep_deleted()
{
	std::map<uint64_t, DeletedCopies> todo;
	{
		std::lock_guard<std::mutex> lk(sets_mu_);
		todo = deleted_;
	}
	for (auto &entry : todo) {
		// Plain copies: clang 14 cannot capture structured bindings in lambdas.
		const uint64_t group = entry.first;
		const DeletedCopies &d = entry.second;
		std::vector<ReplicaLocation> left;
		for (const auto &copy : d.copies) {
			// Only the copy of that group: the name may since be another region's.
			Status st = on_copy(
			        copy,
			        [&](ModuleStore &s) -> Status {
				        auto r = s.lookup_region(d.name);
				        if (!r)
					        return r.status();
				        return r->replica_group == group
				                       ? s.delete_region(d.name)
				                       : Status(Code::kNotFound, "");
			        },
			        [&](SyncClient &c) -> Status {
				        auto r = c.region_lookup(d.name);
				        if (!r)
					        return r.status();
				        return r->replica_group == group
				                       ? c.region_delete(d.name)
				                       : Status(Code::kNotFound, "");
			        });
			if (st || st.code() == Code::kNotFound) {
				if (st)
					LOG_INFO("federation",
					         "region '%s': the copy left on module %s is "
					         "deleted now",
					         d.name.c_str(), copy.module.to_string().c_str());
				continue;
			}
			left.push_back(copy);
		}
		if (left.size() == d.copies.size())
			continue;
		{
			std::lock_guard<std::mutex> lk(sets_mu_);
			if (left.empty())
				deleted_.erase(group);
			else
				deleted_[group].copies = std::move(left);
		}
		save_tombstones();
	}
}

void NodeFederation::keep_tombstones_in(const std::string &state_dir)
{
	const std::string path = state_dir + "/replica-tombstones.json";
	tombstone_path_ = path; // before the keeper starts: it rewrites the file
	std::ifstream in(path);
	if (in) {
		std::stringstream text;
		text << in.rdbuf();
		auto t = tombstones_from_json(text.str(), path);
		if (!t) {
			std::error_code ec;
			std::filesystem::rename(path, path + ".corrupt", ec);
			LOG_WARN("replica", "%s; moved to %s.corrupt", t.status().message().c_str(),
			         path.c_str());
		} else if (tombstone_count(*t) > 0) {
			LOG_INFO("replica",
			         "%zu copies of replicated regions still to delete when their "
			         "modules "
			         "answer (from %s)",
			         tombstone_count(*t), path.c_str());
			std::lock_guard<std::mutex> lk(sets_mu_);
			deleted_ = std::move(t->deleted);
			dropped_ = std::move(t->dropped);
			if (!keeper_)
				keeper_ = std::make_unique<ReplicaKeeper>(
				        this, [this] { keep_copies(); });
		}
	}
}

void NodeFederation::set_local_admit(LocalAdmitFn fn)
{
	std::lock_guard<std::mutex> lk(admit_mu_);
	local_admit_ = std::move(fn);
}

void NodeFederation::save_tombstones()
{
	if (tombstone_path_.empty())
		return;
	std::lock_guard<std::mutex> file_lk(tombstone_file_mu_);
	ReplicaTombstones t;
	std::vector<std::string> forgotten;
	{
		std::lock_guard<std::mutex> lk(sets_mu_);
		t.deleted = deleted_;
		t.dropped = dropped_;
		forgotten = bound_tombstones(&t);
		if (!forgotten.empty()) {
			deleted_ = t.deleted;
			dropped_ = t.dropped;
		}
	}
	for (const auto &f : forgotten)
		LOG_WARN("replica",
		         "more than %zu copies to delete are recorded: the oldest record is "
		         "forgotten, and the copy of %s is left there (memfedctl region rm it "
		         "when the module is back)",
		         kMaxTombstones, f.c_str());
	Status st = write_file_atomic(tombstone_path_, tombstones_to_json(t), {.mode = 0600},
	                              "replica tombstone file");
	if (!st)
		LOG_WARN("replica", "%s: the copies still to delete are kept in memory only",
		         st.message().c_str());
}

void NodeFederation::keep_copies()
{
	sweep_deleted();
	sweep_dropped();
	rebuild_lost();
}

bool NodeFederation::is_dropped(uint64_t group, ModuleId module, uint32_t region_id)
{
	if (group == 0)
		return false;
	std::lock_guard<std::mutex> lk(sets_mu_);
	return std::any_of(dropped_.begin(), dropped_.end(), [&](const DroppedCopy &d) {
		return d.group == group && d.copy.module == module && d.copy.region_id == region_id;
	});
}

void NodeFederation::sweep_dropped()
{
	std::vector<DroppedCopy> todo;
	{
		std::lock_guard<std::mutex> lk(sets_mu_);
		todo = dropped_;
	}
	for (const DroppedCopy &d : todo) {
		// Only that region entry: the name may since be another region's,
		// or a newer copy of the same region's on the same module.
		auto ours = [&](const wire::WireRegion &r) {
			return r.replica_group == d.group && r.id == d.copy.region_id;
		};
		Status st = on_copy(
		        d.copy,
		        [&](ModuleStore &s) -> Status {
			        auto r = s.lookup_region(d.name);
			        if (!r)
				        return r.status();
			        return ours(to_wire(*r)) ? s.delete_region(d.name)
			                                 : Status(Code::kNotFound, "");
		        },
		        [&](SyncClient &c) -> Status {
			        auto r = c.region_lookup(d.name);
			        if (!r)
				        return r.status();
			        return ours(*r) ? c.region_delete(d.name)
			                        : Status(Code::kNotFound, "");
		        });
		if (!st && st.code() != Code::kNotFound)
			continue; // still unreachable: next time
		if (st)
			LOG_INFO("replica",
			         "region '%s': the copy dropped from module %s (rebuilt elsewhere "
			         "while "
			         "it was lost) is deleted there now",
			         d.name.c_str(), d.copy.module.to_string().c_str());
		{
			std::lock_guard<std::mutex> lk(sets_mu_);
			std::erase_if(dropped_, [&](const DroppedCopy &x) {
				return x.group == d.group && x.copy.module == d.copy.module &&
				       x.copy.region_id == d.copy.region_id;
			});
		}
		save_tombstones();
	}
}

std::shared_ptr<ReplicaSet> NodeFederation::replica_set(uint64_t group)
{
	std::lock_guard<std::mutex> lk(sets_mu_);
	auto it = sets_.find(group);
	return it == sets_.end() ? nullptr : it->second;
}

unsigned NodeFederation::degraded_regions()
{
	std::lock_guard<std::mutex> lk(sets_mu_);
	unsigned n = 0;
	for (auto &[g, set] : sets_)
		n += set->degraded();
	return n;
}

Result<RegionLocation> NodeFederation::create_replicated(const std::string &name, uint64_t size,
                                                         uint32_t uid, uint32_t mode,
                                                         const ModuleStore::AdmitFn &admit,
                                                         const Placement &placement)
{
	unsigned want = std::clamp(placement.replicas, 1u, kMaxReplicas);
	unsigned need = placement.replicas_min ? std::min(placement.replicas_min, want) : want;
	uint64_t group = new_replica_group();
	auto spec = wire::make_region_spec(name, size, uid, mode);
	if (!spec)
		return spec.status();
	spec->replica_group = group;
	spec->replicas = uint8_t(want);
	// Candidates, nearest first: this node's module, then reachable peers by
	// their route's metric (static peers before mesh ones at equal cost).
	std::vector<CopyCandidate> candidates = copy_candidates();
	if (!placement.on.empty()) {
		std::vector<CopyCandidate> chosen;
		for (ModuleId m : placement.on) {
			auto it =
			        std::find_if(candidates.begin(), candidates.end(),
			                     [&](const CopyCandidate &c) { return c.module == m; });
			if (it == candidates.end())
				return Status(
				        Code::kUnavailable,
				        "module " + m.to_string() +
				                " (--on) is not reachable from here (memfedctl "
				                "module ls)");
			chosen.push_back(*it);
		}
		candidates = std::move(chosen);
	} else {
		std::stable_sort(candidates.begin(), candidates.end(),
		                 [](const CopyCandidate &a, const CopyCandidate &b) {
			                 return a.preference < b.preference;
		                 });
	}
	// One copy per node: a node is its key (modules served by one node
	// share it); a peer whose key is unknown counts as its own node.
	std::vector<std::string> node_keys;
	std::vector<ReplicaLocation> made;
	std::string refusals;
	unsigned eligible = 0;
	for (const CopyCandidate &c : candidates) {
		if (made.size() >= want)
			break;
		std::string key;
		if (c.peer) {
			std::lock_guard<std::mutex> lk(c.peer->mu);
			key = c.peer->key;
		} else {
			key = "(this node)";
		}
		if (!key.empty() &&
		    std::find(node_keys.begin(), node_keys.end(), key) != node_keys.end())
			continue;
		eligible++;
		Result<wire::WireRegion> r = create_copy(c, *spec, admit);
		if (!r) {
			refusals +=
			        "; module " + c.module.to_string() + ": " + r.status().message();
			continue;
		}
		node_keys.push_back(key);
		made.push_back({c.module, r->id, r->fa_offset, c.preference});
	}
	if (made.size() < need) {
		for (const auto &copy : made)
			(void)on_copy(
			        copy, [&](ModuleStore &st) { return st.delete_region(name); },
			        [&](SyncClient &cl) { return cl.region_delete(name); });
		return Status(Code::kNoSpace,
		              "region '" + name + "' needs " + std::to_string(need) +
		                      " copies on distinct nodes, but only " +
		                      std::to_string(eligible) + " module(s) were eligible and " +
		                      std::to_string(made.size()) + " took one" + refusals +
		                      " (memfedctl module ls; --replicas-min allows fewer)");
	}
	if (made.size() < want)
		LOG_WARN("federation",
		         "region '%s' has %zu of %u copies: degraded from the start "
		         "(--replicas-min %u)",
		         name.c_str(), made.size(), want, need);
	RegionLocation first;
	first.module = made[0].module;
	first.region_id = made[0].region_id;
	first.fa_offset = made[0].fa_offset;
	first.name = name;
	first.size_bytes = (size + wire::kPageSize - 1) / wire::kPageSize * wire::kPageSize;
	first.owner_uid = uid;
	first.mode = mode;
	first.replica_group = group;
	first.replicas = uint8_t(want);
	// Newly made, every copy is all zeros at version 0: in sync.
	auto loc = with_copies(first);
	if (auto set = replica_set(group))
		for (const auto &copy : made)
			set->set_state(copy.module, ReplicaSet::State::kInSync, "");
	LOG_INFO("federation", "region '%s' created with %zu copies", name.c_str(), made.size());
	return loc;
}

void NodeFederation::repair_copy(ReplicaSet &set, const ReplicaLocation &good,
                                 const ReplicaLocation &bad, uint64_t first_page, uint32_t count)
{
	// The good copy's pages with their versions, rewritten on the bad copy
	// at those versions (kRepair: applied over the same version, never over
	// a newer one), one write per run of pages at one version.
	std::vector<uint64_t> versions(count);
	std::vector<uint8_t> pages(size_t{count} * wire::kPageSize);
	uint64_t from = good.fa_offset + first_page * wire::kPageSize;
	Status st = on_copy(
	        good,
	        [&](ModuleStore &s) {
		        uint32_t crc = 0;
		        return s.read_pages_versioned(good.region_id, from, count, pages.data(),
		                                      versions.data(), &crc);
	        },
	        [&](SyncClient &c) {
		        return c.read_pages_versioned(good.region_id, from, count, pages.data(),
		                                      versions.data());
	        });
	uint32_t repaired = 0;
	for (uint32_t k = 0; st && k < count;) {
		uint32_t e = k + 1;
		while (e < count && versions[e] == versions[k])
			e++;
		if (versions[k] == 0) {
			k = e;
			continue;
		}
		uint64_t to = bad.fa_offset + (first_page + k) * wire::kPageSize;
		const uint8_t *src = pages.data() + size_t{k} * wire::kPageSize;
		uint32_t applied = 0;
		st = on_copy(
		        bad,
		        [&](ModuleStore &s) {
			        return s.write_pages_versioned(bad.region_id, to, e - k, src,
			                                       versions[k], VersionedMode::kRepair,
			                                       &applied);
		        },
		        [&](SyncClient &c) {
			        return c.write_pages_versioned(bad.region_id, to, e - k, src,
			                                       versions[k], true, &applied);
		        });
		repaired += applied;
		k = e;
	}
	if (!st) {
		LOG_WARN("replica", "region '%s': repairing pages on module %s failed: %s",
		         set.name().c_str(), bad.module.to_string().c_str(), st.message().c_str());
		return;
	}
	set.add_copied(bad.module, repaired, true);
	LOG_INFO("replica", "region '%s': %u damaged page(s) on module %s rewritten from module %s",
	         set.name().c_str(), repaired, bad.module.to_string().c_str(),
	         good.module.to_string().c_str());
}
Result<std::unique_ptr<Channel>> NodeFederation::open_replicated_channel(EventLoop *loop,
                                                                         ModuleId module)
{
	std::shared_ptr<ReplicaSet> set;
	{
		std::lock_guard<std::mutex> lk(sets_mu_);
		for (auto &[g, s] : sets_)
			if (s->module() == module)
				set = s;
	}
	if (!set)
		return Status(Code::kNotFound, "no replicated region of replica set " +
		                                       module.to_string() +
		                                       " was looked up on this node");
	return std::unique_ptr<Channel>(std::make_unique<ReplicatedChannel>(loop, set, this));
}

Status NodeFederation::delete_replicated(const RegionLocation &loc)
{
	std::vector<ReplicaLocation> copies = loc.copies;
	if (auto set = replica_set(loc.replica_group))
		for (const auto &r : set->snapshot())
			if (std::none_of(copies.begin(), copies.end(),
			                 [&](const ReplicaLocation &c) {
				                 return c.module == r.loc.module;
			                 }))
				copies.push_back(r.loc);
	Status first_error = Status::ok();
	unsigned deleted = 0;
	std::vector<ReplicaLocation> unreached;
	for (const auto &copy : copies) {
		Status st = on_copy(
		        copy, [&](ModuleStore &s) { return s.delete_region(loc.name); },
		        [&](SyncClient &c) { return c.region_delete(loc.name); });
		if (st || st.code() == Code::kNotFound) {
			deleted++;
			continue;
		}
		LOG_WARN("federation",
		         "region '%s': the copy on module %s is not deleted yet (%s); it will "
		         "be when the module is back",
		         loc.name.c_str(), copy.module.to_string().c_str(), st.message().c_str());
		unreached.push_back(copy);
		if (first_error.is_ok())
			first_error = st;
	}
	if (deleted == 0 && !first_error.is_ok())
		return first_error;
	{
		std::lock_guard<std::mutex> lk(sets_mu_);
		sets_.erase(loc.replica_group);
		if (!unreached.empty()) {
			deleted_[loc.replica_group] = {loc.name, unreached};
			if (!keeper_)
				keeper_ = std::make_unique<ReplicaKeeper>(
				        this, [this] { keep_copies(); });
		}
		if (keeper_)
			keeper_->forget(loc.replica_group);
	}
	if (!unreached.empty())
		save_tombstones();
	return Status::ok();
}

Result<RegionLocation> NodeFederation::set_length_replicated(const RegionLocation &loc,
                                                             uint64_t length, bool grow_only)
{
	auto set = replica_set(loc.replica_group);
	if (!set)
		return Status(Code::kNotFound, "region '" + loc.name + "' was not looked up");
	RegionLocation out = loc;
	Status last(Code::kUnavailable, "no copy of region '" + loc.name + "' is reachable");
	bool any = false;
	for (const auto &r : set->snapshot()) {
		if (r.state == ReplicaSet::State::kLost)
			continue;
		uint64_t got = 0;
		Status st = on_copy(
		        r.loc,
		        [&](ModuleStore &s) -> Status {
			        auto x = s.set_length(loc.name, length, grow_only);
			        if (x)
				        got = x->length;
			        return x.status();
		        },
		        [&](SyncClient &c) -> Status {
			        auto x = c.region_set_length(loc.name, length, grow_only);
			        if (x)
				        got = x->length;
			        return x.status();
		        });
		if (!st) {
			set->set_state(r.loc.module, ReplicaSet::State::kLost, st.message());
			last = st;
			continue;
		}
		out.length = std::max(out.length, got);
		if (!any)
			out.length = got;
		any = true;
	}
	if (!any)
		return last;
	return out;
}

std::vector<RegionLocation> NodeFederation::merge_copies(std::vector<RegionLocation> out)
{
	// A replicated region is one entry, reached through its set, whatever
	// number of its copies answered.
	std::vector<RegionLocation> merged;
	for (auto &r : out) {
		if (is_rebuild_claim(r.name) || is_deleted(r.replica_group) ||
		    is_dropped(r.replica_group, r.module, r.region_id))
			continue;
		if (r.replica_group != 0 && r.replicas > 1 && !merged.empty() &&
		    merged.back().name == r.name &&
		    merged.back().replica_group == r.replica_group) {
			merged.back().copies.push_back(
			        {r.module, r.region_id, r.fa_offset, preference_of(r.module)});
			continue;
		}
		if (r.replica_group != 0 && r.replicas > 1)
			r.copies.push_back(
			        {r.module, r.region_id, r.fa_offset, preference_of(r.module)});
		merged.push_back(std::move(r));
	}
	for (auto &r : merged) {
		if (r.copies.empty())
			continue;
		auto set = set_for(r, r.copies);
		r.module = set->module();
		r.region_id = replica_set_region_id(r.replica_group);
		r.fa_offset = 0;
	}
	return merged;
}

Status NodeFederation::read_replicated(const RegionLocation &loc, uint64_t first_page,
                                       uint32_t count, void *dst)
{
	auto set = replica_set(loc.replica_group);
	if (!set)
		return Status(Code::kNotFound, "region '" + loc.name + "' was not looked up");
	Status last(Code::kUnavailable,
	            "no copy of region '" + loc.name + "' in sync is reachable");
	std::vector<ReplicaLocation> damaged; // copies whose pages failed their crc
	for (const auto &r : set->snapshot()) {
		if (r.state != ReplicaSet::State::kInSync)
			continue;
		uint64_t at = r.loc.fa_offset + first_page * wire::kPageSize;
		Status st = on_copy(
		        r.loc,
		        [&](ModuleStore &s) {
			        return s.read_pages(r.loc.region_id, at, count, dst);
		        },
		        [&](SyncClient &c) {
			        return c.read_pages(r.loc.region_id, at, count, dst,
			                            wire::TrafficClass::kControl);
		        });
		if (st) {
			for (const auto &b : damaged)
				repair_copy(*set, r.loc, b, first_page, count);
			return st;
		}
		if (st.code() == Code::kCorrupt)
			damaged.push_back(r.loc);
		else
			set->set_state(r.loc.module, ReplicaSet::State::kLost, st.message());
		last = st;
	}
	return last;
}

Status NodeFederation::write_replicated(const RegionLocation &loc, uint64_t first_page,
                                        uint32_t count, const void *src)
{
	auto set = replica_set(loc.replica_group);
	if (!set)
		return Status(Code::kNotFound, "region '" + loc.name + "' was not looked up");
	uint64_t version = set->next_version();
	unsigned ok_in_sync = 0;
	Status last(Code::kUnavailable,
	            "no copy of region '" + loc.name + "' in sync is reachable");
	for (const auto &r : set->snapshot()) {
		if (r.state == ReplicaSet::State::kLost) {
			set->add_missed(r.loc.module, count); // its lag
			continue;
		}
		uint64_t at = r.loc.fa_offset + first_page * wire::kPageSize;
		uint32_t applied = 0;
		Status st = on_copy(
		        r.loc,
		        [&](ModuleStore &s) {
			        return s.write_pages_versioned(r.loc.region_id, at, count, src,
			                                       version, VersionedMode::kNewer,
			                                       &applied);
		        },
		        [&](SyncClient &c) {
			        return c.write_pages_versioned(r.loc.region_id, at, count, src,
			                                       version, false, &applied);
		        });
		if (!st) {
			set->set_state(r.loc.module, ReplicaSet::State::kLost, st.message());
			last = st;
			continue;
		}
		ok_in_sync += r.state == ReplicaSet::State::kInSync;
	}
	return ok_in_sync > 0 ? Status::ok() : last;
}

} // namespace memfed
