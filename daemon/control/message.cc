#include "daemon/control/message.h"

#include <cerrno>
#include <cstring>
#include <sys/socket.h>
#include <unistd.h>

namespace memfed::control {

using nlohmann::json;

namespace {

// Rejects documents nested deeper than kMaxDepth before handing them to the
// parser, so a hostile client cannot exhaust the stack.
constexpr int kMaxDepth = 16;

bool depth_ok(const uint8_t *p, size_t n)
{
	int depth = 0;
	bool in_str = false, esc = false;
	for (size_t i = 0; i < n; i++) {
		char c = char(p[i]);
		if (in_str) {
			if (esc)
				esc = false;
			else if (c == '\\')
				esc = true;
			else if (c == '"')
				in_str = false;
			continue;
		}
		if (c == '"')
			in_str = true;
		else if (c == '{' || c == '[') {
			if (++depth > kMaxDepth)
				return false;
		} else if (c == '}' || c == ']')
			depth--;
	}
	return true;
}

} // namespace

Result<Message> parse_packet(const uint8_t *buf, size_t len)
{
	if (len > kMaxPacket)
		return Status(Code::kProtocol, "control message of " + std::to_string(len) +
						       " bytes exceeds the limit of " +
						       std::to_string(kMaxPacket));
	const uint8_t *nul = static_cast<const uint8_t *>(std::memchr(buf, 0, len));
	size_t text_len = nul ? size_t(nul - buf) : len;
	if (text_len == 0)
		return Status(Code::kProtocol, "control message has no JSON text");
	if (!depth_ok(buf, text_len))
		return Status(Code::kProtocol, "control message nests deeper than 16 levels");
	Message m;
	m.body = json::parse(buf, buf + text_len, nullptr, /*allow_exceptions=*/false);
	if (m.body.is_discarded())
		return Status(Code::kProtocol, "control message is not valid JSON");
	if (!m.body.is_object())
		return Status(Code::kProtocol, "control message must be a JSON object");
	if (nul)
		m.data.assign(nul + 1, buf + len);
	if (m.data.size() > kMaxData)
		return Status(Code::kProtocol, "control message data exceeds " +
						       std::to_string(kMaxData) + " bytes");
	return m;
}

Result<std::vector<uint8_t>> encode_packet(const Message &m)
{
	std::string text;
	try {
		text = m.body.dump(-1, ' ', false, json::error_handler_t::replace);
	} catch (const std::exception &e) {
		return Status(Code::kInvalidArgument, std::string("cannot encode control message: ") + e.what());
	}
	std::vector<uint8_t> out(text.begin(), text.end());
	if (!m.data.empty()) {
		out.push_back(0);
		out.insert(out.end(), m.data.begin(), m.data.end());
	}
	if (out.size() > kMaxPacket || m.data.size() > kMaxData)
		return Status(Code::kInvalidArgument, "control message too large (" +
							      std::to_string(out.size()) + " bytes)");
	return out;
}

Status send_message(int sock, const Message &m)
{
	auto pkt = encode_packet(m);
	if (!pkt)
		return pkt.status();
	if (m.fds.size() > kMaxFds)
		return Status(Code::kInvalidArgument, "too many fds in one control message");
	iovec iov{pkt->data(), pkt->size()};
	msghdr mh{};
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * kMaxFds)];
	if (!m.fds.empty()) {
		mh.msg_control = cbuf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * m.fds.size());
		cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * m.fds.size());
		std::memcpy(CMSG_DATA(c), m.fds.data(), sizeof(int) * m.fds.size());
	}
	while (true) {
		ssize_t n = sendmsg(sock, &mh, MSG_NOSIGNAL);
		if (n >= 0)
			return Status::ok();
		if (errno == EINTR)
			continue;
		return Status::from_errno(errno, "sending control message");
	}
}

Result<Message> recv_message(int sock)
{
	std::vector<uint8_t> buf(kMaxPacket + 1);
	iovec iov{buf.data(), buf.size()};
	msghdr mh{};
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * kMaxFds)];
	mh.msg_control = cbuf;
	mh.msg_controllen = sizeof(cbuf);
	ssize_t n;
	do {
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return Status::from_errno(errno, "receiving control message");
	std::vector<int> fds;
	for (cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (size_t i = 0; i < k; i++) {
				int fd;
				std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
				fds.push_back(fd);
			}
		}
	}
	auto close_fds = [&] {
		for (int fd : fds)
			close(fd);
	};
	if (n == 0) {
		close_fds();
		return Status(Code::kUnavailable, "control peer closed the connection");
	}
	if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
		close_fds();
		return Status(Code::kProtocol, "control message truncated (too large)");
	}
	auto m = parse_packet(buf.data(), size_t(n));
	if (!m) {
		close_fds();
		return m.status();
	}
	m->fds = std::move(fds);
	return m;
}

Message ok_reply(json fields)
{
	Message m;
	m.body = std::move(fields);
	if (!m.body.is_object())
		m.body = json::object();
	m.body["ok"] = true;
	return m;
}

Message error_reply(const Status &st)
{
	Message m;
	m.body = {{"ok", false}, {"code", code_name(st.code())}, {"error", st.message()}};
	return m;
}

Status reply_status(const Message &reply)
{
	const auto &b = reply.body;
	auto ok = b.find("ok");
	if (ok != b.end() && ok->is_boolean() && ok->get<bool>())
		return Status::ok();
	std::string code = b.value("code", std::string("internal"));
	std::string err = b.value("error", std::string("daemon reported an error without a message"));
	return Status(code_from_name(code), err);
}

} // namespace memfed::control
