#include "storage/codec.h"

#include "absl/strings/str_cat.h"
#include "storage/crc32c.h"
#include "storage/keys.h"

namespace wharf::storage {

void EncodeCheckedTo(const google::protobuf::MessageLite& message, std::string* out) {
  out->clear();
  const size_t size = message.ByteSizeLong();
  out->resize(4 + size);
  message.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(out->data() + 4));
  const uint32_t crc = Crc32c(std::string_view(out->data() + 4, size));
  std::string header;
  AppendBigEndian32(&header, crc);
  out->replace(0, 4, header);
}

std::string EncodeChecked(const google::protobuf::MessageLite& message) {
  std::string out;
  EncodeCheckedTo(message, &out);
  return out;
}

absl::Status DecodeChecked(std::string_view value, google::protobuf::MessageLite* message,
                           std::string_view what) {
  if (value.size() < 4) {
    return absl::DataLossError(absl::StrCat(std::string(what), ": stored value of ", value.size(),
                                            " bytes is too short to hold a checksum"));
  }
  const uint32_t expected = ReadBigEndian32(value.data());
  const std::string_view body = value.substr(4);
  const uint32_t actual = Crc32c(body);
  if (expected != actual) {
    return absl::DataLossError(absl::StrCat(std::string(what), ": checksum mismatch (stored ",
                                            expected, ", computed ", actual, ")"));
  }
  if (!message->ParseFromArray(body.data(), static_cast<int>(body.size()))) {
    return absl::DataLossError(
        absl::StrCat(std::string(what), ": checksum matches but the value does not parse"));
  }
  return absl::OkStatus();
}

}  // namespace wharf::storage
