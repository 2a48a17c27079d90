// ControlServer: memfedd's Unix control socket.
//
// Components register the ops they serve ("region.create", "map", ...); the
// server accepts connections, reads each peer's credentials (SO_PEERCRED)
// and dispatches every request to its op's handler. Each connection has its
// own thread, so a handler that waits on a remote module delays only its own
// client; handlers must therefore be thread-safe.
//
// Thread-safety: add_op()/on_disconnect() before start(); stop() from any
// thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
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
	void accept_loop();
	void serve(int fd, Peer peer);
	Message dispatch(const Peer &peer, Message &req);
	// Sends `reply`; one that cannot be encoded is logged (naming the op
	// and the reason) and replaced by an error reply. false: drop the
	// connection (a send failed, logged unless the client went away).
	bool send_reply(int fd, const Peer &peer, const std::string &op, const Message &reply);

	std::string path_;
	int listen_fd_ = -1;
	int stop_fd_ = -1;
	std::map<std::string, OpHandler> ops_;
	std::vector<DisconnectHandler> disconnect_handlers_;
	std::thread thread_;
	std::atomic<bool> running_{false};
	std::atomic<int> next_conn_id_{1};
	std::mutex conns_mu_;
	std::condition_variable conns_cv_;
	std::map<int, int> conns_; // conn_id -> fd, for stop()
	int active_ = 0;
};

} // namespace memfed::control
