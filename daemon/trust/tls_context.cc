// The node's TLS 1.3 settings and its self-signed Ed25519 certificate; see
// tls_context.h.
#include "daemon/trust/tls_context.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

namespace memfed::trust
{

// Defined in tls_session.cc: they find the TlsSession of an SSL.
int tls_verify_callback(int ok, X509_STORE_CTX *store);
void tls_keylog_callback(const SSL *ssl, const char *line);

namespace
{

struct PkeyFree {
	void operator()(EVP_PKEY *p) const { EVP_PKEY_free(p); }
};
struct X509Free {
	void operator()(X509 *p) const { X509_free(p); }
};

Status ossl_error(const std::string &what)
{
	unsigned long e = ERR_get_error();
	char buf[256] = "no detail";
	if (e != 0)
		ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	return Status(Code::kInternal, "TLS setup: " + what + " (OpenSSL: " + buf + ")");
}

// A self-signed certificate for `pk`, subject and issuer CN = the base64
// public key, valid from an hour ago for 100 years (it is pinned by key; the
// dates mean nothing).
Result<std::unique_ptr<X509, X509Free>> make_certificate(EVP_PKEY *pk, const PublicKey &pub)
{
	std::unique_ptr<X509, X509Free> x(X509_new());
	if (!x)
		return ossl_error("X509_new");
	uint64_t serial = 0;
	if (RAND_bytes(reinterpret_cast<unsigned char *>(&serial), sizeof(serial)) != 1)
		return ossl_error("RAND_bytes");
	std::string cn = encode_key(pub);
	X509_NAME *name = X509_get_subject_name(x.get());
	if (X509_set_version(x.get(), 2) != 1 ||
	    ASN1_INTEGER_set_uint64(X509_get_serialNumber(x.get()), serial >> 1) != 1 ||
	    X509_gmtime_adj(X509_getm_notBefore(x.get()), -3600) == nullptr ||
	    X509_time_adj_ex(X509_getm_notAfter(x.get()), 36500, 0, nullptr) == nullptr ||
	    X509_set_pubkey(x.get(), pk) != 1 ||
	    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	                               reinterpret_cast<const unsigned char *>(cn.c_str()), -1, -1,
	                               0) != 1 ||
	    X509_set_issuer_name(x.get(), name) != 1)
		return ossl_error("building the node certificate");
	// Ed25519 signs the whole message: no separate digest.
	if (X509_sign(x.get(), pk, nullptr) <= 0)
		return ossl_error("signing the node certificate");
	return x;
}

} // namespace

Result<std::shared_ptr<TlsContext>>
TlsContext::create(const NodeKey &key, std::shared_ptr<TrustedPeers> peers, TlsLimits limits)
{
	if (!peers)
		peers = std::make_shared<TrustedPeers>();
	std::shared_ptr<TlsContext> c(new TlsContext());
	c->own_ = key.pub;
	c->peers_ = std::move(peers);
	c->set_limits(limits);
	ERR_clear_error();
	std::unique_ptr<EVP_PKEY, PkeyFree> pk(EVP_PKEY_new_raw_private_key(
	        EVP_PKEY_ED25519, nullptr, key.seed.data(), key.seed.size()));
	if (!pk)
		return ossl_error("loading the node key");
	auto cert = make_certificate(pk.get(), key.pub);
	if (!cert)
		return cert.status();

	SSL_CTX *ctx = SSL_CTX_new(TLS_method());
	if (ctx == nullptr)
		return ossl_error("SSL_CTX_new");
	c->ctx_ = ctx;
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
	    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1)
		return ossl_error("restricting to TLS 1.3");
	if (SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384") != 1)
		return ossl_error("setting the cipher suites");
	if (SSL_CTX_set1_groups_list(ctx, "X25519") != 1)
		return ossl_error("setting the key exchange group X25519");
	if (SSL_CTX_set1_sigalgs_list(ctx, "ed25519") != 1)
		return ossl_error("setting the signature algorithm Ed25519");
	// No tickets, no resumption, no early data: every connection does a
	// full handshake, and nothing of it can be replayed.
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION |
	                                 SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_max_early_data(ctx, 0);
	SSL_CTX_set_recv_max_early_data(ctx, 0);
	// No read-ahead: OpenSSL reads the handshake's records one at a time,
	// so the records after it stay in the session's input for its own
	// record layer (tls_session.h).
	SSL_CTX_set_read_ahead(ctx, 0);
	if (SSL_CTX_use_certificate(ctx, cert->get()) != 1 ||
	    SSL_CTX_use_PrivateKey(ctx, pk.get()) != 1 || SSL_CTX_check_private_key(ctx) != 1)
		return ossl_error("installing the node certificate");
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
	                   tls_verify_callback);
	SSL_CTX_set_keylog_callback(ctx, tls_keylog_callback);
	return c;
}

TlsContext::~TlsContext()
{
	SSL_CTX_free(ctx_);
}

} // namespace memfed::trust
