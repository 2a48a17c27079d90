#include "daemon/store/region_table.h"

#include <algorithm>
#include <atomic>
#include <cstring>

namespace memfed
{

namespace store
{

static_assert(kMaxRegionName == memfed::kMaxRegionNameLen);

uint32_t slot_bits(uint32_t table_slots)
{
	uint32_t bits = 0;
	while ((1u << bits) < table_slots)
		bits++;
	return bits;
}

uint32_t max_generation(uint32_t table_slots)
{
	// The state word keeps 24 bits of generation; the id keeps 32 - slot_bits.
	return (1u << std::min<uint32_t>(24, 32 - slot_bits(table_slots))) - 1;
}

std::vector<RegionSlot> RegionTable::read_all(const uint8_t *base, const Geometry &geo,
                                              std::vector<std::string> *problems)
{
	std::vector<RegionSlot> slots =
	        read_entries(base + geo.table_offset, 0, geo.table_slots, geo, problems);
	if (geo.has_clones())
		for (RegionSlot &s : slots) {
			uint64_t word;
			memcpy(&word, base + geo.clone_fa(s.slot), sizeof(word));
			if (word != 0) {
				s.info.is_clone = true;
				s.info.base_id = static_cast<uint32_t>(word);
				s.info.base_page = (word & ~kCloneBaseSet) >> 32;
			}
		}
	if (!geo.has_access())
		return slots;
	std::vector<RegionSlot> out;
	out.reserve(slots.size());
	for (RegionSlot &s : slots) {
		AccessRecord copies[2];
		memcpy(&copies[0], base + geo.access_fa(s.slot, 0), sizeof(copies[0]));
		memcpy(&copies[1], base + geo.access_fa(s.slot, 1), sizeof(copies[1]));
		auto cur = current_access(copies, s.generation);
		if (!cur) {
			problems->push_back("region table slot " + std::to_string(s.slot) + " ('" +
			                    s.info.name +
			                    "') has no valid access record (owner and grants)");
			continue;
		}
		s.access = std::move(cur->access);
		s.access_copy = cur->copy;
		s.access_seq = cur->seq;
		s.info.owner_key = s.access.owner_key;
		out.push_back(std::move(s));
	}
	return out;
}

std::vector<RegionSlot> RegionTable::read_entries(const uint8_t *entries, uint32_t first_slot,
                                                  uint32_t count, const Geometry &geo,
                                                  std::vector<std::string> *problems)
{
	const uint32_t bits = slot_bits(geo.table_slots);
	const uint32_t max_gen = max_generation(geo.table_slots);
	std::vector<RegionSlot> out;
	for (uint32_t i = 0; i < count; i++) {
		const uint32_t slot = first_slot + i;
		RegionEntry e;
		memcpy(&e, entries + uint64_t{i} * sizeof(e), sizeof(e));
		RegionSlot s;
		s.slot = slot;
		s.state = static_cast<RegionState>(e.state_word & 0xff);
		s.generation = static_cast<uint32_t>(e.state_word >> 8) & max_gen;
		if (s.state == kRegionFree)
			continue;
		std::string where = "region table slot " + std::to_string(slot);
		if (s.state != kRegionLive && s.state != kRegionDeleting) {
			problems->push_back(where + " has unknown state " +
			                    std::to_string(s.state));
			continue;
		}
		if (e.crc != entry_crc(e)) {
			problems->push_back(where + " fails its checksum (entry corrupt)");
			continue;
		}
		e.name[sizeof(e.name) - 1] = '\0';
		s.info.name = e.name;
		Status ns = check_region_name(s.info.name);
		if (!ns.is_ok()) {
			problems->push_back(where + ": " + ns.message());
			continue;
		}
		if (e.pages == 0 || e.fa_offset < geo.data_offset ||
		    (e.fa_offset - geo.data_offset) % kPageSize != 0 ||
		    e.fa_offset >= geo.data_end() ||
		    e.pages > (geo.data_end() - e.fa_offset) / kPageSize) {
			problems->push_back(where + " ('" + s.info.name +
			                    "') has an extent outside the data area");
			continue;
		}
		if (s.generation == 0) {
			problems->push_back(where + " ('" + s.info.name + "') has generation 0");
			continue;
		}
		s.info.id = (s.generation << bits) | slot;
		s.info.fa_offset = e.fa_offset;
		s.info.size_bytes = e.pages * kPageSize;
		s.info.owner_uid = e.owner_uid;
		s.info.mode = e.mode;
		s.info.ctime_ns = e.ctime_ns;
		s.info.replica_group = e.replica_group;
		s.info.replicas = e.replicas;
		s.info.length = s.info.size_bytes;
		if (e.length_word != 0) {
			uint64_t len = e.length_word & ~kLengthSet;
			if (!(e.length_word & kLengthSet) || len > s.info.size_bytes) {
				problems->push_back(where + " ('" + s.info.name +
				                    "') has a file length beyond its size");
				continue;
			}
			s.info.length = len;
		}
		out.push_back(s);
	}
	return out;
}

Status RegionTable::load(const std::string &path)
{
	std::vector<std::string> problems;
	std::vector<RegionSlot> all = read_all(base_, geo_, &problems);
	if (!problems.empty())
		return Status(Code::kCorrupt, "pool " + path + ": " + problems.front() +
		                                      "; run `memfedctl pool check " + path +
		                                      "` for the full report");
	generation_.assign(geo_.table_slots, 0);
	used_.clear();
	by_name_.clear();
	by_owner_.clear();
	by_node_.clear();
	const RegionEntry *entries =
	        reinterpret_cast<const RegionEntry *>(base_ + geo_.table_offset);
	for (uint32_t slot = 0; slot < geo_.table_slots; slot++)
		generation_[slot] =
		        static_cast<uint32_t>(entries[slot].state_word >> 8) & max_generation_;
	for (const RegionSlot &s : all) {
		used_[s.slot] = s;
		add_usage(s.info, true);
		if (s.state != kRegionLive)
			continue;
		if (!by_name_.emplace(s.info.name, s.slot).second)
			return Status(
			        Code::kCorrupt,
			        "pool " + path + ": region name '" + s.info.name +
			                "' appears twice in the region table; run `memfedctl pool "
			                "check " +
			                path + "`");
	}
	next_free_ = 0;
	return Status::ok();
}

const RegionSlot *RegionTable::find(const std::string &name) const
{
	auto it = by_name_.find(name);
	return it == by_name_.end() ? nullptr : &used_.at(it->second);
}

const RegionSlot *RegionTable::by_id(uint32_t id) const
{
	uint32_t slot = id & (geo_.table_slots - 1);
	auto it = used_.find(slot);
	if (it == used_.end() || it->second.state != kRegionLive || it->second.info.id != id)
		return nullptr;
	return &it->second;
}

std::vector<RegionInfo> RegionTable::list(const std::string &after, size_t limit) const
{
	std::vector<RegionInfo> out;
	auto it = after.empty() ? by_name_.begin() : by_name_.upper_bound(after);
	for (; it != by_name_.end() && (limit == 0 || out.size() < limit); ++it)
		out.push_back(used_.at(it->second).info);
	return out;
}

std::vector<RegionSlot> RegionTable::deleting() const
{
	std::vector<RegionSlot> out;
	for (const auto &[slot, s] : used_)
		if (s.state == kRegionDeleting)
			out.push_back(s);
	return out;
}

void RegionTable::set_state(uint32_t slot, RegionState state, uint32_t generation)
{
	uint64_t word = uint64_t{state} | (uint64_t{generation} << 8);
	// One aligned 8-byte store: the state word can never be half written.
	std::atomic_ref<uint64_t>(entry(slot)->state_word).store(word, std::memory_order_release);
	persist_(&entry(slot)->state_word, sizeof(uint64_t));
	generation_[slot] = generation;
	if (state == kRegionFree) {
		auto it = used_.find(slot);
		if (it != used_.end())
			add_usage(it->second.info, false);
		used_.erase(slot);
		return;
	}
	RegionSlot &s = used_[slot];
	s.slot = slot;
	s.state = state;
	s.generation = generation;
}

Status RegionTable::create(RegionInfo *info)
{
	const uint32_t n = geo_.table_slots;
	if (used_.size() >= n)
		return Status(
		        Code::kNoSpace,
		        "region table is full (" + std::to_string(n) +
		                " regions); delete a region first" +
		                (n == kMinTableSlots
		                         ? std::string(", or copy the regions out and reformat "
		                                       "the pool with a larger size (`memfedctl "
		                                       "pool format`): its table is sized to the "
		                                       "pool (layout.h)")
		                         : std::string()));
	// Next fit: the first free slot at or after the cursor, wrapping.
	uint32_t slot = next_free_ % n;
	while (used_.count(slot) != 0)
		slot = (slot + 1) % n;
	next_free_ = (slot + 1) % n;
	uint32_t generation = generation_[slot] >= max_generation_ ? 1 : generation_[slot] + 1;
	RegionEntry *e = entry(slot);
	RegionEntry body{};
	body.state_word = e->state_word; // unchanged until the body is durable
	body.fa_offset = info->fa_offset;
	body.pages = info->size_bytes / kPageSize;
	body.ctime_ns = info->ctime_ns;
	body.owner_uid = info->owner_uid;
	body.mode = info->mode;
	body.replica_group = info->replica_group;
	body.replicas = info->replicas;
	memcpy(body.name, info->name.data(), info->name.size());
	body.crc = entry_crc(body);
	memcpy(reinterpret_cast<uint8_t *>(e) + sizeof(uint64_t),
	       reinterpret_cast<const uint8_t *>(&body) + sizeof(uint64_t),
	       sizeof(body) - sizeof(uint64_t));
	persist_(e, sizeof(*e));
	RegionAccess access;
	if (geo_.has_access()) {
		// Copy 0 of seq 1, copy 1 zeroed (a record of an earlier region in
		// the slot must not outrank it), durable before the slot is live.
		access.owner_key = info->owner_key;
		*access_record(slot, 0) = encode_access(access, 1, generation);
		*access_record(slot, 1) = AccessRecord{};
		persist_(access_record(slot, 0), 2 * sizeof(AccessRecord));
	} else {
		info->owner_key = {};
	}
	if (geo_.has_clones()) {
		// A clone's base, or 0 over what an earlier region in the slot left.
		uint64_t *word = reinterpret_cast<uint64_t *>(base_ + geo_.clone_fa(slot));
		std::atomic_ref<uint64_t>(*word).store(
		        info->is_clone ? clone_base_word(info->base_id, info->base_page) : 0,
		        std::memory_order_relaxed);
		persist_(word, sizeof(*word));
	} else {
		info->is_clone = false;
	}
	info->id = id(slot, generation);
	set_state(slot, kRegionLive, generation);
	used_[slot].info = *info;
	used_[slot].access = std::move(access);
	used_[slot].access_copy = 0;
	used_[slot].access_seq = 1;
	by_name_[info->name] = slot;
	add_usage(*info, true);
	return Status::ok();
}

OwnerUsage RegionTable::usage_of(uint32_t owner) const
{
	auto it = by_owner_.find(owner);
	return it == by_owner_.end() ? OwnerUsage{} : it->second;
}

OwnerUsage RegionTable::usage_of_node(const NodeKeyBytes &key) const
{
	auto it = by_node_.find(key);
	return it == by_node_.end() ? OwnerUsage{} : it->second;
}

void RegionTable::detach(uint32_t slot)
{
	uint64_t *word = reinterpret_cast<uint64_t *>(base_ + geo_.clone_fa(slot));
	std::atomic_ref<uint64_t>(*word).store(0, std::memory_order_relaxed);
	persist_(word, sizeof(*word));
	RegionInfo &info = used_.at(slot).info;
	info.is_clone = false;
	info.base_id = 0;
	info.base_page = 0;
}

void RegionTable::set_access(uint32_t slot, const RegionAccess &a)
{
	RegionSlot &s = used_.at(slot);
	int copy = 1 - s.access_copy;
	*access_record(slot, copy) = encode_access(a, s.access_seq + 1, s.generation);
	persist_(access_record(slot, copy), sizeof(AccessRecord));
	s.access = a;
	s.access_copy = copy;
	s.access_seq++;
	if (s.info.owner_key != a.owner_key) {
		add_usage(s.info, false);
		s.info.owner_key = a.owner_key;
		add_usage(s.info, true);
	}
}

namespace
{

template <typename K>
void count_usage(std::map<K, OwnerUsage> &m, const K &k, uint64_t bytes, bool add)
{
	OwnerUsage &u = m[k];
	if (add) {
		u.bytes += bytes;
		u.regions++;
		return;
	}
	u.bytes -= bytes;
	if (--u.regions == 0)
		m.erase(k);
}

} // namespace

void RegionTable::add_usage(const RegionInfo &info, bool add)
{
	count_usage(by_owner_, info.owner_uid, info.size_bytes, add);
	count_usage(by_node_, info.owner_key, info.size_bytes, add);
}

void RegionTable::set_length(uint32_t slot, uint64_t length)
{
	uint64_t word = kLengthSet | length;
	std::atomic_ref<uint64_t>(entry(slot)->length_word).store(word, std::memory_order_release);
	persist_(&entry(slot)->length_word, sizeof(uint64_t));
	used_.at(slot).info.length = length;
}

void RegionTable::mark_deleting(uint32_t slot)
{
	by_name_.erase(used_.at(slot).info.name);
	set_state(slot, kRegionDeleting, generation_[slot]);
}

void RegionTable::mark_free(uint32_t slot)
{
	auto it = used_.find(slot);
	if (it != used_.end() && it->second.state == kRegionLive)
		by_name_.erase(it->second.info.name);
	set_state(slot, kRegionFree, generation_[slot]);
}

} // namespace store
} // namespace memfed
