// Region authorization on a module: what a request may do to a region,
// decided by the node key TLS authenticated for its connection and the uid
// that node vouches for, never by what the request claims on its own.
//
// A region belongs to (owner node key, owner uid) (the pool's access
// record, daemon/store/region_access.h). Who asks:
//   - this node itself (an in-process channel, this node's own key, or a
//     module serving plaintext, which only tests and benchmarks do): every
//     right; the control socket checks local users by uid and mode;
//   - the owner node: its vouched uid gets what the region's mode gives that
//     node's users: the owner uid and root everything, others the "other"
//     bits (4 read, 2 write); a request that names no uid (page reads and
//     writes, deletes, truncates carry none) has every right, as the owner
//     node checked its user when it opened the region;
//   - any other node: only what the owner granted to (its key, that uid) or
//     to (its key, every uid), read or read+write; with no uid named, what
//     any grant to its key gives. Never admin (delete, grant, revoke).
// A refusal names the region, the module, the node key, the uid, what was
// wanted and the `memfedctl region grant` command that would allow it.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>

#include "daemon/common/ids.h"
#include "daemon/common/status.h"
#include "daemon/store/region_access.h"
#include "daemon/store/region_table.h"

namespace memfed
{

struct Requester {
	bool local = true;
	NodeKeyBytes key{};
	std::string key_name; // its name among the trusted peers, "" if none
	bool uid_known = false;
	uint32_t uid = 0;
};

// wire::kAccess* bits `q` has on region `r` with access `a`.
uint8_t rights_of(const RegionInfo &r, const RegionAccess &a, const Requester &q);
// "read", "write", "read and write", "administer" for kAccess* bits.
std::string want_text(uint8_t want);
// kPermission: `q` lacks `want` on region `r` of `module` (`owner` as the
// message names the owner node).
Status refusal(const RegionInfo &r, ModuleId module, const std::string &owner, const Requester &q,
               uint8_t want);

} // namespace memfed
