// Fuzz target: a whole data contract (pipeline/contract/contract.h) on arbitrary payloads - the
// parse, schema, rules, PII and transform steps every record of a dataset with a contract goes
// through - and the PII detectors on their own.
//
// Input: the payload, as a producer sends it.
// Checks:
//   - ProcessRecord never crashes and is deterministic (same result, payload and quarantine
//     entry twice).
//   - A quarantined record has a reason and a message; a delivered one is a JSON object in valid
//     UTF-8.
//   - PII: what the contract masks, hashes or drops is gone: scanning the delivered payload again
//     with those specs finds nothing. Detected ranges lie inside the text, in order, without
//     overlap.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>

#include "google/protobuf/util/message_differencer.h"
#include "pipeline/contract/contract.h"
#include "pipeline/contract/json_number.h"
#include "pipeline/contract/pii.h"
#include "rapidjson/document.h"
#include "tests/fuzz/fuzz_check.h"
#include "wharf/v1/contract.pb.h"
#include "wharf/v1/record.pb.h"

namespace {

using wharf::pipeline::ProcessResult;
using wharf::pipeline::RecordContext;
using wharf::pipeline::contract::Contract;
using wharf::pipeline::contract::PiiScanner;

constexpr char kHashKey[] = "fuzz-hash-key-0123456789abcdef";

constexpr char kSchema[] = R"({
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["id", "amount"],
  "properties": {
    "id": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9-]+$"},
    "amount": {"type": ["number", "string"]},
    "currency": {"enum": ["EUR", "USD", "CHF"]},
    "created": {"type": "string"},
    "customer": {
      "type": "object",
      "properties": {"email": {"type": "string"}, "phone": {"type": ["string", "integer"]}}
    },
    "items": {"type": "array", "maxItems": 50, "items": {"$ref": "#/$defs/item"}},
    "client": {"type": "object"}
  },
  "$defs": {
    "item": {"type": "object", "required": ["sku"],
             "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 0}}}
  }
})";

void AddPii(wharf::v1::ContractSpec* spec, wharf::v1::PiiDetector detector,
            wharf::v1::PiiAction action, std::initializer_list<const char*> fields) {
  wharf::v1::PiiSpec* pii = spec->add_pii();
  pii->set_detector(detector);
  pii->set_action(action);
  for (const char* f : fields) pii->add_fields(f);
}

wharf::v1::TransformSpec* AddStep(wharf::v1::ContractSpec* spec, const char* op, const char* path) {
  wharf::v1::TransformSpec* step = spec->add_transforms();
  step->set_op(op);
  if (path[0] != '\0') step->set_path(path);
  return step;
}

wharf::v1::ContractVersion MakeVersion() {
  wharf::v1::ContractVersion version;
  version.set_dataset("orders");
  version.set_schema_version(3);
  version.set_transform_version(2);
  wharf::v1::ContractSpec* spec = version.mutable_spec();
  spec->set_json_schema(kSchema);
  wharf::v1::RuleSpec* rule = spec->add_rules();
  rule->set_name("amount_known");
  rule->set_expr("amount != null && (currency == null || currency in [\"EUR\", \"USD\", \"CHF\"])");
  rule = spec->add_rules();
  rule->set_name("items_have_qty");
  rule->set_expr("is_null(items) || items[0].qty == null || items[0].qty >= 0");
  AddPii(spec, wharf::v1::PII_US_SSN, wharf::v1::PII_QUARANTINE, {});
  AddPii(spec, wharf::v1::PII_EMAIL, wharf::v1::PII_MASK, {});
  AddPii(spec, wharf::v1::PII_PAYMENT_CARD, wharf::v1::PII_HASH, {});
  AddPii(spec, wharf::v1::PII_PHONE, wharf::v1::PII_MASK, {"/customer/phone", "/notes"});
  AddPii(spec, wharf::v1::PII_IBAN, wharf::v1::PII_MASK, {});
  AddPii(spec, wharf::v1::PII_IP_ADDRESS, wharf::v1::PII_DROP, {"/client"});
  AddStep(spec, "cast", "/amount")->set_type("float");
  wharf::v1::TransformSpec* ts = AddStep(spec, "timestamp", "/created");
  ts->add_input_formats("rfc3339");
  ts->add_input_formats("epoch_millis");
  AddStep(spec, "rename", "/customer/email")->set_to("/contact/email");
  AddStep(spec, "truncate", "/id")->set_length(16);
  AddStep(spec, "default", "/currency")->set_value_json("\"EUR\"");
  (*AddStep(spec, "add_metadata", "")->mutable_fields())["offset"] = "/_meta/offset";
  AddStep(spec, "filter", "")->set_expr("amount == 0");
  return version;
}

// The mask/hash/drop part of the contract's PII specs, to scan delivered payloads again.
wharf::v1::ContractSpec RewritingPiiSpecs(const wharf::v1::ContractSpec& spec) {
  wharf::v1::ContractSpec out;
  for (const auto& pii : spec.pii()) {
    if (pii.action() == wharf::v1::PII_QUARANTINE) continue;
    wharf::v1::PiiSpec* copy = out.add_pii();
    *copy = pii;
    copy->set_action(wharf::v1::PII_QUARANTINE);
  }
  return out;
}

struct Fixture {
  std::shared_ptr<const Contract> contract;
  std::shared_ptr<const PiiScanner> rescan;
};

const Fixture& GetFixture() {
  static const Fixture* const fixture = [] {
    const wharf::v1::ContractVersion version = MakeVersion();
    auto contract = Contract::Compile(version, kHashKey);
    if (!contract.ok()) {
      std::fprintf(stderr, "fixed contract does not compile: %s\n",
                   std::string(contract.status().message()).c_str());
      std::abort();
    }
    auto rescan = PiiScanner::Compile(RewritingPiiSpecs(version.spec()).pii(), kHashKey);
    if (!rescan.ok()) std::abort();
    return new Fixture{*contract, *rescan};
  }();
  return *fixture;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Fixture& fixture = GetFixture();
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  // The detectors on the raw text: ranges inside it, ordered, not overlapping.
  for (int d = wharf::v1::PII_EMAIL; d <= wharf::v1::PII_IP_ADDRESS; ++d) {
    for (bool named : {false, true}) {
      size_t end = 0;
      for (const auto& m :
           PiiScanner::Detect(static_cast<wharf::v1::PiiDetector>(d), input, named)) {
        WHARF_FUZZ_CHECK(m.begin < m.end && m.end <= input.size());
        WHARF_FUZZ_CHECK(m.begin >= end);
        end = m.end;
      }
    }
  }

  wharf::v1::StoredRecord record;
  record.mutable_record()->set_payload(std::string(input));
  record.set_producer_id("producer-1");
  record.mutable_ingest_time()->set_seconds(1714557600);
  RecordContext context;
  context.dataset = "orders";
  context.partition = 1;
  context.offset = 77;

  std::string payload_a;
  std::string payload_b;
  wharf::v1::QuarantineEntry qa;
  wharf::v1::QuarantineEntry qb;
  const ProcessResult ra = fixture.contract->ProcessRecord(context, record, &payload_a, &qa);
  const ProcessResult rb = fixture.contract->ProcessRecord(context, record, &payload_b, &qb);
  WHARF_FUZZ_CHECK(ra == rb);
  if (ra == ProcessResult::kQuarantine) {
    WHARF_FUZZ_CHECK(google::protobuf::util::MessageDifferencer::Equals(qa, qb));
    WHARF_FUZZ_CHECK(qa.reason() != wharf::v1::QUARANTINE_REASON_UNSPECIFIED);
    WHARF_FUZZ_CHECK(!qa.message().empty());
    return 0;
  }
  if (ra == ProcessResult::kFilter) return 0;
  WHARF_FUZZ_CHECK(payload_a == payload_b);

  rapidjson::Document out;
  WHARF_FUZZ_CHECK(!wharf::pipeline::contract::ParseJsonExact(payload_a, &out).IsError());
  WHARF_FUZZ_CHECK(out.IsObject());
  wharf::pipeline::contract::PiiFinding finding;
  const PiiScanner::Result rescan = fixture.rescan->Apply(&out, &finding);
  if (rescan != PiiScanner::Result::kClean) {
    std::fprintf(stderr, "PII left in the delivered payload: %s at %s\n",
                 std::string(PiiScanner::DetectorName(finding.detector)).c_str(),
                 finding.pointer.c_str());
  }
  WHARF_FUZZ_CHECK(rescan == PiiScanner::Result::kClean);
  return 0;
}
