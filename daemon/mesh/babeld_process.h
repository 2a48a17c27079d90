// BabeldProcess: the babeld that routes for this node, started, watched and
// stopped by memfedd.
//
// memfedd writes babeld's config (babeld_config.h), starts babeld in the
// foreground as its child with its output appended to a log file, and
// restarts it (after a second, logging why) when it dies. stop() sends
// SIGTERM, waits for it, and SIGKILLs it if it does not go within two
// seconds; babeld withdraws its routes as it exits.
//
// Thread-safety: start() and stop() from one thread; a watcher thread of its
// own reaps and restarts the child.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "daemon/common/status.h"
#include "daemon/mesh/babeld_config.h"

namespace memfed::mesh
{

class BabeldProcess
{
public:
	explicit BabeldProcess(BabeldOptions o, std::string log_path)
	    : opts_(std::move(o)), log_path_(std::move(log_path))
	{
	}
	~BabeldProcess() { stop(); }

	// kNotFound naming the package when the binary is missing; the config
	// is written first.
	Status start();
	void stop();
	// Called (on the watcher thread) each time babeld exits unexpectedly.
	void on_exit(std::function<void(const std::string &why)> f) { on_exit_ = std::move(f); }

private:
	Status spawn();
	void watch();

	BabeldOptions opts_;
	std::string log_path_;
	std::function<void(const std::string &)> on_exit_;
	std::mutex mu_;
	std::condition_variable cv_;
	pid_t pid_ = -1;        // guarded by mu_
	bool stopping_ = false; // guarded by mu_
	std::thread watcher_;
};

// The full path of `name` found in PATH (or `name` itself when it has a '/'),
// or "" when there is none.
std::string find_executable(const std::string &name);
// The babeld binary `name` names, or kNotFound saying how to install it.
Result<std::string> locate_babeld(const std::string &name);

} // namespace memfed::mesh
