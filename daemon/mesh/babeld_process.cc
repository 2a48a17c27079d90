#include "daemon/mesh/babeld_process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <vector>

#include "daemon/common/log.h"

extern char **environ;

namespace memfed::mesh
{

std::string find_executable(const std::string &name)
{
	if (name.find('/') != std::string::npos)
		return access(name.c_str(), X_OK) == 0 ? name : "";
	const char *path = getenv("PATH");
	std::string dirs = path ? path : "/usr/sbin:/usr/bin:/sbin:/bin";
	// babeld lives in /usr/sbin, which a user's PATH may lack.
	dirs += ":/usr/local/sbin:/usr/sbin:/sbin";
	size_t start = 0;
	while (start <= dirs.size()) {
		size_t colon = dirs.find(':', start);
		if (colon == std::string::npos)
			colon = dirs.size();
		std::string cand = dirs.substr(start, colon - start) + "/" + name;
		if (colon > start && access(cand.c_str(), X_OK) == 0)
			return cand;
		start = colon + 1;
	}
	return "";
}

Result<std::string> locate_babeld(const std::string &name)
{
	std::string bin = find_executable(name);
	if (bin.empty())
		return Status(
		        Code::kNotFound,
		        "babeld ('" + name +
		                "') not found: the mesh needs it (apt-get install babeld, or make "
		                "deps; or set mesh.babeld to its path)");
	return bin;
}

Status BabeldProcess::start()
{
	auto bin = locate_babeld(opts_.babeld);
	if (!bin)
		return bin.status();
	opts_.babeld = *bin;
	std::ofstream f(opts_.config_path, std::ios::trunc);
	f << babeld_config_text(opts_);
	f.close();
	if (!f)
		return Status(Code::kIo, "cannot write babeld config " + opts_.config_path);
	// A state file from an earlier babeld would resend its old sequence
	// numbers; a stale socket would refuse the bind.
	unlink(opts_.socket_path.c_str());
	{
		std::lock_guard<std::mutex> lk(mu_);
		stopping_ = false;
		MF_RETURN_IF_ERROR(spawn());
	}
	watcher_ = std::thread([this] { watch(); });
	return Status::ok();
}

// REQUIRES: mu_ held.
Status BabeldProcess::spawn()
{
	auto argv_s = babeld_argv(opts_);
	std::vector<char *> argv;
	for (auto &a : argv_s)
		argv.push_back(a.data());
	argv.push_back(nullptr);
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND,
	                                 0640);
	posix_spawn_file_actions_adddup2(&fa, 1, 2);
	// memfedd blocks its stop signals in every thread; babeld must see them.
	posix_spawnattr_t attr;
	posix_spawnattr_init(&attr);
	sigset_t none;
	sigemptyset(&none);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
	pid_t pid = -1;
	int rc = posix_spawn(&pid, argv[0], &fa, &attr, argv.data(), environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	if (rc != 0)
		return Status::from_errno(rc, "cannot start " + opts_.babeld);
	pid_ = pid;
	LOG_INFO("mesh", "babeld started (pid %d), config %s, log %s", int(pid),
	         opts_.config_path.c_str(), log_path_.c_str());
	return Status::ok();
}

void BabeldProcess::watch()
{
	while (true) {
		pid_t pid;
		{
			std::lock_guard<std::mutex> lk(mu_);
			pid = pid_;
		}
		if (pid < 0)
			return;
		int wst = 0;
		while (waitpid(pid, &wst, 0) < 0 && errno == EINTR) {
		}
		std::unique_lock<std::mutex> lk(mu_);
		pid_ = -1;
		if (stopping_) {
			cv_.notify_all();
			return;
		}
		std::string why = WIFEXITED(wst)
		                          ? "exited with status " + std::to_string(WEXITSTATUS(wst))
		                          : std::string("killed by ") + strsignal(WTERMSIG(wst));
		LOG_WARN("mesh", "babeld %s (see %s); restarting it in 1 s", why.c_str(),
		         log_path_.c_str());
		lk.unlock();
		if (on_exit_)
			on_exit_(why);
		lk.lock();
		if (cv_.wait_for(lk, std::chrono::seconds(1), [this] { return stopping_; }))
			return;
		unlink(opts_.socket_path.c_str());
		Status st = spawn();
		if (!st) {
			LOG_ERROR("mesh", "%s", st.message().c_str());
			return;
		}
	}
}

void BabeldProcess::stop()
{
	std::unique_lock<std::mutex> lk(mu_);
	stopping_ = true;
	cv_.notify_all();
	if (pid_ > 0) {
		kill(pid_, SIGTERM);
		if (!cv_.wait_for(lk, std::chrono::seconds(2), [this] { return pid_ < 0; }) &&
		    pid_ > 0) {
			LOG_WARN("mesh", "babeld (pid %d) ignored SIGTERM for 2 s; killing it",
			         int(pid_));
			kill(pid_, SIGKILL);
		}
	}
	lk.unlock();
	if (watcher_.joinable())
		watcher_.join();
	unlink(opts_.socket_path.c_str());
}

} // namespace memfed::mesh
