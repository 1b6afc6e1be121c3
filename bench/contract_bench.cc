// wharf-contract-bench: records/s per core of the contract step (validation alone and the whole
// step: parse, schema, rules, PII, transforms, serialise) on a realistic contract, and of
// valijson (Debian's libvalijson-dev) validating the same records against the same schema, as
// a reference. Single-threaded: the figures are per core.
//
//   wharf-contract-bench [--records N] [--rounds R]
//   wharf-contract-bench --e2e-contract FILE [--records N] [--rounds R] [--mutate-every K]
//                        [--dump FILE]
//
// --e2e-contract runs only the whole contract step, with the end-to-end benchmark's contract
// (FILE holds the `contract:` block bench/run.sh's tg_contract_yaml prints, read with wharfd's
// own config parser) over bench/record_generator.h's 200-byte records, so that the work measured
// (e.g. under valgrind --tool=callgrind --toggle-collect='*RunE2eRounds*') is the benchmark's.
// --dump writes every result (delivered payload or quarantine entry) one per line, to compare
// the step's output before and after a change.
//
// Prints RESULT lines; docs/BENCHMARKS.md records the figures.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/record_generator.h"
#include "google/protobuf/util/time_util.h"
#include "pipeline/contract/contract.h"
#include "pipeline/contract/json_schema.h"
#include "rapidjson/document.h"
#include "server/config.h"
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

// The e2e contract as wharfd reads it: `contract_yaml` (a datasets[] entry's `contract:` key,
// indented as in wharf.yaml) inside a minimal dataset spec, parsed by ParseDatasetSpec.
absl::StatusOr<wharf::v1::ContractVersion> E2eContract(const std::string& contract_yaml) {
  // Dedent: the block is indented as a datasets[] entry's key; the spec is a top-level document.
  size_t indent = std::string::npos;
  std::vector<std::string> lines = absl::StrSplit(contract_yaml, '\n');
  for (const std::string& line : lines) {
    const size_t first = line.find_first_not_of(' ');
    if (first != std::string::npos) indent = std::min(indent, first);
  }
  std::string spec =
      "name: bench\npartitions: 4\ndestinations:\n  - name: files\n    type: file\n"
      "    directory: /tmp/wharf-contract-bench-unused\n";
  for (const std::string& line : lines) {
    absl::StrAppend(&spec, line.size() >= indent ? line.substr(indent) : line, "\n");
  }
  auto dataset = wharf::server::ParseDatasetSpec(spec, "e2e-contract.yaml");
  if (!dataset.ok()) return dataset.status();
  if (!dataset->contract.has_value()) return absl::InvalidArgumentError("no contract: key");
  wharf::v1::ContractVersion v;
  v.set_dataset("bench");
  v.set_schema_version(1);
  v.set_transform_version(1);
  *v.mutable_spec() = *dataset->contract;
  return v;
}

// The measured loop of --e2e-contract (not inlined, so that callgrind can collect only it).
// Returns the records delivered; appends one line per result to *dump when it is not null.
__attribute__((noinline)) size_t RunE2eRounds(const wharf::pipeline::contract::Contract& contract,
                                              std::vector<wharf::v1::StoredRecord>& records,
                                              int rounds, std::string* dump) {
  size_t delivered = 0;
  std::string out;
  for (int r = 0; r < rounds; ++r) {
    uint64_t offset = 0;
    for (const wharf::v1::StoredRecord& rec : records) {
      out.clear();
      wharf::v1::QuarantineEntry q;
      const wharf::pipeline::ProcessResult result =
          contract.ProcessRecord({"bench", 0, offset++}, rec, &out, &q);
      if (result == wharf::pipeline::ProcessResult::kDeliver) ++delivered;
      if (dump != nullptr && r == 0) {
        if (result == wharf::pipeline::ProcessResult::kDeliver) {
          absl::StrAppend(dump, "deliver ", out, "\n");
        } else if (result == wharf::pipeline::ProcessResult::kFilter) {
          absl::StrAppend(dump, "filter\n");
        } else {
          absl::StrAppend(dump, "quarantine ", q.ShortDebugString(), "\n");
        }
      }
    }
  }
  return delivered;
}

// The generator's records; with `mutate_every` > 0 every mutate_every-th record is changed in one
// of six ways (four the contract must quarantine, two that exercise PII hashing and the optional
// formatted fields), so that --dump covers those paths too.
std::vector<wharf::v1::StoredRecord> E2eRecords(size_t n, size_t mutate_every) {
  wharf::bench::RecordGenerator gen(0, 200);
  std::vector<wharf::v1::StoredRecord> out;
  out.reserve(n);
  const int64_t base_us = 1'795'000'000'000'000;  // 2026-11-18, fixed: runs repeat exactly
  for (size_t i = 0; i < n; ++i) {
    const int64_t now_us = base_us + static_cast<int64_t>(i) * 1'237;
    wharf::v1::StoredRecord stored;
    *stored.mutable_record() = gen.Next(i, now_us);
    stored.set_producer_id("bench-0");
    *stored.mutable_ingest_time() =
        google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(now_us + 500);
    std::string* payload = stored.mutable_record()->mutable_payload();
    if (mutate_every > 0 && i % mutate_every == mutate_every - 1) {
      switch ((i / mutate_every) % 6) {
        case 0:  // PARSE_ERROR: cut in half
          payload->resize(payload->size() / 2);
          break;
        case 1:  // SCHEMA_VIOLATION: an unknown field (additionalProperties false)
          payload->insert(1, "\"extra\":1,");
          break;
        case 2:  // RULE_VIOLATION: three tags
          payload->replace(payload->find("\"tags\":["), 8, "\"tags\":[\"beta\",");
          break;
        case 3:  // delivered, PII hashed: an email in /email
          payload->insert(1, "\"email\":\"a.b@example.org\",");
          break;
        case 4:  // delivered: the optional formatted fields (ipv4, uuid, enums)
          payload->insert(1,
                          "\"ip\":\"10.1.2.3\",\"session\":\"3f2504e0-4f89-11d3-9a0c-"
                          "0305e82c3301\",\"currency\":\"EUR\",\"coupon\":null,");
          break;
        case 5:  // SCHEMA_VIOLATION: a ts that is not an RFC 3339 date-time
          payload->replace(payload->find("\"ts\":\"") + 6, 4, "20x6");
          break;
      }
    }
    out.push_back(std::move(stored));
  }
  return out;
}

int RunE2e(const std::string& contract_file, size_t n, int rounds, size_t mutate_every,
           const std::string& dump_file) {
  std::ifstream in(contract_file);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", contract_file.c_str());
    return 1;
  }
  auto version = E2eContract(text.str());
  if (!version.ok()) {
    std::fprintf(stderr, "contract: %s\n", std::string(version.status().message()).c_str());
    return 1;
  }
  // 64 hex characters, as bench/run.sh's hash.key (32 random bytes, hex).
  auto contract = wharf::pipeline::contract::Contract::Compile(
      *version, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff");
  if (!contract.ok()) {
    std::fprintf(stderr, "contract: %s\n", std::string(contract.status().message()).c_str());
    return 1;
  }
  std::vector<wharf::v1::StoredRecord> records = E2eRecords(n, mutate_every);
  uint64_t bytes = 0;
  for (const auto& r : records) bytes += r.record().payload().size();
  std::printf("e2e contract: records=%zu avg_bytes=%.0f rounds=%d\n", n,
              static_cast<double>(bytes) / n, rounds);
  std::string dump;
  const auto t0 = Clock::now();
  const size_t delivered =
      RunE2eRounds(**contract, records, rounds, dump_file.empty() ? nullptr : &dump);
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("RESULT step=e2e_contract records_per_s=%.0f delivered=%zu\n",
              static_cast<double>(n) * rounds / secs, delivered / rounds);
  if (!dump_file.empty()) {
    std::ofstream o(dump_file, std::ios::binary);
    o << dump;
    if (!o) {
      std::fprintf(stderr, "cannot write %s\n", dump_file.c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"wharf-contract-bench: contract step throughput per core"};
  size_t n = 100000;
  int rounds = 3;
  app.add_option("--records", n, "records generated")->check(CLI::PositiveNumber);
  app.add_option("--rounds", rounds, "passes over the records")->check(CLI::PositiveNumber);
  std::string e2e_contract;
  std::string dump;
  app.add_option("--e2e-contract", e2e_contract,
                 "run only the whole step with this contract: block (bench/run.sh tg_contract_yaml)"
                 " over bench/record_generator.h records");
  app.add_option("--dump", dump, "with --e2e-contract: write every result to this file");
  size_t mutate_every = 50;
  app.add_option(
      "--mutate-every", mutate_every,
      "with --e2e-contract: change every Nth record (0: none, the e2e scenario's records)");
  CLI11_PARSE(app, argc, argv);
  if (!e2e_contract.empty()) return RunE2e(e2e_contract, n, rounds, mutate_every, dump);

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
