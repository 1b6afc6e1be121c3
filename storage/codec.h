#pragma once

#include <string>
#include <string_view>

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

}  // namespace wharf::storage
