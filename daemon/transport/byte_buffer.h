// ByteBuffer: a growable byte queue for socket I/O.
//
// Bytes live in [read_ptr, read_ptr + readable); new bytes are written at
// write_ptr and made readable by commit(). Growing never zero-fills, and the
// storage is kept across clear(), so a connection's buffers stop allocating
// once they have reached their working size. Not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>

namespace memfed
{

class ByteBuffer
{
public:
	explicit ByteBuffer(size_t initial = 0) { grow(initial); }

	uint8_t *read_ptr() { return buf_.get() + head_; }
	const uint8_t *read_ptr() const { return buf_.get() + head_; }
	size_t readable() const { return tail_ - head_; }
	void consume(size_t n)
	{
		head_ += n;
		if (head_ == tail_)
			head_ = tail_ = 0;
	}

	uint8_t *write_ptr() { return buf_.get() + tail_; }
	size_t writable() const { return cap_ - tail_; }
	void commit(size_t n) { tail_ += n; }
	// Makes at least `n` bytes writable: moves readable bytes to the front,
	// then reallocates if that is not enough. Invalidates pointers.
	void ensure_writable(size_t n)
	{
		if (writable() >= n)
			return;
		if (head_ > 0) {
			std::memmove(buf_.get(), buf_.get() + head_, readable());
			tail_ -= head_;
			head_ = 0;
		}
		if (writable() < n)
			grow(tail_ + n);
	}
	// Reserves `n` bytes at the end, makes them readable, returns them.
	uint8_t *append(size_t n)
	{
		ensure_writable(n);
		uint8_t *p = write_ptr();
		commit(n);
		return p;
	}
	// Drops bytes at the end (undoes part of an append()).
	void truncate(size_t readable_len) { tail_ = head_ + readable_len; }
	void clear() { head_ = tail_ = 0; }

private:
	void grow(size_t want)
	{
		size_t cap = cap_ ? cap_ : 4096;
		while (cap < want)
			cap *= 2;
		if (cap == cap_)
			return;
		std::unique_ptr<uint8_t[]> nb(new uint8_t[cap]);
		if (tail_ > 0)
			std::memcpy(nb.get(), buf_.get(), tail_);
		buf_ = std::move(nb);
		cap_ = cap;
	}

	std::unique_ptr<uint8_t[]> buf_;
	size_t cap_ = 0;
	size_t head_ = 0;
	size_t tail_ = 0;
};

} // namespace memfed
