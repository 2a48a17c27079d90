// The memfed wire protocol: binary, little-endian, versioned.
//
// A connection between nodes (wire version 5), client = the connecting side:
//   1. Version gate, in plaintext: the client sends a HELLO request with
//      min = max = 5; the module answers a HELLO response carrying kCapTls
//      ("TLS 1.3 follows") and nothing else of note. A client older than
//      version 5 gets an error response saying its version (2 to 4) is
//      refused and the peer must be upgraded, then the connection closes:
//      it never gets a byte of any region. A client with a node key refuses a module that
//      does not offer kCapTls (no downgrade).
//   2. The TLS 1.3 handshake (daemon/trust/tls_context.h): both sides show a
//      self-signed Ed25519 certificate and accept only keys they trust.
//   3. Inside TLS, the HELLO exchange below (module ID, capabilities,
//      capacity), then requests, each side's messages in order.
// The module serves no request outside TLS. Only a module started without
// a TlsContext (unit tests of the framing, the benchmark's plaintext
// baseline) skips steps 1 and 2: its first HELLO is the real one, with no
// kCapTls.
//
// The payload crc under TLS (decided: kept). AES-GCM's tag already proves
// that the bytes of a record are the bytes the peer's TLS layer sent, so as
// a check of the wire alone the crc is redundant there. But a READ
// response's payload_crc is not computed over the bytes sent: the module
// combines it from the crcs stored with the pages when they were written
// (daemon/service/module_service.cc, read_pages_with_crc), so the client's
// check covers the module's media, its copy out of the pool and the send
// path end to end, which the tag (computed after all that) cannot; a
// WRITE's crc, computed by the client over its source pages, is stored
// with the pages on the same terms. It is also the only check on the
// plaintext framing (tests, the benchmark's baseline). Its cost is small
// beside the cipher's: memfed-bench-wire --tls prints crc32c (ISA-L) of a
// 4 KiB page, ~0.08 us here, against 0.8-1.2 us for AES-128-GCM of it per
// side (OpenSSL 3.0 on this machine's loaded vCPUs). The header_crc stays for the same framing
// reasons and costs nothing measurable.
//
// Every message is a fixed 64-byte header followed by `payload_len` bytes.
// A relay forwards on the header alone (dst_module, hop_limit); the offset is
// applied only at the destination. Requests and responses share the header;
// a response has kFlagResponse set, echoes request_id and type, and carries a
// memfed::Code in `status` (0 = OK; otherwise the payload is a UTF-8 message).
//
//   off size field
//     0  4   magic        kWireMagic ("MFW1")
//     4  1   version      protocol version (kWireVersion)
//     5  1   type         MsgType
//     6  1   tclass       TrafficClass
//     7  1   hop_limit    decremented by each relay; 0 is dropped
//     8  2   flags        kFlag*
//    10  2   status       response status (memfed::Code), 0 in requests
//    12  4   payload_len  bytes after the header, <= kMaxPayload
//    16  8   src_module   sender's module (or node) ID, low 48 bits
//    24  8   dst_module   destination module ID, low 48 bits
//    32  8   request_id   chosen by the requester, echoed in the response
//    40  8   offset       READ/WRITE/*_VERSION*: FA offset (byte offset in the pool)
//    48  4   count        READ/WRITE/*_VERSION*: number of pages (<= kMaxPagesPerRequest;
//                         READ_VERSIONS: <= kMaxVersionsPerRequest)
//    52  4   region_id    READ/WRITE/*_VERSION*: region the pages belong to
//    56  4   payload_crc  crc32c of the payload (0 if payload_len == 0)
//    60  4   header_crc   crc32c of bytes 0..59
//
// Sequenced writes (wire version 5). A WRITE or WRITE_VERSIONED request may
// carry kFlagSequenced: its payload then starts with a WireSequence (u64
// session, u64 seq; both nonzero) before the payload described below, and
// payload_len counts it. The session is chosen at random by the writer and
// kept across its connections to the module; seq numbers the session's
// writes. kFlagRetry (only with kFlagSequenced) says the writer sent this
// (session, seq) before and never got the answer. The module remembers
// each session's recent sequences (daemon/service/session_cache.h) and
// never applies one twice: a retry of an applied write is answered with
// the recorded result, a request that arrives on a connection its session
// has left (a late one of a dropped connection) is refused, and a retry the
// module cannot place (its session forgotten, or a newer write of the
// session accepted since) is refused (kBusy), never guessed at. A
// response never carries kFlagSequenced. Reads are idempotent and are never
// sequenced.
//
// Payloads, per type (all integers little-endian; "name" is u8 length + bytes):
//   HELLO      req:  u16 min_version, u16 max_version, u32 capabilities
//              resp: u16 version, u16 reserved, u32 capabilities,
//                    u64 capacity_bytes, u32 page_size, u32 reserved
//   READ       req:  none                   resp: count * kPageSize bytes
//   WRITE      req:  count * kPageSize bytes resp: none, sent once durable
//   REGION_CREATE req: WireRegionSpec       resp: WireRegion
//   REGION_DELETE req: name                 resp: none
//   REGION_LOOKUP req: name, optionally followed by WireAsker (u32 uid, u8
//                      want): the uid the requesting node vouches for and
//                      the access it needs (kAccess*)
//                 resp: WireRegion; to an asked lookup its `access` is what
//                      the module gives that (node key, uid), which holds
//                      `want` (else kPermission naming the grant that would
//                      allow it)
//   REGION_LIST   req: none, or WireListRequest, optionally followed by a
//                      WireAsker (want kAccessRead): the uid the requesting
//                      node vouches for (an "asked list")
//                 resp: u32 n, n * WireRegion, in name order: the regions
//                 whose names sort (bytewise) after `after`, at most `limit`
//                 of them (0 or above kRegionListPage: kRegionListPage). A
//                 response with fewer than it asked for is the last page;
//                 else ask again after the last name. (A module older than
//                 paging ignores the request and answers every region; the
//                 requester filters and stops when a page brings nothing new.)
//                 In an asked list every region's `access` is kAccessAnswered
//                 with what the module gives that (node key, uid) (maybe
//                 nothing), so the node shows its user only what they may
//                 read.
//   REGION_SET_LENGTH req: WireSetLength    resp: WireRegion
//   STAT          req: none                 resp: WireStat
//   WRITE_VERSIONED  (replicated regions; header as WRITE)
//                 req:  WireVersionedWrite (16 bytes), then count * kPageSize
//                       bytes; each page is applied iff `version` is newer
//                       than the page's stored version (kVersionedRepair:
//                       at least as new), atomically per page
//                 resp: u32 applied (pages applied; the others were not
//                       newer), sent once durable
//   READ_VERSIONED   (header as READ)
//                 req:  none
//                 resp: count * u64 page versions (0: never written by a
//                       versioned write), then count * kPageSize bytes, each
//                       page with its version read under the page's lock;
//                       payload_crc = crc32c of the versions combined with
//                       the crcs stored with the pages (the media check of
//                       READ holds); the module also checks its copy against
//                       it and answers kCorrupt for a damaged page
//   READ_VERSIONS    (header offset, count <= kMaxVersionsPerRequest, region_id)
//                 req:  none               resp: count * u64 page versions
//   RDMA_CONNECT  req: none                 resp: WireRdmaConnect
//                 Only to an authenticated peer (over TLS) of a module
//                 that listens for RDMA (kCapRdma): where to connect with
//                 rdma_cm and a one-time token to present there
//                 (daemon/rdma/rdma_server.h). No key: keys are per region.
//   RDMA_REGION   req: none, region in header.region_id
//                 resp: WireRdmaRegion (the region's extent, and the remote
//                 addresses and read-only keys of its pages and PageMetas);
//                 only to an authenticated peer that may READ the region
//                 (the same check as READ, refused and counted as one)
//   RDMA_FENCE    req: none                 resp: none
//                 Sent over TLS by a pager whose RDMA side broke, before it
//                 re-issues over TCP the writes it had sent over RDMA: every
//                 queue pair connected with a token this TLS connection got
//                 is fenced, so a write SENT on one of them that the module
//                 has not yet handed to its write path is refused, never
//                 applied after the re-issued copy (rdma_write_receiver.h).
//   REGION_ACCESS req: WireAccessRequest: show a region's owner node and
//                      grants (op kAccessShow; the asker needs read), or set
//                      or revoke a grant (kAccessGrant / kAccessRevoke; only
//                      the owner node, for the owner uid or root)
//                 resp: WireAccessList: u8 owner_key[32] (zeros: the
//                      module's own node), u32 owner_uid, u8 n, 3 reserved,
//                      then n * (u8 key[32], u32 uid, u8 rights, 3
//                      reserved); uid 0xffffffff: every user of that node
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace memfed::wire
{

constexpr uint32_t kWireMagic = 0x3157464d; // "MFW1" little-endian
// Version 2: WireRegion carries the file length; REGION_SET_LENGTH.
// Version 3: the plaintext version gate, then TLS 1.3 (see the top).
// Version 4: replicated regions: WireRegionSpec and WireRegion carry
// replica_group and replicas; WRITE_VERSIONED, READ_VERSIONED, READ_VERSIONS.
// Version 5: sequenced writes (kFlagSequenced, kFlagRetry, WireSequence). A
// version 4 peer is refused at HELLO: it could not be told apart from a
// writer that re-sends what was applied.
constexpr uint8_t kWireVersion = 5;
constexpr uint8_t kWireMinVersion = 5;
constexpr size_t kHeaderSize = 64;
constexpr uint32_t kPageSize = 4096;
constexpr uint32_t kMaxPagesPerRequest = 256;      // 1 MiB per READ/WRITE
constexpr uint32_t kMaxVersionsPerRequest = 65536; // 512 KiB per READ_VERSIONS
constexpr uint32_t kVersionedWriteSize = 16;       // sizeof(WireVersionedWrite)
constexpr uint32_t kSequenceSize = 16;             // sizeof(WireSequence)
// The largest payload: a READ_VERSIONED response (1 MiB of pages and 2 KiB of
// versions), with room for a sequenced WRITE_VERSIONED's two 16-byte prefixes.
constexpr uint32_t kMaxPayload =
        kMaxPagesPerRequest * (kPageSize + sizeof(uint64_t)) + kVersionedWriteSize + kSequenceSize;
constexpr uint8_t kDefaultHopLimit = 16;
constexpr size_t kMaxRegionName = 63;
constexpr uint32_t kRegionListPage = 4096; // 448 KiB of WireRegion per response

enum class MsgType : uint8_t {
	kHello = 1,
	kRead = 2,
	kWrite = 3,
	kRegionCreate = 4,
	kRegionDelete = 5,
	kRegionLookup = 6,
	kRegionList = 7,
	kStat = 8,
	kRegionSetLength = 9,
	kWriteVersioned = 10,
	kReadVersioned = 11,
	kReadVersions = 12,
	kRdmaConnect = 13,
	kRdmaRegion = 14,
	kRegionAccess = 15,
	kRdmaFence = 16,
};
constexpr uint8_t kMsgTypeMax = 16;

// Traffic classes, in priority order: a fault never waits behind bulk work.
enum class TrafficClass : uint8_t {
	kFault = 0,   // demand faults: latency first
	kControl = 1, // region management, stats, hello
	kBulk = 2,    // prefetch, write-back, replication, migration
};
constexpr uint8_t kTrafficClassMax = 2;

constexpr uint16_t kFlagResponse = 1 << 0;
constexpr uint16_t kFlagSequenced = 1 << 1; // WRITE/WRITE_VERSIONED request: WireSequence first
constexpr uint16_t kFlagRetry = 1 << 2;     // with kFlagSequenced: a re-send of that sequence
constexpr uint16_t kFlagsKnown = kFlagResponse | kFlagSequenced | kFlagRetry;

// Capabilities announced at HELLO.
constexpr uint32_t kCapModule = 1 << 0; // exports a pool
constexpr uint32_t kCapRelay = 1 << 1;  // forwards for others
constexpr uint32_t kCapRdma = 1 << 2;   // pool registered for one-sided RDMA
constexpr uint32_t kCapTls = 1 << 3;    // (version gate only) TLS 1.3 follows

struct Header {
	uint32_t magic;
	uint8_t version;
	uint8_t type;
	uint8_t tclass;
	uint8_t hop_limit;
	uint16_t flags;
	uint16_t status;
	uint32_t payload_len;
	uint64_t src_module;
	uint64_t dst_module;
	uint64_t request_id;
	uint64_t offset;
	uint32_t count;
	uint32_t region_id;
	uint32_t payload_crc;
	uint32_t header_crc;
};
static_assert(sizeof(Header) == kHeaderSize, "wire header must be 64 bytes");

// REGION_CREATE request payload (fixed size).
struct WireRegionSpec {
	uint8_t name_len;
	char name[kMaxRegionName];
	uint64_t size_bytes;
	uint32_t owner_uid;
	uint32_t mode; // permission bits, like a file's (0600)
	// A replicated region's copy: the group its copies share and their
	// number K (both 0: an ordinary region). K > 1 needs a module whose pool
	// has a page-version area (layout 3).
	uint64_t replica_group;
	uint8_t replicas;
	uint8_t reserved[7]; // zero
};
static_assert(sizeof(WireRegionSpec) == 96);

// A region as the module describes it (fixed size).
struct WireRegion {
	uint32_t id;
	uint32_t owner_uid;
	uint32_t mode;
	uint8_t name_len;
	char name[kMaxRegionName];
	uint64_t fa_offset;     // first byte of the region in the module's pool
	uint64_t size_bytes;    // multiple of kPageSize
	uint64_t ctime_ns;      // creation time, CLOCK_REALTIME
	uint64_t length;        // as a file: bytes before end of file, <= size_bytes
	uint64_t replica_group; // 0: an ordinary region
	uint8_t replicas;       // K copies of a replicated region, else 0
	uint8_t access;         // answer to an asked REGION_LOOKUP or LIST: kAccess*, else 0
	uint8_t reserved[6];    // zero
};
static_assert(sizeof(WireRegion) == 128);

// Access to a region (REGION_LOOKUP's WireAsker and answer, REGION_ACCESS).
constexpr uint8_t kAccessRead = 1 << 0;
constexpr uint8_t kAccessWrite = 1 << 1;
constexpr uint8_t kAccessAdmin = 1 << 2; // delete, grant, revoke: the owner
constexpr uint8_t kAccessKnown = kAccessRead | kAccessWrite | kAccessAdmin;
// In an asked REGION_LIST's WireRegion: `access` is the module's answer for
// the asker, with or without rights (an unasked region's access is 0).
constexpr uint8_t kAccessAnswered = 1 << 7;
constexpr uint32_t kAskerSize = 5; // u32 uid, u8 want

// A REGION_LOOKUP request as decoded: the name and, if asked, who asks.
struct WireLookup {
	std::string name;
	bool asked = false;
	uint32_t uid = 0;
	uint8_t want = 0;
};

// REGION_ACCESS request payload (fixed size).
enum class AccessOp : uint8_t { kShow = 0, kGrant = 1, kRevoke = 2 };
struct WireAccessRequest {
	uint8_t name_len;
	char name[kMaxRegionName];
	uint8_t op;     // AccessOp
	uint8_t rights; // kGrant: kAccessRead, or kAccessRead | kAccessWrite
	uint8_t reserved[2];
	uint32_t asker_uid; // the uid the requesting node vouches for
	uint8_t key[32];    // kGrant / kRevoke: the grantee node's key
	uint32_t uid;       // the grantee's uid there (0xffffffff: every user)
	uint32_t reserved2;
};
static_assert(sizeof(WireAccessRequest) == 112);

struct WireGrant {
	uint8_t key[32];
	uint32_t uid;
	uint8_t rights;
};
struct WireAccessList {
	uint8_t owner_key[32];
	uint32_t owner_uid;
	std::vector<WireGrant> grants;
};

// REGION_LIST request payload: u8 after_len, after_len bytes of a region name
// (0: from the first region), u32 limit; an asked list then has a WireAsker.
struct WireListRequest {
	uint8_t after_len;
	char after[kMaxRegionName];
	uint32_t limit;
	bool asked;
	uint32_t uid; // asked: the uid the requesting node vouches for
};

// REGION_SET_LENGTH request payload (fixed size): the region's new length as
// a file. Shrinking zeroes what lies past the new end.
constexpr uint32_t kSetLengthGrowOnly = 1 << 0; // never shrink (appends)
struct WireSetLength {
	uint8_t name_len;
	char name[kMaxRegionName];
	uint64_t length;
	uint32_t flags; // kSetLengthGrowOnly
	uint32_t reserved;
};
static_assert(sizeof(WireSetLength) == 80);

// A sequenced request's payload prefix (kFlagSequenced; fixed size).
struct WireSequence {
	uint64_t session; // chosen by the writer, nonzero
	uint64_t seq;     // the write's number in the session, nonzero
};
static_assert(sizeof(WireSequence) == kSequenceSize);

// WRITE_VERSIONED request payload prefix (fixed size), followed by the pages.
constexpr uint32_t kVersionedRepair = 1 << 0; // apply at an equal version too
struct WireVersionedWrite {
	uint64_t version; // the writer's page version, nonzero
	uint32_t flags;   // kVersionedRepair
	uint32_t reserved;
};
static_assert(sizeof(WireVersionedWrite) == kVersionedWriteSize);

struct WireStat {
	uint64_t capacity_bytes; // data area of the pool
	uint64_t used_bytes;
	uint64_t free_bytes;
	uint64_t largest_free_bytes;
	uint32_t regions;
	uint32_t page_size;
	uint64_t reads;       // pages read since start
	uint64_t writes;      // pages written since start
	uint64_t log_replays; // redo-log records replayed at last open
	uint64_t uptime_ns;
};
static_assert(sizeof(WireStat) == 72);

// RDMA_CONNECT response payload (fixed size): where to connect, and the
// token to connect with. Keys come per region, with RDMA_REGION.
constexpr size_t kRdmaEndpointMax = 63;
constexpr size_t kRdmaTokenSize = 16;
struct WireRdmaConnect {
	char endpoint[kRdmaEndpointMax + 1]; // "ip:port", NUL-terminated
	uint8_t token[kRdmaTokenSize];       // rdma_cm private data (WireRdmaHello)
	// Write-back over RDMA (below): the WRITE SENDs the module has receives
	// posted for on each queue pair; 0: writes go over TLS only.
	uint16_t write_depth;
	uint16_t reserved;
	uint32_t reserved2;
};
static_assert(sizeof(WireRdmaConnect) == 88);

// RDMA_REGION response payload (fixed size): the extent a reader may read and
// the region's two read-only registrations: its pages (the page at FA offset
// `fa` lies at remote address `data_addr + (fa - fa_offset)`, under
// `data_rkey`) and their PageMeta entries (the page's 16-byte PageMeta at
// `meta_addr + 16 * ((fa - fa_offset) / kPageSize)`, under `meta_rkey`).
// The keys work for this region only, until it is deleted, truncated or a
// grant is revoked; then the reader asks again.
struct WireRdmaRegion {
	uint32_t region_id;
	uint32_t reserved;
	uint64_t fa_offset;
	uint64_t size_bytes;
	uint64_t data_addr;
	uint64_t meta_addr;
	uint32_t data_rkey;
	uint32_t meta_rkey;
};
static_assert(sizeof(WireRdmaRegion) == 48);

// rdma_cm connect private data: the token of an RDMA_CONNECT response.
constexpr uint32_t kRdmaHelloMagic = 0x31524d46; // "FMR1"
struct WireRdmaHello {
	uint32_t magic;
	uint32_t version; // kWireVersion
	uint8_t token[kRdmaTokenSize];
};
static_assert(sizeof(WireRdmaHello) == 24);

// Write-back over RDMA (two-sided, on the reader's RC queue pair). A pager
// SENDs a whole wire message, exactly as it would send it over TCP: a
// request Header (WRITE or WRITE_VERSIONED, header and payload crcs set)
// followed by its payload (a sequenced one: the WireSequence first;
// WRITE_VERSIONED: the WireVersionedWrite prefix, then the pages), at most
// kRdmaWriteMessageMax bytes, into one of the module's posted receive
// buffers. The module validates it (codec.h: decode_rdma_write), applies it
// through the same path as a TCP request and SENDs back the response
// message (Header, then the payload of a TCP response: nothing for WRITE,
// u32 applied for WRITE_VERSIONED, the error message of a failure), at most
// kRdmaAckMax bytes, once durable. A pager keeps at most
// WireRdmaConnect::write_depth writes unanswered.
constexpr uint32_t kRdmaWriteMessageMax = uint32_t(kHeaderSize) + kSequenceSize +
                                          kVersionedWriteSize + kMaxPagesPerRequest * kPageSize;
constexpr uint32_t kRdmaAckMax = uint32_t(kHeaderSize) + 1024; // + codec.h kMaxErrorMessage
static_assert(kRdmaWriteMessageMax == 64 + 16 + 16 + 256 * 4096);

} // namespace memfed::wire
