// MetricsServer: memfedd's Prometheus endpoint (`--metrics HOST:PORT`).
// Serves GET (and HEAD) /metrics in the text exposition format; every other
// path is 404, every other method 405 with "Allow: GET, HEAD".
//
// HTTP is libmicrohttpd's (Debian's libmicrohttpd12), not our own: a parser
// of untrusted network input is exactly what a well-kept, fuzzed library
// should do, and it gives the bounds a scrape endpoint needs for free.
// Bounds: one internal thread polling every connection, at most
// kMaxConnections at once, kRequestMemory bytes per connection for the
// request line and headers (more is answered 431 or 414 by the library), a
// request body is never read (a GET with a body is drained, not buffered), an
// idle connection is closed after kIdleSeconds.
//
// The numbers come from `render`, called on that thread once per scrape.
// memfedd passes ControlOps::metrics_text(), which gathers them exactly as
// `memfedctl stats` does: the pager threads copy their counters between two
// faults when their event loops reach the request, so a scrape never takes a
// lock on the fault path, and scrapes are served one at a time.
//
// Thread-safety: start() and the destructor from one thread; `render` runs on
// the server's thread.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "daemon/common/status.h"

struct MHD_Daemon;

namespace memfed
{

class MetricsServer
{
public:
	static constexpr unsigned kMaxConnections = 16;
	static constexpr size_t kRequestMemory = 16 * 1024;
	static constexpr unsigned kIdleSeconds = 10;

	// The exposition text, or a Status that makes the scrape fail with 503.
	using Render = std::function<Result<std::string>()>;

	// Listens on `endpoint` ("host:port"; port 0 picks a free port) and
	// serves on its own thread. kBusy if the port is taken.
	static Result<std::unique_ptr<MetricsServer>> start(const std::string &endpoint,
	                                                    Render render);
	~MetricsServer();
	MetricsServer(const MetricsServer &) = delete;
	MetricsServer &operator=(const MetricsServer &) = delete;

	// "host:port" as bound (the real port when 0 was asked for).
	const std::string &endpoint() const { return endpoint_; }

private:
	explicit MetricsServer(Render render) : render_(std::move(render)) {}

	Render render_;
	std::string endpoint_;
	MHD_Daemon *daemon_ = nullptr;
};

} // namespace memfed
