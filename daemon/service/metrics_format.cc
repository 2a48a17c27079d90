#include "daemon/service/metrics_format.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "daemon/common/json_count.h"
#include "daemon/pager/stats.h"
#include "daemon/wire/protocol.h"

namespace memfed
{

using nlohmann::json;

namespace
{

// Backslash and newline always; the double quote inside label values only.
std::string escape(std::string_view v, bool quote)
{
	std::string out;
	out.reserve(v.size());
	for (char c : v) {
		if (c == '\\' || c == '\n' || (quote && c == '"'))
			out += '\\';
		out += c == '\n' ? 'n' : c;
	}
	return out;
}

} // namespace

std::string prom_escape_label(std::string_view v)
{
	return escape(v, true);
}

std::string prom_escape_help(std::string_view v)
{
	return escape(v, false);
}

std::string prom_float(double v)
{
	if (std::isnan(v))
		return "NaN";
	if (std::isinf(v))
		return v > 0 ? "+Inf" : "-Inf";
	char buf[64];
	auto r = std::to_chars(buf, buf + sizeof(buf), v);
	return std::string(buf, r.ptr);
}

double fault_bucket_le_seconds(int i)
{
	if (i >= pager::kLatencyBuckets - 1)
		return INFINITY;
	return std::ldexp(1e-6, i + 1);
}

void PromText::family(std::string_view name, std::string_view type, std::string_view help)
{
	out_ += "# HELP ";
	out_ += name;
	out_ += ' ';
	out_ += prom_escape_help(help);
	out_ += "\n# TYPE ";
	out_ += name;
	out_ += ' ';
	out_ += type;
	out_ += '\n';
}

void PromText::labels(const Labels &labels)
{
	if (labels.empty())
		return;
	out_ += '{';
	for (size_t i = 0; i < labels.size(); i++) {
		if (i)
			out_ += ',';
		out_ += labels[i].first;
		out_ += "=\"";
		out_ += prom_escape_label(labels[i].second);
		out_ += '"';
	}
	out_ += '}';
}

void PromText::sample(std::string_view name, const Labels &l, double value)
{
	out_ += name;
	labels(l);
	out_ += ' ';
	out_ += prom_float(value);
	out_ += '\n';
}

void PromText::sample(std::string_view name, const Labels &l, uint64_t value)
{
	out_ += name;
	labels(l);
	out_ += ' ';
	out_ += std::to_string(value);
	out_ += '\n';
}

namespace
{

struct Counter {
	const char *key; // in the pager's per-region JSON
	const char *name;
	const char *type;
	const char *help;
	uint64_t scale; // bytes per unit of the JSON value (1: as is)
};

constexpr Counter kPagerCounters[] = {
        {"faults", "memfed_pager_faults_total", "counter",
         "Missing-page faults served by the pager.", 1},
        {"wp_faults", "memfed_pager_wp_faults_total", "counter",
         "Write-protect faults: first writes to clean pages.", 1},
        {"fetches", "memfed_pager_fetches_total", "counter", "Demand fetches from a module.", 1},
        {"prefetched", "memfed_pager_prefetched_pages_total", "counter",
         "Pages fetched ahead of a detected stream.", 1},
        {"prefetch_hits", "memfed_pager_prefetch_hits_total", "counter",
         "Prefetched pages that a stream went on to use.", 1},
        {"evictions", "memfed_pager_evictions_total", "counter",
         "Pages evicted to keep a mapping or process within its budget.", 1},
        {"staged_hits", "memfed_pager_staged_hits_total", "counter",
         "Faults on a page being evicted by move, served from the staging area.", 1},
        {"writebacks", "memfed_pager_writeback_pages_total", "counter",
         "Dirty pages written back to their module.", 1},
        {"poisoned", "memfed_pager_poisoned_pages_total", "counter",
         "Pages found damaged on their module; a program touching one gets SIGBUS.", 1},
        {"resident_pages", "memfed_pager_resident_bytes", "gauge",
         "Bytes of the region resident in local memory.", wire::kPageSize},
        {"dirty_pages", "memfed_pager_dirty_bytes", "gauge",
         "Resident bytes of the region not yet written back (private mappings).", wire::kPageSize},
};

constexpr const char *kFaultHist = "memfed_pager_fault_duration_seconds";

void pager_metrics(PromText &t, const json &pager)
{
	// Regions sorted by name, so that a scrape reads the same every time.
	std::vector<const json *> regions;
	if (pager.contains("regions") && pager["regions"].is_array())
		for (const auto &r : pager["regions"])
			regions.push_back(&r);
	std::sort(regions.begin(), regions.end(), [](const json *a, const json *b) {
		return json_string(*a, "region") < json_string(*b, "region");
	});

	for (const Counter &c : kPagerCounters) {
		t.family(c.name, c.type, c.help);
		for (const json *r : regions)
			t.sample(c.name, {{"region", json_string(*r, "region")}},
			         json_count(*r, c.key) * c.scale);
	}

	t.family("memfed_pager_writebacks_dropped_pages_total", "counter",
	         "Dirty pages whose write-back was dropped because their region had been deleted.");
	t.sample("memfed_pager_writebacks_dropped_pages_total", {},
	         json_count(pager, "writebacks_dropped"));

	t.family(kFaultHist, "histogram",
	         "Time from a demand fault's arrival to its page fetched from the module.");
	const std::string bucket = std::string(kFaultHist) + "_bucket";
	for (const json *r : regions) {
		std::string region = json_string(*r, "region");
		const json empty = json::array();
		const json &hist = r->contains("fetch_us_log2") ? (*r)["fetch_us_log2"] : empty;
		uint64_t cumulative = 0;
		for (int i = 0; i < pager::kLatencyBuckets; i++) {
			if (size_t(i) < hist.size())
				cumulative += json_count(hist[size_t(i)]);
			t.sample(bucket,
			         {{"region", region},
			          {"le", prom_float(fault_bucket_le_seconds(i))}},
			         cumulative);
		}
		t.sample(std::string(kFaultHist) + "_sum", {{"region", region}},
		         double(json_count(*r, "fetch_ns_sum")) / 1e9);
		t.sample(std::string(kFaultHist) + "_count", {{"region", region}}, cumulative);
	}
}

void module_metrics(PromText &t, const json &modules)
{
	std::vector<const json *> reachable, peers;
	for (const auto &m : modules) {
		if (m.value("reachable", false))
			reachable.push_back(&m);
		if (!m.value("local", false))
			peers.push_back(&m);
	}
	t.family("memfed_module_capacity_bytes", "gauge", "Pool capacity of a reachable module.");
	for (const json *m : reachable)
		t.sample("memfed_module_capacity_bytes", {{"module", json_string(*m, "module")}},
		         json_count(*m, "capacity_bytes"));
	t.family("memfed_module_free_bytes", "gauge",
	         "Unallocated pool space of a reachable module.");
	for (const json *m : reachable)
		t.sample("memfed_module_free_bytes", {{"module", json_string(*m, "module")}},
		         json_count(*m, "free_bytes"));
	t.family("memfed_peer_up", "gauge", "1 if the configured peer module answers, 0 if not.");
	for (const json *m : peers)
		t.sample("memfed_peer_up",
		         {{"module", json_string(*m, "module")},
		          {"endpoint", json_string(*m, "endpoint")}},
		         uint64_t(m->value("reachable", false) ? 1 : 0));
}

// The local module's refusals by reason ("stats" "module" "refusals").
void refusal_metrics(PromText &t, const json &module)
{
	auto r = module.find("refusals");
	if (r == module.end() || !r->is_object())
		return;
	t.family("memfed_module_refusals_total", "counter",
	         "Requests this node's module refused: reason read, write or admin (its "
	         "authorization lacked that right), node_quota (the asking node's quota), "
	         "uid_quota (a local user's quota), rdma_key (a one-sided RDMA read with a "
	         "forged, stale or misused key).");
	for (const char *reason : {"read", "write", "admin", "node_quota", "uid_quota", "rdma_key"})
		t.sample("memfed_module_refusals_total",
		         {{"module", json_string(module, "module")}, {"reason", reason}},
		         json_count(*r, reason));
}

// The local module's sequenced writes ("stats" "module" "sessions",
// session_cache.h).
void session_metrics(PromText &t, const json &module)
{
	auto s = module.find("sessions");
	if (s == module.end() || !s->is_object())
		return;
	std::string mod = json_string(module, "module");
	t.family("memfed_module_sequenced_writes_total", "counter",
	         "Sequenced writes this node's module admitted and applied.");
	t.sample("memfed_module_sequenced_writes_total", {{"module", mod}},
	         json_count(*s, "sequenced"));
	t.family("memfed_module_session_retries_answered_total", "counter",
	         "Retried writes answered from the session cache, not applied again.");
	t.sample("memfed_module_session_retries_answered_total", {{"module", mod}},
	         json_count(*s, "retries_answered"));
	t.family("memfed_module_session_refused_total", "counter",
	         "Sequenced writes refused, never applied: reason superseded (late, from a "
	         "connection the writer had left), in_progress (asked again while being "
	         "applied), unknown (a retry of a forgotten session or of an overtaken write).");
	for (const char *reason : {"superseded", "in_progress", "unknown"})
		t.sample("memfed_module_session_refused_total",
		         {{"module", mod}, {"reason", reason}},
		         json_count(*s, ("refused_" + std::string(reason)).c_str()));
	t.family("memfed_module_sessions", "gauge", "Writer sessions the module remembers.");
	t.sample("memfed_module_sessions", {{"module", mod}}, json_count(*s, "sessions"));
}

// The RDMA transport's counters ("stats" "rdma"), when it is built in.
void rdma_metrics(PromText &t, const json &rdma)
{
	static constexpr struct {
		const char *key, *name, *help;
	} kRdma[] = {
	        {"reads", "memfed_rdma_reads_total", "READ requests served by one-sided RDMA."},
	        {"pages", "memfed_rdma_pages_total", "Pages served by one-sided RDMA READs."},
	        {"bytes", "memfed_rdma_read_bytes_total",
	         "Bytes read by RDMA: pages and their version and checksum entries."},
	        {"torn_retries", "memfed_rdma_torn_retries_total",
	         "RDMA reads done again because a page changed while it was read."},
	        {"fallbacks", "memfed_rdma_fallbacks_total",
	         "Reads begun over RDMA and finished over TCP."},
	        {"errors", "memfed_rdma_errors_total", "Times an RDMA connection broke."},
	        {"writes", "memfed_rdma_writes_total",
	         "Writes sent over RDMA and answered durable by the module."},
	        {"pages_written", "memfed_rdma_pages_written_total", "Pages of those writes."},
	        {"write_fallbacks", "memfed_rdma_write_fallbacks_total",
	         "Writes sent over RDMA and re-issued over TCP after the connection broke."},
	};
	for (const auto &c : kRdma) {
		t.family(c.name, "counter", c.help);
		t.sample(c.name, {}, json_count(rdma, c.key));
	}
}

} // namespace

std::string format_metrics(const json &stats, const json &modules)
{
	PromText t;
	if (stats.contains("pager") && stats["pager"].is_object())
		pager_metrics(t, stats["pager"]);
	module_metrics(t, modules.is_array() ? modules : json::array());
	if (stats.contains("module") && stats["module"].is_object()) {
		refusal_metrics(t, stats["module"]);
		session_metrics(t, stats["module"]);
	}
	if (stats.contains("rdma") && stats["rdma"].is_object())
		rdma_metrics(t, stats["rdma"]);
	return t.text();
}

} // namespace memfed
