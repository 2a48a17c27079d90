#include "daemon/control/server.h"

#include <cerrno>
#include <cstring>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/common/log.h"

namespace memfed::control {

Server::~Server()
{
	stop();
	if (listen_fd_ >= 0)
		close(listen_fd_);
	if (stop_fd_ >= 0)
		close(stop_fd_);
}

Status Server::listen(const std::string &path, mode_t mode)
{
	sockaddr_un sa{};
	sa.sun_family = AF_UNIX;
	if (path.size() >= sizeof(sa.sun_path))
		return Status(Code::kInvalidArgument,
			      "control socket path '" + path + "' is longer than " +
				      std::to_string(sizeof(sa.sun_path) - 1) + " bytes");
	std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);

	// A socket file that nobody answers on is a leftover of a dead daemon;
	// one that answers belongs to a live daemon and must not be stolen.
	int probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (probe >= 0) {
		if (connect(probe, reinterpret_cast<sockaddr *>(&sa), sizeof(sa)) == 0) {
			close(probe);
			return Status(Code::kBusy, "another memfedd is serving " + path +
							   " (stop it, or give this one --socket)");
		}
		close(probe);
	}
	unlink(path.c_str());

	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return Status::from_errno(errno, "creating control socket");
	if (bind(fd, reinterpret_cast<sockaddr *>(&sa), sizeof(sa)) < 0) {
		int err = errno;
		close(fd);
		return Status::from_errno(err, "binding control socket " + path);
	}
	chmod(path.c_str(), mode);
	if (::listen(fd, 64) < 0) {
		int err = errno;
		close(fd);
		return Status::from_errno(err, "listening on control socket " + path);
	}
	listen_fd_ = fd;
	path_ = path;
	return Status::ok();
}

void Server::add_op(const std::string &op, OpHandler h) { ops_[op] = std::move(h); }

Status Server::start()
{
	if (listen_fd_ < 0)
		return Status(Code::kInternal, "control server started before listen()");
	stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (stop_fd_ < 0)
		return Status::from_errno(errno, "creating control stop eventfd");
	running_ = true;
	thread_ = std::thread([this] { accept_loop(); });
	return Status::ok();
}

void Server::stop()
{
	if (!running_.exchange(false))
		return;
	uint64_t one = 1;
	if (write(stop_fd_, &one, sizeof(one)) < 0)
		LOG_WARN("control", "waking the accept loop failed: %s", std::strerror(errno));
	if (thread_.joinable())
		thread_.join();
	// Unblock every connection thread and wait for them to finish.
	std::unique_lock<std::mutex> lk(conns_mu_);
	for (auto &[id, fd] : conns_)
		shutdown(fd, SHUT_RDWR);
	conns_cv_.wait(lk, [this] { return active_ == 0; });
	if (!path_.empty())
		unlink(path_.c_str());
}

void Server::accept_loop()
{
	while (running_) {
		pollfd pfd[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			LOG_ERROR("control", "poll on control socket failed: %s", std::strerror(errno));
			return;
		}
		if (pfd[1].revents)
			return;
		int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
				LOG_WARN("control", "accept failed: %s", std::strerror(errno));
			continue;
		}
		ucred cred{};
		socklen_t len = sizeof(cred);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
			LOG_WARN("control", "dropping a client whose credentials cannot be read: %s",
				 std::strerror(errno));
			close(fd);
			continue;
		}
		Peer peer{cred.pid, cred.uid, cred.gid, next_conn_id_++};
		{
			std::lock_guard<std::mutex> lk(conns_mu_);
			conns_[peer.conn_id] = fd;
			active_++;
		}
		std::thread([this, fd, peer] { serve(fd, peer); }).detach();
	}
}

void Server::serve(int fd, Peer peer)
{
	LOG_DEBUG("control", "client pid %d uid %u connected (conn %d)", peer.pid, peer.uid,
		  peer.conn_id);
	while (true) {
		auto req = recv_message(fd);
		if (!req) {
			if (req.status().code() == Code::kProtocol) {
				// Tell the client why, then keep serving: one bad message
				// does not poison the connection.
				if (send_message(fd, error_reply(req.status())))
					continue;
			} else if (req.status().code() != Code::kUnavailable) {
				LOG_DEBUG("control", "conn %d: %s", peer.conn_id,
					  req.status().to_string().c_str());
			}
			break;
		}
		auto op_it = req->body.find("op");
		std::string op = op_it != req->body.end() && op_it->is_string() ? op_it->get<std::string>() : "?";
		Message reply = dispatch(peer, *req);
		if (!send_reply(fd, peer, op, reply))
			break;
	}
	for (auto &h : disconnect_handlers_)
		h(peer);
	std::lock_guard<std::mutex> lk(conns_mu_);
	conns_.erase(peer.conn_id);
	close(fd);
	active_--;
	conns_cv_.notify_all();
}

bool Server::send_reply(int fd, const Peer &peer, const std::string &op, const Message &reply)
{
	auto pkt = encode_packet(reply);
	if (!pkt) {
		// A reply that outgrew the packet is a daemon bug: say so in the log
		// and to the client, and keep the connection.
		LOG_WARN("control", "conn %d (pid %d): reply to '%s' cannot be sent: %s", peer.conn_id,
			 int(peer.pid), op.c_str(), pkt.status().message().c_str());
		Message err = error_reply(Status(Code::kInternal, "memfedd could not send its reply to '" +
									  op + "': " + pkt.status().message() +
									  " (a memfedd bug: please report it)"));
		return send_message(fd, err).is_ok();
	}
	Status st = send_message(fd, reply);
	if (!st) {
		int err = errno;
		if (err == EPIPE || err == ECONNRESET) // the client went away
			LOG_DEBUG("control", "conn %d: %s", peer.conn_id, st.to_string().c_str());
		else
			LOG_WARN("control", "conn %d (pid %d): reply to '%s' not sent: %s", peer.conn_id,
				 int(peer.pid), op.c_str(), st.to_string().c_str());
		return false;
	}
	return true;
}

Message Server::dispatch(const Peer &peer, Message &req)
{
	auto close_fds = [&req] {
		for (int fd : req.fds)
			close(fd);
		req.fds.clear();
	};
	auto op = req.body.find("op");
	if (op == req.body.end() || !op->is_string()) {
		close_fds();
		return error_reply(Status(Code::kInvalidArgument,
					  "control request has no \"op\" string (memfedctl --help lists the commands)"));
	}
	auto it = ops_.find(op->get<std::string>());
	if (it == ops_.end()) {
		close_fds();
		return error_reply(Status(Code::kInvalidArgument,
					  "unknown control op '" + op->get<std::string>() +
						  "' (is memfedctl newer than memfedd?)"));
	}
	try {
		return it->second(peer, req);
	} catch (const nlohmann::json::exception &e) {
		// A field of the wrong type: the handler's get<T>() threw.
		close_fds();
		return error_reply(Status(Code::kInvalidArgument,
					  "bad field in '" + op->get<std::string>() + "' request: " + e.what()));
	}
}

} // namespace memfed::control
