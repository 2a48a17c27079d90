// One connection's TLS 1.3 state over memory buffers; see tls_session.h.
//
// During the handshake the SSL object talks to a BIO of our own: reads come
// out of the session's input buffer, writes are appended to its output
// buffer. Once established, the SSL object is freed and records go through
// RecordProtection (tls_records.h) in both directions.
#include "daemon/trust/tls_session.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cstring>
#include <string_view>

#include "daemon/common/log.h"

namespace memfed::trust
{

namespace
{
constexpr const char *kComp = "tls";
constexpr uint8_t kKeyUpdate = 24; // TLS 1.3 handshake types
constexpr uint8_t kNewSessionTicket = 4;
constexpr uint8_t kCloseNotify = 0; // alert description
// AES-GCM's limit is 2^24.5 full records per key (RFC 8446 §5.5): rekey
// well before it whatever the configured limits say.
constexpr uint64_t kMaxRecordsPerKey = uint64_t{1} << 23;
// A record gathers at most this many pieces (more small pieces than this
// end it early: records need not be full).
constexpr size_t kMaxPiecesPerRecord = 64;

int session_index()
{
	static int idx = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
	return idx;
}

TlsSession *session_of(SSL *ssl)
{
	return static_cast<TlsSession *>(SSL_get_ex_data(ssl, session_index()));
}

// The session's BIO: BIO data is the TlsSession.
int bio_write(BIO *b, const char *data, size_t len, size_t *written)
{
	auto *s = static_cast<TlsSession *>(BIO_get_data(b));
	std::memcpy(s->output().append(len), data, len);
	*written = len;
	return 1;
}

int bio_read(BIO *b, char *data, size_t len, size_t *readbytes)
{
	auto *s = static_cast<TlsSession *>(BIO_get_data(b));
	BIO_clear_retry_flags(b);
	ByteBuffer &in = s->input();
	size_t n = std::min(len, in.readable());
	if (n == 0) {
		BIO_set_retry_read(b);
		*readbytes = 0;
		return 0;
	}
	std::memcpy(data, in.read_ptr(), n);
	in.consume(n);
	*readbytes = n;
	return 1;
}

long bio_ctrl(BIO *b, int cmd, long, void *)
{
	auto *s = static_cast<TlsSession *>(BIO_get_data(b));
	switch (cmd) {
	case BIO_CTRL_FLUSH:
		return 1;
	case BIO_CTRL_PENDING:
		return static_cast<long>(s->input().readable());
	case BIO_CTRL_WPENDING:
		return static_cast<long>(s->output().readable());
	default:
		return 0;
	}
}

BIO_METHOD *bio_method()
{
	static BIO_METHOD *m = [] {
		BIO_METHOD *bm = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
		                              "memfed session buffers");
		BIO_meth_set_write_ex(bm, bio_write);
		BIO_meth_set_read_ex(bm, bio_read);
		BIO_meth_set_ctrl(bm, bio_ctrl);
		return bm;
	}();
	return m;
}

std::string fix_for(const PublicKey &key)
{
	return "memfedctl peer add " + encode_key(key);
}

} // namespace

int tls_verify_callback(int, X509_STORE_CTX *store)
{
	SSL *ssl = static_cast<SSL *>(
	        X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
	TlsSession *s = ssl ? session_of(ssl) : nullptr;
	if (s == nullptr)
		return 0;
	// Certificates are pinned by their key: chain, issuer and dates do not
	// matter, only the leaf's key does (CertificateVerify proves the peer
	// holds it).
	if (X509_STORE_CTX_get_error_depth(store) != 0)
		return 1;
	if (s->check_peer_certificate(X509_STORE_CTX_get_current_cert(store))) {
		X509_STORE_CTX_set_error(store, X509_V_OK);
		return 1;
	}
	X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REJECTED);
	return 0;
}

void tls_keylog_callback(const SSL *ssl, const char *line)
{
	TlsSession *s = session_of(const_cast<SSL *>(ssl));
	if (s != nullptr)
		s->on_keylog_line(line);
}

TlsSession::TlsSession(std::shared_ptr<TlsContext> ctx, TlsRole role, std::string peer)
    : ctx_(std::move(ctx)), role_(role), peer_(std::move(peer)), in_(64 * 1024), out_(64 * 1024),
      stage_(new uint8_t[kTlsMaxInner]), last_rekey_(std::chrono::steady_clock::now())
{
	ERR_clear_error();
	ssl_ = SSL_new(ctx_->ctx_);
	BIO *bio = ssl_ ? BIO_new(bio_method()) : nullptr;
	if (bio == nullptr) {
		status_ = Status(Code::kInternal, "TLS: cannot create a session (out of memory?)");
		ERR_clear_error();
		return;
	}
	BIO_set_data(bio, this);
	BIO_set_init(bio, 1);
	SSL_set_bio(ssl_, bio, bio);
	SSL_set_ex_data(ssl_, session_index(), this);
	if (role_ == TlsRole::kClient)
		SSL_set_connect_state(ssl_);
	else
		SSL_set_accept_state(ssl_);
}

TlsSession::~TlsSession()
{
	SSL_free(ssl_);
	OPENSSL_cleanse(client_secret_.data(), client_secret_.size());
	OPENSSL_cleanse(server_secret_.data(), server_secret_.size());
}

void TlsSession::take_output(ByteBuffer &dst)
{
	if (out_.readable() == 0)
		return;
	if (dst.readable() == 0) {
		std::swap(dst, out_);
		out_.clear();
		return;
	}
	std::memcpy(dst.append(out_.readable()), out_.read_ptr(), out_.readable());
	out_.clear();
}

bool TlsSession::check_peer_certificate(void *x509)
{
	auto *cert = static_cast<X509 *>(x509);
	EVP_PKEY *pk = cert ? X509_get0_pubkey(cert) : nullptr;
	PublicKey key{};
	size_t n = key.size();
	if (pk == nullptr || EVP_PKEY_get_id(pk) != EVP_PKEY_ED25519 ||
	    EVP_PKEY_get_raw_public_key(pk, key.data(), &n) != 1 || n != key.size()) {
		refusal_ = "its certificate does not carry an Ed25519 key (not a memfed node)";
		if (!refused_peer_ && role_ == TlsRole::kServer)
			LOG_WARN(kComp, "refusing %s: %s", peer_.c_str(), refusal_.c_str());
		refused_peer_ = true;
		return false;
	}
	peer_key_ = key;
	have_peer_key_ = true;
	if (key == ctx_->own_key()) {
		peer_name_.clear();
		return true;
	}
	auto t = ctx_->peers().find(key);
	if (t) {
		peer_name_ = t->name;
		return true;
	}
	refusal_ = "key " + encode_key(key) + " is not trusted; to trust it: " + fix_for(key);
	if (!refused_peer_ && role_ == TlsRole::kServer)
		LOG_WARN(kComp, "refusing %s: %s", peer_.c_str(), refusal_.c_str());
	refused_peer_ = true;
	return false;
}

// OpenSSL's key log hands the session the secrets it derives, one line
// each ("LABEL <client random> <secret>", hex). Only the application traffic
// secrets are kept, for the record layer; nothing is written anywhere.
void TlsSession::on_keylog_line(const char *line)
{
	std::string_view l(line);
	uint8_t *dst = nullptr;
	size_t *len = nullptr;
	if (l.starts_with("CLIENT_TRAFFIC_SECRET_0 ")) {
		dst = client_secret_.data();
		len = &client_secret_len_;
	} else if (l.starts_with("SERVER_TRAFFIC_SECRET_0 ")) {
		dst = server_secret_.data();
		len = &server_secret_len_;
	} else {
		return;
	}
	const char *hex = line + l.rfind(' ') + 1;
	size_t n = 0;
	*len = OPENSSL_hexstr2buf_ex(dst, client_secret_.size(), &n, hex, '\0') == 1 ? n : 0;
}

Status TlsSession::fail(Status st)
{
	if (status_.is_ok())
		status_ = std::move(st);
	established_ = false;
	return status_;
}

// The Status for an OpenSSL failure `ret` of `what` (a handshake, a read, a
// write), from SSL_get_error and the error queue.
Status TlsSession::error_status(int ret, const char *what)
{
	int e = SSL_get_error(ssl_, ret);
	unsigned long code = ERR_peek_error();
	int reason = ERR_GET_REASON(code);
	char detail[256] = "";
	if (code != 0)
		ERR_error_string_n(code, detail, sizeof(detail));
	ERR_clear_error();
	if (refused_peer_)
		return Status(Code::kPermission, "refusing " + peer_ + ": " + refusal_);
	if (e == SSL_ERROR_ZERO_RETURN)
		return Status(Code::kUnavailable, peer_ + " closed the TLS session");
	if (e == SSL_ERROR_SYSCALL && code == 0)
		return Status(Code::kUnavailable,
		              peer_ + " ended the connection during TLS " + what);
	if (ERR_GET_LIB(code) == ERR_LIB_SSL) {
		if (reason == SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC)
			return Status(
			        Code::kCorrupt,
			        "TLS record from " + peer_ +
			                " failed its authentication tag (bad record MAC): the "
			                "bytes were altered in transit; connection dropped");
		if (reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256)
			return alert_status(reason - SSL_AD_REASON_OFFSET, what);
		if (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_UNSUPPORTED_PROTOCOL ||
		    reason == SSL_R_PACKET_LENGTH_TOO_LONG || reason == SSL_R_HTTP_REQUEST ||
		    reason == SSL_R_RECORD_LENGTH_MISMATCH || reason == SSL_R_UNEXPECTED_MESSAGE ||
		    reason == SSL_R_WRONG_SSL_VERSION || reason == SSL_R_UNKNOWN_PROTOCOL)
			return Status(Code::kProtocol,
			              peer_ + " does not speak TLS 1.3 as memfed does (" + detail +
			                      ")");
	}
	return Status(Code::kProtocol, "TLS " + std::string(what) + " with " + peer_ +
	                                       " failed: " + (code ? detail : "no detail"));
}

// The Status for an alert the peer sent during `what`.
Status TlsSession::alert_status(int alert, const char *what)
{
	if (alert == kCloseNotify)
		return Status(Code::kUnavailable, peer_ + " closed the TLS session");
	std::string msg = peer_ + " sent TLS alert '" + SSL_alert_desc_string_long(alert) +
	                  "' during " + what;
	if (alert == SSL_AD_BAD_CERTIFICATE || alert == SSL_AD_CERTIFICATE_UNKNOWN ||
	    alert == SSL_AD_UNKNOWN_CA || alert == SSL_AD_CERTIFICATE_REQUIRED ||
	    alert == SSL_AD_HANDSHAKE_FAILURE)
		return Status(Code::kPermission,
		              msg + ": it does not trust this node's key " +
		                      encode_key(ctx_->own_key()) +
		                      "; on that node run: " + fix_for(ctx_->own_key()));
	return Status(Code::kProtocol, msg);
}

TlsStep TlsSession::handshake()
{
	if (failed())
		return TlsStep::kFailed;
	if (established_)
		return TlsStep::kDone;
	ERR_clear_error();
	int r = SSL_do_handshake(ssl_);
	if (r == 1) {
		// The verify callback accepted the key; check again against the
		// certificate the session kept (an empty or odd chain never
		// passes).
		X509 *cert = SSL_get0_peer_certificate(ssl_);
		if (cert == nullptr || !have_peer_key_ || !check_peer_certificate(cert)) {
			if (refusal_.empty())
				refusal_ = "it presented no certificate";
			(void)fail(
			        Status(Code::kPermission, "refusing " + peer_ + ": " + refusal_));
			return TlsStep::kFailed;
		}
		if (Status st = start_records(); !st.is_ok()) {
			(void)fail(std::move(st));
			return TlsStep::kFailed;
		}
		established_ = true;
		last_rekey_ = std::chrono::steady_clock::now();
		return TlsStep::kDone;
	}
	int e = SSL_get_error(ssl_, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		ERR_clear_error();
		return TlsStep::kWantRead;
	}
	(void)fail(error_status(r, "handshake"));
	return TlsStep::kFailed;
}

// Hands the records over from OpenSSL to the session's record layer: keys
// from the traffic secrets OpenSSL logged, for the suite it negotiated.
// Without read-ahead OpenSSL has read no byte past the handshake, so the
// peer's first records are still in in_.
Status TlsSession::start_records()
{
	const SSL_CIPHER *c = SSL_get_current_cipher(ssl_);
	uint32_t id = c ? SSL_CIPHER_get_id(c) : 0;
	TlsSuite suite;
	if (id == TLS1_3_CK_AES_128_GCM_SHA256)
		suite = TlsSuite::kAes128GcmSha256;
	else if (id == TLS1_3_CK_AES_256_GCM_SHA384)
		suite = TlsSuite::kAes256GcmSha384;
	else
		return Status(Code::kProtocol, "TLS with " + peer_ + ": negotiated cipher suite " +
		                                       (c ? SSL_CIPHER_get_name(c) : "none") +
		                                       ", which memfed does not offer");
	if (SSL_has_pending(ssl_) != 0)
		return Status(Code::kInternal,
		              "TLS with " + peer_ + ": OpenSSL read past the handshake");
	if (client_secret_len_ == 0 || server_secret_len_ == 0)
		return Status(Code::kInternal,
		              "TLS with " + peer_ + ": OpenSSL logged no traffic secrets");
	bool client = role_ == TlsRole::kClient;
	std::span<const uint8_t> cs(client_secret_.data(), client_secret_len_);
	std::span<const uint8_t> ss(server_secret_.data(), server_secret_len_);
	Status st = rx_.init(suite, client ? ss : cs);
	if (st.is_ok())
		st = tx_.init(suite, client ? cs : ss);
	OPENSSL_cleanse(client_secret_.data(), client_secret_.size());
	OPENSSL_cleanse(server_secret_.data(), server_secret_.size());
	client_secret_len_ = server_secret_len_ = 0;
	// The handshake's state is no longer needed: the peer's key and name
	// are kept, and its buffers go.
	SSL_free(ssl_);
	ssl_ = nullptr;
	ERR_clear_error();
	return st;
}

Status TlsSession::seal(uint8_t type, const iovec *iov, size_t n, size_t len)
{
	Status st = tx_.seal(type, iov, n, len, out_);
	if (!st.is_ok())
		return fail(std::move(st));
	return Status::ok();
}

// A KeyUpdate under the current key, then the next key for what follows
// (RFC 8446 §4.6.3). `request` asks the peer to update its key too.
Status TlsSession::send_key_update(bool request)
{
	uint8_t msg[5] = {kKeyUpdate, 0, 0, 1, static_cast<uint8_t>(request ? 1 : 0)};
	iovec v{msg, sizeof(msg)};
	MF_RETURN_IF_ERROR(seal(kTlsHandshake, &v, 1, sizeof(msg)));
	if (Status st = tx_.next_key(); !st.is_ok())
		return fail(std::move(st));
	key_updates_sent_++;
	ctx_->key_updates_sent_++;
	return Status::ok();
}

// Handshake messages after the handshake: KeyUpdate is acted on, a
// NewSessionTicket ignored (memfed never resumes), anything else refused.
Status TlsSession::on_handshake_message(const uint8_t *p, size_t n)
{
	while (n > 0) {
		size_t len = n < 4 ? 0 : size_t{p[1]} << 16 | size_t{p[2]} << 8 | p[3];
		if (n < 4 || len > n - 4)
			return fail(Status(Code::kProtocol,
			                   peer_ + " sent a TLS handshake message split across "
			                           "records after the handshake"));
		uint8_t type = p[0];
		if (type == kKeyUpdate) {
			if (len != 1 || p[4] > 1)
				return fail(Status(Code::kProtocol,
				                   peer_ + " sent a malformed TLS KeyUpdate"));
			if (Status st = rx_.next_key(); !st.is_ok())
				return fail(std::move(st));
			key_updates_received_++;
			ctx_->key_updates_received_++;
			if (p[4] == 1)
				MF_RETURN_IF_ERROR(send_key_update(false));
		} else if (type != kNewSessionTicket) {
			return fail(Status(Code::kProtocol,
			                   peer_ + " sent TLS handshake message type " +
			                           std::to_string(type) +
			                           " after the handshake; memfed accepts only "
			                           "KeyUpdate there"));
		}
		p += 4 + len;
		n -= 4 + len;
	}
	return Status::ok();
}

Status TlsSession::maybe_rekey()
{
	const TlsLimits lim = ctx_->limits();
	bool due = bytes_since_rekey_ >= lim.rekey_bytes || tx_.records() >= kMaxRecordsPerKey;
	auto now = std::chrono::steady_clock::now();
	if (!due && lim.rekey_seconds > 0)
		due = now - last_rekey_ >= std::chrono::seconds(lim.rekey_seconds);
	if (!due)
		return Status::ok();
	// Both directions: ours now, the peer's when it answers.
	bytes_since_rekey_ = 0;
	last_rekey_ = now;
	return send_key_update(true);
}

Status TlsSession::encrypt(std::span<const uint8_t> bytes)
{
	iovec v{const_cast<uint8_t *>(bytes.data()), bytes.size()};
	return encrypt(&v, 1);
}

// The pieces go into records of up to 16 KiB of content, each sealed from
// the pieces themselves into out_: no staging copy.
Status TlsSession::encrypt(const iovec *iov, size_t n)
{
	if (failed())
		return status_;
	if (!established_)
		return Status(Code::kInternal, "TLS session with " + peer_ + " is not established");
	MF_RETURN_IF_ERROR(maybe_rekey());
	iovec rec[kMaxPiecesPerRecord];
	size_t pieces = 0, len = 0;
	for (size_t i = 0; i < n; i++) {
		const auto *p = static_cast<const uint8_t *>(iov[i].iov_base);
		size_t left = iov[i].iov_len;
		while (left > 0) {
			size_t take = std::min(left, kTlsMaxContent - len);
			rec[pieces++] = {const_cast<uint8_t *>(p), take};
			len += take;
			p += take;
			left -= take;
			if (len == kTlsMaxContent || pieces == kMaxPiecesPerRecord) {
				MF_RETURN_IF_ERROR(seal(kTlsApplicationData, rec, pieces, len));
				bytes_since_rekey_ += len;
				pieces = len = 0;
			}
		}
	}
	if (len > 0) {
		MF_RETURN_IF_ERROR(seal(kTlsApplicationData, rec, pieces, len));
		bytes_since_rekey_ += len;
	}
	return Status::ok();
}

Result<size_t> TlsSession::decrypt(uint8_t *dst, size_t cap)
{
	if (failed())
		return status_;
	if (!established_)
		return Status(Code::kInternal, "TLS session with " + peer_ + " is not established");
	if (cap == 0)
		return size_t{0};
	for (;;) {
		if (stage_len_ > 0) {
			size_t n = std::min(cap, stage_len_);
			std::memcpy(dst, stage_.get() + stage_off_, n);
			stage_off_ += n;
			stage_len_ -= n;
			return n;
		}
		if (in_.readable() < kTlsHeader)
			return size_t{0};
		const uint8_t *h = in_.read_ptr();
		size_t body = size_t{h[3]} << 8 | h[4];
		if (h[0] != kTlsApplicationData || h[1] != 0x03 || h[2] != 0x03)
			return fail(
			        Status(Code::kProtocol,
			               peer_ +
			                       " does not speak TLS 1.3 as memfed does (a record "
			                       "of type " +
			                       std::to_string(h[0]) + " after the handshake)"));
		if (body > kTlsTag + kTlsMaxInner || body < kTlsTag + 1)
			return fail(Status(Code::kProtocol,
			                   peer_ + " sent a TLS record of " + std::to_string(body) +
			                           " bytes, outside TLS 1.3's limits"));
		if (in_.readable() < kTlsHeader + body)
			return size_t{0};
		// Straight into dst when the content fits; else into stage_.
		bool direct = body - kTlsTag - 1 <= cap;
		uint8_t *out = direct ? dst : stage_.get();
		auto inner = rx_.open({h, kTlsHeader + body}, out);
		in_.consume(kTlsHeader + body);
		if (!inner) {
			if (inner.status().code() == Code::kCorrupt)
				return fail(Status(Code::kCorrupt,
				                   "TLS record from " + peer_ +
				                           " failed its authentication tag (bad "
				                           "record MAC): the "
				                           "bytes were altered in transit; "
				                           "connection dropped"));
			return fail(Status(inner.status().code(),
			                   "TLS with " + peer_ + ": " + inner.status().message()));
		}
		switch (inner->type) {
		case kTlsApplicationData:
			if (inner->len == 0)
				continue;
			if (direct)
				return inner->len;
			stage_off_ = 0;
			stage_len_ = inner->len;
			continue;
		case kTlsHandshake:
			MF_RETURN_IF_ERROR(on_handshake_message(out, inner->len));
			continue;
		case kTlsAlert:
			if (inner->len != 2)
				return fail(Status(Code::kProtocol,
				                   peer_ + " sent a malformed TLS alert"));
			return fail(alert_status(out[1], "receive"));
		default:
			return fail(Status(Code::kProtocol,
			                   peer_ + " sent a TLS record of content type " +
			                           std::to_string(inner->type) +
			                           " after the handshake"));
		}
	}
}

bool TlsSession::plaintext_pending() const
{
	return stage_len_ > 0;
}

} // namespace memfed::trust
