// TlsSession: one connection's TLS 1.3 state, over memory buffers.
//
// Independent of sockets and io_uring, so the module's TcpServer, the
// TcpChannel and the blocking SyncClient drive it the same way:
//   - bytes received from the socket go into input() (receive straight
//     into it: input().ensure_writable(n), recv at write_ptr, commit);
//   - handshake() advances the handshake as far as the input allows;
//   - encrypt() turns plaintext into records appended to output();
//   - decrypt() gives plaintext from the input into a caller's buffer;
//   - after every call, whatever output() holds must be sent, in order
//     (take_output() moves it into the caller's send buffer, without a
//     copy when that buffer is empty). Handshake messages, alerts and
//     KeyUpdates travel there too.
// A session never blocks and never touches a socket.
//
// OpenSSL runs the handshake; once it is done, records are sealed and
// opened by the session's own record layer (tls_records.h) with the traffic
// secrets OpenSSL derived, so a page is decrypted from input() straight into
// the caller's buffer and encrypted from the caller's pieces straight into
// output(). KeyUpdate (both ways), alerts and the record limits are handled
// there too; tls_test.cc checks it against OpenSSL's own record layer.
//
// After the handshake, peer_key() is the peer's authenticated public key
// (see tls_context.h for who is accepted) and peer_name() its name in
// TrustedPeers ("" for none, or for this node's own key).
//
// Errors (handshake(), encrypt(), decrypt()) are final: the session is
// failed() and status() says why, in words a log line can carry: the
// peer's key is not trusted (kPermission, with the fix), a record failed
// its authentication tag (kCorrupt: bytes altered in transit), the peer
// sent an alert (kPermission when it refused our key, naming the fix;
// else kProtocol), the bytes are not TLS 1.3 (kProtocol), the peer closed
// the session (kUnavailable). refused_peer() tells that this side refused
// the peer's key. A server-side session logs that refusal itself (one
// line: the peer's endpoint, its key, the command that trusts it), so the
// server need not log it again; a client-side session leaves it to its
// caller, whose Status carries the same words.
//
// Thread-safety: none; one thread at a time.
#pragma once

#include <sys/uio.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "daemon/common/status.h"
#include "daemon/transport/byte_buffer.h" // header-only byte queue
#include "daemon/trust/tls_context.h"
#include "daemon/trust/tls_records.h"

struct ssl_st;
struct bio_st;

namespace memfed::trust
{

enum class TlsRole { kClient, kServer };

enum class TlsStep {
	kWantRead, // send output(), then feed more input and call again
	kDone,     // established: send output(), then encrypt/decrypt
	kFailed,   // see status(); send output() (it may hold an alert), then close
};

class TlsSession
{
public:
	// `peer` names the other end in logs ("10.0.0.2:7700").
	TlsSession(std::shared_ptr<TlsContext> ctx, TlsRole role, std::string peer);
	~TlsSession();
	TlsSession(const TlsSession &) = delete;
	TlsSession &operator=(const TlsSession &) = delete;

	ByteBuffer &input() { return in_; }
	ByteBuffer &output() { return out_; }
	bool output_pending() const { return out_.readable() > 0; }
	// Moves output() to the end of `dst`.
	void take_output(ByteBuffer &dst);

	TlsStep handshake();
	bool established() const { return established_; }
	bool failed() const { return !status_.is_ok(); }
	const Status &status() const { return status_; }
	bool refused_peer() const { return refused_peer_; }

	const PublicKey &peer_key() const { return peer_key_; }
	const std::string &peer_name() const { return peer_name_; }
	const std::string &peer() const { return peer_; }

	// Encrypts `bytes` into output(). REQUIRES: established().
	Status encrypt(std::span<const uint8_t> bytes);
	// Encrypts the concatenation of `iov` (small pieces are gathered into
	// full records).
	Status encrypt(const iovec *iov, size_t n);
	// Up to `cap` bytes of plaintext into `dst`: how many, 0 when more
	// input is needed. REQUIRES: established(). May queue output (a
	// KeyUpdate answer): send it. A record whose content fits is opened in
	// place in `dst`, before its tag is checked: after an error, dst's
	// first `cap` bytes hold nothing usable.
	Result<size_t> decrypt(uint8_t *dst, size_t cap);
	// Whether decrypted plaintext is waiting inside the session.
	bool plaintext_pending() const;

	uint64_t key_updates_sent() const { return key_updates_sent_; }
	uint64_t key_updates_received() const { return key_updates_received_; }

	// Internal (OpenSSL callbacks).
	bool check_peer_certificate(void *x509);
	void on_keylog_line(const char *line);

private:
	Status fail(Status st);
	Status error_status(int ret, const char *what);
	Status alert_status(int alert, const char *what);
	Status start_records();
	Status seal(uint8_t type, const iovec *iov, size_t n, size_t len);
	Status send_key_update(bool request);
	Status on_handshake_message(const uint8_t *p, size_t n);
	Status maybe_rekey();

	std::shared_ptr<TlsContext> ctx_;
	TlsRole role_;
	std::string peer_;
	ssl_st *ssl_ = nullptr; // the handshake's; freed once established
	ByteBuffer in_;
	ByteBuffer out_;
	// The traffic secrets, from OpenSSL's key log, until the records start.
	std::array<uint8_t, 48> client_secret_{};
	std::array<uint8_t, 48> server_secret_{};
	size_t client_secret_len_ = 0;
	size_t server_secret_len_ = 0;
	RecordProtection rx_; // the peer's records
	RecordProtection tx_; // ours
	// A record that did not fit the caller's buffer, opened here and handed
	// out from stage_[stage_off_, stage_off_ + stage_len_).
	std::unique_ptr<uint8_t[]> stage_;
	size_t stage_off_ = 0;
	size_t stage_len_ = 0;
	bool established_ = false;
	bool refused_peer_ = false;
	Status status_;
	std::string refusal_; // why this side refused the peer's certificate
	PublicKey peer_key_{};
	bool have_peer_key_ = false;
	std::string peer_name_;
	uint64_t bytes_since_rekey_ = 0;
	std::chrono::steady_clock::time_point last_rekey_;
	uint64_t key_updates_sent_ = 0;
	uint64_t key_updates_received_ = 0;
};

} // namespace memfed::trust
