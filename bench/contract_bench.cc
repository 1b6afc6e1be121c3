// wharf-contract-bench: records/s per core of the contract step (validation alone and the whole
// step: parse, schema, rules, PII, transforms, serialise) on a realistic contract, and of
// valijson (Debian's libvalijson-dev) validating the same records against the same schema, as
// a reference. Single-threaded: the figures are per core.
//
//   wharf-contract-bench [--records N] [--rounds R]
//
// Prints RESULT lines; docs/BENCHMARKS.md records the figures.
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/util/time_util.h"
#include "pipeline/contract/contract.h"
#include "pipeline/contract/json_schema.h"
#include "rapidjson/document.h"
#include "valijson/adapters/rapidjson_adapter.hpp"
#include "valijson/schema.hpp"
#include "valijson/schema_parser.hpp"
#include "valijson/validator.hpp"

namespace {

using Clock = std::chrono::steady_clock;

// 20 top-level fields, a nested object, an array, formats. draft-07 so valijson reads it too.
constexpr const char* kSchema = R"({
  "$schema": "http://json-schema.org/draft-07/schema#",
  "type": "object",
  "required": ["id", "ts", "user", "amount", "currency", "status", "items", "address"],
  "additionalProperties": false,
  "properties": {
    "id": {"type": "integer", "minimum": 1},
    "ts": {"type": "string", "format": "date-time"},
    "user": {"type": "string", "minLength": 3, "maxLength": 32, "pattern": "^u[0-9]+$"},
    "email": {"type": "string", "format": "email"},
    "amount": {"type": "number", "minimum": 0, "maximum": 1000000},
    "currency": {"enum": ["EUR", "USD", "GBP", "CHF"]},
    "status": {"enum": ["new", "paid", "refund", "cancelled"]},
    "channel": {"type": "string", "maxLength": 16},
    "country": {"type": "string", "minLength": 2, "maxLength": 2},
    "device": {"type": "string"},
    "session": {"type": "string", "format": "uuid"},
    "ip": {"type": "string", "format": "ipv4"},
    "coupon": {"type": ["string", "null"]},
    "discount": {"type": "number", "minimum": 0, "maximum": 100},
    "item_count": {"type": "integer", "minimum": 0},
    "priority": {"type": "integer", "minimum": 0, "maximum": 9},
    "gift": {"type": "boolean"},
    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 8, "uniqueItems": true},
    "items": {"type": "array", "minItems": 1, "items": {
      "type": "object", "required": ["sku", "qty"], "properties": {
        "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
        "qty": {"type": "integer", "minimum": 1},
        "price": {"type": "number", "minimum": 0}}}},
    "address": {"type": "object", "required": ["city", "zip"], "properties": {
      "street": {"type": "string"}, "city": {"type": "string"},
      "zip": {"type": "string", "pattern": "^[0-9]{5}$"}}}
  }
})";

// The schema without its `format` keywords: valijson builds a std::regex for every date-time
// value it checks, which dominates its figure; this variant compares the validators on the
// other keywords.
std::string WithoutFormats(std::string schema) {
  const std::string key = R"(, "format": ")";
  for (size_t at = schema.find(key); at != std::string::npos; at = schema.find(key, at)) {
    const size_t end = schema.find('"', at + key.size());
    schema.erase(at, end + 1 - at);
  }
  return schema;
}

std::vector<std::string> Records(size_t n) {
  std::mt19937_64 rng(42);
  const char* statuses[] = {"new", "paid", "refund", "cancelled"};
  const char* currencies[] = {"EUR", "USD", "GBP", "CHF"};
  std::vector<std::string> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const int items = 1 + static_cast<int>(rng() % 3);
    std::string its;
    for (int k = 0; k < items; ++k) {
      absl::StrAppend(&its, k ? "," : "", R"({"sku":"ABC-)", 1000 + rng() % 9000, R"(","qty":)",
                      1 + rng() % 5, R"(,"price":)", (rng() % 10000) / 100.0, "}");
    }
    out.push_back(absl::StrCat(
        R"({"id":)", i + 1, R"(,"ts":"2026-11-21T10:)", absl::StrFormat("%02d", i % 60),
        R"(:00.123Z","user":"u)", 10000 + rng() % 90000, R"(","email":"user)", i % 977,
        R"(@example.com","amount":)", (1 + rng() % 100000) / 100.0, R"(,"currency":")",
        currencies[i % 4], R"(","status":")", statuses[i % 4],
        R"(","channel":"web","country":"DE","device":"ios","session":"3f2504e0-4f89-11d3-9a0c-0305e82c3301","ip":"10.0.)",
        i % 256, ".", (i / 256) % 256, R"(","coupon":null,"discount":5,"item_count":)", items,
        R"(,"priority":)", i % 10, R"(,"gift":false,"tags":["a","b"],"items":[)", its,
        R"(],"address":{"street":"Main St 1","city":"Berlin","zip":"10115"}})"));
  }
  return out;
}

wharf::v1::ContractVersion RealisticContract() {
  wharf::v1::ContractVersion v;
  v.set_dataset("orders");
  v.set_schema_version(1);
  v.set_transform_version(1);
  auto* spec = v.mutable_spec();
  spec->set_json_schema(kSchema);
  auto* r1 = spec->add_rules();
  r1->set_name("refund_or_positive");
  r1->set_expr(R"(status == "refund" || amount > 0)");
  auto* r2 = spec->add_rules();
  r2->set_name("item_count_matches");
  r2->set_expr("len(items) == item_count");
  auto* pii = spec->add_pii();
  pii->set_detector(wharf::v1::PII_EMAIL);
  pii->add_fields("/email");
  pii->set_action(wharf::v1::PII_MASK);
  auto add = [&](const char* op) {
    auto* t = spec->add_transforms();
    t->set_op(op);
    return t;
  };
  auto* rename = add("rename");
  rename->set_path("/user");
  rename->set_to("/user_id");
  add("drop")->add_paths("/device");
  auto* ts = add("timestamp");
  ts->set_path("/ts");
  ts->set_output_format("epoch_millis");
  auto* lower = add("lowercase");
  lower->set_path("/currency");
  auto* meta = add("add_metadata");
  (*meta->mutable_fields())["offset"] = "/_offset";
  return v;
}

struct Timing {
  double records_per_s;
  size_t passed;
};

template <typename F>
Timing Measure(const std::vector<std::string>& records, int rounds, F&& step) {
  size_t passed = 0;
  const auto t0 = Clock::now();
  for (int r = 0; r < rounds; ++r) {
    for (const std::string& rec : records) passed += step(rec) ? 1 : 0;
  }
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  return {static_cast<double>(records.size()) * rounds / secs, passed / rounds};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"wharf-contract-bench: contract step throughput per core"};
  size_t n = 100000;
  int rounds = 3;
  app.add_option("--records", n, "records generated")->check(CLI::PositiveNumber);
  app.add_option("--rounds", rounds, "passes over the records")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  const std::vector<std::string> records = Records(n);
  uint64_t bytes = 0;
  for (const auto& r : records) bytes += r.size();
  std::printf("records=%zu avg_bytes=%.0f rounds=%d\n", n, static_cast<double>(bytes) / n, rounds);

  auto ours = wharf::pipeline::contract::JsonSchema::Compile(kSchema);
  if (!ours.ok()) {
    std::fprintf(stderr, "schema: %s\n", std::string(ours.status().message()).c_str());
    return 1;
  }
  auto contract = wharf::pipeline::contract::Contract::Compile(RealisticContract(), "bench-key");
  if (!contract.ok()) {
    std::fprintf(stderr, "contract: %s\n", std::string(contract.status().message()).c_str());
    return 1;
  }
  const std::string no_formats = WithoutFormats(kSchema);
  auto ours_no_formats = wharf::pipeline::contract::JsonSchema::Compile(no_formats);
  if (!ours_no_formats.ok()) {
    std::fprintf(stderr, "schema: %s\n", std::string(ours_no_formats.status().message()).c_str());
    return 1;
  }
  rapidjson::Document schema_doc;
  schema_doc.Parse(kSchema);
  valijson::Schema vschema;
  valijson::SchemaParser parser;
  valijson::adapters::RapidJsonAdapter schema_adapter(schema_doc);
  parser.populateSchema(schema_adapter, vschema);
  rapidjson::Document schema_doc_nf;
  schema_doc_nf.Parse(no_formats.c_str());
  valijson::Schema vschema_nf;
  valijson::adapters::RapidJsonAdapter schema_adapter_nf(schema_doc_nf);
  parser.populateSchema(schema_adapter_nf, vschema_nf);
  valijson::Validator validator;

  const Timing parse = Measure(records, rounds, [](const std::string& rec) {
    rapidjson::Document d;
    d.Parse<rapidjson::kParseIterativeFlag>(rec.data(), rec.size());
    return !d.HasParseError();
  });
  const Timing validate = Measure(records, rounds, [&](const std::string& rec) {
    rapidjson::Document d;
    d.Parse<rapidjson::kParseIterativeFlag>(rec.data(), rec.size());
    return !d.HasParseError() && (*ours)->Validate(d, nullptr);
  });
  const Timing reference = Measure(records, rounds, [&](const std::string& rec) {
    rapidjson::Document d;
    d.Parse<rapidjson::kParseIterativeFlag>(rec.data(), rec.size());
    valijson::adapters::RapidJsonAdapter target(d);
    return !d.HasParseError() && validator.validate(vschema, target, nullptr);
  });
  const Timing validate_nf = Measure(records, rounds, [&](const std::string& rec) {
    rapidjson::Document d;
    d.Parse<rapidjson::kParseIterativeFlag>(rec.data(), rec.size());
    return !d.HasParseError() && (*ours_no_formats)->Validate(d, nullptr);
  });
  const Timing reference_nf = Measure(records, rounds, [&](const std::string& rec) {
    rapidjson::Document d;
    d.Parse<rapidjson::kParseIterativeFlag>(rec.data(), rec.size());
    valijson::adapters::RapidJsonAdapter target(d);
    return !d.HasParseError() && validator.validate(vschema_nf, target, nullptr);
  });
  wharf::v1::StoredRecord stored;
  *stored.mutable_ingest_time() = google::protobuf::util::TimeUtil::MillisecondsToTimestamp(1);
  uint64_t offset = 0;
  const Timing whole = Measure(records, rounds, [&](const std::string& rec) {
    stored.mutable_record()->set_payload(rec);
    std::string out;
    wharf::v1::QuarantineEntry q;
    return (*contract)->ProcessRecord({"orders", 0, offset++}, stored, &out, &q) ==
           wharf::pipeline::ProcessResult::kDeliver;
  });

  std::printf("RESULT step=parse_only records_per_s=%.0f passed=%zu\n", parse.records_per_s,
              parse.passed);
  std::printf("RESULT step=validate_wharf records_per_s=%.0f passed=%zu\n", validate.records_per_s,
              validate.passed);
  std::printf("RESULT step=validate_valijson records_per_s=%.0f passed=%zu\n",
              reference.records_per_s, reference.passed);
  std::printf("RESULT step=whole_contract records_per_s=%.0f passed=%zu\n", whole.records_per_s,
              whole.passed);
  std::printf("RESULT step=validate_wharf_no_formats records_per_s=%.0f passed=%zu\n",
              validate_nf.records_per_s, validate_nf.passed);
  std::printf("RESULT step=validate_valijson_no_formats records_per_s=%.0f passed=%zu\n",
              reference_nf.records_per_s, reference_nf.passed);
  std::printf("RESULT ratio validate_wharf/validate_valijson=%.2f\n",
              validate.records_per_s / reference.records_per_s);
  std::printf("RESULT ratio validate_wharf/validate_valijson (no formats)=%.2f\n",
              validate_nf.records_per_s / reference_nf.records_per_s);
  // Every record is valid: a pass count below the record count means a validator disagrees.
  if (validate.passed != n || reference.passed != n || whole.passed != n ||
      validate_nf.passed != n || reference_nf.passed != n) {
    std::fprintf(stderr, "not every record passed: wharf %zu, valijson %zu, contract %zu of %zu\n",
                 validate.passed, reference.passed, whole.passed, n);
    return 1;
  }
  return 0;
}
