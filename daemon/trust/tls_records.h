// RecordProtection: one direction of an established TLS 1.3 session's
// record protection (RFC 8446 §5.2-5.3, §7.1-7.3): the traffic keys derived
// from a traffic secret, the record sequence number, and the AEAD that seals
// and opens records with them.
//
// OpenSSL runs the handshake (see tls_session.h) and hands the two traffic
// secrets over; from then on records are sealed and opened here, so that a
// page travels in one pass each way: sealed from the sender's buffer into
// the buffer the socket sends from, opened from the receive buffer straight
// into the page. (OpenSSL's own record layer copies a record's plaintext
// through its record buffer on both sides.) The cipher is OpenSSL's AES-GCM
// through EVP, the key schedule HKDF-Expand-Label over OpenSSL's HMAC: no
// primitive is home-made, only the record framing is.
//
// Thread-safety: none; the session's thread.
#pragma once

#include <sys/uio.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "daemon/common/status.h"
#include "daemon/transport/byte_buffer.h" // header-only byte queue

struct evp_cipher_ctx_st;

namespace memfed::trust
{

// TLS 1.3 record limits.
constexpr size_t kTlsMaxContent = 16384;            // 2^14 bytes of content
constexpr size_t kTlsMaxInner = kTlsMaxContent + 1; // ... and its content type
constexpr size_t kTlsMaxCiphertext = kTlsMaxContent + 256;
constexpr size_t kTlsHeader = 5;
constexpr size_t kTlsTag = 16;

// TLS 1.3 content types.
constexpr uint8_t kTlsAlert = 21;
constexpr uint8_t kTlsHandshake = 22;
constexpr uint8_t kTlsApplicationData = 23;

// The two cipher suites memfed negotiates (tls_context.cc).
enum class TlsSuite { kAes128GcmSha256, kAes256GcmSha384 };

// HKDF-Expand-Label(secret, label, "", out.size()) with the suite's hash
// (RFC 8446 §7.1); out.size() must not exceed the hash's length.
Status hkdf_expand_label(TlsSuite suite, std::span<const uint8_t> secret, const char *label,
                         std::span<uint8_t> out);

class RecordProtection
{
public:
	RecordProtection() = default;
	~RecordProtection();
	RecordProtection(const RecordProtection &) = delete;
	RecordProtection &operator=(const RecordProtection &) = delete;

	// Keys from `secret` (a traffic secret, the hash's length); sequence 0.
	Status init(TlsSuite suite, std::span<const uint8_t> secret);
	// The next generation of keys (a KeyUpdate, §7.2); sequence 0.
	Status next_key();
	bool ready() const { return ctx_ != nullptr; }
	// Records protected under the current key.
	uint64_t records() const { return seq_; }

	// Appends to `out` one record of `type` whose content is the
	// concatenation of `iov` (`len` bytes in all, at most kTlsMaxContent).
	Status seal(uint8_t type, const iovec *iov, size_t n, size_t len, ByteBuffer &out);

	struct Inner {
		uint8_t type;
		size_t len; // the content's length, without its type and padding
	};
	// Opens `record` (header, ciphertext, tag; the header already checked)
	// into `dst`, which has room for the ciphertext's length minus the tag,
	// minus one: the content and any padding (the type is kept aside, so a
	// record whose content exactly fills dst opens straight into it).
	// kCorrupt when the tag fails: dst then holds bytes that must not be
	// used. kProtocol when the inner plaintext has no content type.
	Result<Inner> open(std::span<const uint8_t> record, uint8_t *dst);

private:
	void nonce(uint8_t out[12]) const;

	evp_cipher_ctx_st *ctx_ = nullptr;
	TlsSuite suite_ = TlsSuite::kAes128GcmSha256;
	std::array<uint8_t, 48> secret_{};
	size_t secret_len_ = 0;
	std::array<uint8_t, 12> iv_{};
	uint64_t seq_ = 0;
};

} // namespace memfed::trust
