// Control messages: the local protocol between memfedd and its clients
// (memfedctl, libmemfed, the preload shim) on the daemon's Unix socket.
//
// The socket is SOCK_SEQPACKET, so message boundaries are kept and file
// descriptors (userfaultfds) ride along with the message they belong to.
// One packet is one message:
//
//   <JSON object, UTF-8> [ '\0' <binary data> ]
//
// A request object has "op" (string) and op-specific fields. A reply has
// "ok": true plus results, or "ok": false, "code" (a memfed::Code name) and
// "error" (a message naming the thing and the fix). Binary data (region
// bytes for region.read / region.write) follows the NUL.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "daemon/common/status.h"

namespace memfed::control {

constexpr size_t kMaxPacket = 160 * 1024;    // fits the default socket buffers
constexpr size_t kMaxData = 128 * 1024;      // binary part of one message
constexpr size_t kMaxFds = 4;

struct Message {
	nlohmann::json body = nlohmann::json::object();
	std::vector<uint8_t> data;
	std::vector<int> fds; // received fds are owned by the receiver
};

// Parses one packet. Fails (kProtocol) on: non-JSON or non-object text,
// nesting deeper than 16, an oversized packet. Never throws.
Result<Message> parse_packet(const uint8_t *buf, size_t len);
// Serialises; fails if the result would exceed kMaxPacket.
Result<std::vector<uint8_t>> encode_packet(const Message &m);

// One sendmsg with m.fds attached as SCM_RIGHTS.
Status send_message(int sock, const Message &m);
// One recvmsg; kUnavailable on orderly shutdown by the peer. Closes any fds
// that arrive with a malformed message.
Result<Message> recv_message(int sock);

// Reply helpers.
Message ok_reply(nlohmann::json fields = nlohmann::json::object());
Message error_reply(const Status &st);
// Status of a reply: OK if "ok" is true, else its code and error.
Status reply_status(const Message &reply);

} // namespace memfed::control
