// Wire codec: turns protocol.h's header and payloads into bytes and back.
//
// Everything on the wire is little-endian and encoded field by field (memcpy +
// explicit byte-order conversion); the structs in protocol.h are only the
// in-memory form. Decoders validate every field before anything else looks
// at it and fail with Status(kProtocol, "...") naming the field and the value
// received. Pure functions: thread-safe, no allocation except where a decoder
// returns a std::string or std::vector.
//
// Version rule: a HELLO request is always sent with header version
// kWireMinVersion-compatible layout and may carry any version >= 1 in its
// header (its payload carries the sender's version range); every other
// message must carry a version in [kWireMinVersion, kWireVersion].
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/common/region_name.h"
#include "daemon/common/status.h"
#include "daemon/wire/protocol.h"

namespace memfed::wire
{

// Longest error message carried in a response payload.
constexpr size_t kMaxErrorMessage = 1024;
constexpr size_t kHelloRequestSize = 8;
constexpr size_t kHelloResponseSize = 24;
constexpr size_t kRegionSpecSize = sizeof(WireRegionSpec);
constexpr size_t kRegionSize = sizeof(WireRegion);
constexpr size_t kSetLengthSize = sizeof(WireSetLength);
constexpr size_t kStatSize = sizeof(WireStat);
constexpr size_t kAppliedSize = 4; // WRITE_VERSIONED response: u32 applied

struct HelloRequest {
	uint16_t min_version = kWireMinVersion;
	uint16_t max_version = kWireVersion;
	uint32_t capabilities = 0;
};

struct HelloResponse {
	uint16_t version = kWireVersion;
	uint32_t capabilities = 0;
	uint64_t capacity_bytes = 0;
	uint32_t page_size = kPageSize;
};

const char *msg_type_name(uint8_t type);

// --- header ---

// Writes `h` as kHeaderSize bytes to `out`, after setting h.magic,
// h.payload_len, h.payload_crc (crc32c of `payload`) and h.header_crc.
// h.version is kept if non-zero, else set to kWireVersion.
void encode_header(Header &h, std::span<const uint8_t> payload, uint8_t *out);
// Same, for a payload whose crc the caller computed (e.g. pages already
// written in place); payload_len and payload_crc are taken from `h`.
void encode_header_raw(Header &h, uint8_t *out);
// Decodes kHeaderSize bytes without validating anything.
Header decode_header(const uint8_t *in);
// Decodes and validates a header: size, magic, version, type, tclass, flags,
// status, hop limit, module ids, payload_len, count (per type), offset
// alignment, the payload length of READ/WRITE and the versioned messages
// against their count, and the header crc.
Status validate_header(std::span<const uint8_t> bytes, Header *out);
// Validates a decoded header (all checks of validate_header but the crc).
Status validate_fields(const Header &h);
// Checks that `payload` has h.payload_len bytes and matches h.payload_crc.
Status check_payload(const Header &h, std::span<const uint8_t> payload);
// check_payload for the pages of a READ (or READ_VERSIONED) response, received whole (the header
// passed its own crc, so the framing holds): a mismatch means the module's
// copy is damaged (its payload crc comes from the crcs stored with the pages
// when they were written) and is kCorrupt, naming the pages and the fix.
Status check_read_pages(const Header &h, std::span<const uint8_t> pages);

// --- payloads ---

// Region names: valid_region_name() of daemon/common/region_name.h.

void encode_hello_request(const HelloRequest &r, uint8_t out[kHelloRequestSize]);
Result<HelloRequest> decode_hello_request(std::span<const uint8_t> p);
void encode_hello_response(const HelloResponse &r, uint8_t out[kHelloResponseSize]);
Result<HelloResponse> decode_hello_response(std::span<const uint8_t> p);

void encode_region_spec(const WireRegionSpec &s, uint8_t out[kRegionSpecSize]);
// Name valid, size_bytes > 0.
Result<WireRegionSpec> decode_region_spec(std::span<const uint8_t> p);
// Builds a spec from text fields; kInvalidArgument if the name is invalid.
// replica_group/replicas: see WireRegionSpec (0, 0: an ordinary region).
Result<WireRegionSpec> make_region_spec(std::string_view name, uint64_t size_bytes,
                                        uint32_t owner_uid, uint32_t mode,
                                        uint64_t replica_group = 0, uint8_t replicas = 0);

void encode_region(const WireRegion &r, uint8_t out[kRegionSize]);
// Name valid, size a non-zero multiple of kPageSize, fa_offset page-aligned,
// reserved bytes zero.
Result<WireRegion> decode_region(std::span<const uint8_t> p);
std::string region_name(const WireRegion &r);
std::string region_name(const WireRegionSpec &s);

void encode_set_length(const WireSetLength &s, uint8_t out[kSetLengthSize]);
// Name valid, only known flags, reserved zero.
Result<WireSetLength> decode_set_length(std::span<const uint8_t> p);
// Builds a request; kInvalidArgument if the name is invalid.
Result<WireSetLength> make_set_length(std::string_view name, uint64_t length, bool grow_only);
std::string region_name(const WireSetLength &s);

// REGION_LIST request: `after` empty or a valid name; limit 0 = a whole page.
std::vector<uint8_t> encode_list_request(std::string_view after, uint32_t limit);
// The same asked for `uid` (followed by a WireAsker wanting kAccessRead).
std::vector<uint8_t> encode_asked_list_request(std::string_view after, uint32_t limit,
                                               uint32_t uid);
// Empty payload: from the first, a whole page. Else the name must be valid
// (or empty) and the payload exactly 1 + after_len + 4 bytes, or that and a
// WireAsker wanting kAccessRead.
Result<WireListRequest> decode_list_request(std::span<const uint8_t> p);
std::string list_after(const WireListRequest &r);
// The page size a request asks for: its limit, capped at kRegionListPage.
uint32_t list_limit(const WireListRequest &r);

std::vector<uint8_t> encode_region_list(std::span<const WireRegion> regions);
// u32 n then n regions; n must match the payload length exactly.
Result<std::vector<WireRegion>> decode_region_list(std::span<const uint8_t> p);

// --- sequenced writes (wire version 5, protocol.h) ---

void encode_sequence(const WireSequence &s, uint8_t out[kSequenceSize]);
// The payload of request `h` (validated) without its WireSequence, which goes
// to *seq; a request without kFlagSequenced: the payload as it is and *seq
// zero. Session and seq must be nonzero.
Result<std::span<const uint8_t>> split_sequence(const Header &h, std::span<const uint8_t> payload,
                                                WireSequence *seq);

// --- replicated regions (wire version 4) ---

// A WRITE_VERSIONED request payload: the prefix and the pages after it.
struct VersionedWrite {
	WireVersionedWrite prefix{};
	std::span<const uint8_t> pages; // count * kPageSize bytes of the payload
};
void encode_versioned_write(const WireVersionedWrite &w, uint8_t out[kVersionedWriteSize]);
// The payload of a WRITE_VERSIONED of `count` pages: count in
// 1..kMaxPagesPerRequest, exactly kVersionedWriteSize + count * kPageSize
// bytes, version nonzero, only known flags, reserved zero.
Result<VersionedWrite> decode_versioned_write(uint32_t count, std::span<const uint8_t> p);
void encode_applied(uint32_t applied, uint8_t out[kAppliedSize]);
// A WRITE_VERSIONED response: 4 bytes, applied <= count.
Result<uint32_t> decode_applied(uint32_t count, std::span<const uint8_t> p);
// `versions` as u64 each, little-endian (versions.size() * 8 bytes at out).
void encode_versions(std::span<const uint64_t> versions, uint8_t *out);
// A READ_VERSIONS response of `count` versions: exactly count * 8 bytes.
Status decode_versions(uint32_t count, std::span<const uint8_t> p, uint64_t *versions);
// A READ_VERSIONED response of `count` pages: exactly count * (8 +
// kPageSize) bytes; fills versions[0..count) and returns the pages.
Result<std::span<const uint8_t>> decode_read_versioned(uint32_t count, std::span<const uint8_t> p,
                                                       uint64_t *versions);

void encode_stat(const WireStat &s, uint8_t out[kStatSize]);
Result<WireStat> decode_stat(std::span<const uint8_t> p);

// u8 length + bytes; the name must be valid.
std::vector<uint8_t> encode_name(std::string_view name);
Result<std::string> decode_name(std::span<const uint8_t> p);
// REGION_LOOKUP with a WireAsker: the name, then u32 uid, u8 want.
std::vector<uint8_t> encode_asked_lookup(std::string_view name, uint32_t uid, uint8_t want);
// A REGION_LOOKUP payload: a name, with or without a WireAsker.
Result<WireLookup> decode_lookup(std::span<const uint8_t> p);

constexpr size_t kAccessRequestSize = sizeof(WireAccessRequest);
void encode_access_request(const WireAccessRequest &r, uint8_t out[kAccessRequestSize]);
Result<WireAccessRequest> decode_access_request(std::span<const uint8_t> p);
std::string region_name(const WireAccessRequest &r);
std::vector<uint8_t> encode_access_list(const WireAccessList &l);
Result<WireAccessList> decode_access_list(std::span<const uint8_t> p);

// --- write-back over RDMA (protocol.h) ---

static_assert(kRdmaAckMax == kHeaderSize + kMaxErrorMessage);
// One received RDMA write message (`msg`: exactly the bytes the SEND
// carried): a valid request header (validate_header) of type WRITE or
// WRITE_VERSIONED, a payload of exactly payload_len bytes after it (a
// longer or truncated message is refused) matching payload_crc. On success
// *h is the header and *payload the bytes after it.
Status decode_rdma_write(std::span<const uint8_t> msg, Header *h,
                         std::span<const uint8_t> *payload);

// Error message of a failed response: <= kMaxErrorMessage bytes, no NUL.
Result<std::string> decode_error_message(std::span<const uint8_t> p);
// A failed response's status as a memfed::Status (code from h.status).
Status response_status(const Header &h, std::span<const uint8_t> payload);

} // namespace memfed::wire
