// metrics_format: memfed's counters in the Prometheus text exposition format
// (version 0.0.4), for the daemon's /metrics endpoint (metrics_server.h).
//
// The numbers are the ones `memfedctl stats` and `memfedctl module ls` show,
// taken from the same JSON bodies, so a scrape and the CLI never disagree:
//
//   memfed_pager_faults_total{region}             missing-page faults
//   memfed_pager_wp_faults_total{region}          first writes to clean pages
//   memfed_pager_fetches_total{region}            demand fetches from a module
//   memfed_pager_prefetched_pages_total{region}   pages fetched ahead
//   memfed_pager_prefetch_hits_total{region}      prefetched pages used
//   memfed_pager_evictions_total{region}          pages evicted
//   memfed_pager_writeback_pages_total{region}    pages written back
//   memfed_pager_poisoned_pages_total{region}     pages found damaged (SIGBUS)
//   memfed_pager_resident_bytes{region}           gauge
//   memfed_pager_dirty_bytes{region}              gauge
//   memfed_pager_fault_duration_seconds{region}   histogram: a demand fault's
//       arrival to its page fetched; buckets are the pager's log2 ones,
//       le = 2 us, 4 us, ... 8.39 s, +Inf
//   memfed_module_capacity_bytes{module}          every reachable module
//   memfed_module_free_bytes{module}
//   memfed_peer_up{module,endpoint}               1 connected, 0 not
//   memfed_module_refusals_total{module,reason}   requests this node's module
//       refused: reason read, write, admin (authorization), node_quota,
//       uid_quota, rdma_key (a one-sided read with a bad key,
//       daemon/rdma/rdma_server.h)
//   memfed_rdma_{reads,pages,read_bytes,torn_retries,fallbacks,errors}_total,
//   memfed_rdma_{writes,pages_written,write_fallbacks}_total
//       the RDMA transport's reads and writes (memfedctl stats rdma.*), where
//       built in
//
// Per-process counters are left out on purpose: a pid label makes a new
// series for every process that ever faulted.
//
// Thread-safety: pure functions; PromText is a plain value.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace memfed
{

// The Content-Type of the text format.
constexpr const char *kPromContentType = "text/plain; version=0.0.4; charset=utf-8";

// A text exposition under construction: families in order, each one
// "# HELP", "# TYPE", then its samples.
class PromText
{
public:
	using Labels = std::vector<std::pair<std::string, std::string>>;

	// Starts a family. `type` is "counter", "gauge" or "histogram".
	void family(std::string_view name, std::string_view type, std::string_view help);
	// One sample line; `name` is the family's name or, for a histogram, it
	// with _bucket, _sum or _count.
	void sample(std::string_view name, const Labels &labels, double value);
	void sample(std::string_view name, const Labels &labels, uint64_t value);
	const std::string &text() const { return out_; }

private:
	void labels(const Labels &labels);
	std::string out_;
};

// Label values escape \ " and newline; HELP text escapes \ and newline.
std::string prom_escape_label(std::string_view v);
std::string prom_escape_help(std::string_view v);
// The shortest text that reads back as `v`; +Inf, -Inf and NaN as Prometheus
// spells them.
std::string prom_float(double v);

// Upper bound, in seconds, of the pager's latency bucket `i`
// (PageStats::fetch_us_log2): 2^(i+1) us; the last bucket has none (+Inf).
double fault_bucket_le_seconds(int i);

// The whole exposition. `stats` is the body of the "stats" control op (its
// "pager" part may be absent: no pager role); `modules` the "modules" array
// of "module.list".
std::string format_metrics(const nlohmann::json &stats, const nlohmann::json &modules);

} // namespace memfed
