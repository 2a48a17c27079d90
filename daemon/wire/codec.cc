#include "daemon/wire/codec.h"

#include <endian.h>

#include <algorithm>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "daemon/common/crc32c.h"
#include "daemon/common/ids.h"

namespace memfed::wire
{

static_assert(kMaxRegionName == memfed::kMaxRegionNameLen);

namespace
{

void put8(uint8_t *p, uint8_t v)
{
	*p = v;
}
void put16(uint8_t *p, uint16_t v)
{
	v = htole16(v);
	std::memcpy(p, &v, 2);
}
void put32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	std::memcpy(p, &v, 4);
}
void put64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	std::memcpy(p, &v, 8);
}
uint16_t get16(const uint8_t *p)
{
	uint16_t v;
	std::memcpy(&v, p, 2);
	return le16toh(v);
}
uint32_t get32(const uint8_t *p)
{
	uint32_t v;
	std::memcpy(&v, p, 4);
	return le32toh(v);
}
uint64_t get64(const uint8_t *p)
{
	uint64_t v;
	std::memcpy(&v, p, 8);
	return le64toh(v);
}

Status proto(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
Status proto(const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return Status(Code::kProtocol, buf);
}

// Printable form of an untrusted name for an error message.
std::string sanitize(std::string_view s)
{
	std::string out;
	for (char c : s) {
		if (c >= 0x20 && c < 0x7f)
			out.push_back(c);
		else
			out.push_back('?');
	}
	return out;
}

constexpr size_t kCrcCovered = 60;

} // namespace

const char *msg_type_name(uint8_t type)
{
	switch (static_cast<MsgType>(type)) {
	case MsgType::kHello:
		return "HELLO";
	case MsgType::kRead:
		return "READ";
	case MsgType::kWrite:
		return "WRITE";
	case MsgType::kRegionCreate:
		return "REGION_CREATE";
	case MsgType::kRegionDelete:
		return "REGION_DELETE";
	case MsgType::kRegionLookup:
		return "REGION_LOOKUP";
	case MsgType::kRegionList:
		return "REGION_LIST";
	case MsgType::kStat:
		return "STAT";
	case MsgType::kRegionSetLength:
		return "REGION_SET_LENGTH";
	case MsgType::kWriteVersioned:
		return "WRITE_VERSIONED";
	case MsgType::kReadVersioned:
		return "READ_VERSIONED";
	case MsgType::kReadVersions:
		return "READ_VERSIONS";
	case MsgType::kRdmaConnect:
		return "RDMA_CONNECT";
	case MsgType::kRdmaRegion:
		return "RDMA_REGION";
	case MsgType::kRegionAccess:
		return "REGION_ACCESS";
	case MsgType::kRdmaFence:
		return "RDMA_FENCE";
	}
	return "UNKNOWN";
}

void encode_header_raw(Header &h, uint8_t *out)
{
	h.magic = kWireMagic;
	if (h.version == 0)
		h.version = kWireVersion;
	put32(out + 0, h.magic);
	put8(out + 4, h.version);
	put8(out + 5, h.type);
	put8(out + 6, h.tclass);
	put8(out + 7, h.hop_limit);
	put16(out + 8, h.flags);
	put16(out + 10, h.status);
	put32(out + 12, h.payload_len);
	put64(out + 16, h.src_module);
	put64(out + 24, h.dst_module);
	put64(out + 32, h.request_id);
	put64(out + 40, h.offset);
	put32(out + 48, h.count);
	put32(out + 52, h.region_id);
	put32(out + 56, h.payload_crc);
	h.header_crc = crc32c(out, kCrcCovered);
	put32(out + 60, h.header_crc);
}

void encode_header(Header &h, std::span<const uint8_t> payload, uint8_t *out)
{
	h.payload_len = static_cast<uint32_t>(payload.size());
	h.payload_crc = payload.empty() ? 0 : crc32c(payload.data(), payload.size());
	encode_header_raw(h, out);
}

Header decode_header(const uint8_t *in)
{
	Header h{};
	h.magic = get32(in + 0);
	h.version = in[4];
	h.type = in[5];
	h.tclass = in[6];
	h.hop_limit = in[7];
	h.flags = get16(in + 8);
	h.status = get16(in + 10);
	h.payload_len = get32(in + 12);
	h.src_module = get64(in + 16);
	h.dst_module = get64(in + 24);
	h.request_id = get64(in + 32);
	h.offset = get64(in + 40);
	h.count = get32(in + 48);
	h.region_id = get32(in + 52);
	h.payload_crc = get32(in + 56);
	h.header_crc = get32(in + 60);
	return h;
}

Status validate_fields(const Header &h)
{
	if (h.magic != kWireMagic)
		return proto("bad magic 0x%08" PRIx32 " (expected 0x%08" PRIx32
		             " \"MFW1\"): not a memfed peer",
		             h.magic, kWireMagic);
	if (h.type == 0 || h.type > kMsgTypeMax)
		return proto("unknown message type %u", h.type);
	bool hello = h.type == static_cast<uint8_t>(MsgType::kHello);
	if (h.version == 0 || (!hello && (h.version < kWireMinVersion || h.version > kWireVersion)))
		return proto("unsupported wire version %u (this side speaks %u..%u)", h.version,
		             kWireMinVersion, kWireVersion);
	if (h.tclass > kTrafficClassMax)
		return proto("traffic class %u out of range (max %u)", h.tclass, kTrafficClassMax);
	if (h.hop_limit == 0)
		return proto("hop_limit 0: message expired");
	if (h.flags & ~kFlagsKnown)
		return proto("unknown flags 0x%04x", h.flags);
	bool response = h.flags & kFlagResponse;
	bool sequenced = h.flags & kFlagSequenced;
	if ((h.flags & kFlagRetry) && !sequenced)
		return proto("flag retry (0x%04x) without flag sequenced", kFlagRetry);
	if (sequenced && (response || (h.type != static_cast<uint8_t>(MsgType::kWrite) &&
	                               h.type != static_cast<uint8_t>(MsgType::kWriteVersioned))))
		return proto("flag sequenced on a %s %s (only WRITE and WRITE_VERSIONED requests "
		             "are sequenced)",
		             msg_type_name(h.type), response ? "response" : "request");
	if (!response && h.status != 0)
		return proto("request carries status %u (must be 0)", h.status);
	// kQuota is the last code: a node quota refusal crosses the wire.
	if (h.status > static_cast<uint16_t>(Code::kQuota))
		return proto("unknown status code %u", h.status);
	if (h.src_module & ~kModuleIdMask)
		return proto("src_module 0x%" PRIx64 " wider than 48 bits", h.src_module);
	if (h.dst_module & ~kModuleIdMask)
		return proto("dst_module 0x%" PRIx64 " wider than 48 bits", h.dst_module);
	if (h.payload_len > kMaxPayload)
		return proto("payload_len %" PRIu32 " exceeds the maximum %" PRIu32, h.payload_len,
		             kMaxPayload);
	auto type = static_cast<MsgType>(h.type);
	const uint32_t max_count =
	        type == MsgType::kReadVersions ? kMaxVersionsPerRequest : kMaxPagesPerRequest;
	if (h.count > max_count)
		return proto("%s count %" PRIu32 " exceeds the maximum %" PRIu32 " pages",
		             msg_type_name(h.type), h.count, max_count);
	if (h.payload_len == 0 && h.payload_crc != 0)
		return proto("payload_crc 0x%08" PRIx32 " with an empty payload", h.payload_crc);
	bool failed = response && h.status != 0;
	if (failed) {
		if (h.payload_len > kMaxErrorMessage)
			return proto("error message of %" PRIu32 " bytes exceeds %zu",
			             h.payload_len, kMaxErrorMessage);
		return Status::ok();
	}
	bool paged = type == MsgType::kRead || type == MsgType::kWrite ||
	             type == MsgType::kWriteVersioned || type == MsgType::kReadVersioned ||
	             type == MsgType::kReadVersions;
	if (paged) {
		const char *name = msg_type_name(h.type);
		if (h.count == 0)
			return proto("%s with count 0", name);
		if (h.offset % kPageSize != 0)
			return proto("%s offset 0x%" PRIx64
			             " is not a multiple of the page size %u",
			             name, h.offset, kPageSize);
		if (h.offset > UINT64_MAX - uint64_t{h.count} * kPageSize)
			return proto("%s offset 0x%" PRIx64 " + %" PRIu32 " pages overflows", name,
			             h.offset, h.count);
		// Every product below is at most kMaxPayload (count checked above).
		uint32_t want = 0;
		switch (type) {
		case MsgType::kRead:
			want = response ? h.count * kPageSize : 0;
			break;
		case MsgType::kWrite:
			want = response ? 0 : h.count * kPageSize;
			break;
		case MsgType::kWriteVersioned:
			want = response ? uint32_t(kAppliedSize)
			                : kVersionedWriteSize + h.count * kPageSize;
			break;
		case MsgType::kReadVersioned:
			want = response ? h.count * uint32_t(sizeof(uint64_t) + kPageSize) : 0;
			break;
		default: // kReadVersions
			want = response ? h.count * uint32_t(sizeof(uint64_t)) : 0;
			break;
		}
		if (sequenced)
			want += kSequenceSize;
		if (h.payload_len != want)
			return proto("%s %s with count %" PRIu32 " has payload_len %" PRIu32
			             " (expected %" PRIu32 ")",
			             name, response ? "response" : "request", h.count,
			             h.payload_len, want);
	}
	return Status::ok();
}

Status validate_header(std::span<const uint8_t> bytes, Header *out)
{
	if (bytes.size() < kHeaderSize)
		return proto("truncated header: %zu bytes (need %zu)", bytes.size(), kHeaderSize);
	Header h = decode_header(bytes.data());
	// Magic first, so a stranger speaking another protocol is named as such.
	if (h.magic != kWireMagic)
		return validate_fields(h);
	uint32_t crc = crc32c(bytes.data(), kCrcCovered);
	if (crc != h.header_crc)
		return proto("header crc 0x%08" PRIx32 " does not match computed 0x%08" PRIx32,
		             h.header_crc, crc);
	MF_RETURN_IF_ERROR(validate_fields(h));
	*out = h;
	return Status::ok();
}

Status check_payload(const Header &h, std::span<const uint8_t> payload)
{
	if (payload.size() != h.payload_len)
		return proto("payload of %zu bytes, header says %" PRIu32, payload.size(),
		             h.payload_len);
	uint32_t crc = payload.empty() ? 0 : crc32c(payload.data(), payload.size());
	if (crc != h.payload_crc)
		return proto("%s payload crc 0x%08" PRIx32 " does not match computed 0x%08" PRIx32,
		             msg_type_name(h.type), h.payload_crc, crc);
	return Status::ok();
}

Status check_read_pages(const Header &h, std::span<const uint8_t> pages)
{
	Status st = check_payload(h, pages);
	if (st.is_ok())
		return st;
	ModuleId module{h.src_module};
	return Status(Code::kCorrupt,
	              std::string(msg_type_name(h.type)) + " of " + std::to_string(h.count) +
	                      " pages at " + FederatedAddress{module, h.offset}.to_string() +
	                      ": the module's copy is damaged (" + st.message() +
	                      "); run `memfedctl pool check` on module " + module.to_string());
}

namespace
{

bool all_zero(std::span<const uint8_t> p)
{
	return std::all_of(p.begin(), p.end(), [](uint8_t b) { return b == 0; });
}

Status check_size(const char *what, std::span<const uint8_t> p, size_t want)
{
	if (p.size() != want)
		return proto("%s payload of %zu bytes (expected %zu)", what, p.size(), want);
	return Status::ok();
}

// Decodes a u8 length + fixed 63-byte name field at `p`.
Status decode_fixed_name(const char *what, const uint8_t *p, uint8_t *len_out, char *name_out)
{
	uint8_t len = p[0];
	if (len == 0 || len > kMaxRegionName)
		return proto("%s name_len %u out of range 1..%zu", what, len, kMaxRegionName);
	std::string_view name(reinterpret_cast<const char *>(p + 1), len);
	if (!valid_region_name(name))
		return proto("%s name '%s' is not a valid region name ([A-Za-z0-9._-], starting "
		             "with a letter or digit)",
		             what, sanitize(name).c_str());
	*len_out = len;
	std::memset(name_out, 0, kMaxRegionName);
	std::memcpy(name_out, name.data(), len);
	return Status::ok();
}

void encode_fixed_name(uint8_t len, const char *name, uint8_t *out)
{
	if (len > kMaxRegionName)
		len = kMaxRegionName;
	out[0] = len;
	std::memset(out + 1, 0, kMaxRegionName);
	std::memcpy(out + 1, name, len);
}

} // namespace

void encode_hello_request(const HelloRequest &r, uint8_t out[kHelloRequestSize])
{
	put16(out, r.min_version);
	put16(out + 2, r.max_version);
	put32(out + 4, r.capabilities);
}

Result<HelloRequest> decode_hello_request(std::span<const uint8_t> p)
{
	MF_RETURN_IF_ERROR(check_size("HELLO request", p, kHelloRequestSize));
	HelloRequest r;
	r.min_version = get16(p.data());
	r.max_version = get16(p.data() + 2);
	r.capabilities = get32(p.data() + 4);
	if (r.min_version == 0 || r.min_version > r.max_version)
		return proto("HELLO version range %u..%u is empty or starts at 0", r.min_version,
		             r.max_version);
	return r;
}

void encode_hello_response(const HelloResponse &r, uint8_t out[kHelloResponseSize])
{
	put16(out, r.version);
	put16(out + 2, 0);
	put32(out + 4, r.capabilities);
	put64(out + 8, r.capacity_bytes);
	put32(out + 16, r.page_size);
	put32(out + 20, 0);
}

Result<HelloResponse> decode_hello_response(std::span<const uint8_t> p)
{
	MF_RETURN_IF_ERROR(check_size("HELLO response", p, kHelloResponseSize));
	HelloResponse r;
	r.version = get16(p.data());
	r.capabilities = get32(p.data() + 4);
	r.capacity_bytes = get64(p.data() + 8);
	r.page_size = get32(p.data() + 16);
	if (r.version < kWireMinVersion || r.version > kWireVersion)
		return proto("HELLO response picked version %u (this side speaks %u..%u)",
		             r.version, kWireMinVersion, kWireVersion);
	if (r.page_size != kPageSize)
		return proto("HELLO response page_size %" PRIu32 " (this side uses %u)",
		             r.page_size, kPageSize);
	return r;
}

// WireRegionSpec on the wire: u8 name_len, 63 name, u64 size, u32 uid, u32 mode,
// u64 replica_group, u8 replicas, 7 reserved.
void encode_region_spec(const WireRegionSpec &s, uint8_t out[kRegionSpecSize])
{
	encode_fixed_name(s.name_len, s.name, out);
	put64(out + 64, s.size_bytes);
	put32(out + 72, s.owner_uid);
	put32(out + 76, s.mode);
	put64(out + 80, s.replica_group);
	put8(out + 88, s.replicas);
	std::memset(out + 89, 0, 7);
}

Result<WireRegionSpec> decode_region_spec(std::span<const uint8_t> p)
{
	MF_RETURN_IF_ERROR(check_size("REGION_CREATE", p, kRegionSpecSize));
	WireRegionSpec s{};
	MF_RETURN_IF_ERROR(decode_fixed_name("REGION_CREATE", p.data(), &s.name_len, s.name));
	s.size_bytes = get64(p.data() + 64);
	s.owner_uid = get32(p.data() + 72);
	s.mode = get32(p.data() + 76);
	s.replica_group = get64(p.data() + 80);
	s.replicas = p[88];
	if (s.size_bytes == 0)
		return proto("REGION_CREATE size_bytes 0 for region '%s'", region_name(s).c_str());
	if (!all_zero(p.subspan(89, 7)))
		return proto("REGION_CREATE reserved bytes after replicas are not zero");
	if (s.mode & ~07777u)
		return proto("REGION_CREATE mode 0%o has bits outside 07777", s.mode);
	return s;
}

// A name given by a caller (not off the wire): kInvalidArgument with the rule.
static Status check_name_argument(std::string_view name)
{
	if (valid_region_name(name))
		return Status::ok();
	return Status(Code::kInvalidArgument,
	              "region name '" + sanitize(name) +
	                      "' is invalid: use 1..63 characters of [A-Za-z0-9._-], "
	                      "starting with a letter or digit");
}

Result<WireRegionSpec> make_region_spec(std::string_view name, uint64_t size_bytes,
                                        uint32_t owner_uid, uint32_t mode, uint64_t replica_group,
                                        uint8_t replicas)
{
	MF_RETURN_IF_ERROR(check_name_argument(name));
	WireRegionSpec s{};
	s.name_len = static_cast<uint8_t>(name.size());
	std::memcpy(s.name, name.data(), name.size());
	s.size_bytes = size_bytes;
	s.owner_uid = owner_uid;
	s.mode = mode;
	s.replica_group = replica_group;
	s.replicas = replicas;
	return s;
}

// WireRegion on the wire: u32 id, u32 uid, u32 mode, u8 name_len, 63 name,
// u64 fa_offset, u64 size, u64 ctime_ns, u64 length, u64 replica_group,
// u8 replicas, 7 reserved.
void encode_region(const WireRegion &r, uint8_t out[kRegionSize])
{
	put32(out, r.id);
	put32(out + 4, r.owner_uid);
	put32(out + 8, r.mode);
	encode_fixed_name(r.name_len, r.name, out + 12);
	put32(out + 76, 0); // the struct's 4 padding bytes, kept zero
	put64(out + 80, r.fa_offset);
	put64(out + 88, r.size_bytes);
	put64(out + 96, r.ctime_ns);
	put64(out + 104, r.length);
	put64(out + 112, r.replica_group);
	put8(out + 120, r.replicas);
	put8(out + 121, r.access);
	std::memset(out + 122, 0, 6);
}

Result<WireRegion> decode_region(std::span<const uint8_t> p)
{
	MF_RETURN_IF_ERROR(check_size("region", p, kRegionSize));
	WireRegion r{};
	r.id = get32(p.data());
	r.owner_uid = get32(p.data() + 4);
	r.mode = get32(p.data() + 8);
	MF_RETURN_IF_ERROR(decode_fixed_name("region", p.data() + 12, &r.name_len, r.name));
	r.fa_offset = get64(p.data() + 80);
	r.size_bytes = get64(p.data() + 88);
	r.ctime_ns = get64(p.data() + 96);
	r.length = get64(p.data() + 104);
	r.replica_group = get64(p.data() + 112);
	r.replicas = p[120];
	r.access = p[121];
	std::string name = region_name(r);
	if (!all_zero(p.subspan(122, 6)))
		return proto("region '%s' reserved bytes after access are not zero", name.c_str());
	if (r.access & ~(kAccessKnown | kAccessAnswered))
		return proto("region '%s' access 0x%x has unknown bits", name.c_str(), r.access);
	if (r.size_bytes == 0 || r.size_bytes % kPageSize != 0)
		return proto("region '%s' size_bytes %" PRIu64
		             " is not a non-zero multiple of the page size",
		             name.c_str(), r.size_bytes);
	if (r.fa_offset % kPageSize != 0)
		return proto("region '%s' fa_offset 0x%" PRIx64 " is not page-aligned",
		             name.c_str(), r.fa_offset);
	if (r.fa_offset > UINT64_MAX - r.size_bytes)
		return proto("region '%s' fa_offset 0x%" PRIx64 " + size overflows", name.c_str(),
		             r.fa_offset);
	if (r.mode & ~07777u)
		return proto("region '%s' mode 0%o has bits outside 07777", name.c_str(), r.mode);
	if (r.length > r.size_bytes)
		return proto("region '%s' length %" PRIu64 " exceeds its size_bytes %" PRIu64,
		             name.c_str(), r.length, r.size_bytes);
	return r;
}

// WireSetLength on the wire: u8 name_len, 63 name, u64 length, u32 flags,
// u32 reserved.
void encode_set_length(const WireSetLength &s, uint8_t out[kSetLengthSize])
{
	encode_fixed_name(s.name_len, s.name, out);
	put64(out + 64, s.length);
	put32(out + 72, s.flags);
	put32(out + 76, 0);
}

Result<WireSetLength> decode_set_length(std::span<const uint8_t> p)
{
	MF_RETURN_IF_ERROR(check_size("REGION_SET_LENGTH", p, kSetLengthSize));
	WireSetLength s{};
	MF_RETURN_IF_ERROR(decode_fixed_name("REGION_SET_LENGTH", p.data(), &s.name_len, s.name));
	s.length = get64(p.data() + 64);
	s.flags = get32(p.data() + 72);
	s.reserved = get32(p.data() + 76);
	if (s.flags & ~kSetLengthGrowOnly)
		return proto("REGION_SET_LENGTH flags 0x%" PRIx32 " has unknown bits", s.flags);
	if (s.reserved != 0)
		return proto("REGION_SET_LENGTH reserved field 0x%" PRIx32 " is not zero",
		             s.reserved);
	return s;
}

Result<WireSetLength> make_set_length(std::string_view name, uint64_t length, bool grow_only)
{
	MF_RETURN_IF_ERROR(check_name_argument(name));
	WireSetLength s{};
	s.name_len = static_cast<uint8_t>(name.size());
	std::memcpy(s.name, name.data(), name.size());
	s.length = length;
	s.flags = grow_only ? kSetLengthGrowOnly : 0;
	return s;
}

std::string region_name(const WireSetLength &s)
{
	return std::string(s.name, std::min<size_t>(s.name_len, kMaxRegionName));
}

std::string region_name(const WireRegion &r)
{
	return std::string(r.name, std::min<size_t>(r.name_len, kMaxRegionName));
}

std::string region_name(const WireRegionSpec &s)
{
	return std::string(s.name, std::min<size_t>(s.name_len, kMaxRegionName));
}

std::vector<uint8_t> encode_list_request(std::string_view after, uint32_t limit)
{
	std::vector<uint8_t> out(1 + after.size() + 4);
	out[0] = static_cast<uint8_t>(after.size());
	std::memcpy(out.data() + 1, after.data(), after.size());
	put32(out.data() + 1 + after.size(), limit);
	return out;
}

std::vector<uint8_t> encode_asked_list_request(std::string_view after, uint32_t limit, uint32_t uid)
{
	std::vector<uint8_t> out = encode_list_request(after, limit);
	size_t at = out.size();
	out.resize(at + kAskerSize);
	put32(out.data() + at, uid);
	put8(out.data() + at + 4, kAccessRead);
	return out;
}

Result<WireListRequest> decode_list_request(std::span<const uint8_t> p)
{
	WireListRequest r{};
	if (p.empty())
		return r;
	size_t len = p[0];
	if (p.size() == 1 + len + 4 + kAskerSize) {
		const uint8_t *a = p.data() + 1 + len + 4;
		if (a[4] != kAccessRead)
			return proto("REGION_LIST asker wants access 0x%x (a list asks read, 0x%x)",
			             a[4], kAccessRead);
		r.asked = true;
		r.uid = get32(a);
		p = p.first(1 + len + 4);
	}
	if (p.size() != 1 + len + 4)
		return proto("REGION_LIST request of %zu bytes, after_len %zu says %zu (or %zu "
		             "with an asker)",
		             p.size(), len, 1 + len + 4, 1 + len + 4 + kAskerSize);
	std::string_view after(reinterpret_cast<const char *>(p.data() + 1), len);
	if (len > 0 && !valid_region_name(after))
		return proto("REGION_LIST after '%s' is not a valid region name",
		             sanitize(after).c_str());
	r.after_len = static_cast<uint8_t>(len);
	std::memcpy(r.after, after.data(), len);
	r.limit = get32(p.data() + 1 + len);
	return r;
}

std::string list_after(const WireListRequest &r)
{
	return std::string(r.after, std::min<size_t>(r.after_len, kMaxRegionName));
}

uint32_t list_limit(const WireListRequest &r)
{
	return r.limit == 0 || r.limit > kRegionListPage ? kRegionListPage : r.limit;
}

std::vector<uint8_t> encode_region_list(std::span<const WireRegion> regions)
{
	std::vector<uint8_t> out(4 + regions.size() * kRegionSize);
	put32(out.data(), static_cast<uint32_t>(regions.size()));
	for (size_t i = 0; i < regions.size(); i++)
		encode_region(regions[i], out.data() + 4 + i * kRegionSize);
	return out;
}

Result<std::vector<WireRegion>> decode_region_list(std::span<const uint8_t> p)
{
	if (p.size() < 4)
		return proto("REGION_LIST payload of %zu bytes (need at least 4)", p.size());
	uint32_t n = get32(p.data());
	if ((p.size() - 4) % kRegionSize != 0 || (p.size() - 4) / kRegionSize != n)
		return proto("REGION_LIST says %" PRIu32 " regions but carries %zu bytes (expected "
		             "%zu)",
		             n, p.size() - 4, size_t{n} * kRegionSize);
	std::vector<WireRegion> out;
	out.reserve(n);
	for (uint32_t i = 0; i < n; i++) {
		auto r = decode_region(p.subspan(4 + size_t{i} * kRegionSize, kRegionSize));
		if (!r)
			return r.status();
		out.push_back(*r);
	}
	return out;
}

void encode_sequence(const WireSequence &s, uint8_t out[kSequenceSize])
{
	put64(out, s.session);
	put64(out + 8, s.seq);
}

Result<std::span<const uint8_t>> split_sequence(const Header &h, std::span<const uint8_t> payload,
                                                WireSequence *seq)
{
	*seq = {};
	if (!(h.flags & kFlagSequenced))
		return payload;
	if (payload.size() < kSequenceSize)
		return proto("%s payload of %zu bytes is shorter than its sequence (%" PRIu32
		             " bytes)",
		             msg_type_name(h.type), payload.size(), kSequenceSize);
	seq->session = get64(payload.data());
	seq->seq = get64(payload.data() + 8);
	if (seq->session == 0 || seq->seq == 0)
		return proto("%s sequence (session 0x%" PRIx64 ", seq %" PRIu64
		             ") has a zero field (both must be nonzero)",
		             msg_type_name(h.type), seq->session, seq->seq);
	return payload.subspan(kSequenceSize);
}

void encode_versioned_write(const WireVersionedWrite &w, uint8_t out[kVersionedWriteSize])
{
	put64(out, w.version);
	put32(out + 8, w.flags);
	put32(out + 12, 0);
}

Result<VersionedWrite> decode_versioned_write(uint32_t count, std::span<const uint8_t> p)
{
	if (count == 0 || count > kMaxPagesPerRequest)
		return proto("WRITE_VERSIONED count %" PRIu32 " out of range 1..%" PRIu32, count,
		             kMaxPagesPerRequest);
	MF_RETURN_IF_ERROR(
	        check_size("WRITE_VERSIONED", p, kVersionedWriteSize + size_t{count} * kPageSize));
	VersionedWrite w;
	w.prefix.version = get64(p.data());
	w.prefix.flags = get32(p.data() + 8);
	w.prefix.reserved = get32(p.data() + 12);
	if (w.prefix.version == 0)
		return proto(
		        "WRITE_VERSIONED version 0 (a versioned write needs a nonzero version)");
	if (w.prefix.flags & ~kVersionedRepair)
		return proto("WRITE_VERSIONED flags 0x%" PRIx32 " has unknown bits",
		             w.prefix.flags);
	if (w.prefix.reserved != 0)
		return proto("WRITE_VERSIONED reserved field 0x%" PRIx32 " is not zero",
		             w.prefix.reserved);
	w.pages = p.subspan(kVersionedWriteSize);
	return w;
}

void encode_applied(uint32_t applied, uint8_t out[kAppliedSize])
{
	put32(out, applied);
}

Result<uint32_t> decode_applied(uint32_t count, std::span<const uint8_t> p)
{
	MF_RETURN_IF_ERROR(check_size("WRITE_VERSIONED response", p, kAppliedSize));
	uint32_t applied = get32(p.data());
	if (applied > count)
		return proto("WRITE_VERSIONED response says %" PRIu32 " of %" PRIu32
		             " pages applied",
		             applied, count);
	return applied;
}

void encode_versions(std::span<const uint64_t> versions, uint8_t *out)
{
	for (size_t i = 0; i < versions.size(); i++)
		put64(out + i * sizeof(uint64_t), versions[i]);
}

Status decode_versions(uint32_t count, std::span<const uint8_t> p, uint64_t *versions)
{
	MF_RETURN_IF_ERROR(
	        check_size("READ_VERSIONS response", p, size_t{count} * sizeof(uint64_t)));
	for (uint32_t i = 0; i < count; i++)
		versions[i] = get64(p.data() + size_t{i} * sizeof(uint64_t));
	return Status::ok();
}

Result<std::span<const uint8_t>> decode_read_versioned(uint32_t count, std::span<const uint8_t> p,
                                                       uint64_t *versions)
{
	MF_RETURN_IF_ERROR(check_size("READ_VERSIONED response", p,
	                              size_t{count} * (sizeof(uint64_t) + kPageSize)));
	for (uint32_t i = 0; i < count; i++)
		versions[i] = get64(p.data() + size_t{i} * sizeof(uint64_t));
	return p.subspan(size_t{count} * sizeof(uint64_t));
}

void encode_stat(const WireStat &s, uint8_t out[kStatSize])
{
	put64(out, s.capacity_bytes);
	put64(out + 8, s.used_bytes);
	put64(out + 16, s.free_bytes);
	put64(out + 24, s.largest_free_bytes);
	put32(out + 32, s.regions);
	put32(out + 36, s.page_size);
	put64(out + 40, s.reads);
	put64(out + 48, s.writes);
	put64(out + 56, s.log_replays);
	put64(out + 64, s.uptime_ns);
}

Result<WireStat> decode_stat(std::span<const uint8_t> p)
{
	MF_RETURN_IF_ERROR(check_size("STAT", p, kStatSize));
	WireStat s{};
	s.capacity_bytes = get64(p.data());
	s.used_bytes = get64(p.data() + 8);
	s.free_bytes = get64(p.data() + 16);
	s.largest_free_bytes = get64(p.data() + 24);
	s.regions = get32(p.data() + 32);
	s.page_size = get32(p.data() + 36);
	s.reads = get64(p.data() + 40);
	s.writes = get64(p.data() + 48);
	s.log_replays = get64(p.data() + 56);
	s.uptime_ns = get64(p.data() + 64);
	if (s.page_size != kPageSize)
		return proto("STAT page_size %" PRIu32 " (expected %u)", s.page_size, kPageSize);
	if (s.used_bytes > s.capacity_bytes || s.free_bytes > s.capacity_bytes ||
	    s.largest_free_bytes > s.free_bytes)
		return proto("STAT sizes inconsistent: capacity %" PRIu64 ", used %" PRIu64
		             ", free %" PRIu64 ", largest free %" PRIu64,
		             s.capacity_bytes, s.used_bytes, s.free_bytes, s.largest_free_bytes);
	return s;
}

std::vector<uint8_t> encode_name(std::string_view name)
{
	std::vector<uint8_t> out(1 + name.size());
	out[0] = static_cast<uint8_t>(name.size());
	std::memcpy(out.data() + 1, name.data(), name.size());
	return out;
}

Result<std::string> decode_name(std::span<const uint8_t> p)
{
	if (p.empty())
		return proto("empty name payload (need u8 length + name)");
	size_t len = p[0];
	if (p.size() != 1 + len)
		return proto("name payload of %zu bytes, name_len %zu says %zu", p.size(), len,
		             1 + len);
	std::string_view name(reinterpret_cast<const char *>(p.data() + 1), len);
	if (!valid_region_name(name))
		return proto("name '%s' is not a valid region name ([A-Za-z0-9._-], 1..63 "
		             "characters, starting with a letter or digit)",
		             sanitize(name).c_str());
	return std::string(name);
}

Status decode_rdma_write(std::span<const uint8_t> msg, Header *h, std::span<const uint8_t> *payload)
{
	if (msg.size() < kHeaderSize)
		return proto("RDMA write message of %zu bytes is shorter than a header (%zu)",
		             msg.size(), kHeaderSize);
	if (msg.size() > kRdmaWriteMessageMax)
		return proto("RDMA write message of %zu bytes exceeds %" PRIu32, msg.size(),
		             kRdmaWriteMessageMax);
	Status st = validate_header(msg.first(kHeaderSize), h);
	if (!st.is_ok())
		return st;
	if (h->flags & kFlagResponse)
		return proto("RDMA write message is a %s response", msg_type_name(h->type));
	if (h->type != uint8_t(MsgType::kWrite) && h->type != uint8_t(MsgType::kWriteVersioned))
		return proto("RDMA write message of type %s (only WRITE and WRITE_VERSIONED)",
		             msg_type_name(h->type));
	*payload = msg.subspan(kHeaderSize);
	return check_payload(*h, *payload);
}

Result<std::string> decode_error_message(std::span<const uint8_t> p)
{
	if (p.size() > kMaxErrorMessage)
		return proto("error message of %zu bytes exceeds %zu", p.size(), kMaxErrorMessage);
	if (std::memchr(p.data(), 0, p.size()) != nullptr)
		return proto("error message contains a NUL byte");
	return std::string(reinterpret_cast<const char *>(p.data()), p.size());
}

Status response_status(const Header &h, std::span<const uint8_t> payload)
{
	if (h.status == 0)
		return Status::ok();
	auto msg = decode_error_message(payload);
	if (!msg)
		return msg.status();
	std::string text = msg->empty() ? std::string("peer reported an error without a message")
	                                : sanitize(*msg);
	return Status(static_cast<Code>(h.status), text);
}

std::vector<uint8_t> encode_asked_lookup(std::string_view name, uint32_t uid, uint8_t want)
{
	std::vector<uint8_t> out = encode_name(name);
	size_t at = out.size();
	out.resize(at + kAskerSize);
	put32(out.data() + at, uid);
	put8(out.data() + at + 4, want);
	return out;
}

Result<WireLookup> decode_lookup(std::span<const uint8_t> p)
{
	WireLookup l;
	if (!p.empty() && p.size() == size_t{1} + p[0] + kAskerSize) {
		const uint8_t *a = p.data() + 1 + p[0];
		l.asked = true;
		l.uid = get32(a);
		l.want = a[4];
		if (l.want == 0 || (l.want & ~kAccessKnown) != 0)
			return proto(
			        "REGION_LOOKUP wants access 0x%x (known bits 0x%x, at least one)",
			        l.want, kAccessKnown);
		p = p.first(p.size() - kAskerSize);
	}
	auto name = decode_name(p);
	if (!name)
		return name.status();
	l.name = std::move(*name);
	return l;
}

// WireAccessRequest on the wire: u8 name_len, 63 name, u8 op, u8 rights,
// 2 reserved, u32 asker_uid, 32 key, u32 uid, 4 reserved.
void encode_access_request(const WireAccessRequest &r, uint8_t out[kAccessRequestSize])
{
	encode_fixed_name(r.name_len, r.name, out);
	put8(out + 64, r.op);
	put8(out + 65, r.rights);
	put8(out + 66, 0);
	put8(out + 67, 0);
	put32(out + 68, r.asker_uid);
	std::memcpy(out + 72, r.key, sizeof(r.key));
	put32(out + 104, r.uid);
	put32(out + 108, 0);
}

Result<WireAccessRequest> decode_access_request(std::span<const uint8_t> p)
{
	MF_RETURN_IF_ERROR(check_size("REGION_ACCESS", p, kAccessRequestSize));
	WireAccessRequest r{};
	MF_RETURN_IF_ERROR(decode_fixed_name("REGION_ACCESS", p.data(), &r.name_len, r.name));
	r.op = p[64];
	r.rights = p[65];
	r.asker_uid = get32(p.data() + 68);
	std::memcpy(r.key, p.data() + 72, sizeof(r.key));
	r.uid = get32(p.data() + 104);
	if (!all_zero(p.subspan(66, 2)) || !all_zero(p.subspan(108, 4)))
		return proto("REGION_ACCESS reserved bytes are not zero");
	if (r.op > static_cast<uint8_t>(AccessOp::kRevoke))
		return proto("REGION_ACCESS op %u is unknown (0 show, 1 grant, 2 revoke)", r.op);
	if (r.op == static_cast<uint8_t>(AccessOp::kGrant) && r.rights != kAccessRead &&
	    r.rights != (kAccessRead | kAccessWrite))
		return proto("REGION_ACCESS grants rights 0x%x (read 0x1 or read+write 0x3)",
		             r.rights);
	if (r.op != static_cast<uint8_t>(AccessOp::kGrant) && r.rights != 0)
		return proto("REGION_ACCESS op %u with rights 0x%x (only a grant has rights)", r.op,
		             r.rights);
	return r;
}

std::string region_name(const WireAccessRequest &r)
{
	return std::string(r.name, std::min<size_t>(r.name_len, kMaxRegionName));
}

// WireAccessList: 32 owner key, u32 owner uid, u8 n, 3 reserved, then n *
// (32 key, u32 uid, u8 rights, 3 reserved).
std::vector<uint8_t> encode_access_list(const WireAccessList &l)
{
	std::vector<uint8_t> out(40 + l.grants.size() * 40, 0);
	std::memcpy(out.data(), l.owner_key, 32);
	put32(out.data() + 32, l.owner_uid);
	put8(out.data() + 36, static_cast<uint8_t>(l.grants.size()));
	for (size_t i = 0; i < l.grants.size(); i++) {
		uint8_t *g = out.data() + 40 + i * 40;
		std::memcpy(g, l.grants[i].key, 32);
		put32(g + 32, l.grants[i].uid);
		put8(g + 36, l.grants[i].rights);
	}
	return out;
}

Result<WireAccessList> decode_access_list(std::span<const uint8_t> p)
{
	if (p.size() < 40 || p.size() != 40 + size_t{p[36]} * 40)
		return proto("REGION_ACCESS response of %zu bytes does not hold its %u grants",
		             p.size(), p.size() < 40 ? 0u : unsigned{p[36]});
	WireAccessList l{};
	std::memcpy(l.owner_key, p.data(), 32);
	l.owner_uid = get32(p.data() + 32);
	for (size_t i = 0; i < p[36]; i++) {
		const uint8_t *g = p.data() + 40 + i * 40;
		WireGrant w{};
		std::memcpy(w.key, g, 32);
		w.uid = get32(g + 32);
		w.rights = g[36];
		if (w.rights == 0 || (w.rights & ~(kAccessRead | kAccessWrite)) != 0)
			return proto("REGION_ACCESS response grant %zu has rights 0x%x", i,
			             w.rights);
		l.grants.push_back(w);
	}
	return l;
}

} // namespace memfed::wire
