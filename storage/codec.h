#pragma once

#include <string>
#include <string_view>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "google/protobuf/message_lite.h"

namespace wharf::storage {

// Values of the raw, batch and quarantine column families are
//   <crc32c of the serialized message: u32 big-endian> <serialized protobuf message>
// The checksum is verified on every read, on top of RocksDB's own block checksums, so a value
// damaged anywhere between the producer's request and a destination is detected, not delivered.
// Thread safety: pure functions.

std::string EncodeChecked(const google::protobuf::MessageLite& message);
void EncodeCheckedTo(const google::protobuf::MessageLite& message, std::string* out);

// DATA_LOSS when the checksum does not match or the message does not parse; `what` names the
// value in the message (e.g. "raw record orders/3/1042").
absl::Status DecodeChecked(std::string_view value, google::protobuf::MessageLite* message,
                           std::string_view what);
// Same, with the name built only when the value is bad: hot read loops decode thousands of
// values per call and formatting a name for each (an allocation plus number formatting) cost
// more than the checksum of a small record.
absl::Status DecodeChecked(std::string_view value, google::protobuf::MessageLite* message,
                           absl::FunctionRef<std::string()> what);

// Verifies the checksum like DecodeChecked, then decodes only the top-level message field
// `field_number` of the stored message into `field` (occurrences merged, as a full parse
// would), skipping the other fields without decoding them: retention needs a batch's manifest,
// not its thousand records. DATA_LOSS on a checksum mismatch or malformed top-level wire data
// (fields that are skipped are not checked beyond their framing).
absl::Status DecodeCheckedField(std::string_view value, int field_number,
                                google::protobuf::MessageLite* field,
                                absl::FunctionRef<std::string()> what);

}  // namespace wharf::storage
