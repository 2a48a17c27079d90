// libFuzzer target: untrusted bytes at a module's door, before and during
// authentication.
//
// The first byte picks what the rest is:
//   even: a connection's first bytes as the module reads them: the plaintext
//         version gate (a wire header and a HELLO request, parsed as the
//         module parses them), then whatever follows as TLS handshake bytes
//         fed to a server-side TlsSession in pieces;
//   odd:  bytes arriving after a real handshake between two trusting nodes,
//         fed to the established server session as records to decrypt.
// Nothing may crash or leak, and no garbage may complete a handshake.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>

#include "daemon/common/log.h"
#include "daemon/trust/tls_context.h"
#include "daemon/trust/tls_session.h"
#include "daemon/wire/codec.h"

using namespace memfed;
using namespace memfed::trust;

namespace
{

void check(bool ok)
{
	if (!ok)
		abort();
}

NodeKey fixed_key(uint8_t fill)
{
	std::array<uint8_t, kKeySize> seed;
	seed.fill(fill);
	auto k = node_key_from_seed(seed);
	check(k.is_ok());
	return *k;
}

struct Nodes {
	NodeKey module = fixed_key(1);
	NodeKey peer = fixed_key(2);
	std::shared_ptr<TlsContext> module_tls;
	std::shared_ptr<TlsContext> peer_tls;
	Nodes()
	{
		set_log_level(LogLevel::kError); // refusals are expected here
		auto a = TlsContext::create(module,
		                            std::make_shared<TrustedPeers>(
		                                    std::vector<TrustedPeer>{{peer.pub, "", ""}}));
		auto b = TlsContext::create(
		        peer, std::make_shared<TrustedPeers>(
		                      std::vector<TrustedPeer>{{module.pub, "", ""}}));
		check(a.is_ok() && b.is_ok());
		module_tls = *a;
		peer_tls = *b;
	}
};

Nodes &nodes()
{
	static Nodes n;
	return n;
}

void carry(TlsSession &from, TlsSession &to)
{
	ByteBuffer &out = from.output();
	std::memcpy(to.input().append(out.readable()), out.read_ptr(), out.readable());
	out.clear();
}

// Feeds `in` to `s` in pieces whose sizes come from the bytes themselves.
void feed_in_pieces(TlsSession &s, std::span<const uint8_t> in, bool established)
{
	uint8_t plain[16384];
	size_t at = 0;
	while (at < in.size() && !s.failed()) {
		size_t piece = 1 + in[at] % 97 * 13;
		piece = std::min(piece, in.size() - at);
		std::memcpy(s.input().append(piece), in.data() + at, piece);
		at += piece;
		if (!established) {
			// Garbage never authenticates: no trusted key signs it.
			check(s.handshake() != TlsStep::kDone);
		} else {
			auto n = s.decrypt(plain, sizeof(plain));
			if (n.is_ok())
				check(*n <= sizeof(plain));
		}
		s.output().clear();
	}
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	Nodes &n = nodes();
	std::span<const uint8_t> in(data + 1, size - 1);
	if ((data[0] & 1) == 0) {
		// The version gate, as the module reads it.
		wire::Header h;
		size_t used = 0;
		if (wire::validate_header(in, &h).is_ok() && in.size() >= wire::kHeaderSize) {
			auto payload = in.subspan(wire::kHeaderSize);
			if (payload.size() >= h.payload_len) {
				payload = payload.first(h.payload_len);
				if (wire::check_payload(h, payload).is_ok() &&
				    h.type == static_cast<uint8_t>(wire::MsgType::kHello))
					(void)wire::decode_hello_request(payload);
				used = wire::kHeaderSize + h.payload_len;
			}
		}
		TlsSession server(n.module_tls, TlsRole::kServer, "fuzz");
		feed_in_pieces(server, in.subspan(used), false);
		return 0;
	}
	TlsSession client(n.peer_tls, TlsRole::kClient, "module");
	TlsSession server(n.module_tls, TlsRole::kServer, "fuzz");
	for (int i = 0; i < 10 && !(client.established() && server.established()); i++) {
		client.handshake();
		carry(client, server);
		server.handshake();
		carry(server, client);
	}
	check(client.established() && server.established());
	feed_in_pieces(server, in, true);
	return 0;
}
