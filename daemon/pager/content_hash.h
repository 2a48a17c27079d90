// content_hash: a keyed 64-bit hash of one page's bytes, by which the pager
// tells whether a page of a WP_ASYNC process was written (async_dirty.cc).
//
// 64 bits, not CRC-32C: a write is lost only if its page hashes as before,
// so the chance must be negligible over every eviction a pager ever does;
// and not a linear code, whose collisions do not depend on the key. XXH3
// hashes a page in 0.10 us here (AVX2; 0.21 us for its SSE2 code), against
// 1.4 us to copy it out of another process through /proc/<pid>/mem: so the
// client's evictor, which reads its own memory, hashes the pages it moves
// (MoveReply), with the key the pager gave it at attach. A program that learns the key can only make its own
// writes collide.
#pragma once

#include <cstdint>

namespace memfed::pager
{

// A fresh random key (getrandom), one per pager thread.
uint64_t content_hash_key();
// XXH3-64 of one page, seeded with `key`: AVX2 code where the CPU has it.
uint64_t content_hash(const void *page, uint64_t key);
// The two builds content_hash() chooses from (equal results; for tests).
uint64_t content_hash_baseline(const void *page, uint64_t key);
uint64_t content_hash_avx2(const void *page, uint64_t key); // only where AVX2 is

} // namespace memfed::pager
