// Replica tombstones as a file (replica_tombstones.h).
#include "daemon/service/replica_tombstones.h"

#include <nlohmann/json.hpp>

namespace memfed
{

namespace
{
nlohmann::json copy_json(const ReplicaLocation &c)
{
	return {{"module", c.module.to_string()},
	        {"region_id", c.region_id},
	        {"fa_offset", c.fa_offset}};
}

Result<ReplicaLocation> copy_from(const nlohmann::json &j)
{
	auto m = ModuleId::parse(j.at("module").get<std::string>());
	if (!m)
		return Status(Code::kCorrupt, "a bad module ID " + j.at("module").dump());
	ReplicaLocation c;
	c.module = *m;
	c.region_id = j.at("region_id").get<uint32_t>();
	c.fa_offset = j.at("fa_offset").get<uint64_t>();
	return c;
}

std::string line(const std::string &name, const ReplicaLocation &c)
{
	return "region '" + name + "' on module " + c.module.to_string();
}
} // namespace

size_t tombstone_count(const ReplicaTombstones &t)
{
	size_t n = t.dropped.size();
	for (const auto &[g, d] : t.deleted)
		n += d.copies.size();
	return n;
}

std::vector<std::string> bound_tombstones(ReplicaTombstones *t, size_t max)
{
	std::vector<std::string> forgotten;
	// Dropped copies first (oldest first): a deleted region's copies are
	// the ones a user asked to be rid of.
	while (tombstone_count(*t) > max && !t->dropped.empty()) {
		forgotten.push_back(line(t->dropped.front().name, t->dropped.front().copy));
		t->dropped.erase(t->dropped.begin());
	}
	while (tombstone_count(*t) > max && !t->deleted.empty()) {
		auto it = t->deleted.begin();
		for (const auto &c : it->second.copies)
			forgotten.push_back(line(it->second.name, c));
		t->deleted.erase(it);
	}
	return forgotten;
}

std::string tombstones_to_json(const ReplicaTombstones &t)
{
	nlohmann::json a = nlohmann::json::array();
	for (const auto &[group, d] : t.deleted) {
		nlohmann::json copies = nlohmann::json::array();
		for (const auto &c : d.copies)
			copies.push_back(copy_json(c));
		a.push_back({{"deleted", d.name}, {"group", group}, {"copies", copies}});
	}
	for (const auto &d : t.dropped)
		a.push_back({{"dropped", d.name}, {"group", d.group}, {"copy", copy_json(d.copy)}});
	return a.dump() + "\n";
}

Result<ReplicaTombstones> tombstones_from_json(const std::string &text, const std::string &path)
{
	ReplicaTombstones t;
	try {
		auto a = nlohmann::json::parse(text);
		if (!a.is_array())
			throw std::runtime_error("not a JSON array");
		for (const auto &r : a) {
			uint64_t group = r.at("group").get<uint64_t>();
			if (r.contains("deleted")) {
				DeletedCopies d{r.at("deleted").get<std::string>(), {}};
				for (const auto &c : r.at("copies")) {
					auto copy = copy_from(c);
					if (!copy)
						throw std::runtime_error(copy.status().message());
					d.copies.push_back(*copy);
				}
				t.deleted[group] = std::move(d);
			} else if (r.contains("dropped")) {
				auto copy = copy_from(r.at("copy"));
				if (!copy)
					throw std::runtime_error(copy.status().message());
				t.dropped.push_back(
				        {group, r.at("dropped").get<std::string>(), *copy});
			} else {
				throw std::runtime_error(
				        "a record neither \"deleted\" nor \"dropped\": " +
				        r.dump());
			}
		}
	} catch (const std::exception &e) {
		return Status(Code::kCorrupt, "replica tombstone file " + path + ": " + e.what() +
		                                      " (memfedd moves it aside and starts "
		                                      "without it)");
	}
	return t;
}

} // namespace memfed
