#include "daemon/service/metrics_server.h"

#include <microhttpd.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "daemon/common/log.h"
#include "daemon/service/metrics_format.h"
#include "daemon/transport/endpoint.h"

namespace memfed
{

namespace
{

constexpr const char *kLog = "metrics";
constexpr const char *kPath = "/metrics";

void mhd_log(void *, const char *fmt, va_list ap)
{
	char buf[512];
	std::vsnprintf(buf, sizeof(buf), fmt, ap);
	size_t n = std::strlen(buf);
	while (n > 0 && buf[n - 1] == '\n')
		buf[--n] = '\0';
	LOG_WARN(kLog, "%s", buf);
}

MHD_Result reply(MHD_Connection *c, unsigned status, const std::string &body, const char *type,
                 const char *allow = nullptr)
{
	MHD_Response *r = MHD_create_response_from_buffer(
	        body.size(), const_cast<char *>(body.data()), MHD_RESPMEM_MUST_COPY);
	if (r == nullptr)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	if (allow)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
	MHD_Result ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

MHD_Result text_reply(MHD_Connection *c, unsigned status, const std::string &msg,
                      const char *allow = nullptr)
{
	return reply(c, status, msg + "\n", "text/plain; charset=utf-8", allow);
}

bool has_body(MHD_Connection *c)
{
	const char *len =
	        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (len && std::strcmp(len, "0") != 0)
		return true;
	return MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING) !=
	       nullptr;
}

// The access handler (MHD_AccessHandlerCallback). Every request is answered
// on the first call, once its headers are in: nothing here waits for a body.
MHD_Result metrics_request(void *cls, MHD_Connection *c, const char *url, const char *method,
                           const char *, const char *, size_t *, void **)
{
	auto *render = static_cast<MetricsServer::Render *>(cls);
	bool get = std::strcmp(method, MHD_HTTP_METHOD_GET) == 0;
	bool head = std::strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
	if (!get && !head)
		return text_reply(c, MHD_HTTP_METHOD_NOT_ALLOWED,
		                  std::string("method ") + method + " not allowed: use GET " +
		                          kPath,
		                  "GET, HEAD");
	if (std::strcmp(url, kPath) != 0)
		return text_reply(c, MHD_HTTP_NOT_FOUND,
		                  std::string("not found: ") + url + " (memfedd serves " + kPath +
		                          ")");
	if (has_body(c))
		return text_reply(c, MHD_HTTP_CONTENT_TOO_LARGE,
		                  std::string(method) + " " + kPath + " takes no request body");
	Result<std::string> text = (*render)();
	if (!text) {
		LOG_WARN(kLog, "scrape failed: %s", text.status().message().c_str());
		return text_reply(c, MHD_HTTP_SERVICE_UNAVAILABLE,
		                  "cannot gather the metrics: " + text.status().message());
	}
	// MHD sends headers only for HEAD, with the Content-Length of the body.
	return reply(c, MHD_HTTP_OK, *text, kPromContentType);
}

} // namespace

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(const std::string &endpoint,
                                                            Render render)
{
	auto ep = Endpoint::parse(endpoint);
	if (!ep)
		return Status(Code::kInvalidArgument, "--metrics: " + ep.status().message());
	auto fd = listen_tcp(*ep, 16);
	if (!fd && fd.status().code() == Code::kBusy)
		return Status(Code::kBusy,
		              "metrics endpoint " + ep->to_string() +
		                      " is in use (another memfedd? set --metrics, port 0 "
		                      "picks a free one)");
	if (!fd)
		return Status(fd.status().code(), "metrics endpoint: " + fd.status().message());
	std::unique_ptr<MetricsServer> s(new MetricsServer(std::move(render)));
	ep->port = local_port(*fd);
	s->endpoint_ = ep->to_string();
	// MHD owns the listening socket from here and closes it when stopped.
	s->daemon_ = MHD_start_daemon(
	        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG, 0, nullptr,
	        nullptr, &metrics_request, &s->render_, MHD_OPTION_EXTERNAL_LOGGER, &mhd_log,
	        nullptr, MHD_OPTION_LISTEN_SOCKET, MHD_socket(*fd), MHD_OPTION_CONNECTION_LIMIT,
	        kMaxConnections, MHD_OPTION_CONNECTION_MEMORY_LIMIT, kRequestMemory,
	        MHD_OPTION_CONNECTION_TIMEOUT, kIdleSeconds, MHD_OPTION_END);
	if (s->daemon_ == nullptr) {
		close(*fd);
		return Status(Code::kIo,
		              "metrics endpoint " + s->endpoint_ +
		                      ": libmicrohttpd would not start (see the log line before)");
	}
	LOG_INFO(kLog, "serving http://%s%s", s->endpoint_.c_str(), kPath);
	return s;
}

MetricsServer::~MetricsServer()
{
	if (daemon_)
		MHD_stop_daemon(daemon_);
}

} // namespace memfed
