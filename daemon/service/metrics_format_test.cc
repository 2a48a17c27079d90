// Unit tests of the Prometheus text formatting (metrics_format.h). The
// integration test metrics_test.sh parses a live daemon's output with
// prometheus_client's parser; these pin the details line by line.
#include <catch2/catch.hpp>

#include <cmath>
#include <sstream>

#include "daemon/service/metrics_format.h"

using namespace memfed;
using nlohmann::json;

namespace
{

bool has_line(const std::string &text, const std::string &line)
{
	std::istringstream in(text);
	for (std::string l; std::getline(in, l);)
		if (l == line)
			return true;
	return false;
}

size_t count_prefix(const std::string &text, const std::string &prefix)
{
	std::istringstream in(text);
	size_t n = 0;
	for (std::string l; std::getline(in, l);)
		n += l.rfind(prefix, 0) == 0;
	return n;
}

} // namespace

TEST_CASE("label values and help text are escaped as the text format requires")
{
	REQUIRE(prom_escape_label(R"(a"b\c)"
	                          "\nd") == R"(a\"b\\c\nd)");
	REQUIRE(prom_escape_help("x\\y\n\"z\"") == R"(x\\y\n"z")");
	PromText t;
	t.family("m_total", "counter", "line one\nline two");
	t.sample("m_total", {{"region", "we\"ird"}, {"k", "v"}}, uint64_t{7});
	REQUIRE(t.text() == "# HELP m_total line one\\nline two\n# TYPE m_total counter\n"
	                    "m_total{region=\"we\\\"ird\",k=\"v\"} 7\n");
}

TEST_CASE("floats read back exactly and infinities are spelled +Inf, -Inf")
{
	REQUIRE(prom_float(2e-6) == "2e-06");
	REQUIRE(prom_float(0.5) == "0.5");
	REQUIRE(prom_float(8.388608) == "8.388608");
	REQUIRE(prom_float(INFINITY) == "+Inf");
	REQUIRE(prom_float(-INFINITY) == "-Inf");
	REQUIRE(prom_float(NAN) == "NaN");
	REQUIRE(std::stod(prom_float(0.1 + 0.2)) == 0.1 + 0.2);
}

TEST_CASE("the pager's log2 buckets become le bounds in seconds")
{
	REQUIRE(fault_bucket_le_seconds(0) == 2e-6);
	REQUIRE(fault_bucket_le_seconds(4) == 32e-6);
	REQUIRE(fault_bucket_le_seconds(22) == 8.388608);
	REQUIRE(fault_bucket_le_seconds(23) == INFINITY);
}

TEST_CASE("pager counters and the fault histogram per region")
{
	json stats = {{"pager",
	               {{"regions",
	                 {{{"region", "b"},
	                   {"faults", 5},
	                   {"fetches", 4},
	                   {"resident_pages", 3},
	                   {"dirty_pages", 1},
	                   {"fetch_us_log2", {0, 1, 0, 2, 1}},
	                   {"fetch_ns_sum", 1500000}},
	                  {{"region", "a"}, {"faults", 0}}}},
	                {"processes", json::array()}}}};
	std::string text = format_metrics(stats, json::array());

	REQUIRE(has_line(text, "# TYPE memfed_pager_faults_total counter"));
	REQUIRE(has_line(text, "memfed_pager_faults_total{region=\"b\"} 5"));
	REQUIRE(has_line(text, "memfed_pager_faults_total{region=\"a\"} 0"));
	// Regions in name order: a before b.
	REQUIRE(text.find("faults_total{region=\"a\"}") < text.find("faults_total{region=\"b\"}"));
	REQUIRE(has_line(text, "memfed_pager_resident_bytes{region=\"b\"} 12288"));
	REQUIRE(has_line(text, "memfed_pager_dirty_bytes{region=\"b\"} 4096"));
	REQUIRE(has_line(text, "# TYPE memfed_pager_resident_bytes gauge"));

	// Cumulative buckets, every bound present, _count = +Inf bucket.
	const std::string h = "memfed_pager_fault_duration_seconds";
	REQUIRE(has_line(text, "# TYPE " + h + " histogram"));
	REQUIRE(count_prefix(text, h + "_bucket{region=\"b\"") == 24);
	REQUIRE(has_line(text, h + "_bucket{region=\"b\",le=\"2e-06\"} 0"));
	REQUIRE(has_line(text, h + "_bucket{region=\"b\",le=\"4e-06\"} 1"));
	REQUIRE(has_line(text, h + "_bucket{region=\"b\",le=\"8e-06\"} 1"));
	REQUIRE(has_line(text, h + "_bucket{region=\"b\",le=\"1.6e-05\"} 3"));
	REQUIRE(has_line(text, h + "_bucket{region=\"b\",le=\"3.2e-05\"} 4"));
	REQUIRE(has_line(text, h + "_bucket{region=\"b\",le=\"8.388608\"} 4"));
	REQUIRE(has_line(text, h + "_bucket{region=\"b\",le=\"+Inf\"} 4"));
	REQUIRE(has_line(text, h + "_count{region=\"b\"} 4"));
	REQUIRE(has_line(text, h + "_sum{region=\"b\"} 0.0015"));
	// A region with no latencies yet still has the whole series.
	REQUIRE(has_line(text, h + "_bucket{region=\"a\",le=\"+Inf\"} 0"));
	REQUIRE(has_line(text, h + "_sum{region=\"a\"} 0"));
}

TEST_CASE("modules' space and peers' state; no pager role means no pager families")
{
	json modules = {{{"module", "02:00:00:00:00:01"},
	                 {"endpoint", ""},
	                 {"local", true},
	                 {"reachable", true},
	                 {"capacity_bytes", 1073741824},
	                 {"free_bytes", 1000}},
	                {{"module", "02:00:00:00:00:02"},
	                 {"endpoint", "10.0.0.2:7700"},
	                 {"local", false},
	                 {"reachable", true},
	                 {"capacity_bytes", 2048},
	                 {"free_bytes", 1024}},
	                {{"module", ""},
	                 {"endpoint", "10.0.0.3:7700"},
	                 {"local", false},
	                 {"reachable", false},
	                 {"capacity_bytes", 0},
	                 {"free_bytes", 0}}};
	std::string text = format_metrics(json::object(), modules);

	REQUIRE(text.find("memfed_pager_") == std::string::npos);
	REQUIRE(has_line(text,
	                 "memfed_module_capacity_bytes{module=\"02:00:00:00:00:01\"} 1073741824"));
	REQUIRE(has_line(text, "memfed_module_free_bytes{module=\"02:00:00:00:00:02\"} 1024"));
	// An unreachable module has no capacity to report, rather than a false 0.
	REQUIRE(count_prefix(text, "memfed_module_capacity_bytes{") == 2);
	REQUIRE(has_line(
	        text, "memfed_peer_up{module=\"02:00:00:00:00:02\",endpoint=\"10.0.0.2:7700\"} 1"));
	REQUIRE(has_line(text, "memfed_peer_up{module=\"\",endpoint=\"10.0.0.3:7700\"} 0"));
	// The local module is not a peer.
	REQUIRE(count_prefix(text, "memfed_peer_up{") == 2);
}

TEST_CASE("the local module's refusals per reason; none without a module role")
{
	json stats = {{"module",
	               {{"module", "02:00:00:00:00:31"},
	                {"refusals",
	                 {{"read", 3},
	                  {"write", 2},
	                  {"admin", 0},
	                  {"node_quota", 1},
	                  {"uid_quota", 4},
	                  {"rdma_key", 5}}}}}};
	std::string text = format_metrics(stats, json::array());
	REQUIRE(has_line(text, "# TYPE memfed_module_refusals_total counter"));
	REQUIRE(has_line(text, "memfed_module_refusals_total{module=\"02:00:00:00:00:31\","
	                       "reason=\"read\"} 3"));
	REQUIRE(has_line(text, "memfed_module_refusals_total{module=\"02:00:00:00:00:31\","
	                       "reason=\"write\"} 2"));
	REQUIRE(has_line(text, "memfed_module_refusals_total{module=\"02:00:00:00:00:31\","
	                       "reason=\"admin\"} 0"));
	REQUIRE(has_line(text, "memfed_module_refusals_total{module=\"02:00:00:00:00:31\","
	                       "reason=\"node_quota\"} 1"));
	REQUIRE(has_line(text, "memfed_module_refusals_total{module=\"02:00:00:00:00:31\","
	                       "reason=\"uid_quota\"} 4"));
	REQUIRE(has_line(text, "memfed_module_refusals_total{module=\"02:00:00:00:00:31\","
	                       "reason=\"rdma_key\"} 5"));
	REQUIRE(count_prefix(text, "memfed_module_refusals_total{") == 6);
	REQUIRE(format_metrics(json::object(), json::array()).find("refusals") ==
	        std::string::npos);
}

TEST_CASE("the local module's sequenced writes: admitted, answered from the session cache, "
          "refused by reason")
{
	json stats = {{"module",
	               {{"module", "02:00:00:00:00:31"},
	                {"sessions",
	                 {{"sequenced", 9},
	                  {"retries_answered", 2},
	                  {"refused_superseded", 1},
	                  {"refused_in_progress", 0},
	                  {"refused_unknown", 3},
	                  {"sessions", 4},
	                  {"expired", 0}}}}}};
	std::string text = format_metrics(stats, json::array());
	const std::string m = "{module=\"02:00:00:00:00:31\"";
	REQUIRE(has_line(text, "memfed_module_sequenced_writes_total" + m + "} 9"));
	REQUIRE(has_line(text, "memfed_module_session_retries_answered_total" + m + "} 2"));
	REQUIRE(has_line(text,
	                 "memfed_module_session_refused_total" + m + ",reason=\"superseded\"} 1"));
	REQUIRE(has_line(text,
	                 "memfed_module_session_refused_total" + m + ",reason=\"unknown\"} 3"));
	REQUIRE(has_line(text, "memfed_module_sessions" + m + "} 4"));
	REQUIRE(format_metrics(json::object(), json::array()).find("session") == std::string::npos);
}

TEST_CASE("the RDMA transport's counters, only where it is built in")
{
	json stats = {{"rdma",
	               {{"reads", 7},
	                {"pages", 90},
	                {"bytes", 380000},
	                {"torn_retries", 2},
	                {"fallbacks", 1},
	                {"errors", 1},
	                {"refused", 0},
	                {"connects", 1}}}};
	std::string text = format_metrics(stats, json::array());
	REQUIRE(has_line(text, "# TYPE memfed_rdma_reads_total counter"));
	REQUIRE(has_line(text, "memfed_rdma_reads_total 7"));
	REQUIRE(has_line(text, "memfed_rdma_pages_total 90"));
	REQUIRE(has_line(text, "memfed_rdma_read_bytes_total 380000"));
	REQUIRE(has_line(text, "memfed_rdma_torn_retries_total 2"));
	REQUIRE(has_line(text, "memfed_rdma_fallbacks_total 1"));
	REQUIRE(has_line(text, "memfed_rdma_errors_total 1"));
	REQUIRE(format_metrics(json::object(), json::array()).find("memfed_rdma") ==
	        std::string::npos);
}
