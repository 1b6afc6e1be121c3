#include "storage/codec.h"

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"
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

namespace {

// Checks the CRC32C framing of a stored value; on success *body is the protobuf part.
absl::Status CheckFraming(std::string_view value, absl::FunctionRef<std::string()> what,
                          std::string_view* body) {
  if (value.size() < 4) {
    return absl::DataLossError(absl::StrCat(what(), ": stored value of ", value.size(),
                                            " bytes is too short to hold a checksum"));
  }
  const uint32_t expected = ReadBigEndian32(value.data());
  *body = value.substr(4);
  const uint32_t actual = Crc32c(*body);
  if (expected != actual) {
    return absl::DataLossError(
        absl::StrCat(what(), ": checksum mismatch (stored ", expected, ", computed ", actual, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status DecodeChecked(std::string_view value, google::protobuf::MessageLite* message,
                           absl::FunctionRef<std::string()> what) {
  std::string_view body;
  if (absl::Status st = CheckFraming(value, what, &body); !st.ok()) return st;
  if (!message->ParseFromArray(body.data(), static_cast<int>(body.size()))) {
    return absl::DataLossError(
        absl::StrCat(what(), ": checksum matches but the value does not parse"));
  }
  return absl::OkStatus();
}

absl::Status DecodeCheckedField(std::string_view value, int field_number,
                                google::protobuf::MessageLite* field,
                                absl::FunctionRef<std::string()> what) {
  using google::protobuf::internal::WireFormatLite;
  std::string_view body;
  if (absl::Status st = CheckFraming(value, what, &body); !st.ok()) return st;
  auto malformed = [&] {
    return absl::DataLossError(
        absl::StrCat(what(), ": checksum matches but the value does not parse"));
  };
  field->Clear();
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(body.data()),
                                            static_cast<int>(body.size()));
  while (!in.ExpectAtEnd()) {
    const uint32_t tag = in.ReadTag();
    if (tag == 0) return malformed();
    if (WireFormatLite::GetTagFieldNumber(tag) == field_number &&
        WireFormatLite::GetTagWireType(tag) == WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      uint32_t length = 0;
      if (!in.ReadVarint32(&length) || length > static_cast<uint32_t>(in.BytesUntilLimit())) {
        return malformed();
      }
      const auto limit = in.PushLimit(static_cast<int>(length));
      if (!field->MergePartialFromCodedStream(&in) || !in.ConsumedEntireMessage()) {
        return malformed();
      }
      in.PopLimit(limit);
    } else if (!WireFormatLite::SkipField(&in, tag)) {
      return malformed();
    }
  }
  return absl::OkStatus();
}

absl::Status DecodeChecked(std::string_view value, google::protobuf::MessageLite* message,
                           std::string_view what) {
  return DecodeChecked(value, message, [what] { return std::string(what); });
}

}  // namespace wharf::storage
