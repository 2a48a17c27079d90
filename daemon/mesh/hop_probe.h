// Hop probes: how many hops away a module really is, measured.
//
// A metric is not a hop count (on a lossy radio link one hop costs more than
// several wired ones), so memfed measures hops. Every mesh node answers UDP
// probes on the mesh port: a probe leaves the prober with hop limit 64, each
// router on the way decrements it, and the answer carries the hop limit the
// probe arrived with (IPV6_RECVHOPLIMIT). hops = 64 - received + 1: a direct
// neighbour is 1 hop, a module behind one relay 2.
//
// Wire format (both directions, 16 bytes, little-endian):
//   0  4  magic "MFHP"
//   4  1  version (1)
//   5  1  type: 1 probe, 2 answer
//   6  1  received hop limit (answers; 0 in probes)
//   7  1  zero
//   8  8  nonce, echoed
// Anything else is dropped without an answer.
#pragma once

#include <netinet/in.h>

#include <atomic>
#include <cstdint>
#include <optional>
#include <thread>

#include "daemon/common/status.h"

namespace memfed::mesh
{

constexpr uint8_t kProbeHopLimit = 64;

struct HopProbeMessage {
	uint8_t type = 0; // 1 probe, 2 answer
	uint8_t received_hop_limit = 0;
	uint64_t nonce = 0;
};
constexpr size_t kHopProbeSize = 16;
void encode_hop_probe(const HopProbeMessage &m, uint8_t out[kHopProbeSize]);
std::optional<HopProbeMessage> decode_hop_probe(const uint8_t *p, size_t len);

// Answers probes on [::]:port until destroyed.
class HopResponder
{
public:
	static Result<std::unique_ptr<HopResponder>> start(uint16_t port);
	~HopResponder();

private:
	HopResponder() = default;
	void run();
	int fd_ = -1;
	int stop_fd_ = -1;
	std::thread thread_;
};

// Probes `dst` on `port` once; the hop count, or nullopt after `timeout_ms`.
std::optional<uint32_t> measure_hops(const in6_addr &dst, uint16_t port, int timeout_ms);

} // namespace memfed::mesh
