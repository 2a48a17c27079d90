// The C API of memfed.h, over the control client and the process's PagerLink.
#include "libclient/include/memfed.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "daemon/control/client.h"
#include "libclient/pager_link.h"

using memfed::Code;
using memfed::Result;
using memfed::Status;
using memfed::client::PagerLink;
using memfed::control::Message;
using nlohmann::json;

namespace
{

constexpr uint64_t kPage = 4096;
constexpr int kDefaultVaBits = 47;

// The calling thread's last failure: the value returned and its message
// (memfed_strerror()), and the buffer for strerror text.
thread_local int t_err = 0;
thread_local std::string t_errmsg;
thread_local char t_strerror[128];

// The errno value of each class of failure; memfed.h says why each was chosen.
int errno_of(Code c)
{
	switch (c) {
	case Code::kInvalidArgument:
		return EINVAL;
	case Code::kNotFound:
		return ENOENT;
	case Code::kAlreadyExists:
		return EEXIST;
	case Code::kNoSpace:
		return ENOSPC;
	case Code::kPermission:
		return EACCES;
	case Code::kCorrupt:
		return EBADMSG;
	case Code::kIo:
		return EIO;
	case Code::kBusy:
		return EBUSY;
	case Code::kUnavailable:
		return ECONNREFUSED;
	case Code::kProtocol:
		return EPROTO;
	case Code::kOutOfRange:
		return ERANGE;
	case Code::kQuota:
		return EDQUOT;
	case Code::kOk: // a failure without a code is a bug too
	case Code::kInternal:
		break;
	}
	return ENOTRECOVERABLE;
}

// Records `st` as this thread's last failure; returns the negative errno.
int fail(const Status &st)
{
	t_err = -errno_of(st.code());
	t_errmsg = st.message();
	return t_err;
}

int invalid(const std::string &msg)
{
	return fail(Status(Code::kInvalidArgument, msg));
}

// The one PagerLink of this process, made by the first memfed_map().
std::mutex g_link_mu;
std::shared_ptr<PagerLink> g_link;

Result<std::shared_ptr<PagerLink>> process_link(const std::string &socket)
{
	std::lock_guard<std::mutex> lk(g_link_mu);
	if (g_link)
		return g_link;
	PagerLink::Options o;
	o.socket_path = socket;
	auto l = PagerLink::open(o);
	if (!l)
		return l.status();
	g_link = std::shared_ptr<PagerLink>(std::move(*l));
	return g_link;
}

void copy_str(char *dst, size_t cap, const std::string &s)
{
	size_t n = std::min(cap - 1, s.size());
	std::memcpy(dst, s.data(), n);
	dst[n] = 0;
}

Status fill_info(const json &r, memfed_region_info *info)
{
	if (!r.is_object() || !r.contains("name") || !r["name"].is_string() ||
	    !r.contains("size") || !r["size"].is_number_unsigned())
		return Status(Code::kProtocol, "memfedd sent a region without name or size");
	if (!info)
		return Status::ok();
	*info = {};
	auto str = [&r](const char *k) {
		auto it = r.find(k);
		return it != r.end() && it->is_string() ? it->get<std::string>() : std::string();
	};
	auto num = [&r](const char *k) {
		auto it = r.find(k);
		return it != r.end() && it->is_number_unsigned() ? it->get<uint64_t>() : 0;
	};
	copy_str(info->name, sizeof(info->name), str("name"));
	copy_str(info->module, sizeof(info->module), str("module"));
	copy_str(info->fa, sizeof(info->fa), str("fa"));
	info->id = num("id");
	info->size = num("size");
	info->owner_uid = uint32_t(num("owner_uid"));
	info->mode = uint32_t(num("mode"));
	info->ctime_ns = num("ctime_ns");
	info->length = num("length");
	return Status::ok();
}

struct Window {
	uint64_t length = 0;
	uint64_t addr = 0; // 0 until mapped
	std::string region;
	uint64_t region_offset = 0;
};

} // namespace

struct memfed_conn {
	std::mutex mu;
	memfed::control::Client ctl;
	std::string socket;
	std::vector<uint64_t> maps;             // start addresses of our mappings
	std::vector<uint64_t> unmapped_windows; // to report after unmapping
	std::map<uint64_t, Window> windows;
	int va_bits = 0;

	Result<Message> call(const char *op, json fields = json::object(),
	                     std::vector<uint8_t> data = {})
	{
		Message m;
		m.body = std::move(fields);
		m.body["op"] = op;
		m.data = std::move(data);
		std::lock_guard<std::mutex> lk(mu);
		return ctl.call_ok(m);
	}
};

struct memfed_region {
	struct memfed_conn *m;
	std::string name;
	uint64_t size;
};

extern "C" {

const char *memfed_version(void)
{
	return MEMFED_LIB_VERSION;
}

const char *memfed_strerror(int err)
{
	if (err < 0 && err == t_err && !t_errmsg.empty())
		return t_errmsg.c_str();
	// The GNU strerror_r: thread-safe, may return a static string instead.
	// (-INT_MIN overflows; it is no errno value anyway.)
	return strerror_r(err == INT_MIN ? INT_MAX : -err, t_strerror, sizeof(t_strerror));
}

int memfed_connect(const char *socket_path, struct memfed_conn **out)
{
	if (!out)
		return invalid("memfed_connect: out is NULL");
	std::string path =
	        socket_path && *socket_path ? socket_path : memfed::control::default_socket_path();
	auto c = memfed::control::Client::connect(path);
	if (!c)
		return fail(c.status());
	auto *m = new memfed_conn();
	m->ctl = std::move(*c);
	m->socket = path;
	*out = m;
	return 0;
}

void memfed_close(struct memfed_conn *m)
{
	if (!m)
		return;
	for (uint64_t a : std::vector<uint64_t>(m->maps))
		(void)memfed_unmap(m, reinterpret_cast<void *>(a));
	delete m;
}

int memfed_region_create(struct memfed_conn *m, const char *name, uint64_t size, uint32_t mode,
                         struct memfed_region_info *info)
{
	if (!m || !name)
		return invalid("memfed_region_create: connection and name are required");
	if (size == 0)
		return invalid("region '" + std::string(name) +
		               "': size must be at least one byte");
	auto r = m->call("region.create", {{"name", name},
	                                   {"size", (size + kPage - 1) / kPage * kPage},
	                                   {"mode", mode ? mode : 0600}});
	if (!r)
		return fail(r.status());
	Status st = fill_info(r->body.value("region", json()), info);
	return st ? 0 : fail(st);
}

int memfed_region_delete(struct memfed_conn *m, const char *name)
{
	if (!m || !name)
		return invalid("memfed_region_delete: connection and name are required");
	auto r = m->call("region.delete", {{"name", name}});
	return r ? 0 : fail(r.status());
}

int memfed_region_list(struct memfed_conn *m, int (*fn)(const struct memfed_region_info *, void *),
                       void *arg)
{
	if (!m)
		return invalid("memfed_region_list: connection is NULL");
	std::vector<json> regions;
	Status listed;
	{
		std::lock_guard<std::mutex> lk(m->mu);
		listed = memfed::control::for_each_region(
		        m->ctl, "", [&](const json &j) { regions.push_back(j); });
	}
	if (!listed)
		return fail(listed);
	std::sort(regions.begin(), regions.end(), [](const json &a, const json &b) {
		return a.value("name", "") < b.value("name", "");
	});
	int n = 0;
	for (const auto &j : regions) {
		memfed_region_info info;
		Status st = fill_info(j, &info);
		if (!st)
			return fail(st);
		n++;
		if (fn && fn(&info, arg))
			break;
	}
	return n;
}

int memfed_region_open(struct memfed_conn *m, const char *name, struct memfed_region **out)
{
	if (!m || !name || !out)
		return invalid("memfed_region_open: connection, name and out are required");
	auto r = m->call("region.show", {{"name", name}});
	if (!r)
		return fail(r.status());
	memfed_region_info info;
	Status st = fill_info(r->body.value("region", json()), &info);
	if (!st)
		return fail(st);
	*out = new memfed_region{m, name, info.size};
	return 0;
}

void memfed_region_close(struct memfed_region *r)
{
	delete r;
}

int memfed_region_stat(struct memfed_region *r, struct memfed_region_info *info)
{
	if (!r || !info)
		return invalid("memfed_region_stat: region and info are required");
	auto rep = r->m->call("region.show", {{"name", r->name}});
	if (!rep)
		return fail(rep.status());
	Status st = fill_info(rep->body.value("region", json()), info);
	return st ? 0 : fail(st);
}

int64_t memfed_region_read(struct memfed_region *r, uint64_t offset, void *buf, uint64_t length)
{
	if (!r || (!buf && length))
		return invalid("memfed_region_read: region and buffer are required");
	uint64_t done = 0;
	while (done < length) {
		uint64_t n = std::min<uint64_t>(length - done, memfed::control::kMaxData);
		auto rep =
		        r->m->call("region.read",
		                   {{"name", r->name}, {"offset", offset + done}, {"length", n}});
		if (!rep)
			return fail(rep.status());
		if (rep->data.size() > n)
			return fail(
			        Status(Code::kProtocol, "region.read returned more than asked"));
		std::memcpy(static_cast<char *>(buf) + done, rep->data.data(), rep->data.size());
		done += rep->data.size();
		if (rep->data.size() < n)
			break; // end of the region
	}
	return int64_t(done);
}

int64_t memfed_region_write(struct memfed_region *r, uint64_t offset, const void *buf,
                            uint64_t length)
{
	if (!r || (!buf && length))
		return invalid("memfed_region_write: region and buffer are required");
	uint64_t done = 0;
	while (done < length) {
		uint64_t n = std::min<uint64_t>(length - done, memfed::control::kMaxData);
		const auto *p = static_cast<const uint8_t *>(buf) + done;
		auto rep =
		        r->m->call("region.write", {{"name", r->name}, {"offset", offset + done}},
		                   std::vector<uint8_t>(p, p + n));
		if (!rep)
			return fail(rep.status());
		done += n;
	}
	return int64_t(done);
}

int memfed_map_ex(struct memfed_region *r, uint64_t offset, uint64_t length,
                  const struct memfed_map_opts *opts, void **addr)
{
	if (!r || !addr)
		return invalid("memfed_map: region and addr are required");
	memfed_map_opts o = opts ? *opts : memfed_map_opts{};
	if (offset % kPage || length % kPage)
		return invalid("mapping region '" + r->name +
		               "': offset and length must be multiples of 4096");
	if (offset >= r->size)
		return fail(Status(Code::kOutOfRange, "offset " + std::to_string(offset) +
		                                              " is past the end of region '" +
		                                              r->name + "' (" +
		                                              std::to_string(r->size) + " bytes)"));
	if (length == 0)
		length = r->size - offset;
	if (length > r->size - offset)
		return fail(Status(Code::kOutOfRange,
		                   "mapping " + std::to_string(length) + " bytes at " +
		                           std::to_string(offset) +
		                           " runs past the end of region '" + r->name + "'"));
	auto link = process_link(r->m->socket);
	if (!link)
		return fail(link.status());
	auto a = (*link)->map_shared(r->name, offset, length, o.flags & MEMFED_MAP_WRITE, o.budget,
	                             o.flags & MEMFED_MAP_PREFETCH,
	                             reinterpret_cast<uint64_t>(o.addr_hint));
	if (!a)
		return fail(a.status());
	{
		std::lock_guard<std::mutex> lk(r->m->mu);
		r->m->maps.push_back(*a);
	}
	*addr = reinterpret_cast<void *>(*a);
	return 0;
}

int memfed_map(struct memfed_region *r, uint64_t offset, uint64_t length, unsigned flags,
               void **addr)
{
	memfed_map_opts o{};
	o.flags = flags;
	return memfed_map_ex(r, offset, length, &o, addr);
}

int memfed_unmap(struct memfed_conn *m, void *addr)
{
	if (!m)
		return invalid("memfed_unmap: connection is NULL");
	uint64_t a = reinterpret_cast<uint64_t>(addr);
	{
		std::lock_guard<std::mutex> lk(m->mu);
		auto it = std::find(m->maps.begin(), m->maps.end(), a);
		if (it == m->maps.end())
			return fail(
			        Status(Code::kNotFound,
			               "memfed_unmap: no mapping of this connection starts there"));
		m->maps.erase(it);
		for (auto &[idx, w] : m->windows)
			if (w.addr == a) {
				w.addr = 0;
				m->unmapped_windows.push_back(idx);
			}
	}
	std::vector<uint64_t> gone;
	{
		std::lock_guard<std::mutex> lk(m->mu);
		gone.swap(m->unmapped_windows);
	}
	for (uint64_t idx : gone)
		(void)m->call("window.unmapped", {{"index", idx}});
	auto link = process_link(m->socket);
	if (!link)
		return fail(link.status());
	Status st = (*link)->unmap(a);
	return st ? 0 : fail(st);
}

int memfed_sync(struct memfed_conn *m, void *addr, size_t length)
{
	if (!m || !addr)
		return invalid("memfed_sync: connection and addr are required");
	auto link = process_link(m->socket);
	if (!link)
		return fail(link.status());
	Status st = (*link)->sync(reinterpret_cast<uint64_t>(addr), length);
	return st ? 0 : fail(st);
}

int memfed_addr_info(struct memfed_conn *m, const void *addr, struct memfed_region_info *info,
                     uint64_t *offset)
{
	if (!m)
		return invalid("memfed_addr_info: connection is NULL");
	std::shared_ptr<PagerLink> link;
	{
		std::lock_guard<std::mutex> lk(g_link_mu);
		link = g_link;
	}
	if (!link)
		return fail(Status(Code::kNotFound, "this process maps no memfed region"));
	auto loc = link->locate(reinterpret_cast<uint64_t>(addr));
	if (!loc)
		return fail(loc.status());
	if (offset)
		*offset = loc->second;
	if (info) {
		auto r = m->call("region.show", {{"name", loc->first}});
		if (!r)
			return fail(r.status());
		Status st = fill_info(r->body.value("region", json()), info);
		if (!st)
			return fail(st);
	}
	return 0;
}

int memfed_eva_bits(struct memfed_conn *m)
{
	if (!m)
		return invalid("memfed_eva_bits: connection is NULL");
	std::lock_guard<std::mutex> lk(m->mu);
	if (m->va_bits == 0) {
		Message h;
		h.body = {{"op", "window.layout"}};
		auto r = m->ctl.call_ok(h);
		if (!r)
			return fail(r.status());
		auto it = r->body.find("va_bits");
		m->va_bits = it != r->body.end() && it->is_number_unsigned() &&
		                             it->get<uint64_t>() >= 39 && it->get<uint64_t>() <= 57
		                     ? int(it->get<uint64_t>())
		                     : kDefaultVaBits;
	}
	return m->va_bits;
}

// W = {"index", "eva", "region", "fa", "length", "pid", "addr"} (see
// daemon/service/window_table.h); a window spans its whole region.
static Status parse_window(const json &j, uint64_t *index, Window *w)
{
	if (!j.contains("index") || !j["index"].is_number_unsigned() || !j.contains("length") ||
	    !j["length"].is_number_unsigned() || !j.contains("region") || !j["region"].is_string())
		return Status(Code::kProtocol, "window entry lacks index, length or region");
	*index = j["index"].get<uint64_t>();
	w->length = j["length"].get<uint64_t>();
	w->region = j["region"].get<std::string>();
	w->region_offset = 0;
	if (*index == 0 || w->length == 0 || w->length % kPage)
		return Status(Code::kProtocol, "window entry has index 0 or an unaligned length");
	return Status::ok();
}

int memfed_window_open(struct memfed_conn *m, const char *name, uint64_t *eva)
{
	if (!m || !name || !eva)
		return invalid("memfed_window_open: connection, name and eva are required");
	int bits = memfed_eva_bits(m);
	if (bits < 0)
		return bits;
	auto r = m->call("window.open", {{"region", name}});
	if (!r)
		return fail(r.status());
	uint64_t index;
	Window w;
	Status st = parse_window(r->body, &index, &w);
	if (!st)
		return fail(st);
	if (w.length > (uint64_t{1} << bits))
		return fail(Status(Code::kProtocol, "window longer than the EVA offset field"));
	{
		std::lock_guard<std::mutex> lk(m->mu);
		m->windows.emplace(index, w);
	}
	*eva = index << bits;
	return 0;
}

int memfed_eva_to_ptr(struct memfed_conn *m, uint64_t eva, void **ptr)
{
	if (!m || !ptr)
		return invalid("memfed_eva_to_ptr: connection and ptr are required");
	int bits = memfed_eva_bits(m);
	if (bits < 0)
		return bits;
	uint64_t index = eva >> bits, off = eva & ((uint64_t{1} << bits) - 1);
	if (index == 0) {
		*ptr = reinterpret_cast<void *>(eva);
		return 0;
	}
	Window w;
	bool known;
	{
		std::lock_guard<std::mutex> lk(m->mu);
		auto it = m->windows.find(index);
		known = it != m->windows.end();
		if (known)
			w = it->second;
	}
	if (!known) {
		auto r = m->call("window.get", {{"index", index}});
		if (!r)
			return fail(r.status());
		uint64_t got;
		Status st = parse_window(r->body, &got, &w);
		if (st && got != index)
			st = Status(Code::kProtocol, "window.get answered another window");
		if (!st)
			return fail(st);
	}
	if (off >= w.length)
		return fail(Status(Code::kOutOfRange,
		                   "EVA offset " + std::to_string(off) +
		                           " is past the end of window " + std::to_string(index) +
		                           " (" + std::to_string(w.length) + " bytes)"));
	if (w.addr == 0) {
		memfed_region *r = nullptr;
		int rc = memfed_region_open(m, w.region.c_str(), &r);
		if (rc < 0)
			return rc;
		void *a = nullptr;
		rc = memfed_map(r, w.region_offset, w.length, MEMFED_MAP_WRITE, &a);
		if (rc == -EACCES)
			rc = memfed_map(r, w.region_offset, w.length, 0, &a);
		memfed_region_close(r);
		if (rc < 0)
			return rc;
		void *extra = nullptr;
		{
			std::lock_guard<std::mutex> lk(m->mu);
			auto [it, fresh] = m->windows.emplace(index, w);
			if (!fresh && it->second.addr != 0) {
				// Another thread mapped it meanwhile: keep that one.
				extra = a;
				w.addr = it->second.addr;
			} else {
				it->second = w;
				it->second.addr = reinterpret_cast<uint64_t>(a);
				w.addr = it->second.addr;
			}
		}
		if (extra)
			(void)memfed_unmap(m, extra);
		else
			// Tell the table where this process put the window.
			(void)m->call("window.mapped", {{"index", index}, {"addr", w.addr}});
	}
	*ptr = reinterpret_cast<void *>(w.addr + off);
	return 0;
}

int memfed_ptr_to_eva(struct memfed_conn *m, const void *ptr, uint64_t *eva)
{
	if (!m || !eva)
		return invalid("memfed_ptr_to_eva: connection and eva are required");
	int bits = memfed_eva_bits(m);
	if (bits < 0)
		return bits;
	uint64_t p = reinterpret_cast<uint64_t>(ptr);
	std::lock_guard<std::mutex> lk(m->mu);
	for (const auto &[index, w] : m->windows)
		if (w.addr && p >= w.addr && p < w.addr + w.length) {
			*eva = (index << bits) | (p - w.addr);
			return 0;
		}
	*eva = p;
	return 0;
}

} // extern "C"
