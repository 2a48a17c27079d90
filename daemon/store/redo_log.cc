#include "daemon/store/redo_log.h"

#include <algorithm>
#include <cstring>

#include "daemon/common/crc32c.h"

namespace memfed::store
{

RedoLog::ScanResult RedoLog::scan(const uint8_t *base, const Geometry &geo)
{
	ScanResult r;
	static const LogDescriptor empty{};
	for (uint32_t slot = 0; slot < kLogSlots; slot++) {
		LogDescriptor d;
		memcpy(&d, base + geo.log_desc_offset + uint64_t{slot} * sizeof(d), sizeof(d));
		if (memcmp(&d, &empty, sizeof(d)) == 0)
			continue;
		bool ok = d.magic == kLogMagic && d.desc_crc == descriptor_crc(d) &&
		          d.page_crc == crc32c(payload(base, geo, slot), kPageSize);
		if (!ok) {
			r.torn++;
			continue;
		}
		r.valid.push_back(Record{slot, d.seq, d.fa_offset, d.page_crc, d.wversion});
	}
	std::sort(r.valid.begin(), r.valid.end(),
	          [](const Record &a, const Record &b) { return a.seq < b.seq; });
	return r;
}

void RedoLog::stage(uint64_t first_seq, uint64_t fa_first, uint32_t count, const uint8_t *src,
                    uint32_t *crcs, uint64_t wversion)
{
	if (!staged_) {
		if (head_ + count > kLogSlots)
			head_ = 0; // keep the staged records contiguous (the caller checkpointed)
		staged_from_ = head_;
		staged_ = true;
	}
	uint8_t *data = base_ + geo_.log_data_offset + uint64_t{head_} * kPageSize;
	uint8_t *desc = base_ + geo_.log_desc_offset + uint64_t{head_} * sizeof(LogDescriptor);
	memcpy(data, src, uint64_t{count} * kPageSize);
	for (uint32_t i = 0; i < count; i++) {
		LogDescriptor d{};
		d.magic = kLogMagic;
		d.seq = first_seq + i;
		d.fa_offset = fa_first + uint64_t{i} * kPageSize;
		d.page_crc = crc32c(data + uint64_t{i} * kPageSize, kPageSize);
		d.wversion = wversion;
		d.desc_crc = descriptor_crc(d);
		memcpy(desc + uint64_t{i} * sizeof(d), &d, sizeof(d));
		crcs[i] = d.page_crc;
	}
	head_ += count;
}

void RedoLog::persist_staged()
{
	if (!staged_)
		return;
	uint32_t n = head_ - staged_from_;
	uint8_t *data = base_ + geo_.log_data_offset + uint64_t{staged_from_} * kPageSize;
	uint8_t *desc =
	        base_ + geo_.log_desc_offset + uint64_t{staged_from_} * sizeof(LogDescriptor);
	uint8_t *data_end = data + uint64_t{n} * kPageSize;
	uint8_t *desc_end = desc + uint64_t{n} * sizeof(LogDescriptor);
	if (page_granular_) {
		persist_(desc,
		         static_cast<size_t>(data_end - desc)); // desc area precedes data area
	} else {
		persist_(data, static_cast<size_t>(data_end - data));
		persist_(desc, static_cast<size_t>(desc_end - desc));
	}
	persists_.fetch_add(1, std::memory_order_relaxed);
	staged_ = false;
}

void RedoLog::clear()
{
	uint8_t *desc = base_ + geo_.log_desc_offset;
	memset(desc, 0, uint64_t{kLogSlots} * sizeof(LogDescriptor));
	persist_(desc, uint64_t{kLogSlots} * sizeof(LogDescriptor));
	head_ = 0;
	staged_ = false;
}

} // namespace memfed::store
