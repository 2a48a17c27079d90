// BabelMonitor: follows babeld's local interface and turns it into events.
//
// It connects to babeld's local socket, sends "monitor" (babeld answers with
// every current interface, neighbour and route, then each change as it
// happens), parses every line (babel_event.h) and hands each event to the
// callback. A bad line is logged and skipped. When babeld goes away the
// monitor says so (on_lost) and reconnects every 100 ms until it is back or
// stop() is called.
//
// Thread-safety: the callbacks run on the monitor's own thread; start() and
// stop() from the owner's thread.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "daemon/common/status.h"
#include "daemon/mesh/babel_event.h"

namespace memfed::mesh
{

class BabelMonitor
{
public:
	using EventFn = std::function<void(const BabelEvent &)>;
	using LostFn = std::function<void(const std::string &why)>;

	BabelMonitor(std::string socket_path, EventFn on_event, LostFn on_lost)
	    : path_(std::move(socket_path)), on_event_(std::move(on_event)),
	      on_lost_(std::move(on_lost))
	{
	}
	~BabelMonitor() { stop(); }

	Status start();
	void stop();

private:
	void run();
	// Reads lines until the connection ends or stop; returns why it ended.
	std::string follow(int fd);

	std::string path_;
	EventFn on_event_;
	LostFn on_lost_;
	int stop_fd_ = -1; // eventfd
	std::thread thread_;
};

} // namespace memfed::mesh
