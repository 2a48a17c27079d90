// One connection's TLS 1.3 state over memory buffers; see tls_session.h.
//
// The SSL object talks to a BIO of our own: reads come out of the
// session's input buffer, writes are appended to its output buffer (so the
// ciphertext is copied once, from OpenSSL's record buffer to the buffer the
// transport sends from).
#include "daemon/trust/tls_session.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <mutex>

#include "daemon/common/log.h"

namespace memfed::trust
{

namespace
{
constexpr const char *kComp = "tls";
constexpr size_t kRecord = 16384;  // TLS plaintext record limit
constexpr uint8_t kKeyUpdate = 24; // TLS 1.3 handshake type KeyUpdate

int session_index()
{
	static int idx = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
	return idx;
}

TlsSession *session_of(SSL *ssl)
{
	return static_cast<TlsSession *>(SSL_get_ex_data(ssl, session_index()));
}

// SSL_get_error needs this thread's error queue empty before each SSL call.
// ERR_clear_error walks and frees all of the queue's slots even when it is
// empty, which cost 7% of a client's CPU at depth 64 (two or three reads per
// page); the per-record paths clear only a queue that holds something.
void clear_errors_if_any()
{
	if (ERR_peek_error() != 0)
		ERR_clear_error();
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

void tls_msg_callback(int write_p, int, int content_type, const void *buf, size_t len, SSL *ssl,
                      void *)
{
	// Called for every record (its header and its inner content type):
	// only handshake messages interest the session, so the others return
	// before looking the session up.
	if (content_type != SSL3_RT_HANDSHAKE)
		return;
	TlsSession *s = session_of(ssl);
	if (s != nullptr)
		s->on_message(write_p, content_type, buf, len);
}

TlsSession::TlsSession(std::shared_ptr<TlsContext> ctx, TlsRole role, std::string peer)
    : ctx_(std::move(ctx)), role_(role), peer_(std::move(peer)), in_(64 * 1024), out_(64 * 1024),
      stage_(new uint8_t[kRecord]), last_rekey_(std::chrono::steady_clock::now())
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

void TlsSession::on_message(int write_p, int content_type, const void *buf, size_t len)
{
	if (content_type != SSL3_RT_HANDSHAKE || len < 1 ||
	    static_cast<const uint8_t *>(buf)[0] != kKeyUpdate)
		return;
	if (write_p) {
		key_updates_sent_++;
		ctx_->key_updates_sent_++;
	} else {
		key_updates_received_++;
		ctx_->key_updates_received_++;
	}
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
	std::string own = encode_key(ctx_->own_key());
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
		if (reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256) {
			int alert = reason - SSL_AD_REASON_OFFSET;
			std::string msg = peer_ + " sent TLS alert '" +
			                  SSL_alert_desc_string_long(alert) + "' during " + what;
			if (alert == SSL_AD_BAD_CERTIFICATE ||
			    alert == SSL_AD_CERTIFICATE_UNKNOWN || alert == SSL_AD_UNKNOWN_CA ||
			    alert == SSL_AD_CERTIFICATE_REQUIRED ||
			    alert == SSL_AD_HANDSHAKE_FAILURE)
				return Status(
				        Code::kPermission,
				        msg + ": it does not trust this node's key " + own +
				                "; on that node run: " + fix_for(ctx_->own_key()));
			return Status(Code::kProtocol, msg);
		}
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

void TlsSession::maybe_rekey()
{
	const TlsLimits lim = ctx_->limits();
	bool due = bytes_since_rekey_ >= lim.rekey_bytes;
	auto now = std::chrono::steady_clock::now();
	if (!due && lim.rekey_seconds > 0)
		due = now - last_rekey_ >= std::chrono::seconds(lim.rekey_seconds);
	if (!due || SSL_get_key_update_type(ssl_) != SSL_KEY_UPDATE_NONE)
		return;
	// Both directions: ours now, the peer's when it answers.
	if (SSL_key_update(ssl_, SSL_KEY_UPDATE_REQUESTED) == 1) {
		bytes_since_rekey_ = 0;
		last_rekey_ = now;
	}
	ERR_clear_error();
}

Status TlsSession::write_record(const uint8_t *p, size_t n)
{
	while (n > 0) {
		size_t chunk = std::min<size_t>(n, INT_MAX / 2);
		size_t done = 0;
		clear_errors_if_any();
		int r = SSL_write_ex(ssl_, p, chunk, &done);
		if (r != 1)
			return fail(error_status(r, "send"));
		p += done;
		n -= done;
		bytes_since_rekey_ += done;
	}
	return Status::ok();
}

Status TlsSession::encrypt(std::span<const uint8_t> bytes)
{
	iovec v{const_cast<uint8_t *>(bytes.data()), bytes.size()};
	return encrypt(&v, 1);
}

Status TlsSession::encrypt(const iovec *iov, size_t n)
{
	if (failed())
		return status_;
	if (!established_)
		return Status(Code::kInternal, "TLS session with " + peer_ + " is not established");
	maybe_rekey();
	stage_len_ = 0;
	for (size_t i = 0; i < n; i++) {
		const auto *p = static_cast<const uint8_t *>(iov[i].iov_base);
		size_t len = iov[i].iov_len;
		if (stage_len_ == 0 && i + 1 == n) {
			// A last piece with nothing staged before it (a module's
			// replies, a lone request) is a record or more as it is:
			// staging it would only copy it once more.
			MF_RETURN_IF_ERROR(write_record(p, len));
			break;
		}
		if (len >= kRecord) {
			// Large pieces go as they are; small ones before them first.
			if (stage_len_ > 0) {
				MF_RETURN_IF_ERROR(write_record(stage_.get(), stage_len_));
				stage_len_ = 0;
			}
			MF_RETURN_IF_ERROR(write_record(p, len));
			continue;
		}
		while (len > 0) {
			size_t take = std::min(len, kRecord - stage_len_);
			std::memcpy(stage_.get() + stage_len_, p, take);
			stage_len_ += take;
			p += take;
			len -= take;
			if (stage_len_ == kRecord) {
				MF_RETURN_IF_ERROR(write_record(stage_.get(), stage_len_));
				stage_len_ = 0;
			}
		}
	}
	if (stage_len_ > 0)
		MF_RETURN_IF_ERROR(write_record(stage_.get(), stage_len_));
	stage_len_ = 0;
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
	// Nothing received and nothing buffered inside OpenSSL: SSL_read would
	// only say so (want read) at the cost of a full call and
	// SSL_get_error. Callers decrypt until 0, so this is once per receive.
	if (in_.readable() == 0 && SSL_has_pending(ssl_) == 0)
		return size_t{0};
	size_t got = 0;
	clear_errors_if_any();
	int r = SSL_read_ex(ssl_, dst, cap, &got);
	if (r == 1)
		return got;
	int e = SSL_get_error(ssl_, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		clear_errors_if_any();
		return size_t{0};
	}
	return fail(error_status(r, "receive"));
}

bool TlsSession::plaintext_pending() const
{
	return ssl_ != nullptr && SSL_pending(ssl_) > 0;
}

} // namespace memfed::trust
