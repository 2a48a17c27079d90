#include "daemon/service/table_mirror.h"

#include "daemon/common/log.h"
#include "daemon/wire/protocol.h"

namespace memfed
{

TableMirror::TableMirror(const DaemonConfig &cfg, NodeFederation *fed) : cfg_(cfg), fed_(fed) {}

TableMirror::~TableMirror()
{
	stop();
}

void TableMirror::open()
{
	if (cfg_.kmod == "off")
		return;
	loaded_ = kmod::KmodLink::available();
	if (!loaded_)
		return;
	auto l = kmod::KmodLink::open();
	if (!l) {
		LOG_WARN(
		        "kmod",
		        "memfed.ko is loaded but cannot be used (%s): keeping tables in the daemon",
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

void TableMirror::read_back_held()
{
	std::lock_guard<std::mutex> lk(mu_);
	held_ = {};
	if (auto ms = link_->modules())
		for (auto &m : *ms)
			held_.modules[m.id] = std::move(m);
	else
		LOG_WARN("kmod", "reading modules back: %s", ms.status().to_string().c_str());
	if (auto rs = link_->routes())
		for (auto &r : *rs)
			held_.routes[{r.dest, r.tclass}] = std::move(r);
	else
		LOG_WARN("kmod", "reading routes back: %s", rs.status().to_string().c_str());
}

void TableMirror::sync_modules_and_routes()
{
	// Asked outside mu_: the federation may wait on a peer.
	std::vector<mesh::ModuleRoute> routes;
	if (mesh_routes_)
		routes = mesh_routes_();
	MirrorTables want = want_tables(fed_->modules(), routes, wire::kTrafficClassMax + 1);
	std::lock_guard<std::mutex> lk(mu_);
	MirrorChanges c = diff_tables(held_, want);
	// A failed change stays out of held_ and is tried again next time.
	for (const auto &key : c.del_routes) {
		Status st = link_->del_route(key.first, key.second);
		if (st || st.code() == Code::kNotFound)
			held_.routes.erase(key);
		else
			LOG_WARN("kmod", "deleting the route to %s: %s",
			         key.first.to_string().c_str(), st.to_string().c_str());
	}
	for (const auto &id : c.del_modules) {
		Status st = link_->del_module(id);
		if (st || st.code() == Code::kNotFound)
			held_.modules.erase(id);
		else
			LOG_WARN("kmod", "deleting module %s: %s", id.to_string().c_str(),
			         st.to_string().c_str());
	}
	for (const auto &m : c.set_modules) {
		Status st = link_->set_module(m);
		if (st)
			held_.modules[m.id] = m;
		else
			LOG_WARN("kmod", "mirroring module %s: %s", m.id.to_string().c_str(),
			         st.to_string().c_str());
	}
	for (const auto &r : c.set_routes) {
		Status st = link_->set_route(r);
		if (st)
			held_.routes[{r.dest, r.tclass}] = r;
		else
			LOG_WARN("kmod", "mirroring the route to %s: %s",
			         r.dest.to_string().c_str(), st.to_string().c_str());
	}
}

void TableMirror::kick()
{
	{
		std::lock_guard<std::mutex> lk(stop_mu_);
		kicked_ = true;
	}
	stop_cv_.notify_all();
}

void TableMirror::start(const WindowTable &windows, int period_ms)
{
	if (!link_)
		return;
	for (const auto &w : windows.list())
		window_changed(w);
	read_back_held();
	sync_modules_and_routes();
	thread_ = std::thread([this, period_ms] { refresh_loop(period_ms); });
}

void TableMirror::refresh_loop(int period_ms)
{
	std::unique_lock<std::mutex> lk(stop_mu_);
	for (;;) {
		stop_cv_.wait_for(lk, std::chrono::milliseconds(period_ms),
		                  [this] { return stopping_ || kicked_; });
		if (stopping_)
			return;
		kicked_ = false;
		lk.unlock();
		sync_modules_and_routes();
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
