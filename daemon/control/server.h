// ControlServer: memfedd's Unix control socket.
//
// Components register the ops they serve ("region.create", "map", ...); the
// server accepts connections, checks each peer's credentials (SO_PEERCRED)
// and dispatches every request to its op's handler on the server's thread.
// Handlers may block briefly (a request to a remote module), never forever.
//
// Thread-safety: add_op() before start(); everything else on the server
// thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <map>
#include <string>
#include <thread>

#include "daemon/control/message.h"

namespace memfed::control {

struct Peer {
	pid_t pid = 0;
	uid_t uid = 0;
	gid_t gid = 0;
	int conn_id = 0; // unique per accepted connection
	bool privileged() const { return uid == 0; }
};

// A handler gets the request (with any fds, which it now owns) and returns
// the reply. It may keep fds beyond the call.
using OpHandler = std::function<Message(const Peer &, Message &req)>;
// Called when a connection closes (clients that mapped regions go away).
using DisconnectHandler = std::function<void(const Peer &)>;

class Server {
public:
	~Server();
	// Binds `path` with mode `mode` (0666: every local user may connect; ops
	// check credentials themselves). Fails kBusy if a live daemon owns it;
	// removes a stale socket file left by a dead one.
	Status listen(const std::string &path, mode_t mode = 0666);
	void add_op(const std::string &op, OpHandler h);
	void on_disconnect(DisconnectHandler h) { disconnect_handlers_.push_back(std::move(h)); }
	// Starts the server thread.
	Status start();
	void stop();
	const std::string &path() const { return path_; }

private:
	void run();
	Message dispatch(const Peer &peer, Message &req);

	std::string path_;
	int listen_fd_ = -1;
	int stop_fd_ = -1;
	std::map<std::string, OpHandler> ops_;
	std::vector<DisconnectHandler> disconnect_handlers_;
	std::thread thread_;
	std::atomic<bool> running_{false};
};

} // namespace memfed::control
