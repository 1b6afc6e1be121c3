// Fuzz target: the staging store's key encoding (storage/keys.h) and its checked value codec
// (storage/codec.h).
//
// Checks, for arbitrary bytes x:
//   - DecodeOffsetKey(x) fails cleanly or decodes to a key that OffsetKey re-encodes to exactly x.
//   - DecodeChecked(x) into each persisted message type fails with DATA_LOSS or decodes; a
//     decoded message re-encodes to a value that decodes to an equal message.
//   - For a key and a StoredRecord built from x: encode -> decode round trips, the key order is
//     the (dataset, partition, offset) order, and a value with one byte changed never decodes.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "google/protobuf/stubs/logging.h"
#include "google/protobuf/util/message_differencer.h"
#include "storage/codec.h"
#include "storage/keys.h"
#include "tests/fuzz/fuzz_check.h"
#include "wharf/v1/record.pb.h"
#include "wharf/v1/staging.pb.h"

namespace {

using google::protobuf::util::MessageDifferencer;
using wharf::storage::DecodeChecked;
using wharf::storage::EncodeChecked;

// Consumes bytes from the front of the input; yields zeros once it is used up.
class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}
  uint8_t Byte() {
    if (data_.empty()) return 0;
    const uint8_t b = static_cast<uint8_t>(data_[0]);
    data_.remove_prefix(1);
    return b;
  }
  uint64_t U64() {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | Byte();
    return v;
  }
  uint32_t U32() { return static_cast<uint32_t>(U64() >> 32); }
  std::string_view Bytes(size_t n) {
    n = std::min(n, data_.size());
    std::string_view out = data_.substr(0, n);
    data_.remove_prefix(n);
    return out;
  }

 private:
  std::string_view data_;
};

// Decodes `value` as a T; when that works, the re-encoded message must decode to an equal one.
template <typename T>
void CheckDecodeReencode(std::string_view value) {
  T decoded;
  const absl::Status st = DecodeChecked(value, &decoded, "fuzz value");
  if (!st.ok()) {
    WHARF_FUZZ_CHECK(st.code() == absl::StatusCode::kDataLoss);
    return;
  }
  const std::string again = EncodeChecked(decoded);
  T redecoded;
  WHARF_FUZZ_CHECK(DecodeChecked(again, &redecoded, "re-encoded value").ok());
  WHARF_FUZZ_CHECK(MessageDifferencer::Equals(decoded, redecoded));
}

int Sign(int v) { return (v > 0) - (v < 0); }

// Compares (dataset, partition, offset) tuples the way the keys must sort.
int CompareTuples(std::string_view da, uint32_t pa, uint64_t oa, std::string_view db, uint32_t pb,
                  uint64_t ob) {
  if (const int c = da.compare(db); c != 0) return Sign(c);
  if (pa != pb) return pa < pb ? -1 : 1;
  if (oa != ob) return oa < ob ? -1 : 1;
  return 0;
}

// A dataset name made of the input: characters mapped into the allowed alphabet, 1..64 long.
std::string NameFrom(Reader* in) {
  static constexpr std::string_view kAlphabet =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-";
  const size_t length = 1 + in->Byte() % 64;
  std::string name;
  for (size_t i = 0; i < length; ++i) {
    // The first character must be a letter or digit: the first 62 of the alphabet.
    const size_t modulus = i == 0 ? 62 : kAlphabet.size();
    name.push_back(kAlphabet[in->Byte() % modulus]);
  }
  return name;
}

}  // namespace

// Invalid UTF-8 in a string field is an expected parse failure here, not news: without this,
// protobuf logs an ERROR line for each such input.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  // 1. Arbitrary bytes as an offset key.
  if (auto key = wharf::storage::DecodeOffsetKey(input)) {
    WHARF_FUZZ_CHECK(!key->dataset.empty());
    WHARF_FUZZ_CHECK(key->dataset.find('\0') == std::string_view::npos);
    WHARF_FUZZ_CHECK(wharf::storage::OffsetKey(key->dataset, key->partition, key->offset) == input);
  }
  // Arbitrary bytes as a name: accepted names are what the key encoding relies on.
  if (wharf::storage::ValidateName("dataset", input).ok()) {
    WHARF_FUZZ_CHECK(!input.empty() && input.size() <= 64);
    WHARF_FUZZ_CHECK(input.find('\0') == std::string_view::npos);
  }

  // 2. Arbitrary bytes as each persisted value type.
  CheckDecodeReencode<wharf::v1::StoredRecord>(input);
  CheckDecodeReencode<wharf::v1::StoredBatch>(input);
  CheckDecodeReencode<wharf::v1::QuarantineEntry>(input);
  CheckDecodeReencode<wharf::v1::ProducerWindow>(input);

  // 3. Values derived from the input: encode -> decode.
  Reader in(input);
  const std::string dataset_a = NameFrom(&in);
  const std::string dataset_b = NameFrom(&in);
  WHARF_FUZZ_CHECK(wharf::storage::ValidateName("dataset", dataset_a).ok());
  const uint32_t partition_a = in.U32();
  const uint32_t partition_b = in.Byte() % 2 ? partition_a : in.U32();
  const uint64_t offset_a = in.U64();
  const uint64_t offset_b = in.Byte() % 2 ? offset_a : in.U64();
  const std::string key_a = wharf::storage::OffsetKey(dataset_a, partition_a, offset_a);
  const std::string key_b = wharf::storage::OffsetKey(dataset_b, partition_b, offset_b);
  auto decoded = wharf::storage::DecodeOffsetKey(key_a);
  WHARF_FUZZ_CHECK(decoded.has_value());
  WHARF_FUZZ_CHECK(decoded->dataset == dataset_a);
  WHARF_FUZZ_CHECK(decoded->partition == partition_a);
  WHARF_FUZZ_CHECK(decoded->offset == offset_a);
  // One partition is one contiguous key range, ordered by offset.
  WHARF_FUZZ_CHECK(key_a.starts_with(wharf::storage::PartitionPrefix(dataset_a, partition_a)));
  WHARF_FUZZ_CHECK(Sign(key_a.compare(key_b)) == CompareTuples(dataset_a, partition_a, offset_a,
                                                               dataset_b, partition_b, offset_b));

  wharf::v1::StoredRecord record;
  record.mutable_record()->set_key(std::string(in.Bytes(in.Byte())));
  record.mutable_record()->set_payload(std::string(in.Bytes(in.Byte() * 4)));
  if (in.Byte() % 2) {
    record.mutable_record()->mutable_event_time()->set_seconds(static_cast<int64_t>(in.U64()));
    record.mutable_record()->mutable_event_time()->set_nanos(static_cast<int32_t>(in.U32()));
  }
  // Proto3 strings must be UTF-8 to serialize meaningfully: map the bytes to ASCII.
  std::string producer(in.Bytes(in.Byte() % 32));
  for (char& c : producer) c = static_cast<char>('a' + static_cast<uint8_t>(c) % 26);
  record.set_producer_id(producer);
  record.set_sequence(in.U64());
  record.set_attempts(in.U32());
  const std::string value = EncodeChecked(record);
  wharf::v1::StoredRecord back;
  WHARF_FUZZ_CHECK(DecodeChecked(value, &back, "fuzz record").ok());
  WHARF_FUZZ_CHECK(MessageDifferencer::Equals(record, back));
  // Any single changed byte is caught (CRC32C detects every burst of up to 32 bits).
  std::string damaged = value;
  const size_t at = in.U32() % damaged.size();
  damaged[at] = static_cast<char>(damaged[at] ^ (1 + in.Byte() % 255));
  WHARF_FUZZ_CHECK(DecodeChecked(damaged, &back, "damaged record").code() ==
                   absl::StatusCode::kDataLoss);
  return 0;
}
