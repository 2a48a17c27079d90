// LocalChannel: a Channel to the module in this same memfedd. Requests go
// straight to the ModuleStore with no socket and no copy beyond the one into
// the caller's buffer.
//
// Completions run inline: on_reply is called before read_pages/write_pages/
// call returns. Callers must not hold state that on_reply would invalidate.
//
// Thread-safety: like the store, usable from any thread; one LocalChannel per
// EventLoop as for any Channel.
#pragma once

#include "daemon/service/module_service.h"
#include "daemon/transport/channel.h"

namespace memfed {

class LocalChannel : public Channel {
public:
	LocalChannel(ModuleStore *store, ModuleService *service);
	const PeerInfo &peer() const override { return peer_; }
	bool connected() const override { return true; }
	void read_pages(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset, uint32_t count,
			void *dst, Completion *done) override;
	void write_pages(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset, uint32_t count,
			 const void *src, Completion *done) override;
	void call(const wire::Header &hdr, std::span<const uint8_t> payload, Completion *done) override;

private:
	wire::Header reply_header(const wire::Header &req, Code code) const;
	ModuleStore *store_;
	ModuleService *service_;
	PeerInfo peer_;
};

} // namespace memfed
