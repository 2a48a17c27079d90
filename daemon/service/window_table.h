// WindowTable: the node's table of extended-address windows.
//
// An extended virtual address (EVA) is a 64-bit pointer whose bits above the
// CPU's user virtual-address width (va_bits: 47 with 4-level paging, 56 with
// 5-level) are a window index; index 0 is an ordinary local pointer. Window N
// maps the EVAs [N << va_bits, N << va_bits + length) onto a federated address
// range, one region's. A process turns an EVA into a pointer by mapping the
// window's region (libmemfed does this on first use) and reports where it put
// it, so the table can answer "which process maps this window, and where".
//
// The table lives in the daemon; when memfed.ko is loaded it is mirrored there
// (TableMirror), survives a daemon restart in the kmod and is read back.
//
// Control ops (JSON on the control socket; every reply also has "ok"):
//   "window.layout"            -> {"va_bits", "ext_bits", "index_max"}
//   "window.open"  {"region"}  -> W   (finds the region's window or creates one;
//                                      needs read access to the region)
//   "window.get"   {"index"}   -> W
//   "window.resolve" {"eva"}   -> W + {"offset": byte offset in the window}
//   "window.list"              -> {"windows": [W...]}
//   "window.mapped" {"index", "addr"}  records the caller's pid and address
//   "window.unmapped" {"index"}        clears them (also on disconnect)
//   W = {"index", "eva", "region", "fa", "length", "pid", "addr"}
//
// Thread-safety: all methods are thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "daemon/control/server.h"
#include "daemon/service/node_federation.h"

namespace memfed {

struct Window {
	uint32_t index = 0;
	std::string region;
	FederatedAddress fa;
	uint64_t length = 0;
	uint32_t pid = 0;  // 0: not mapped
	uint64_t addr = 0; // where pid mapped it
	int conn_id = 0;   // control connection that reported the mapping
};

// The user virtual-address width of this CPU, from /proc/cpuinfo: 56 with
// 5-level paging (flag la57), else from "address sizes" (48 bits virtual ->
// 47 for user space); 47 if unknown. memfed.ko's layout, when loaded, wins.
uint32_t detect_va_bits();

class WindowTable {
public:
	explicit WindowTable(uint32_t va_bits);
	uint32_t va_bits() const { return va_bits_; }
	uint32_t index_max() const;
	uint64_t eva_of(uint32_t index) const { return uint64_t{index} << va_bits_; }

	// The region's window, created if it has none.
	Result<Window> open(const RegionLocation &region);
	Result<Window> get(uint32_t index) const;
	// kNotFound for a plain pointer or an unknown index; kOutOfRange past the end.
	Result<Window> resolve(uint64_t eva, uint64_t *offset) const;
	std::vector<Window> list() const;
	Status set_mapped(uint32_t index, uint32_t pid, uint64_t addr, int conn_id);
	Status set_unmapped(uint32_t index, uint32_t pid);
	// A control connection closed: its process's mappings are gone.
	void connection_closed(int conn_id);
	// Replaces the table (read back from memfed.ko at start).
	void restore(const std::vector<Window> &windows);
	// Called after every change with the changed window (removed: length 0).
	void on_change(std::function<void(const Window &)> f) { on_change_ = std::move(f); }

	nlohmann::json to_json(const Window &w) const;
	void register_ops(control::Server &server, NodeFederation *fed);

private:
	void changed(const Window &w);

	uint32_t va_bits_;
	mutable std::mutex mu_;
	std::map<uint32_t, Window> windows_;
	std::function<void(const Window &)> on_change_;
};

} // namespace memfed
