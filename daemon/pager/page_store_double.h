// PageStoreDouble: a test double of a memory module for the pager's tests —
// regions held in process memory, served through a Channel that completes
// every request on the loop thread one iteration later (as a real channel
// would), behind a Federation that knows only this one module.
//
// The pager's own mechanisms (userfaultfd, io_uring, process_vm_readv, the
// evict channel) stay real; only the module is replaced. `set_down(true)`
// makes every request fail with kUnavailable, like a lost connection;
// `remove_region` makes a region's requests fail with kNotFound, like a
// delete on the module by another node. `hold_writes` keeps WRITEs waiting,
// unanswered, until `release_writes`: a slow write-back at an instant the
// test chooses; `hold_reads` and `release_reads` do the same with READs (a
// fetch in flight at that instant).
//
// Thread-safety: regions are guarded by a mutex; the channel runs on its
// loop thread.
#pragma once

#include <atomic>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "daemon/service/federation.h"
#include "daemon/transport/channel.h"

namespace memfed::pager
{

class PageStoreDouble : public Federation
{
public:
	static constexpr uint64_t kRegionSpacing = uint64_t{1} << 34;

	// Creates region `name` of `pages` pages whose page i is filled with
	// pattern(name-id, i) (see pattern_byte).
	void add_region(const std::string &name, uint32_t pages, uint32_t owner_uid = 0,
	                uint32_t mode = 0600)
	{
		std::lock_guard<std::mutex> lk(mu_);
		Region r;
		r.loc.module = module_;
		r.loc.region_id = uint32_t(regions_.size() + 1);
		r.loc.name = name;
		r.loc.fa_offset = r.loc.region_id * kRegionSpacing;
		r.loc.size_bytes = uint64_t{pages} * 4096;
		r.loc.owner_uid = owner_uid;
		r.loc.mode = mode;
		r.bytes.resize(r.loc.size_bytes);
		for (uint32_t p = 0; p < pages; p++)
			std::memset(r.bytes.data() + uint64_t{p} * 4096,
			            pattern_byte(r.loc.region_id, p), 4096);
		regions_[name] = std::move(r);
	}
	static uint8_t pattern_byte(uint32_t region_id, uint32_t page)
	{
		return uint8_t(1 + (region_id * 31 + page * 7) % 251); // never zero
	}
	// A copy of `len` bytes at `off` of region `name`.
	std::vector<uint8_t> read(const std::string &name, uint64_t off, size_t len)
	{
		std::lock_guard<std::mutex> lk(mu_);
		auto &b = regions_.at(name).bytes;
		return std::vector<uint8_t>(b.begin() + long(off), b.begin() + long(off + len));
	}
	uint32_t region_id(const std::string &name)
	{
		std::lock_guard<std::mutex> lk(mu_);
		return regions_.at(name).loc.region_id;
	}
	void set_down(bool down) { down_ = down; }
	void hold_writes() { hold(&writes_held_); }
	void release_writes() { release(&writes_held_); }
	void hold_reads() { hold(&reads_held_); }
	void release_reads() { release(&reads_held_); }
	// Answers the oldest held WRITE only; the others stay held, and so do
	// later ones.
	void release_first_write()
	{
		std::pair<EventLoop *, std::function<void()>> first;
		{
			std::lock_guard<std::mutex> lk(mu_);
			if (writes_held_.requests.empty())
				return;
			first = std::move(writes_held_.requests.front());
			writes_held_.requests.erase(writes_held_.requests.begin());
		}
		first.first->post(std::move(first.second));
	}
	size_t writes_waiting() { return waiting(&writes_held_); }
	size_t reads_waiting() { return waiting(&reads_held_); }
	// Deletes region `name`: READs and WRITEs of it fail with kNotFound
	// from now on, as a module answers for a region id it no longer has.
	void remove_region(const std::string &name)
	{
		std::lock_guard<std::mutex> lk(mu_);
		regions_.erase(name);
	}
	// READs covering page `page` of `name` fail with kCorrupt, as a module
	// reports a page that fails its checksum.
	void set_damaged(const std::string &name, uint32_t page)
	{
		std::lock_guard<std::mutex> lk(mu_);
		auto &r = regions_.at(name);
		damaged_ = r.loc.fa_offset + uint64_t{page} * 4096;
	}
	uint64_t reads() const { return reads_; }
	uint64_t writes() const { return writes_; }

	// Federation
	ModuleId self() const override { return module_; }
	using Federation::locate_region; // the asked one: by owner uid and mode here
	Result<RegionLocation> locate_region(const std::string &name) override
	{
		std::lock_guard<std::mutex> lk(mu_);
		auto it = regions_.find(name);
		if (it == regions_.end())
			return Status(Code::kNotFound, "region '" + name + "' not found");
		return it->second.loc;
	}
	std::vector<ModuleEntry> modules() override { return {}; }
	Result<std::unique_ptr<Channel>> open_channel(EventLoop *loop, ModuleId) override
	{
		return std::unique_ptr<Channel>(new DoubleChannel(this, loop));
	}

private:
	// Requests of one kind held unanswered while `on`.
	struct Held {
		bool on = false;
		std::vector<std::pair<EventLoop *, std::function<void()>>> requests;
	};
	void hold(Held *h)
	{
		std::lock_guard<std::mutex> lk(mu_);
		h->on = true;
	}
	void release(Held *h)
	{
		std::vector<std::pair<EventLoop *, std::function<void()>>> held;
		{
			std::lock_guard<std::mutex> lk(mu_);
			h->on = false;
			held.swap(h->requests);
		}
		for (auto &[loop, request] : held)
			loop->post(std::move(request));
	}
	size_t waiting(Held *h)
	{
		std::lock_guard<std::mutex> lk(mu_);
		return h->requests.size();
	}
	// True if requests of `h`'s kind are held: `request` then waits for
	// its release.
	bool park(Held *h, EventLoop *loop, const std::function<void()> &request)
	{
		std::lock_guard<std::mutex> lk(mu_);
		if (h->on)
			h->requests.emplace_back(loop, request);
		return h->on;
	}

	struct Region {
		RegionLocation loc;
		std::vector<uint8_t> bytes;
	};

	// Copies pages between the store and `buf`: kOutOfRange outside the
	// region, kNotFound for a region id it does not have.
	Status transfer(uint32_t region_id, uint64_t fa, uint32_t count, void *buf, bool write)
	{
		std::lock_guard<std::mutex> lk(mu_);
		for (auto &[name, r] : regions_) {
			if (r.loc.region_id != region_id)
				continue;
			uint64_t off = fa - r.loc.fa_offset, len = uint64_t{count} * 4096;
			if (fa < r.loc.fa_offset || off + len > r.bytes.size())
				return Status(Code::kOutOfRange, "outside the region");
			if (write)
				std::memcpy(r.bytes.data() + off, buf, len);
			else
				std::memcpy(buf, r.bytes.data() + off, len);
			return Status::ok();
		}
		return Status(Code::kNotFound, "region id " + std::to_string(region_id) +
		                                       " not found on the module double");
	}

	class DoubleChannel : public Channel
	{
	public:
		DoubleChannel(PageStoreDouble *s, EventLoop *loop) : s_(s), loop_(loop)
		{
			info_.module = s->module_;
		}
		const PeerInfo &peer() const override { return info_; }
		bool connected() const override { return !s_->down_; }
		void read_pages(wire::TrafficClass, uint32_t region_id, uint64_t fa, uint32_t count,
		                void *dst, Completion *done) override
		{
			auto read = [this, region_id, fa, count, dst, done] {
				s_->reads_++;
				bool damaged = s_->damaged_ >= fa &&
				               s_->damaged_ < fa + uint64_t{count} * 4096;
				finish(s_->down_ ? down()
				       : damaged ? Status(Code::kCorrupt, "page fails its checksum")
				                 : s_->transfer(region_id, fa, count, dst, false),
				       done);
			};
			run([this, read] {
				if (!s_->park(&s_->reads_held_, loop_, read))
					read();
			});
		}
		void write_pages(wire::TrafficClass, uint32_t region_id, uint64_t fa,
		                 uint32_t count, const void *src, Completion *done) override
		{
			auto write = [this, region_id, fa, count, src, done] {
				s_->writes_++;
				finish(s_->down_ ? down()
				                 : s_->transfer(region_id, fa, count,
				                                const_cast<void *>(src), true),
				       done);
			};
			run([this, write] {
				if (!s_->park(&s_->writes_held_, loop_, write))
					write();
			});
		}
		void call(const wire::Header &, std::span<const uint8_t>, Completion *done) override
		{
			unsupported(done);
		}
		void write_versioned(wire::TrafficClass, uint32_t, uint64_t, uint32_t,
		                     const wire::WireVersionedWrite &, const void *,
		                     Completion *done) override
		{
			unsupported(done);
		}

	private:
		// Never inside the issuing call (the Channel contract).
		void run(std::function<void()> fn) { loop_->post(std::move(fn)); }
		static Status down() { return Status(Code::kUnavailable, "module double is down"); }
		void unsupported(Completion *done)
		{
			loop_->post([done] {
				wire::Header h{};
				done->on_reply(Status(Code::kInvalidArgument, "not supported"), h,
				               {});
			});
		}
		static void finish(const Status &st, Completion *done)
		{
			wire::Header h{};
			done->on_reply(st, h, {});
		}
		PageStoreDouble *s_;
		EventLoop *loop_;
		PeerInfo info_;
	};

	ModuleId module_{0x020000000001};
	std::mutex mu_;
	std::map<std::string, Region> regions_;
	Held writes_held_, reads_held_; // guarded by mu_
	std::atomic<bool> down_{false};
	std::atomic<uint64_t> damaged_{UINT64_MAX}; // fa of a page READs fail on
	std::atomic<uint64_t> reads_{0}, writes_{0};
};

} // namespace memfed::pager
