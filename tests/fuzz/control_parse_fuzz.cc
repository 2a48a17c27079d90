// libFuzzer target: untrusted bytes through the control-socket packet parser
// (memfed::control::parse_packet). A packet that parses must re-encode and
// parse to the same body and data.
#include <cstdint>
#include <cstdlib>

#include "daemon/control/message.h"

using namespace memfed::control;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	auto m = parse_packet(data, size);
	if (!m.is_ok())
		return 0;
	if (!m->body.is_object())
		abort();
	auto enc = encode_packet(*m);
	if (!enc.is_ok())
		return 0; // re-encoding may legitimately exceed kMaxPacket
	auto again = parse_packet(enc->data(), enc->size());
	if (!again.is_ok() || again->body != m->body || again->data != m->data)
		abort();
	return 0;
}
