#include "daemon/service/window_table.h"

#include <fstream>

#include "daemon/service/control_ops.h"

namespace memfed {

using control::error_reply;
using control::Message;
using control::ok_reply;
using nlohmann::json;

uint32_t detect_va_bits()
{
	std::ifstream f("/proc/cpuinfo");
	std::string line;
	while (std::getline(f, line)) {
		// A CPU with 5-level paging gives user space 56 bits (the kernel
		// enables it whenever the CPU has it, as Debian's kernels do); this
		// matches memfed.ko's fls64(TASK_SIZE_MAX).
		if (line.rfind("flags", 0) == 0 && line.find(" la57") != std::string::npos)
			return 56;
		// "address sizes	: 46 bits physical, 48 bits virtual"
		if (line.rfind("address sizes", 0) != 0)
			continue;
		auto comma = line.find(',');
		if (comma == std::string::npos)
			break;
		unsigned virt = unsigned(std::atoi(line.c_str() + comma + 1));
		if (virt >= 40 && virt <= 64)
			return virt - 1; // the upper half belongs to the kernel
		break;
	}
	return 47;
}

WindowTable::WindowTable(uint32_t va_bits) : va_bits_(va_bits) {}

uint32_t WindowTable::index_max() const
{
	uint32_t ext = 64 - va_bits_;
	return ext >= 32 ? UINT32_MAX : (uint32_t{1} << ext) - 1;
}

void WindowTable::changed(const Window &w)
{
	if (on_change_)
		on_change_(w);
}

Result<Window> WindowTable::open(const RegionLocation &r)
{
	Window w;
	{
		std::lock_guard<std::mutex> lk(mu_);
		for (const auto &[i, e] : windows_)
			if (e.region == r.name && e.fa.module == r.module && e.fa.offset == r.fa_offset)
				return e;
		uint32_t index = 1;
		while (windows_.count(index))
			index++;
		if (index > index_max())
			return Status(Code::kNoSpace, "the window table is full (" +
							      std::to_string(index_max()) + " windows)");
		w.index = index;
		w.region = r.name;
		w.fa = {r.module, r.fa_offset};
		w.length = r.size_bytes;
		windows_[index] = w;
	}
	changed(w);
	return w;
}

Result<Window> WindowTable::get(uint32_t index) const
{
	std::lock_guard<std::mutex> lk(mu_);
	auto it = windows_.find(index);
	if (it == windows_.end())
		return Status(Code::kNotFound, "no window has index " + std::to_string(index) +
						       " (memfedctl addr, or window.list)");
	return it->second;
}

Result<Window> WindowTable::resolve(uint64_t eva, uint64_t *offset) const
{
	uint64_t index = eva >> va_bits_;
	if (index == 0)
		return Status(Code::kNotFound, "EVA has no extension bits: it is a plain local pointer");
	auto w = get(uint32_t(index));
	if (!w)
		return w;
	*offset = eva & ((uint64_t{1} << va_bits_) - 1);
	if (*offset >= w->length)
		return Status(Code::kOutOfRange, "offset " + std::to_string(*offset) + " is past the end of window " +
							 std::to_string(index) + " (" +
							 std::to_string(w->length) + " bytes)");
	return w;
}

std::vector<Window> WindowTable::list() const
{
	std::lock_guard<std::mutex> lk(mu_);
	std::vector<Window> out;
	for (const auto &[i, w] : windows_)
		out.push_back(w);
	return out;
}

Status WindowTable::set_mapped(uint32_t index, uint32_t pid, uint64_t addr, int conn_id)
{
	Window w;
	{
		std::lock_guard<std::mutex> lk(mu_);
		auto it = windows_.find(index);
		if (it == windows_.end())
			return Status(Code::kNotFound, "no window has index " + std::to_string(index));
		it->second.pid = pid;
		it->second.addr = addr;
		it->second.conn_id = conn_id;
		w = it->second;
	}
	changed(w);
	return Status::ok();
}

Status WindowTable::set_unmapped(uint32_t index, uint32_t pid)
{
	Window w;
	{
		std::lock_guard<std::mutex> lk(mu_);
		auto it = windows_.find(index);
		if (it == windows_.end())
			return Status(Code::kNotFound, "no window has index " + std::to_string(index));
		if (it->second.pid != pid)
			return Status::ok(); // mapped by someone else since
		it->second.pid = 0;
		it->second.addr = 0;
		it->second.conn_id = 0;
		w = it->second;
	}
	changed(w);
	return Status::ok();
}

void WindowTable::connection_closed(int conn_id)
{
	std::vector<Window> cleared;
	{
		std::lock_guard<std::mutex> lk(mu_);
		for (auto &[i, w] : windows_) {
			if (w.conn_id == conn_id && w.pid != 0) {
				w.pid = 0;
				w.addr = 0;
				w.conn_id = 0;
				cleared.push_back(w);
			}
		}
	}
	for (const auto &w : cleared)
		changed(w);
}

void WindowTable::restore(const std::vector<Window> &windows)
{
	std::lock_guard<std::mutex> lk(mu_);
	windows_.clear();
	for (auto w : windows) {
		w.conn_id = 0; // the connections died with the old daemon
		windows_[w.index] = w;
	}
}

json WindowTable::to_json(const Window &w) const
{
	return {{"index", w.index},	 {"eva", eva_of(w.index)}, {"region", w.region},
		{"fa", w.fa.to_string()}, {"length", w.length},	   {"pid", w.pid},
		{"addr", w.addr}};
}

void WindowTable::register_ops(control::Server &server, NodeFederation *fed)
{
	using control::Peer;
	auto index_of = [](const json &b) -> Result<uint32_t> {
		auto it = b.find("index");
		if (it == b.end() || !it->is_number_unsigned() || it->get<uint64_t>() == 0 ||
		    it->get<uint64_t>() > UINT32_MAX)
			return Status(Code::kInvalidArgument, "request needs a window \"index\" (1 or more)");
		return uint32_t(it->get<uint64_t>());
	};
	server.add_op("window.layout", [this](const Peer &, Message &) {
		return ok_reply({{"va_bits", va_bits_}, {"ext_bits", 64 - va_bits_}, {"index_max", index_max()}});
	});
	server.add_op("window.open", [this, fed](const Peer &p, Message &m) {
		auto it = m.body.find("region");
		if (it == m.body.end() || !it->is_string())
			return error_reply(Status(Code::kInvalidArgument, "request needs a \"region\" name"));
		auto loc = fed->locate_region(it->get<std::string>(), Asker{p.uid, wire::kAccessRead});
		if (!loc)
			return error_reply(loc.status());
		Status st = check_access(*loc, p.uid, Access::kRead);
		if (!st)
			return error_reply(st);
		auto w = open(*loc);
		if (!w)
			return error_reply(w.status());
		return ok_reply(to_json(*w));
	});
	server.add_op("window.get", [this, index_of](const Peer &, Message &m) {
		auto i = index_of(m.body);
		if (!i)
			return error_reply(i.status());
		auto w = get(*i);
		return w ? ok_reply(to_json(*w)) : error_reply(w.status());
	});
	server.add_op("window.resolve", [this](const Peer &, Message &m) {
		auto it = m.body.find("eva");
		if (it == m.body.end() || !it->is_number_unsigned())
			return error_reply(Status(Code::kInvalidArgument, "request needs an \"eva\" (unsigned)"));
		uint64_t off = 0;
		auto w = resolve(it->get<uint64_t>(), &off);
		if (!w)
			return error_reply(w.status());
		json j = to_json(*w);
		j["offset"] = off;
		return ok_reply(j);
	});
	server.add_op("window.list", [this](const Peer &, Message &) {
		json arr = json::array();
		for (const auto &w : list())
			arr.push_back(to_json(w));
		return ok_reply({{"windows", arr}});
	});
	server.add_op("window.mapped", [this, index_of](const Peer &p, Message &m) {
		auto i = index_of(m.body);
		if (!i)
			return error_reply(i.status());
		auto it = m.body.find("addr");
		if (it == m.body.end() || !it->is_number_unsigned())
			return error_reply(Status(Code::kInvalidArgument, "request needs an \"addr\" (unsigned)"));
		Status st = set_mapped(*i, uint32_t(p.pid), it->get<uint64_t>(), p.conn_id);
		return st ? ok_reply() : error_reply(st);
	});
	server.add_op("window.unmapped", [this, index_of](const Peer &p, Message &m) {
		auto i = index_of(m.body);
		if (!i)
			return error_reply(i.status());
		Status st = set_unmapped(*i, uint32_t(p.pid));
		return st ? ok_reply() : error_reply(st);
	});
	server.on_disconnect([this](const Peer &p) { connection_closed(p.conn_id); });
}

} // namespace memfed
