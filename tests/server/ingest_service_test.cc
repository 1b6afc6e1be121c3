// ValidateProduceRequest: the checks the Ingest service runs on every request before it reaches
// the store, one malformed request per check plus the accepted boundaries. (The service itself
// is exercised end to end by the integration tests; the request fuzzer in tests/fuzz drives this
// function with arbitrary bytes.)

#include "server/ingest_service.h"

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "server/config.h"
#include "wharf/v1/ingest.pb.h"

namespace wharf::server {
namespace {

bool Known(std::string_view dataset) { return dataset == "orders"; }

LimitsConfig SmallLimits() {
  LimitsConfig limits;
  limits.max_message_bytes = 1024;
  limits.max_records_per_request = 3;
  limits.max_record_bytes = 100;
  return limits;
}

wharf::v1::ProduceRequest Valid() {
  wharf::v1::ProduceRequest r;
  r.set_dataset("orders");
  r.set_producer_id("p-1");
  r.add_records()->set_payload("{\"id\":1}");
  return r;
}

// The status is INVALID_ARGUMENT and its message contains `fragment`.
::testing::AssertionResult Invalid(const wharf::v1::ProduceRequest& r,
                                   const std::string& fragment) {
  const absl::Status st = ValidateProduceRequest(r, SmallLimits(), Known);
  if (st.code() != absl::StatusCode::kInvalidArgument) {
    return ::testing::AssertionFailure() << "expected INVALID_ARGUMENT, got " << st;
  }
  if (!absl::StrContains(st.message(), fragment)) {
    return ::testing::AssertionFailure()
           << "\"" << st.message() << "\" lacks \"" << fragment << "\"";
  }
  return ::testing::AssertionSuccess();
}

TEST(ValidateProduceRequestTest, AcceptsWellFormedRequests) {
  EXPECT_TRUE(ValidateProduceRequest(Valid(), SmallLimits(), Known).ok());
  // The boundaries themselves are allowed.
  wharf::v1::ProduceRequest r = Valid();
  r.add_records()->set_payload("x");
  r.add_records()->set_payload(std::string(100, 'x'));
  r.set_first_sequence(UINT64_MAX - 3);
  r.mutable_records(0)->mutable_event_time()->set_nanos(999999999);
  r.set_producer_id(std::string(256, 'p'));
  EXPECT_TRUE(ValidateProduceRequest(r, SmallLimits(), Known).ok());
}

TEST(ValidateProduceRequestTest, RefusesUnknownOrMissingDataset) {
  wharf::v1::ProduceRequest r = Valid();
  r.set_dataset("");
  EXPECT_TRUE(Invalid(r, "dataset is required"));
  r.set_dataset("payments");
  const absl::Status st = ValidateProduceRequest(r, SmallLimits(), Known);
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound) << st;
  EXPECT_TRUE(absl::StrContains(st.message(), "\"payments\"")) << st;
}

TEST(ValidateProduceRequestTest, RefusesEachMalformedField) {
  wharf::v1::ProduceRequest r = Valid();
  r.clear_records();
  EXPECT_TRUE(Invalid(r, "no records"));

  r = Valid();
  for (int i = 0; i < 3; ++i) r.add_records()->set_payload("x");
  EXPECT_TRUE(Invalid(r, "request has 4 records; max_records_per_request is 3"));

  r = Valid();
  r.set_producer_id(std::string(257, 'p'));
  EXPECT_TRUE(Invalid(r, "producer_id is 257 bytes"));

  r = Valid();
  r.add_records()->set_payload("x");
  r.set_first_sequence(UINT64_MAX - 1);
  EXPECT_TRUE(Invalid(r, "overflows 64 bits"));

  r = Valid();
  r.mutable_records(0)->set_payload("");
  EXPECT_TRUE(Invalid(r, "record 0 has an empty payload"));

  r = Valid();
  r.add_records()->set_payload(std::string(90, 'x'));
  r.mutable_records(1)->set_key(std::string(5, 'k'));
  (*r.mutable_records(1)->mutable_headers())["h"] = std::string(5, 'v');
  EXPECT_TRUE(Invalid(r, "record 1 is 101 bytes; max_record_bytes is 100"));

  r = Valid();
  r.mutable_records(0)->mutable_event_time()->set_nanos(-1);
  EXPECT_TRUE(Invalid(r, "record 0: event_time.nanos -1 is out of range"));
  r.mutable_records(0)->mutable_event_time()->set_nanos(1000000000);
  EXPECT_TRUE(Invalid(r, "event_time.nanos 1000000000"));

  r = Valid();
  LimitsConfig limits = SmallLimits();
  limits.max_message_bytes = 10;
  const absl::Status st = ValidateProduceRequest(r, limits, Known);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_TRUE(absl::StrContains(st.message(), "max_message_bytes is 10")) << st;
}

TEST(ValidateProduceRequestTest, GarbageBytesNeverValidate) {
  // What a producer's broken encoder might send: bytes that happen to parse as a request. A
  // parse that succeeds yields no dataset here, so the request is refused, not stored.
  const std::string garbage("\x08\x01\x20\x05\x30\x01", 6);
  wharf::v1::ProduceRequest r;
  ASSERT_TRUE(r.ParseFromString(garbage));
  EXPECT_TRUE(Invalid(r, "dataset is required"));
}

}  // namespace
}  // namespace wharf::server
