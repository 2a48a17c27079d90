#include "daemon/transport/sync_client.h"

#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "daemon/common/log.h"
#include "daemon/transport/dscp.h"
#include "daemon/transport/endpoint.h"
#include "daemon/wire/codec.h"

namespace memfed
{

namespace
{

void set_timeouts(int fd, int timeout_ms)
{
	timeval tv{};
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

} // namespace

Result<std::unique_ptr<SyncClient>> SyncClient::connect(const std::string &host_port, ModuleId self,
                                                        int timeout_ms,
                                                        std::shared_ptr<trust::TlsContext> tls,
                                                        wire::TrafficClass conn_class)
{
	auto ep = Endpoint::parse(host_port);
	if (!ep)
		return ep.status();
	auto fd = connect_tcp(*ep, timeout_ms);
	if (!fd)
		return fd.status();
	set_timeouts(*fd, timeout_ms);
	if (Status st = mark_socket(*fd, conn_class); !st)
		LOG_WARN("sync_client", "%s; the connection to %s goes unmarked",
		         st.message().c_str(), ep->to_string().c_str());
	std::unique_ptr<SyncClient> c(new SyncClient(*fd, self, ep->to_string()));
	c->tls_ctx_ = std::move(tls);
	c->conn_class_ = conn_class;
	return c;
}

SyncClient::SyncClient(int fd, ModuleId self, std::string endpoint) : fd_(fd), self_(self)
{
	peer_.endpoint = std::move(endpoint);
}

SyncClient::~SyncClient()
{
	if (fd_ >= 0)
		close(fd_);
}

int SyncClient::release_fd()
{
	set_timeouts(fd_, 0); // no timeouts: the new owner decides
	int fd = fd_;
	fd_ = -1;
	return fd;
}

Status SyncClient::send_all(const void *p, size_t n)
{
	if (tls_ && tls_->established()) {
		MF_RETURN_IF_ERROR(tls_->encrypt({static_cast<const uint8_t *>(p), n}));
		return send_tls_output();
	}
	return sock_send_all(p, n);
}

Status SyncClient::send_tls_output()
{
	ByteBuffer &out = tls_->output();
	Status st = sock_send_all(out.read_ptr(), out.readable());
	out.clear();
	return st;
}

Status SyncClient::recv_all(void *p, size_t n)
{
	auto *b = static_cast<uint8_t *>(p);
	if (!tls_ || !tls_->established()) {
		while (n > 0) {
			auto got = sock_recv(b, n);
			if (!got)
				return got.status();
			b += *got;
			n -= *got;
		}
		return Status::ok();
	}
	while (n > 0) {
		auto got = tls_->decrypt(b, n);
		if (!got)
			return got.status();
		b += *got;
		n -= *got;
		if (tls_->output_pending()) // a KeyUpdate answer
			MF_RETURN_IF_ERROR(send_tls_output());
		if (n > 0 && *got == 0)
			MF_RETURN_IF_ERROR(sock_recv_some(tls_->input()));
	}
	return Status::ok();
}

Result<size_t> SyncClient::sock_recv(void *p, size_t cap)
{
	for (;;) {
		ssize_t r = recv(fd_, p, cap, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0)
			return Status(Code::kUnavailable,
			              peer_.endpoint + " closed the connection");
		if (r < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return Status(Code::kUnavailable,
				              "no reply from " + peer_.endpoint + " in time");
			return Status(Code::kUnavailable,
			              "receiving from " + peer_.endpoint + ": " + strerror(errno));
		}
		return size_t(r);
	}
}

Status SyncClient::sock_recv_some(ByteBuffer &buf)
{
	buf.ensure_writable(64 * 1024);
	auto got = sock_recv(buf.write_ptr(), buf.writable());
	if (!got)
		return got.status();
	buf.commit(*got);
	return Status::ok();
}

Status SyncClient::sock_send_all(const void *p, size_t n)
{
	const auto *b = static_cast<const uint8_t *>(p);
	while (n > 0) {
		ssize_t r = send(fd_, b, n, MSG_NOSIGNAL);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return Status(Code::kUnavailable,
			              "sending to " + peer_.endpoint + ": " + strerror(errno));
		b += r;
		n -= r;
	}
	return Status::ok();
}

Status SyncClient::send_raw(std::span<const uint8_t> bytes)
{
	if (fd_ < 0)
		return Status(Code::kUnavailable, "client has no connection");
	return sock_send_all(bytes.data(), bytes.size());
}

Result<SyncClient::Response> SyncClient::exchange(wire::Header &h, std::span<const uint8_t> payload,
                                                  void *pages_dst)
{
	if (fd_ < 0)
		return Status(Code::kUnavailable, "client has no connection");
	if (h.version == 0)
		h.version = version_;
	if (h.hop_limit == 0)
		h.hop_limit = wire::kDefaultHopLimit;
	h.flags &= wire::kFlagSequenced | wire::kFlagRetry; // a sequenced write's, else 0
	h.status = 0;
	h.src_module = self_.value;
	h.dst_module = peer_.module.value;
	h.request_id = next_request_id_++;
	h.magic = wire::kWireMagic;
	h.payload_len = static_cast<uint32_t>(payload.size());
	h.payload_crc = 0;
	// Never put a request on the wire that the peer must reject (it would
	// close the connection).
	Status bad = wire::validate_fields(h);
	if (!bad.is_ok() || payload.size() > wire::kMaxPayload)
		return Status(Code::kInvalidArgument,
		              std::string(wire::msg_type_name(h.type)) +
		                      " request not sent: " + bad.message());
	uint8_t hb[wire::kHeaderSize];
	wire::encode_header(h, payload, hb);
	if (tls_ && tls_->established()) {
		// One batch of records for header and payload.
		iovec v[2] = {{hb, sizeof(hb)},
		              {const_cast<uint8_t *>(payload.data()), payload.size()}};
		MF_RETURN_IF_ERROR(tls_->encrypt(v, payload.empty() ? 1 : 2));
		MF_RETURN_IF_ERROR(send_tls_output());
	} else {
		MF_RETURN_IF_ERROR(send_all(hb, sizeof(hb)));
		if (!payload.empty())
			MF_RETURN_IF_ERROR(send_all(payload.data(), payload.size()));
	}

	Response resp;
	MF_RETURN_IF_ERROR(recv_all(hb, sizeof(hb)));
	Status st = wire::validate_header({hb, sizeof(hb)}, &resp.header);
	if (!st.is_ok())
		return st;
	const wire::Header &r = resp.header;
	if (!(r.flags & wire::kFlagResponse) || r.request_id != h.request_id || r.type != h.type)
		return Status(Code::kProtocol,
		              peer_.endpoint + " answered request " + std::to_string(h.request_id) +
		                      " (" + wire::msg_type_name(h.type) + ") with " +
		                      wire::msg_type_name(r.type) + " for request " +
		                      std::to_string(r.request_id));
	std::span<const uint8_t> got;
	if (pages_dst != nullptr && r.status == 0) {
		if (r.payload_len != size_t{h.count} * wire::kPageSize)
			return Status(Code::kProtocol,
			              peer_.endpoint + " answered a READ of " +
			                      std::to_string(h.count) + " pages with " +
			                      std::to_string(r.payload_len) + " bytes");
		MF_RETURN_IF_ERROR(recv_all(pages_dst, r.payload_len));
		got = {static_cast<const uint8_t *>(pages_dst), r.payload_len};
	} else {
		resp.payload.resize(r.payload_len);
		MF_RETURN_IF_ERROR(recv_all(resp.payload.data(), r.payload_len));
		got = resp.payload;
	}
	// The payload crc of READ and READ_VERSIONED comes from the crcs stored
	// with the pages: a mismatch is the module's media (kCorrupt).
	bool media = r.status == 0 &&
	             (pages_dst != nullptr || r.type == uint8_t(wire::MsgType::kReadVersioned));
	MF_RETURN_IF_ERROR(media ? wire::check_read_pages(r, got) : wire::check_payload(r, got));
	MF_RETURN_IF_ERROR(wire::response_status(r, got));
	return resp;
}

Status SyncClient::tls_handshake()
{
	tls_ = std::make_unique<trust::TlsSession>(tls_ctx_, trust::TlsRole::kClient,
	                                           peer_.endpoint);
	for (;;) {
		trust::TlsStep step = tls_->handshake();
		if (tls_->output_pending())
			MF_RETURN_IF_ERROR(send_tls_output());
		if (step == trust::TlsStep::kDone)
			return Status::ok();
		if (step == trust::TlsStep::kFailed)
			return tls_->status();
		Status st = sock_recv_some(tls_->input());
		if (!st.is_ok())
			return Status(st.code(), "TLS handshake with " + peer_.endpoint +
			                                 " did not finish: " + st.message());
	}
}

Status SyncClient::hello(uint32_t capabilities)
{
	if (tls_ctx_ && !tls_) {
		// The version gate, in plaintext.
		wire::Header g{};
		g.version = wire::kWireMinVersion;
		g.type = static_cast<uint8_t>(wire::MsgType::kHello);
		g.tclass = static_cast<uint8_t>(conn_class_); // the module marks its side so
		uint8_t gp[wire::kHelloRequestSize];
		wire::encode_hello_request(wire::HelloRequest{}, gp);
		auto gate = exchange(g, gp, nullptr);
		if (!gate) {
			if (gate.status().message().find("no common wire version") !=
			    std::string::npos)
				return Status(Code::kProtocol,
				              "module at " + peer_.endpoint +
				                      " speaks an older wire version than " +
				                      std::to_string(wire::kWireMinVersion) +
				                      "; upgrade it (it said: " +
				                      gate.status().message() + ")");
			return gate.status();
		}
		auto gr = wire::decode_hello_response(gate->payload);
		if (!gr)
			return gr.status();
		if (!(gr->capabilities & wire::kCapTls))
			return Status(Code::kProtocol,
			              "module at " + peer_.endpoint +
			                      " does not offer TLS (it runs without a node key); "
			                      "refusing to talk to it in plaintext");
		MF_RETURN_IF_ERROR(tls_handshake());
		peer_.authenticated = true;
		peer_.key = tls_->peer_key();
		peer_.key_name = tls_->peer_name();
	}
	wire::Header h{};
	h.version = wire::kWireMinVersion;
	h.type = static_cast<uint8_t>(wire::MsgType::kHello);
	h.tclass = static_cast<uint8_t>(conn_class_);
	wire::HelloRequest req;
	req.capabilities = capabilities;
	uint8_t p[wire::kHelloRequestSize];
	wire::encode_hello_request(req, p);
	auto resp = exchange(h, p, nullptr);
	if (!resp)
		return resp.status();
	auto hr = wire::decode_hello_response(resp->payload);
	if (!hr)
		return hr.status();
	ModuleId module{resp->header.src_module};
	version_ = static_cast<uint8_t>(hr->version);
	peer_.module = module;
	peer_.version = version_;
	peer_.capabilities = hr->capabilities;
	peer_.capacity_bytes = hr->capacity_bytes;
	if (!tls_ && (hr->capabilities & wire::kCapTls))
		return Status(Code::kPermission,
		              "module at " + peer_.endpoint +
		                      " requires authenticated, encrypted connections: this client "
		                      "has no node key (give it a TlsContext)");
	return Status::ok();
}

Result<SyncClient::Response> SyncClient::call(const wire::Header &hdr,
                                              std::span<const uint8_t> payload)
{
	wire::Header h = hdr;
	return exchange(h, payload, nullptr);
}

namespace
{
// A request about `count` pages at `fa_offset` of `region_id`.
wire::Header page_header(wire::MsgType t, wire::TrafficClass tc, uint32_t region_id,
                         uint64_t fa_offset, uint32_t count)
{
	wire::Header h{};
	h.type = static_cast<uint8_t>(t);
	h.tclass = static_cast<uint8_t>(tc);
	h.region_id = region_id;
	h.offset = fa_offset;
	h.count = count;
	return h;
}
} // namespace

Status SyncClient::read_pages(uint32_t region_id, uint64_t fa_offset, uint32_t count, void *dst,
                              wire::TrafficClass tc)
{
	wire::Header h = page_header(wire::MsgType::kRead, tc, region_id, fa_offset, count);
	auto r = exchange(h, {}, dst);
	return r ? Status::ok() : r.status();
}

Status SyncClient::write_pages(uint32_t region_id, uint64_t fa_offset, uint32_t count,
                               const void *src, wire::TrafficClass tc)
{
	wire::Header h = page_header(wire::MsgType::kWrite, tc, region_id, fa_offset, count);
	std::span<const uint8_t> p(static_cast<const uint8_t *>(src),
	                           size_t{count} * wire::kPageSize);
	auto r = exchange(h, p, nullptr);
	return r ? Status::ok() : r.status();
}

Status SyncClient::write_pages_versioned(uint32_t region_id, uint64_t fa_offset, uint32_t count,
                                         const void *src, uint64_t version, bool repair,
                                         uint32_t *applied, wire::TrafficClass tc)
{
	*applied = 0;
	if (version == 0)
		return Status(
		        Code::kInvalidArgument,
		        "WRITE_VERSIONED needs a nonzero page version (0 means never written)");
	if (count == 0 || count > wire::kMaxPagesPerRequest)
		return Status(Code::kInvalidArgument,
		              "WRITE_VERSIONED of " + std::to_string(count) + " pages: give 1.." +
		                      std::to_string(wire::kMaxPagesPerRequest));
	wire::Header h =
	        page_header(wire::MsgType::kWriteVersioned, tc, region_id, fa_offset, count);
	std::vector<uint8_t> p(wire::kVersionedWriteSize + size_t{count} * wire::kPageSize);
	wire::encode_versioned_write(
	        wire::WireVersionedWrite{version, repair ? wire::kVersionedRepair : 0, 0},
	        p.data());
	std::memcpy(p.data() + wire::kVersionedWriteSize, src, size_t{count} * wire::kPageSize);
	auto r = exchange(h, p, nullptr);
	if (!r)
		return r.status();
	auto n = wire::decode_applied(count, r->payload);
	if (!n)
		return n.status();
	*applied = *n;
	return Status::ok();
}

Status SyncClient::read_pages_versioned(uint32_t region_id, uint64_t fa_offset, uint32_t count,
                                        void *dst, uint64_t *versions, wire::TrafficClass tc)
{
	wire::Header h =
	        page_header(wire::MsgType::kReadVersioned, tc, region_id, fa_offset, count);
	auto r = exchange(h, {}, nullptr); // checks payload_crc (kCorrupt on a mismatch)
	if (!r)
		return r.status();
	auto pages = wire::decode_read_versioned(count, r->payload, versions);
	if (!pages)
		return pages.status();
	std::memcpy(dst, pages->data(), pages->size());
	return Status::ok();
}

Status SyncClient::read_versions(uint32_t region_id, uint64_t fa_offset, uint32_t count,
                                 uint64_t *versions, wire::TrafficClass tc)
{
	wire::Header h = page_header(wire::MsgType::kReadVersions, tc, region_id, fa_offset, count);
	auto r = exchange(h, {}, nullptr);
	if (!r)
		return r.status();
	return wire::decode_versions(count, r->payload, versions);
}

namespace
{
wire::Header control_header(wire::MsgType t)
{
	wire::Header h{};
	h.type = static_cast<uint8_t>(t);
	h.tclass = static_cast<uint8_t>(wire::TrafficClass::kControl);
	return h;
}
} // namespace

Result<wire::WireRegion> SyncClient::region_create(const wire::WireRegionSpec &spec)
{
	uint8_t p[wire::kRegionSpecSize];
	wire::encode_region_spec(spec, p);
	wire::Header h = control_header(wire::MsgType::kRegionCreate);
	auto r = exchange(h, p, nullptr);
	if (!r)
		return r.status();
	return wire::decode_region(r->payload);
}

Status SyncClient::region_delete(const std::string &name)
{
	if (!valid_region_name(name))
		return Status(Code::kInvalidArgument, "region name '" + name + "' is invalid");
	wire::Header h = control_header(wire::MsgType::kRegionDelete);
	auto r = exchange(h, wire::encode_name(name), nullptr);
	return r ? Status::ok() : r.status();
}

Result<wire::WireRegion> SyncClient::region_lookup(const std::string &name)
{
	if (!valid_region_name(name))
		return Status(Code::kInvalidArgument, "region name '" + name + "' is invalid");
	wire::Header h = control_header(wire::MsgType::kRegionLookup);
	auto r = exchange(h, wire::encode_name(name), nullptr);
	if (!r)
		return r.status();
	return wire::decode_region(r->payload);
}

Result<wire::WireRegion> SyncClient::region_set_length(const std::string &name, uint64_t length,
                                                       bool grow_only)
{
	auto s = wire::make_set_length(name, length, grow_only);
	if (!s)
		return s.status();
	uint8_t p[wire::kSetLengthSize];
	wire::encode_set_length(*s, p);
	wire::Header h = control_header(wire::MsgType::kRegionSetLength);
	auto r = exchange(h, p, nullptr);
	if (!r)
		return r.status();
	return wire::decode_region(r->payload);
}

Result<std::vector<wire::WireRegion>>
SyncClient::region_list_page(const std::string &after, uint32_t limit, bool *more,
                             std::optional<uint32_t> asker_uid)
{
	if (!after.empty() && !valid_region_name(after))
		return Status(Code::kInvalidArgument, "region name '" + after + "' is invalid");
	uint32_t want = limit == 0 || limit > wire::kRegionListPage ? wire::kRegionListPage : limit;
	wire::Header h = control_header(wire::MsgType::kRegionList);
	auto r = exchange(h,
	                  asker_uid ? wire::encode_asked_list_request(after, want, *asker_uid)
	                            : wire::encode_list_request(after, want),
	                  nullptr);
	if (!r)
		return r.status();
	auto list = wire::decode_region_list(r->payload);
	if (!list)
		return list.status();
	// A module older than paging answers every region, in its own order.
	std::vector<wire::WireRegion> out;
	for (const wire::WireRegion &w : *list)
		if (after.empty() || wire::region_name(w) > after)
			out.push_back(w);
	bool sorted = std::is_sorted(out.begin(), out.end(), [](const auto &a, const auto &b) {
		return wire::region_name(a) < wire::region_name(b);
	});
	if (!sorted)
		std::sort(out.begin(), out.end(), [](const auto &a, const auto &b) {
			return wire::region_name(a) < wire::region_name(b);
		});
	*more = out.size() >= want;
	if (out.size() > want)
		out.resize(want);
	return out;
}

Result<std::vector<wire::WireRegion>> SyncClient::region_list()
{
	std::vector<wire::WireRegion> all;
	std::string after;
	bool more = true;
	while (more) {
		auto page = region_list_page(after, 0, &more);
		if (!page)
			return page.status();
		if (page->empty())
			break;
		after = wire::region_name(page->back());
		all.insert(all.end(), page->begin(), page->end());
	}
	return all;
}

Result<wire::WireStat> SyncClient::stat()
{
	wire::Header h = control_header(wire::MsgType::kStat);
	auto r = exchange(h, {}, nullptr);
	if (!r)
		return r.status();
	return wire::decode_stat(r->payload);
}

} // namespace memfed
