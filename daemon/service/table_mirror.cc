#include "daemon/service/table_mirror.h"

#include <set>

#include "daemon/common/log.h"
#include "daemon/wire/protocol.h"

namespace memfed {

TableMirror::TableMirror(const DaemonConfig &cfg, NodeFederation *fed) : cfg_(cfg), fed_(fed)
{
}

TableMirror::~TableMirror() { stop(); }

void TableMirror::open()
{
	if (cfg_.kmod == "off")
		return;
	loaded_ = kmod::KmodLink::available();
	if (!loaded_)
		return;
	auto l = kmod::KmodLink::open();
	if (!l) {
		LOG_WARN("kmod", "memfed.ko is loaded but cannot be used (%s): keeping tables in the daemon",
			 l.status().to_string().c_str());
		return;
	}
	link_ = std::move(*l);
	LOG_INFO("kmod", "mirroring tables into memfed.ko");
}

std::string TableMirror::source() const
{
	if (link_)
		return "memfed.ko (generic netlink)";
	if (cfg_.kmod == "off")
		return "daemon (kmod off)";
	return loaded_ ? "daemon (memfed.ko unusable, see log)" : "daemon (memfed.ko not loaded)";
}

uint32_t TableMirror::va_bits()
{
	if (link_) {
		std::lock_guard<std::mutex> lk(mu_);
		auto l = link_->layout();
		if (l)
			return l->va_bits;
		LOG_WARN("kmod", "reading the address layout: %s", l.status().to_string().c_str());
	}
	return detect_va_bits();
}

std::vector<Window> TableMirror::saved_windows()
{
	std::vector<Window> out;
	if (!link_)
		return out;
	std::lock_guard<std::mutex> lk(mu_);
	auto ws = link_->windows();
	if (!ws) {
		LOG_WARN("kmod", "reading windows back: %s", ws.status().to_string().c_str());
		return out;
	}
	// The kmod stores FA ranges, not names: find the regions again (one
	// listing for every window).
	std::vector<RegionLocation> regions;
	if (!ws->empty())
		regions = fed_->list_regions();
	for (const auto &k : *ws) {
		Window w;
		w.index = k.index;
		w.fa = k.fa;
		w.length = k.length;
		w.pid = k.pid;
		w.addr = k.addr;
		for (const auto &r : regions)
			if (r.module == k.fa.module && r.fa_offset == k.fa.offset)
				w.region = r.name;
		out.push_back(w);
	}
	LOG_INFO("kmod", "read %zu windows back from memfed.ko", out.size());
	return out;
}

void TableMirror::window_changed(const Window &w)
{
	if (!link_)
		return;
	std::lock_guard<std::mutex> lk(mu_);
	kmod::WindowEntry e;
	e.index = w.index;
	e.fa = w.fa;
	e.length = w.length;
	e.pid = w.pid;
	e.addr = w.pid ? w.addr : 0;
	Status st = w.length ? link_->set_window(e) : link_->del_window(w.index);
	if (!st)
		LOG_WARN("kmod", "mirroring window %u: %s", w.index, st.to_string().c_str());
}

void TableMirror::push_modules_and_routes()
{
	std::lock_guard<std::mutex> lk(mu_);
	std::set<uint64_t> live;
	for (const auto &m : fed_->modules()) {
		if (!m.module.valid())
			continue; // a peer never reached: no ID to file it under
		live.insert(m.module.value);
		kmod::ModuleEntry e;
		e.id = m.module;
		e.state = m.reachable ? kmod::ModuleState::kUp : kmod::ModuleState::kDown;
		e.capacity = m.capacity_bytes;
		e.endpoint = m.local ? "local" : "tcp:" + m.endpoint;
		e.flags = m.local ? kmod::kModuleLocal : 0;
		Status st = link_->set_module(e);
		if (!st)
			LOG_WARN("kmod", "mirroring module %s: %s", m.module.to_string().c_str(),
				 st.to_string().c_str());
		if (m.local)
			continue; // served in-process: nothing to route
		for (uint32_t tc = 0; tc <= wire::kTrafficClassMax; tc++) {
			kmod::RouteEntry r;
			r.dest = m.module;
			r.tclass = tc;
			r.next_hop = m.module;
			r.metric = m.reachable ? m.hops : UINT32_MAX / 2;
			r.hops = std::max<uint32_t>(1, m.hops);
			st = link_->set_route(r);
			if (!st)
				LOG_WARN("kmod", "mirroring route to %s: %s", m.module.to_string().c_str(),
					 st.to_string().c_str());
		}
	}
}

void TableMirror::start(const WindowTable &windows, int period_ms)
{
	if (!link_)
		return;
	for (const auto &w : windows.list())
		window_changed(w);
	push_modules_and_routes();
	thread_ = std::thread([this, period_ms] { refresh_loop(period_ms); });
}

void TableMirror::refresh_loop(int period_ms)
{
	std::unique_lock<std::mutex> lk(stop_mu_);
	while (!stop_cv_.wait_for(lk, std::chrono::milliseconds(period_ms), [this] { return stopping_; })) {
		lk.unlock();
		push_modules_and_routes();
		lk.lock();
	}
}

void TableMirror::stop()
{
	{
		std::lock_guard<std::mutex> lk(stop_mu_);
		stopping_ = true;
	}
	stop_cv_.notify_all();
	if (thread_.joinable())
		thread_.join();
}

} // namespace memfed
