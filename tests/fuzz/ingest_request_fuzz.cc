// Fuzz target: decoding and validating an ingest request (wharf.v1.ProduceRequest), as the
// Ingest service does with every request a producer sends, then storing its records the way the
// staging store does (key and checked value encoding).
//
// Checks, for arbitrary bytes:
//   - protobuf decoding never crashes; ValidateProduceRequest answers OK, INVALID_ARGUMENT or
//     NOT_FOUND, under the default limits and under small ones (so every limit is reachable);
//   - an accepted request satisfies what the store relies on (known dataset, 1..max records,
//     non-empty payloads within the limits, sequences that do not overflow);
//   - every record of an accepted request round-trips through the stored record encoding and
//     its offset key.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "google/protobuf/stubs/logging.h"
#include "google/protobuf/util/message_differencer.h"
#include "server/config.h"
#include "server/ingest_service.h"
#include "storage/codec.h"
#include "storage/keys.h"
#include "tests/fuzz/fuzz_check.h"
#include "wharf/v1/ingest.pb.h"
#include "wharf/v1/record.pb.h"

namespace {

bool HasDataset(std::string_view dataset) { return dataset == "orders" || dataset == "events"; }

// Validates under `limits`; returns whether the request was accepted.
bool CheckValidation(const wharf::v1::ProduceRequest& request,
                     const wharf::server::LimitsConfig& limits) {
  const absl::Status st = wharf::server::ValidateProduceRequest(request, limits, HasDataset);
  WHARF_FUZZ_CHECK(st.ok() || st.code() == absl::StatusCode::kInvalidArgument ||
                   st.code() == absl::StatusCode::kNotFound);
  WHARF_FUZZ_CHECK(st.ok() || !st.message().empty());
  if (!st.ok()) return false;
  WHARF_FUZZ_CHECK(HasDataset(request.dataset()));
  WHARF_FUZZ_CHECK(request.records_size() > 0);
  WHARF_FUZZ_CHECK(static_cast<uint64_t>(request.records_size()) <= limits.max_records_per_request);
  WHARF_FUZZ_CHECK(request.ByteSizeLong() <= limits.max_message_bytes);
  WHARF_FUZZ_CHECK(request.first_sequence() + static_cast<uint64_t>(request.records_size()) >=
                   request.first_sequence());
  for (const auto& r : request.records()) {
    WHARF_FUZZ_CHECK(!r.payload().empty());
    WHARF_FUZZ_CHECK(r.payload().size() + r.key().size() <= limits.max_record_bytes);
    if (r.has_event_time()) {
      WHARF_FUZZ_CHECK(r.event_time().nanos() >= 0 && r.event_time().nanos() <= 999999999);
    }
  }
  return true;
}

}  // namespace

// Invalid UTF-8 in a string field is an expected parse failure here, not news: without this,
// protobuf logs an ERROR line for each such input.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  wharf::v1::ProduceRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;

  const wharf::server::LimitsConfig defaults;
  wharf::server::LimitsConfig small;
  small.max_message_bytes = 2048;
  small.max_records_per_request = 8;
  small.max_record_bytes = 256;
  CheckValidation(request, small);
  if (!CheckValidation(request, defaults)) return 0;

  // Store each record as the staging store does: StoredRecord under its offset key.
  const uint32_t partition = static_cast<uint32_t>(request.request_id() % 1024);
  for (int i = 0; i < request.records_size(); ++i) {
    const uint64_t offset = request.first_sequence() + static_cast<uint64_t>(i);
    wharf::v1::StoredRecord stored;
    *stored.mutable_record() = request.records(i);
    stored.set_producer_id(request.producer_id());
    stored.set_sequence(offset);
    stored.mutable_ingest_time()->set_seconds(1700000000);
    const std::string value = wharf::storage::EncodeChecked(stored);
    wharf::v1::StoredRecord back;
    WHARF_FUZZ_CHECK(wharf::storage::DecodeChecked(value, &back, "fuzz record").ok());
    WHARF_FUZZ_CHECK(google::protobuf::util::MessageDifferencer::Equals(stored, back));
    WHARF_FUZZ_CHECK(back.record().payload() == request.records(i).payload());

    const std::string key = wharf::storage::OffsetKey(request.dataset(), partition, offset);
    const auto decoded = wharf::storage::DecodeOffsetKey(key);
    WHARF_FUZZ_CHECK(decoded.has_value());
    WHARF_FUZZ_CHECK(decoded->dataset == request.dataset());
    WHARF_FUZZ_CHECK(decoded->partition == partition);
    WHARF_FUZZ_CHECK(decoded->offset == offset);
  }
  return 0;
}
