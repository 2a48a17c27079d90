// content_hash: a keyed 64-bit hash of one page's bytes, by which the pager
// tells whether a page of a WP_ASYNC process was written (async_dirty.cc).
//
// 64 bits, not CRC-32C: a write is lost only if its page hashes as before,
// so the chance must be negligible over every eviction a pager ever does;
// and not a linear code, whose collisions do not depend on the key. XXH3
// (libxxhash) hashes a page in about a tenth of what copying it out costs.
#pragma once

#include <cstdint>

namespace memfed::pager
{

// A fresh random key (getrandom), one per pager thread.
uint64_t content_hash_key();
uint64_t content_hash(const void *page, uint64_t key);

} // namespace memfed::pager
