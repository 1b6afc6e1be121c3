#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace wharf::storage {

// Key encoding of the staging store. Every key that belongs to a partition starts with
//   <dataset bytes> 0x00 <partition: u32 big-endian>
// so that keys sort by (dataset, partition, offset) and one partition is one contiguous range.
// Dataset and destination names are restricted (see ValidateName) so they never contain 0x00.
// Thread safety: pure functions.

// Names of datasets and destinations: 1 to 64 characters of [A-Za-z0-9_.-], starting with a
// letter or digit.
absl::Status ValidateName(std::string_view kind, std::string_view name);

void AppendBigEndian32(std::string* out, uint32_t v);
void AppendBigEndian64(std::string* out, uint64_t v);
uint32_t ReadBigEndian32(const char* p);
uint64_t ReadBigEndian64(const char* p);

// <dataset> 0x00 <partition>
std::string PartitionPrefix(std::string_view dataset, uint32_t partition);
// <dataset> 0x00 <partition> <offset: u64 big-endian>. Used by the raw, batch (offset = first
// offset of the batch) and quarantine column families.
std::string OffsetKey(std::string_view dataset, uint32_t partition, uint64_t offset);

struct DecodedOffsetKey {
  std::string_view dataset;
  uint32_t partition = 0;
  uint64_t offset = 0;
};
// Returns nullopt when `key` is not a well-formed offset key.
std::optional<DecodedOffsetKey> DecodeOffsetKey(std::string_view key);

// <dataset> 0x00 <producer id>. Producer ids are arbitrary bytes (they end the key).
std::string ProducerKey(std::string_view dataset, std::string_view producer_id);

// Checkpoint column family keys: a one-byte kind, then the partition prefix.
std::string IngestStateKey(std::string_view dataset, uint32_t partition);  // 'i'
std::string ValidationKey(std::string_view dataset, uint32_t partition);   // 'v'
std::string RetentionKey(std::string_view dataset, uint32_t partition);    // 'r'
std::string DeliveryKey(std::string_view dataset, std::string_view destination,
                        uint32_t partition);  // 'd'

// Metadata column family: dataset registrations.
std::string DatasetMetaKey(std::string_view dataset);  // "dataset/" <dataset>

}  // namespace wharf::storage
