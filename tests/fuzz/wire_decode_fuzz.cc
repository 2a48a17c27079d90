// libFuzzer target: untrusted bytes through every wire decoder.
//
// The first kHeaderSize bytes go through validate_header (and, when valid,
// the rest through check_payload); independently, the bytes after the first
// go through each payload decoder, so decoders are exercised without the
// fuzzer having to forge a header crc. Whatever decodes must re-encode to
// something that decodes to the same encoding.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "daemon/wire/codec.h"

using namespace memfed::wire;

namespace
{

void check(bool ok)
{
	if (!ok)
		abort();
}

template <size_t N, typename T, typename Enc, typename Dec>
void round_trip(const T &v, Enc enc, Dec dec)
{
	uint8_t a[N], b[N];
	enc(v, a);
	auto again = dec(std::span<const uint8_t>(a, N));
	check(again.is_ok());
	enc(*again, b);
	check(std::memcmp(a, b, N) == 0);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	std::span<const uint8_t> in(data, size);
	Header h;
	if (validate_header(in, &h).is_ok()) {
		check(validate_fields(h).is_ok());
		auto payload = in.subspan(kHeaderSize);
		if (payload.size() > h.payload_len)
			payload = payload.first(h.payload_len);
		if (check_payload(h, payload).is_ok()) {
			(void)response_status(h, payload);
			uint8_t again[kHeaderSize];
			Header copy = h;
			encode_header(copy, payload, again);
			check(std::memcmp(again, data, kHeaderSize) == 0);
			// A sequenced request (wire version 5): the sequence splits off
			// its payload, nonzero, and re-encodes to the same bytes.
			WireSequence seq;
			if (auto rest = split_sequence(h, payload, &seq); rest.is_ok()) {
				bool sequenced = h.flags & kFlagSequenced;
				check(!sequenced ||
				      (seq.session != 0 && seq.seq != 0 &&
				       rest->size() + kSequenceSize == payload.size() &&
				       (h.type == uint8_t(MsgType::kWrite) ||
				        h.type == uint8_t(MsgType::kWriteVersioned))));
				check(sequenced || rest->size() == payload.size());
				if (sequenced) {
					uint8_t s[kSequenceSize];
					encode_sequence(seq, s);
					check(std::memcmp(s, payload.data(), kSequenceSize) == 0);
				}
			}
		}
	}
	// A received RDMA write message: the whole input, as the SEND carried it.
	{
		Header w;
		std::span<const uint8_t> wp;
		if (decode_rdma_write(in, &w, &wp).is_ok()) {
			check(w.type == uint8_t(MsgType::kWrite) ||
			      w.type == uint8_t(MsgType::kWriteVersioned));
			check(wp.size() == w.payload_len && size == kHeaderSize + wp.size());
		}
	}
	if (size == 0)
		return 0;
	auto p = in.subspan(1);
	if (auto r = decode_hello_request(p); r.is_ok())
		round_trip<kHelloRequestSize>(*r, encode_hello_request, decode_hello_request);
	if (auto r = decode_hello_response(p); r.is_ok())
		round_trip<kHelloResponseSize>(*r, encode_hello_response, decode_hello_response);
	if (auto r = decode_region_spec(p); r.is_ok()) {
		check(memfed::valid_region_name(region_name(*r)));
		round_trip<kRegionSpecSize>(*r, encode_region_spec, decode_region_spec);
	}
	if (auto r = decode_set_length(p); r.is_ok()) {
		check(memfed::valid_region_name(region_name(*r)));
		round_trip<kSetLengthSize>(*r, encode_set_length, decode_set_length);
	}
	if (auto r = decode_region(p); r.is_ok()) {
		check(r->size_bytes % kPageSize == 0 && r->size_bytes > 0);
		check(r->length <= r->size_bytes);
		round_trip<kRegionSize>(*r, encode_region, decode_region);
	}
	if (auto r = decode_region_list(p); r.is_ok()) {
		auto enc = encode_region_list(*r);
		auto again = decode_region_list(enc);
		check(again.is_ok() && again->size() == r->size());
		check(encode_region_list(*again) == enc);
	}
	if (auto r = decode_stat(p); r.is_ok())
		round_trip<kStatSize>(*r, encode_stat, decode_stat);
	if (auto r = decode_name(p); r.is_ok()) {
		check(memfed::valid_region_name(*r));
		check(encode_name(*r) == std::vector<uint8_t>(p.begin(), p.end()));
	}
	// The versioned payloads (wire version 4), with the count the payload's
	// length implies (and, for decode_applied, the first byte as the count).
	if (p.size() >= kVersionedWriteSize) {
		auto count = uint32_t((p.size() - kVersionedWriteSize) / kPageSize);
		if (auto r = decode_versioned_write(count, p); r.is_ok()) {
			check(r->prefix.version != 0);
			check(r->pages.size() == size_t{count} * kPageSize);
			uint8_t again[kVersionedWriteSize];
			encode_versioned_write(r->prefix, again);
			check(std::memcmp(again, p.data(), kVersionedWriteSize) == 0);
		}
	}
	if (auto r = decode_applied(data[0], p); r.is_ok()) {
		check(*r <= data[0]);
		uint8_t again[kAppliedSize];
		encode_applied(*r, again);
		check(std::memcmp(again, p.data(), kAppliedSize) == 0);
	}
	{
		auto count = uint32_t(std::min<size_t>(p.size() / 8, kMaxVersionsPerRequest));
		std::vector<uint64_t> v(count);
		if (decode_versions(count, p, v.data()).is_ok()) {
			std::vector<uint8_t> again(p.size());
			encode_versions(v, again.data());
			check(again == std::vector<uint8_t>(p.begin(), p.end()));
		}
		count = uint32_t(std::min<size_t>(p.size() / (8 + kPageSize), kMaxPagesPerRequest));
		v.resize(count);
		if (auto r = decode_read_versioned(count, p, v.data()); r.is_ok()) {
			check(r->size() == size_t{count} * kPageSize);
			std::vector<uint8_t> again(count * 8);
			encode_versions(v, again.data());
			check(std::equal(again.begin(), again.end(), p.begin()));
		}
	}
	if (auto r = decode_error_message(p); r.is_ok())
		check(r->size() == p.size());
	// Region access (issue 13): asked lookups, grant requests, grant lists.
	if (auto r = decode_lookup(p); r.is_ok()) {
		auto again = r->asked ? encode_asked_lookup(r->name, r->uid, r->want)
		                      : encode_name(r->name);
		check(again == std::vector<uint8_t>(p.begin(), p.end()));
	}
	if (auto r = decode_access_request(p); r.is_ok())
		round_trip<kAccessRequestSize>(*r, encode_access_request, decode_access_request);
	if (auto r = decode_access_list(p); r.is_ok()) {
		// Reserved bytes are not kept: the re-encoding decodes the same.
		auto enc = encode_access_list(*r);
		check(enc.size() == p.size());
		auto again = decode_access_list(enc);
		check(again.is_ok() && again->grants.size() == r->grants.size() &&
		      again->owner_uid == r->owner_uid && encode_access_list(*again) == enc);
	}
	return 0;
}
