#include "daemon/store/region_table.h"

#include <atomic>
#include <cstring>

namespace memfed
{

namespace store
{

static_assert(kMaxRegionName == memfed::kMaxRegionNameLen);

uint32_t region_id(uint32_t slot, uint32_t generation)
{
	return (generation << kSlotBits) | slot;
}

std::vector<RegionSlot> RegionTable::read_all(const uint8_t *base, const Geometry &geo,
                                              std::vector<std::string> *problems)
{
	std::vector<RegionSlot> out;
	for (uint32_t slot = 0; slot < kTableSlots; slot++) {
		RegionEntry e;
		memcpy(&e, base + geo.table_offset + uint64_t{slot} * sizeof(e), sizeof(e));
		RegionSlot s;
		s.slot = slot;
		s.state = static_cast<RegionState>(e.state_word & 0xff);
		s.generation = static_cast<uint32_t>(e.state_word >> 8) & kMaxGeneration;
		if (s.state == kRegionFree) {
			out.push_back(s);
			continue;
		}
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
		s.info.id = region_id(slot, s.generation);
		s.info.fa_offset = e.fa_offset;
		s.info.size_bytes = e.pages * kPageSize;
		s.info.owner_uid = e.owner_uid;
		s.info.mode = e.mode;
		s.info.ctime_ns = e.ctime_ns;
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
	slots_.assign(kTableSlots, RegionSlot{});
	by_name_.clear();
	for (const RegionSlot &s : all) {
		slots_[s.slot] = s;
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
	return Status::ok();
}

const RegionSlot *RegionTable::find(const std::string &name) const
{
	auto it = by_name_.find(name);
	return it == by_name_.end() ? nullptr : &slots_[it->second];
}

const RegionSlot *RegionTable::by_id(uint32_t id) const
{
	uint32_t slot = id & (kTableSlots - 1);
	const RegionSlot &s = slots_[slot];
	if (s.state != kRegionLive || s.info.id != id)
		return nullptr;
	return &s;
}

std::vector<RegionInfo> RegionTable::list() const
{
	std::vector<RegionInfo> out;
	for (const RegionSlot &s : slots_)
		if (s.state == kRegionLive)
			out.push_back(s.info);
	return out;
}

std::vector<RegionSlot> RegionTable::deleting() const
{
	std::vector<RegionSlot> out;
	for (const RegionSlot &s : slots_)
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
	slots_[slot].state = state;
	slots_[slot].generation = generation;
}

Status RegionTable::create(RegionInfo *info)
{
	uint32_t slot = kTableSlots;
	for (uint32_t i = 0; i < kTableSlots; i++)
		if (slots_[i].state == kRegionFree) {
			slot = i;
			break;
		}
	if (slot == kTableSlots)
		return Status(Code::kNoSpace, "region table is full (" +
		                                      std::to_string(kTableSlots) +
		                                      " regions); delete a region first");
	uint32_t generation =
	        slots_[slot].generation >= kMaxGeneration ? 1 : slots_[slot].generation + 1;
	RegionEntry *e = entry(slot);
	RegionEntry body{};
	body.state_word = e->state_word; // unchanged until the body is durable
	body.fa_offset = info->fa_offset;
	body.pages = info->size_bytes / kPageSize;
	body.ctime_ns = info->ctime_ns;
	body.owner_uid = info->owner_uid;
	body.mode = info->mode;
	memcpy(body.name, info->name.data(), info->name.size());
	body.crc = entry_crc(body);
	memcpy(reinterpret_cast<uint8_t *>(e) + sizeof(uint64_t),
	       reinterpret_cast<const uint8_t *>(&body) + sizeof(uint64_t),
	       sizeof(body) - sizeof(uint64_t));
	persist_(e, sizeof(*e));
	info->id = region_id(slot, generation);
	slots_[slot].info = *info;
	slots_[slot].slot = slot;
	set_state(slot, kRegionLive, generation);
	by_name_[info->name] = slot;
	return Status::ok();
}

void RegionTable::set_length(uint32_t slot, uint64_t length)
{
	uint64_t word = kLengthSet | length;
	std::atomic_ref<uint64_t>(entry(slot)->length_word).store(word, std::memory_order_release);
	persist_(&entry(slot)->length_word, sizeof(uint64_t));
	slots_[slot].info.length = length;
}

void RegionTable::mark_deleting(uint32_t slot)
{
	by_name_.erase(slots_[slot].info.name);
	set_state(slot, kRegionDeleting, slots_[slot].generation);
}

void RegionTable::mark_free(uint32_t slot)
{
	by_name_.erase(slots_[slot].info.name);
	set_state(slot, kRegionFree, slots_[slot].generation);
}

} // namespace store
} // namespace memfed
