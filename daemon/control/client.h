// ControlClient: a blocking connection to memfedd's control socket, used by
// memfedctl and libmemfed. One request, one reply; not thread-safe (use one
// client per thread or lock around call()).
#pragma once

#include <functional>
#include <string>

#include "daemon/control/message.h"

namespace memfed::control {

// The control socket path: $MEMFED_SOCKET if set, else kDefaultSocketPath.
std::string default_socket_path();
constexpr const char *kDefaultSocketPath = "/run/memfed/memfedd.sock";

class Client {
public:
	Client() = default;
	~Client();
	Client(Client &&o) noexcept;
	Client &operator=(Client &&o) noexcept;
	Client(const Client &) = delete;
	Client &operator=(const Client &) = delete;

	// kUnavailable with a hint to start memfedd when nothing listens.
	static Result<Client> connect(const std::string &path);

	// Sends `req` and waits for its reply. A reply with "ok": false is
	// returned as a Message, not as an error: check reply_status().
	Result<Message> call(const Message &req);
	// call() and fold an error reply into the Status.
	Result<Message> call_ok(const Message &req);

	int fd() const { return fd_; }
	const std::string &path() const { return path_; }

private:
	int fd_ = -1;
	std::string path_;
};

// Every region whose name starts with `prefix` (empty: every region), in
// name order, through as many region.list pages as it takes; `fn` sees each
// region's JSON (control_ops.h region_json). Stops at the first error.
Status for_each_region(Client &c, const std::string &prefix,
		       const std::function<void(const nlohmann::json &)> &fn);

} // namespace memfed::control
