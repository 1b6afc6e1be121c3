#include "pipeline/contract/contract.h"

#include <google/protobuf/text_format.h>
#include <google/protobuf/util/time_util.h>
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "pipeline/contract/hmac.h"
#include "pipeline/contract/json_number.h"
#include "pipeline/record_processor.h"
#include "rapidjson/document.h"
#include "rapidjson/pointer.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"
#include "wharf/v1/contract.pb.h"
#include "wharf/v1/record.pb.h"

namespace wharf::pipeline::contract {
namespace {

using google::protobuf::util::TimeUtil;
using wharf::v1::ContractVersion;
using wharf::v1::QuarantineEntry;
using wharf::v1::StoredRecord;

constexpr char kKey[] = "contract-test-hash-key";

// An orders dataset: 15 top-level fields (a nested customer object, an items array of objects,
// formats), two rules, card numbers anywhere quarantined, e-mail addresses in the free-text note
// masked, and five transforms.
constexpr char kOrderSchema[] = R"({
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["order_id", "customer", "amount", "currency", "created_at", "items", "status"],
  "additionalProperties": false,
  "properties": {
    "order_id": {"type": "string", "pattern": "^ord-[0-9]+$"},
    "customer": {
      "type": "object",
      "required": ["id", "email"],
      "properties": {
        "id": {"type": "integer", "minimum": 1},
        "email": {"type": "string", "format": "email"},
        "phone": {"type": "string"},
        "country": {"type": "string", "minLength": 2, "maxLength": 2}
      }
    },
    "amount": {"type": "number", "minimum": 0},
    "currency": {"enum": ["EUR", "USD", "GBP"]},
    "created_at": {"type": "string", "format": "date-time"},
    "items": {
      "type": "array",
      "minItems": 1,
      "items": {
        "type": "object",
        "required": ["sku", "qty"],
        "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}
      }
    },
    "status": {"enum": ["new", "paid", "shipped", "cancelled"]},
    "discount": {"type": "number", "minimum": 0},
    "note": {"type": "string", "maxLength": 500},
    "client_ip": {"type": "string", "format": "ipv4"},
    "card_number": {"type": "string"},
    "qty_total": {"type": ["integer", "string"]},
    "test": {"type": "boolean"},
    "tags": {"type": "array", "items": {"type": "string"}},
    "coupon": {"type": ["string", "null"]}
  }
})";

constexpr char kOrderRest[] = R"pb(
  compatibility: BACKWARD
  rules { name: "discount_within_amount" expr: "coalesce(discount, 0) <= amount" }
  rules { name: "cancelled_orders_are_free" expr: "status != \"cancelled\" || amount == 0" }
  pii { detector: PII_EMAIL fields: "/note" action: PII_MASK }
  pii { detector: PII_PAYMENT_CARD action: PII_QUARANTINE }
  transforms { op: "filter" expr: "test == true" }
  transforms { op: "cast" path: "/qty_total" type: "int" }
  transforms { op: "hash" path: "/customer/email" }
  transforms { op: "timestamp" path: "/created_at" output_format: "epoch_millis" }
  transforms {
    op: "add_metadata"
    fields { key: "ingest_time" value: "/_meta/ingest_time" }
    fields { key: "offset" value: "/_meta/offset" }
    fields { key: "dataset" value: "/_meta/dataset" }
    fields { key: "producer_id" value: "/_meta/producer" }
    fields { key: "schema_version" value: "/_meta/schema_version" }
    fields { key: "transform_version" value: "/_meta/transform_version" }
    fields { key: "event_time" value: "/_meta/event_time" }
  }
)pb";

constexpr char kGoodOrder[] = R"({
  "order_id": "ord-1001",
  "customer": {"id": 42, "email": "jane.doe@example.com", "phone": "+49 30 1234567",
               "country": "DE"},
  "amount": 129.9,
  "currency": "EUR",
  "created_at": "2024-05-01T12:00:00Z",
  "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}],
  "status": "paid",
  "discount": 10,
  "note": "leave at the door, questions to jane@example.com please",
  "client_ip": "192.0.2.10",
  "qty_total": "3",
  "tags": ["gift"],
  "coupon": null
})";

ContractVersion Version(const std::string& schema, const std::string& rest, uint32_t sv,
                        uint32_t tv) {
  ContractVersion v;
  v.set_dataset("orders");
  v.set_schema_version(sv);
  v.set_transform_version(tv);
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(rest, v.mutable_spec())) << rest;
  v.mutable_spec()->set_json_schema(schema);
  return v;
}

std::shared_ptr<const Contract> MustCompile(const ContractVersion& v, std::string key = kKey) {
  absl::StatusOr<std::shared_ptr<const Contract>> c = Contract::Compile(v, std::move(key));
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : nullptr;
}

std::shared_ptr<const Contract> OrdersContract() {
  return MustCompile(Version(kOrderSchema, kOrderRest, 3, 2));
}

constexpr int64_t kIngestMillis = 1714566600123;  // 2024-05-01T12:30:00.123Z

StoredRecord Record(const std::string& payload, bool with_event_time = false) {
  StoredRecord r;
  r.mutable_record()->set_payload(payload);
  r.set_producer_id("shop-frontend");
  *r.mutable_ingest_time() = TimeUtil::MillisecondsToTimestamp(kIngestMillis);
  if (with_event_time) {
    *r.mutable_record()->mutable_event_time() = TimeUtil::MillisecondsToTimestamp(1714564800500);
  }
  return r;
}

// `json` with the member at `pointer` replaced by `value_json` (or removed when empty).
std::string With(const std::string& json, const char* pointer, const std::string& value_json) {
  rapidjson::Document doc;
  doc.Parse(json.c_str());
  EXPECT_FALSE(doc.HasParseError());
  if (value_json.empty()) {
    rapidjson::Pointer(pointer).Erase(doc);
  } else {
    rapidjson::Document value(&doc.GetAllocator());
    value.Parse(value_json.c_str());
    EXPECT_FALSE(value.HasParseError()) << value_json;
    rapidjson::Pointer(pointer).Set(doc, value);
  }
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  doc.Accept(writer);
  return buffer.GetString();
}

struct Outcome {
  ProcessResult result;
  std::string payload;
  QuarantineEntry quarantine;
};

Outcome Exec(const Contract& contract, const StoredRecord& record, uint64_t offset = 17) {
  Outcome o;
  o.result = contract.ProcessRecord({"orders", 2, offset}, record, &o.payload, &o.quarantine);
  return o;
}

Outcome Exec(const Contract& contract, const std::string& payload) {
  return Exec(contract, Record(payload));
}

void ExpectQuarantine(const Outcome& o, wharf::v1::QuarantineReason reason,
                      const std::string& field_path, const std::string& rule) {
  EXPECT_EQ(o.result, ProcessResult::kQuarantine);
  EXPECT_EQ(wharf::v1::QuarantineReason_Name(o.quarantine.reason()),
            wharf::v1::QuarantineReason_Name(reason))
      << o.quarantine.message();
  EXPECT_EQ(o.quarantine.field_path(), field_path) << o.quarantine.message();
  EXPECT_EQ(o.quarantine.rule(), rule) << o.quarantine.message();
  EXPECT_EQ(o.quarantine.schema_version(), 3u);
  EXPECT_EQ(o.quarantine.transform_version(), 2u);
  EXPECT_TRUE(o.payload.empty());
}

// Compares two JSON texts as values (RapidJSON's == looks object members up by name, so member
// order does not matter).
void ExpectJsonEq(const std::string& actual, const std::string& expected) {
  rapidjson::Document a;
  a.Parse(actual.c_str(), actual.size());
  ASSERT_FALSE(a.HasParseError()) << actual;
  rapidjson::Document e;
  e.Parse(expected.c_str(), expected.size());
  ASSERT_FALSE(e.HasParseError()) << expected;
  EXPECT_TRUE(a == e) << "actual:   " << actual << "\nexpected: " << expected;
}

// --- The realistic contract -------------------------------------------------------------------

TEST(ContractTest, GoodOrderIsValidatedMaskedAndTransformed) {
  auto contract = OrdersContract();
  ASSERT_NE(contract, nullptr);
  EXPECT_EQ(contract->schema_version(), 3u);
  EXPECT_EQ(contract->transform_version(), 2u);
  Outcome o = Exec(*contract, Record(kGoodOrder, /*with_event_time=*/true));
  ASSERT_EQ(o.result, ProcessResult::kDeliver) << o.quarantine.message();
  const std::string email_hash = HmacSha256Hex(kKey, "jane.doe@example.com");
  ExpectJsonEq(o.payload, R"({
    "order_id": "ord-1001",
    "customer": {"id": 42, "email": ")" +
                              email_hash + R"(", "phone": "+49 30 1234567",
                 "country": "DE"},
    "amount": 129.9,
    "currency": "EUR",
    "created_at": 1714564800000,
    "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}],
    "status": "paid",
    "discount": 10,
    "note": "leave at the door, questions to **************** please",
    "client_ip": "192.0.2.10",
    "qty_total": 3,
    "tags": ["gift"],
    "coupon": null,
    "_meta": {"ingest_time": "2024-05-01T12:30:00.123Z", "offset": 17, "dataset": "orders",
              "producer": "shop-frontend", "schema_version": 3, "transform_version": 2,
              "event_time": "2024-05-01T12:00:00.500Z"}
  })");
  // Compact output, neither the e-mail address nor the masked note's address survives.
  EXPECT_EQ(o.payload.find('\n'), std::string::npos);
  EXPECT_EQ(o.payload.find("jane"), std::string::npos);
}

TEST(ContractTest, MetadataComesFromContextAndRecord) {
  auto contract = OrdersContract();
  ASSERT_NE(contract, nullptr);
  Outcome o = Exec(*contract, Record(kGoodOrder), /*offset=*/123456789012);
  ASSERT_EQ(o.result, ProcessResult::kDeliver) << o.quarantine.message();
  rapidjson::Document doc;
  doc.Parse(o.payload.c_str());
  ASSERT_TRUE(doc.IsObject());
  EXPECT_EQ(doc["_meta"]["offset"].GetUint64(), 123456789012u);
  EXPECT_TRUE(doc["_meta"]["event_time"].IsNull());  // the record has no event time
}

TEST(ContractTest, ParseErrorsAreReportedAsByTheJsonParseProcessor) {
  auto contract = OrdersContract();
  ASSERT_NE(contract, nullptr);
  std::unique_ptr<RecordProcessor> plain = NewJsonParseProcessor();
  const std::vector<std::string> malformed = {
      "",
      "   ",
      R"({"order_id": )",
      R"({"order_id": "ord-1"} {"order_id": "ord-2"})",
      R"({"order_id": "ord-1"} x)",
      R"(["not", "an", "object"])",
      "  42",
      "\"text\"",
      "{\"note\": \"\xff\xfe\"}",  // invalid UTF-8
      R"({"a": 1,})",
      R"({'a': 1})",
      "{\"a\": \"unterminated}",
  };
  for (const std::string& payload : malformed) {
    SCOPED_TRACE(payload);
    Outcome o = Exec(*contract, payload);
    EXPECT_EQ(o.result, ProcessResult::kQuarantine);
    EXPECT_EQ(o.quarantine.reason(), wharf::v1::PARSE_ERROR);
    EXPECT_TRUE(o.payload.empty());
    EXPECT_EQ(o.quarantine.schema_version(), 3u);
    EXPECT_EQ(o.quarantine.transform_version(), 2u);
    std::string ignored;
    QuarantineEntry expected;
    ASSERT_FALSE(plain->Process(Record(payload), &ignored, &expected));
    EXPECT_EQ(o.quarantine.message(), expected.message());
    EXPECT_EQ(o.quarantine.error_position(), expected.error_position());
  }
  // Spot-check the positions themselves.
  EXPECT_EQ(Exec(*contract, R"({"order_id": "ord-1"} x)").quarantine.error_position(), 22u);
  EXPECT_EQ(Exec(*contract, "  42").quarantine.error_position(), 2u);
}

// The parse runs in place for ASCII payloads and through the validating memory stream for others;
// either way every outcome must be the plain JSON processor's (the same messages and positions),
// and a delivered record must be the one a copying, validating parse reads. Random mutations of
// valid records (cut, bytes inserted or removed, including NUL, control and non-ASCII bytes)
// cover the error paths of both.
TEST(ContractTest, MutatedPayloadsParseAsByTheJsonParseProcessor) {
  // drop of an absent field: a transform, so every delivered record is re-serialised from the DOM.
  auto contract =
      MustCompile(Version("", R"pb(transforms { op: "drop" paths: "/absent" })pb", 1, 1));
  ASSERT_NE(contract, nullptr);
  std::unique_ptr<RecordProcessor> plain = NewJsonParseProcessor();
  const std::vector<std::string> seeds = {
      R"({"id":12,"ts":"2024-05-01T12:00:00.000Z","user":"user_0042","amount":129.9,)"
      R"("tags":["a","b"],"nested":{"x":-3,"y":[true,false,null]},"e":"q\"\\\/\n\u00e9"})",
      "{ \"a\" : [ 1 , 2.5e3 , -0.0 , {} , [] ] ,\n\"b\":\"\\ud83d\\ude00 x\" }",
      "{\"k\":\"caf\xc3\xa9\",\"n\":18446744073709551615,\"m\":-9223372036854775808}",
  };
  const char inserts[] = {'\0', '\x01', '\n', ' ', '"',    '\\',   '{',    '}',
                          '[',  ']',    ',',  ':', '0',    '9',    '-',    '.',
                          'e',  'u',    't',  'x', '\x7f', '\x80', '\xc3', '\xff'};
  std::mt19937_64 rng(99);
  int delivered = 0;
  for (int i = 0; i < 6000; ++i) {
    std::string payload = seeds[rng() % seeds.size()];
    for (int k = 1 + static_cast<int>(rng() % 3); k > 0; --k) {
      const size_t at = rng() % (payload.size() + 1);
      switch (rng() % 3) {
        case 0:
          payload.resize(at);
          break;
        case 1:
          payload.insert(at, 1, inserts[rng() % sizeof(inserts)]);
          break;
        default:
          if (at < payload.size()) payload.erase(at, 1);
          break;
      }
    }
    SCOPED_TRACE(testing::PrintToString(payload));
    Outcome o = Exec(*contract, payload);
    std::string plain_payload;
    QuarantineEntry expected;
    const bool plain_ok = plain->Process(Record(payload), &plain_payload, &expected);
    if (!plain_ok && expected.message().find("Number too big") != std::string::npos) continue;
    ASSERT_EQ(o.result == ProcessResult::kDeliver, plain_ok) << o.quarantine.message();
    if (!plain_ok) {
      EXPECT_EQ(o.quarantine.reason(), wharf::v1::PARSE_ERROR);
      EXPECT_EQ(o.quarantine.message(), expected.message());
      EXPECT_EQ(o.quarantine.error_position(), expected.error_position());
      continue;
    }
    ++delivered;
    rapidjson::Document reference;
    ASSERT_FALSE(ParseJsonExact(payload, &reference).IsError());
    rapidjson::StringBuffer buffer;
    rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
    ASSERT_TRUE(reference.Accept(writer));
    EXPECT_EQ(o.payload, std::string(buffer.GetString(), buffer.GetSize()));
  }
  EXPECT_GT(delivered, 100);  // the mutations leave enough records valid to compare outputs
}

TEST(ContractTest, SchemaViolations) {
  auto contract = OrdersContract();
  ASSERT_NE(contract, nullptr);
  struct Case {
    const char* pointer;
    std::string value;  // empty: remove the member
    const char* field_path;
    const char* keyword;
  };
  const std::vector<Case> cases = {
      {"/amount", "-5", "/amount", "minimum"},
      {"/items/1/qty", "0", "/items/1/qty", "minimum"},
      {"/customer/email", "\"not-an-email\"", "/customer/email", "format"},
      {"/created_at", "\"yesterday\"", "/created_at", "format"},
      {"/order_id", "\"1001\"", "/order_id", "pattern"},
      {"/currency", "\"CHF\"", "/currency", "enum"},
      {"/customer/id", "\"42\"", "/customer/id", "type"},
      {"/items", "[]", "/items", "minItems"},
      {"/customer/country", "\"DEU\"", "/customer/country", "maxLength"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.pointer);
    Outcome o = Exec(*contract, With(kGoodOrder, c.pointer, c.value));
    ExpectQuarantine(o, wharf::v1::SCHEMA_VIOLATION, c.field_path, c.keyword);
    EXPECT_NE(o.quarantine.message().find(c.field_path), std::string::npos)
        << o.quarantine.message();
  }
  // Members the closed model does not allow are reported at the object holding them.
  Outcome extra = Exec(*contract, With(kGoodOrder, "/unexpected", "1"));
  ExpectQuarantine(extra, wharf::v1::SCHEMA_VIOLATION, "", "additionalProperties");
  EXPECT_NE(extra.quarantine.message().find("\"unexpected\""), std::string::npos)
      << extra.quarantine.message();
  Outcome missing = Exec(*contract, With(kGoodOrder, "/status", ""));
  ExpectQuarantine(missing, wharf::v1::SCHEMA_VIOLATION, "", "required");
  EXPECT_NE(missing.quarantine.message().find("\"status\""), std::string::npos)
      << missing.quarantine.message();
}

TEST(ContractTest, RuleViolations) {
  auto contract = OrdersContract();
  ASSERT_NE(contract, nullptr);
  Outcome o = Exec(*contract, With(kGoodOrder, "/discount", "200"));
  ExpectQuarantine(o, wharf::v1::RULE_VIOLATION, "", "discount_within_amount");
  EXPECT_EQ(o.quarantine.message(),
            "rule \"discount_within_amount\" (coalesce(discount, 0) <= amount) is false");

  // The first rule passes (no discount), the second fails.
  Outcome second =
      Exec(*contract, With(With(kGoodOrder, "/status", "\"cancelled\""), "/discount", ""));
  ExpectQuarantine(second, wharf::v1::RULE_VIOLATION, "", "cancelled_orders_are_free");
  EXPECT_EQ(second.quarantine.message(),
            "rule \"cancelled_orders_are_free\" (status != \"cancelled\" || amount == 0) is "
            "false");

  // A free cancelled order passes both.
  Outcome ok = Exec(
      *contract,
      With(With(With(kGoodOrder, "/status", "\"cancelled\""), "/amount", "0"), "/discount", ""));
  EXPECT_EQ(ok.result, ProcessResult::kDeliver) << ok.quarantine.message();
}

TEST(ContractTest, RuleNullRuntimeErrorAndNonBool) {
  auto contract = MustCompile(Version("", R"pb(
                                        rules { name: "positive" expr: "amount > 0" }
                                        rules { name: "comparable" expr: "amount < label" }
                                        rules { name: "numeric" expr: "amount + 1" }
                                      )pb",
                                      1, 0));
  ASSERT_NE(contract, nullptr);
  Outcome null_result = Exec(*contract, R"({"label": "x"})");
  EXPECT_EQ(null_result.result, ProcessResult::kQuarantine);
  EXPECT_EQ(null_result.quarantine.reason(), wharf::v1::RULE_VIOLATION);
  EXPECT_EQ(null_result.quarantine.rule(), "positive");
  EXPECT_EQ(null_result.quarantine.message(), "rule \"positive\" (amount > 0) evaluated to null");

  Outcome runtime = Exec(*contract, R"({"amount": 5, "label": "x"})");
  EXPECT_EQ(runtime.quarantine.reason(), wharf::v1::RULE_VIOLATION);
  EXPECT_EQ(runtime.quarantine.rule(), "comparable");
  EXPECT_EQ(runtime.quarantine.message().rfind("rule \"comparable\" (amount < label): ", 0), 0u)
      << runtime.quarantine.message();
  EXPECT_GT(runtime.quarantine.message().size(),
            std::string("rule \"comparable\" (amount < label): ").size());

  Outcome numeric = Exec(*contract, R"({"amount": 5, "label": 9})");
  EXPECT_EQ(numeric.quarantine.reason(), wharf::v1::RULE_VIOLATION);
  EXPECT_EQ(numeric.quarantine.rule(), "numeric");
  EXPECT_EQ(numeric.quarantine.message(),
            "rule \"numeric\" (amount + 1): expression must evaluate to a bool, got number");
  EXPECT_EQ(numeric.quarantine.schema_version(), 1u);
  EXPECT_EQ(numeric.quarantine.transform_version(), 0u);
}

TEST(ContractTest, PiiQuarantineNeverCarriesTheValue) {
  auto contract = OrdersContract();
  ASSERT_NE(contract, nullptr);
  for (const char* card : {"4111 1111 1111 1111", "4111111111111111", "5500-0000-0000-0004"}) {
    SCOPED_TRACE(card);
    Outcome o = Exec(*contract, With(kGoodOrder, "/card_number", "\"" + std::string(card) + "\""));
    ExpectQuarantine(o, wharf::v1::PII_DETECTED, "/card_number", "payment_card");
    EXPECT_EQ(o.quarantine.message(),
              "PII detected: payment_card at /card_number (action quarantine)");
    EXPECT_EQ(o.quarantine.message().find("4111"), std::string::npos);
    EXPECT_EQ(o.quarantine.message().find("0004"), std::string::npos);
    EXPECT_EQ(o.quarantine.DebugString().find(card), std::string::npos);
  }
  // Inside the note, after the e-mail mask ran: found at /note, still without the value.
  Outcome in_note = Exec(
      *contract, With(kGoodOrder, "/note", "\"my card is 4111 1111 1111 1111, mail a@b.org\""));
  ExpectQuarantine(in_note, wharf::v1::PII_DETECTED, "/note", "payment_card");
  EXPECT_EQ(in_note.quarantine.message().find("4111"), std::string::npos);
  EXPECT_EQ(in_note.quarantine.message().find("a@b.org"), std::string::npos);
  // A Luhn-invalid number is not a card.
  Outcome not_a_card = Exec(*contract, With(kGoodOrder, "/card_number", "\"4111 1111 1111 1112\""));
  EXPECT_EQ(not_a_card.result, ProcessResult::kDeliver) << not_a_card.quarantine.message();
}

TEST(ContractTest, TransformErrorNamesStepAndPath) {
  auto contract = OrdersContract();
  ASSERT_NE(contract, nullptr);
  Outcome o = Exec(*contract, With(kGoodOrder, "/qty_total", "\"three\""));
  ExpectQuarantine(o, wharf::v1::TRANSFORM_ERROR, "/qty_total", "step 2 (cast)");
  EXPECT_EQ(o.quarantine.message().rfind("step 2 (cast /qty_total): ", 0), 0u)
      << o.quarantine.message();
  EXPECT_NE(o.quarantine.message().find("int"), std::string::npos) << o.quarantine.message();

  // A value the timestamp step cannot read with its input formats.
  auto lenient =
      MustCompile(Version("", R"pb(
                            transforms { op: "timestamp" path: "/at" input_formats: "%Y-%m-%d" }
                          )pb",
                          1, 1));
  ASSERT_NE(lenient, nullptr);
  Outcome ts = Exec(*lenient, R"({"at": "01/05/2024"})");
  EXPECT_EQ(ts.quarantine.reason(), wharf::v1::TRANSFORM_ERROR);
  EXPECT_EQ(ts.quarantine.rule(), "step 1 (timestamp)");
  EXPECT_EQ(ts.quarantine.field_path(), "/at");
  EXPECT_EQ(ts.quarantine.transform_version(), 1u);
}

TEST(ContractTest, FilterDropsTheRecord) {
  auto contract = OrdersContract();
  ASSERT_NE(contract, nullptr);
  // Even a record a later step would fail on is filtered first (the filter is step 1).
  const std::string test_order = With(With(kGoodOrder, "/test", "true"), "/qty_total", "\"x\"");
  Outcome o = Exec(*contract, test_order);
  EXPECT_EQ(o.result, ProcessResult::kFilter);
  EXPECT_TRUE(o.payload.empty());
  EXPECT_EQ(o.quarantine.reason(), wharf::v1::QUARANTINE_REASON_UNSPECIFIED);
  // test: false is kept.
  EXPECT_EQ(Exec(*contract, With(kGoodOrder, "/test", "false")).result, ProcessResult::kDeliver);

  // The context-free Process() reports a filtered record as not delivered.
  std::string payload;
  QuarantineEntry q;
  EXPECT_FALSE(contract->Process(Record(test_order), &payload, &q));
  EXPECT_TRUE(payload.empty());
  EXPECT_EQ(q.reason(), wharf::v1::QUARANTINE_REASON_UNSPECIFIED);
  EXPECT_EQ(q.message(), "record dropped by a filter transform");
  EXPECT_TRUE(contract->Process(Record(kGoodOrder), &payload, &q));
  EXPECT_FALSE(payload.empty());
}

TEST(ContractTest, ProcessReportsQuarantine) {
  auto contract = OrdersContract();
  ASSERT_NE(contract, nullptr);
  std::string payload;
  QuarantineEntry q;
  EXPECT_FALSE(contract->Process(Record(With(kGoodOrder, "/amount", "-1")), &payload, &q));
  EXPECT_EQ(q.reason(), wharf::v1::SCHEMA_VIOLATION);
  EXPECT_EQ(q.field_path(), "/amount");
}

// --- Pass-through and byte identity ----------------------------------------------------------

TEST(ContractTest, EmptyContractDeliversBytesUnchanged) {
  auto contract = MustCompile(Version("", "", 1, 0));
  ASSERT_NE(contract, nullptr);
  const std::string payload = "  {\"b\" : 1.50,\n \"a\":[1 , 2e0], \"c\":\"\\u00e9\"}  \n";
  Outcome o = Exec(*contract, payload);
  ASSERT_EQ(o.result, ProcessResult::kDeliver);
  EXPECT_EQ(o.payload, payload);
  // Still the JSON-object check.
  EXPECT_EQ(Exec(*contract, "[1]").quarantine.reason(), wharf::v1::PARSE_ERROR);
}

TEST(ContractTest, ValidationOnlyContractDeliversBytesUnchanged) {
  // Schema and rules only read the record; a PII spec that finds nothing leaves it alone too.
  auto contract = MustCompile(Version(R"({"type": "object", "required": ["a"]})", R"pb(
                                        rules { name: "a_positive" expr: "a > 0" }
                                        pii { detector: PII_EMAIL action: PII_MASK }
                                      )pb",
                                      2, 0));
  ASSERT_NE(contract, nullptr);
  const std::string clean = "{ \"a\" : 1.50 , \"b\":\"x\" }";
  Outcome o = Exec(*contract, clean);
  ASSERT_EQ(o.result, ProcessResult::kDeliver);
  EXPECT_EQ(o.payload, clean);
  // When the PII mask rewrites the record, it is re-serialized.
  Outcome masked = Exec(*contract, "{ \"a\" : 2, \"b\":\"to x@example.org\" }");
  ASSERT_EQ(masked.result, ProcessResult::kDeliver);
  EXPECT_EQ(masked.payload, R"({"a":2,"b":"to *************"})");
}

TEST(ContractTest, NumbersKeepTheirValueWhenReserialized) {
  auto contract = MustCompile(Version("", R"pb(
                                        transforms { op: "rename" path: "/x" to: "/y" }
                                      )pb",
                                      1, 1));
  ASSERT_NE(contract, nullptr);
  Outcome o = Exec(*contract,
                   R"({"x": 1, "d": 0.1, "e": 123456789.123456789, "big": 18446744073709551615,
                     "neg": -9223372036854775808, "s": "\u00e9\n"})");
  ASSERT_EQ(o.result, ProcessResult::kDeliver) << o.quarantine.message();
  EXPECT_EQ(o.payload,
            "{\"d\":0.1,\"e\":123456789.12345679,\"big\":18446744073709551615,"
            "\"neg\":-9223372036854775808,\"s\":\"\xc3\xa9\\n\",\"y\":1}");
}

// Fuzz finding F1: RapidJSON's full-precision parse turned these zeros into arbitrary doubles;
// a schema minimum of 0 then refused them and a transform wrote the wrong number.
TEST(ContractTest, ZerosWrittenWithExponentsStayZero) {
  auto contract = MustCompile(Version(R"({"properties": {"a": {"minimum": 0, "maximum": 0}}})",
                                      R"pb(
                                        transforms { op: "rename" path: "/a" to: "/b" }
                                      )pb",
                                      1, 1));
  ASSERT_NE(contract, nullptr);
  for (const char* zero : {"0e38", "0.0000000000000000000000000", "0E-400"}) {
    Outcome o = Exec(*contract, std::string(R"({"a": )") + zero + "}");
    ASSERT_EQ(o.result, ProcessResult::kDeliver) << zero << ": " << o.quarantine.message();
    EXPECT_EQ(o.payload, R"({"b":0.0})") << zero;
  }
  Outcome too_big = Exec(*contract, R"({"a": 1e400})");
  EXPECT_EQ(too_big.result, ProcessResult::kQuarantine);
  EXPECT_EQ(too_big.quarantine.reason(), wharf::v1::PARSE_ERROR);
  EXPECT_EQ(too_big.quarantine.message(),
            "payload is not valid JSON: Number too big to be stored in double. at byte 6")
      << too_big.quarantine.message();
}

// --- Nesting depth ----------------------------------------------------------------------------

TEST(ContractTest, NestingDeeperThan256LevelsIsRefused) {
  for (const char* rest : {"", R"pb(transforms { op: "drop" paths: "/z" })pb"}) {
    SCOPED_TRACE(rest);
    auto contract = MustCompile(Version("", rest, 1, 0));
    ASSERT_NE(contract, nullptr);
    auto nested = [](int arrays) {
      return "{\"a\":" + std::string(arrays, '[') + std::string(arrays, ']') + "}";
    };
    // The object is level 1: 255 arrays inside it make 256 levels, which is allowed.
    Outcome ok = Exec(*contract, nested(255));
    EXPECT_EQ(ok.result, ProcessResult::kDeliver) << ok.quarantine.message();
    Outcome deep = Exec(*contract, nested(256));
    EXPECT_EQ(deep.result, ProcessResult::kQuarantine);
    EXPECT_EQ(deep.quarantine.reason(), wharf::v1::PARSE_ERROR);
    // The 257th opening bracket: 5 bytes of `{"a":` and 255 brackets before it.
    EXPECT_EQ(deep.quarantine.error_position(), 260u);
    EXPECT_EQ(deep.quarantine.message(), "payload is nested deeper than 256 levels at byte 260");
    // Objects count as well.
    std::string objects;
    for (int i = 0; i < 300; ++i) objects += "{\"k\":";
    objects += "1" + std::string(300, '}');
    Outcome deep_objects = Exec(*contract, objects);
    EXPECT_EQ(deep_objects.quarantine.reason(), wharf::v1::PARSE_ERROR);
    EXPECT_EQ(deep_objects.quarantine.error_position(), 256u * 5);
    // A million brackets neither crash nor take long.
    Outcome huge = Exec(*contract, "{\"a\":" + std::string(1000000, '[') + "}");
    EXPECT_EQ(huge.quarantine.reason(), wharf::v1::PARSE_ERROR);
    EXPECT_EQ(huge.quarantine.error_position(), 260u);
  }
}

// --- Compile errors ---------------------------------------------------------------------------

TEST(ContractTest, CompileListsEveryErrorOfEveryPart) {
  ContractVersion v = Version(R"({"type": "object", "requried": ["a"]})", R"pb(
                                rules { name: "ok" expr: "a > 1" }
                                rules { name: "broken" expr: "a >" }
                                rules { name: "" expr: "true" }
                                rules { name: "ok" expr: "b == 2" }
                                pii { detector: PII_DETECTOR_UNSPECIFIED action: PII_MASK }
                                pii { detector: PII_EMAIL action: PII_HASH }
                                transforms { op: "cast" path: "/a" type: "integer" }
                                transforms { op: "explode" path: "/a" }
                              )pb",
                              1, 1);
  absl::StatusOr<std::shared_ptr<const Contract>> c = Contract::Compile(v, /*hash_key=*/"");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string m(c.status().message());
  EXPECT_EQ(m.rfind("schema: ", 0), 0u) << m;
  EXPECT_NE(m.find("requried"), std::string::npos) << m;
  EXPECT_NE(m.find("; rules[1] (broken): position "), std::string::npos) << m;
  EXPECT_NE(m.find("; rules[2]: name is empty"), std::string::npos) << m;
  EXPECT_NE(m.find("; rules[3] (ok): duplicate rule name \"ok\""), std::string::npos) << m;
  EXPECT_EQ(m.find("rules[0]"), std::string::npos) << m;
  EXPECT_NE(m.find("pii[0]: "), std::string::npos) << m;
  EXPECT_NE(m.find("pii[1]: "), std::string::npos) << m;  // hash without a key
  EXPECT_NE(m.find("; transforms: step 1 (cast): "), std::string::npos) << m;
  EXPECT_NE(m.find("step 2 "), std::string::npos) << m;
  // Every part is reported in order.
  EXPECT_LT(m.find("schema: "), m.find("rules["));
  EXPECT_LT(m.find("rules["), m.find("pii["));
  EXPECT_LT(m.find("pii["), m.find("transforms: "));

  // The same spec with only the hash key missing from the PII part compiles once it has one...
  ContractVersion fixed = Version("", R"pb(
                                    pii { detector: PII_EMAIL action: PII_HASH }
                                    transforms { op: "hash" path: "/a" }
                                  )pb",
                                  1, 1);
  EXPECT_TRUE(Contract::Compile(fixed, kKey).ok());
  // ...and each part alone is refused without it.
  absl::StatusOr<std::shared_ptr<const Contract>> no_key = Contract::Compile(fixed, "");
  ASSERT_FALSE(no_key.ok());
  EXPECT_NE(no_key.status().message().find("pii[0]: "), std::string::npos) << no_key.status();
  EXPECT_NE(no_key.status().message().find("transforms: step 1 (hash)"), std::string::npos)
      << no_key.status();
}

TEST(ContractTest, CompileRefusesMalformedSchemaTextAndUnknownMode) {
  absl::StatusOr<std::shared_ptr<const Contract>> c =
      Contract::Compile(Version("{\"type\": ", "", 1, 0), kKey);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(std::string(c.status().message()).rfind("schema: ", 0), 0u) << c.status();
  ContractVersion v = Version("", "", 1, 0);
  v.mutable_spec()->set_compatibility(static_cast<wharf::v1::CompatibilityMode>(99));
  c = Contract::Compile(v, kKey);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(), "compatibility: unknown mode 99");
  // Whitespace-only schema text is "no schema".
  EXPECT_TRUE(Contract::Compile(Version("  \n", "", 1, 0), kKey).ok());
}

TEST(ContractTest, FormatAssertionsCanBeTurnedOff) {
  ContractVersion v =
      Version(R"({"properties": {"at": {"type": "string", "format": "date"}}})", "", 1, 0);
  auto strict = MustCompile(v);
  ASSERT_NE(strict, nullptr);
  EXPECT_EQ(Exec(*strict, R"({"at": "tomorrow"})").quarantine.rule(), "format");
  v.mutable_spec()->set_format_assertions(false);
  auto lax = MustCompile(v);
  ASSERT_NE(lax, nullptr);
  EXPECT_EQ(Exec(*lax, R"({"at": "tomorrow"})").result, ProcessResult::kDeliver);
}

// --- Concurrency ------------------------------------------------------------------------------

TEST(ContractTest, ConcurrentProcessingGivesTheSameResults) {
  auto contract = OrdersContract();
  ASSERT_NE(contract, nullptr);
  const std::string expected = Exec(*contract, Record(kGoodOrder)).payload;
  const std::string bad = With(kGoodOrder, "/amount", "-1");
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        Outcome good = Exec(*contract, Record(kGoodOrder));
        Outcome quarantined = Exec(*contract, bad);
        if (good.result != ProcessResult::kDeliver || good.payload != expected ||
            quarantined.quarantine.reason() != wharf::v1::SCHEMA_VIOLATION) {
          ++mismatches;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

}  // namespace
}  // namespace wharf::pipeline::contract
