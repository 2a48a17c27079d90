// TLS 1.3 record protection; see tls_records.h.
#include "daemon/trust/tls_records.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstring>
#include <string>

namespace memfed::trust
{

namespace
{

const EVP_MD *suite_hash(TlsSuite s)
{
	return s == TlsSuite::kAes128GcmSha256 ? EVP_sha256() : EVP_sha384();
}

const EVP_CIPHER *suite_cipher(TlsSuite s)
{
	return s == TlsSuite::kAes128GcmSha256 ? EVP_aes_128_gcm() : EVP_aes_256_gcm();
}

size_t suite_key_len(TlsSuite s)
{
	return s == TlsSuite::kAes128GcmSha256 ? 16 : 32;
}

Status crypto_error(const char *what)
{
	return Status(Code::kInternal, std::string("TLS record layer: OpenSSL failed ") + what);
}

} // namespace

Status hkdf_expand_label(TlsSuite suite, std::span<const uint8_t> secret, const char *label,
                         std::span<uint8_t> out)
{
	// HkdfLabel = length (2) || "tls13 " label (1 + n) || context "" (1);
	// every output here is at most one hash long, so HKDF-Expand is its
	// first block: HMAC(secret, HkdfLabel || 0x01).
	const EVP_MD *md = suite_hash(suite);
	size_t hash_len = static_cast<size_t>(EVP_MD_get_size(md));
	std::string full = std::string("tls13 ") + label;
	if (out.size() > hash_len || full.size() > 255)
		return Status(Code::kInternal, "HKDF-Expand-Label: output longer than one hash");
	uint8_t info[2 + 1 + 255 + 1 + 1];
	size_t n = 0;
	info[n++] = static_cast<uint8_t>(out.size() >> 8);
	info[n++] = static_cast<uint8_t>(out.size());
	info[n++] = static_cast<uint8_t>(full.size());
	std::memcpy(info + n, full.data(), full.size());
	n += full.size();
	info[n++] = 0; // empty context
	info[n++] = 1; // HKDF-Expand's block counter
	uint8_t block[EVP_MAX_MD_SIZE];
	unsigned int block_len = 0;
	if (HMAC(md, secret.data(), static_cast<int>(secret.size()), info, n, block, &block_len) ==
	            nullptr ||
	    block_len != hash_len)
		return crypto_error("computing HMAC");
	std::memcpy(out.data(), block, out.size());
	OPENSSL_cleanse(block, sizeof(block));
	return Status::ok();
}

RecordProtection::~RecordProtection()
{
	EVP_CIPHER_CTX_free(ctx_);
	OPENSSL_cleanse(secret_.data(), secret_.size());
	OPENSSL_cleanse(iv_.data(), iv_.size());
}

Status RecordProtection::init(TlsSuite suite, std::span<const uint8_t> secret)
{
	size_t hash_len = static_cast<size_t>(EVP_MD_get_size(suite_hash(suite)));
	if (secret.size() != hash_len)
		return Status(Code::kInternal, "TLS record layer: a traffic secret of " +
		                                       std::to_string(secret.size()) +
		                                       " bytes for a hash of " +
		                                       std::to_string(hash_len));
	suite_ = suite;
	std::memcpy(secret_.data(), secret.data(), secret.size());
	secret_len_ = secret.size();
	uint8_t key[32];
	std::span<uint8_t> k(key, suite_key_len(suite));
	Status st = hkdf_expand_label(suite, {secret_.data(), secret_len_}, "key", k);
	if (st.is_ok())
		st = hkdf_expand_label(suite, {secret_.data(), secret_len_}, "iv", iv_);
	if (st.is_ok()) {
		if (ctx_ == nullptr)
			ctx_ = EVP_CIPHER_CTX_new();
		if (ctx_ == nullptr ||
		    EVP_CipherInit_ex(ctx_, suite_cipher(suite), nullptr, key, nullptr, -1) != 1)
			st = crypto_error("setting up AES-GCM");
	}
	OPENSSL_cleanse(key, sizeof(key));
	seq_ = 0;
	return st;
}

Status RecordProtection::next_key()
{
	std::array<uint8_t, 48> next{};
	std::span<uint8_t> out(next.data(), secret_len_);
	MF_RETURN_IF_ERROR(
	        hkdf_expand_label(suite_, {secret_.data(), secret_len_}, "traffic upd", out));
	Status st = init(suite_, out);
	OPENSSL_cleanse(next.data(), next.size());
	return st;
}

// The per-record nonce: the IV with the sequence number XORed into its
// last eight bytes (§5.3).
void RecordProtection::nonce(uint8_t out[12]) const
{
	std::memcpy(out, iv_.data(), 12);
	for (int i = 0; i < 8; i++)
		out[11 - i] ^= static_cast<uint8_t>(seq_ >> (8 * i));
}

Status RecordProtection::seal(uint8_t type, const iovec *iov, size_t n, size_t len, ByteBuffer &out)
{
	if (len > kTlsMaxContent)
		return Status(Code::kInternal,
		              "TLS record layer: a record of " + std::to_string(len) + " bytes");
	size_t body = len + 1 + kTlsTag;
	uint8_t *rec = out.append(kTlsHeader + body);
	rec[0] = kTlsApplicationData; // every protected record says so (§5.2)
	rec[1] = 0x03;
	rec[2] = 0x03;
	rec[3] = static_cast<uint8_t>(body >> 8);
	rec[4] = static_cast<uint8_t>(body);
	uint8_t iv[12];
	nonce(iv);
	int outl = 0;
	uint8_t *p = rec + kTlsHeader;
	bool ok = EVP_CipherInit_ex(ctx_, nullptr, nullptr, nullptr, iv, 1) == 1 &&
	          EVP_CipherUpdate(ctx_, nullptr, &outl, rec, kTlsHeader) == 1;
	for (size_t i = 0; ok && i < n; i++) {
		if (iov[i].iov_len == 0)
			continue;
		ok = EVP_CipherUpdate(ctx_, p, &outl, static_cast<const uint8_t *>(iov[i].iov_base),
		                      static_cast<int>(iov[i].iov_len)) == 1;
		p += outl;
	}
	ok = ok && EVP_CipherUpdate(ctx_, p, &outl, &type, 1) == 1;
	p += outl;
	ok = ok && EVP_CipherFinal_ex(ctx_, p, &outl) == 1;
	p += outl;
	ok = ok && p == rec + kTlsHeader + len + 1 &&
	     EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_AEAD_GET_TAG, kTlsTag, p) == 1;
	if (!ok) {
		out.truncate(out.readable() - kTlsHeader - body);
		return crypto_error("sealing a record");
	}
	seq_++;
	return Status::ok();
}

Result<RecordProtection::Inner> RecordProtection::open(std::span<const uint8_t> record,
                                                       uint8_t *dst)
{
	// The caller checked the header: record.size() - kTlsHeader is in
	// [kTlsTag + 1, kTlsTag + kTlsMaxInner].
	const uint8_t *ct = record.data() + kTlsHeader;
	size_t inner = record.size() - kTlsHeader - kTlsTag;
	uint8_t iv[12];
	nonce(iv);
	uint8_t last = 0;
	int outl = 0;
	bool ok = EVP_CipherInit_ex(ctx_, nullptr, nullptr, nullptr, iv, 0) == 1 &&
	          EVP_CipherUpdate(ctx_, nullptr, &outl, record.data(), kTlsHeader) == 1 &&
	          (inner == 1 ||
	           EVP_CipherUpdate(ctx_, dst, &outl, ct, static_cast<int>(inner - 1)) == 1) &&
	          EVP_CipherUpdate(ctx_, &last, &outl, ct + inner - 1, 1) == 1;
	if (!ok)
		return crypto_error("opening a record");
	uint8_t tag[kTlsTag];
	std::memcpy(tag, ct + inner, kTlsTag);
	if (EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_AEAD_SET_TAG, kTlsTag, tag) != 1)
		return crypto_error("setting a record's tag");
	uint8_t fin[16];
	if (EVP_CipherFinal_ex(ctx_, fin, &outl) != 1)
		return Status(Code::kCorrupt, "record failed its authentication tag");
	seq_++;
	// The content type is the last non-zero byte; zeros after it are
	// padding (§5.4).
	size_t len = inner - 1;
	uint8_t type = last;
	while (type == 0 && len > 0)
		type = dst[--len];
	if (type == 0)
		return Status(Code::kProtocol, "a TLS record with no content type (all padding)");
	return Inner{type, len};
}

} // namespace memfed::trust
