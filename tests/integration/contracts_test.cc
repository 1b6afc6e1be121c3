// Data contracts end to end, against a real wharfd with a file destination: a contract from the
// config (schema with required and minimum, a rule, a PII detector hashing with the key file's
// key, a rename and a filter) delivers exactly the good records, transformed, and quarantines the
// bad ones with their reasons; a fixed contract applied at runtime followed by a replay delivers
// the repaired records exactly once. And a contract changed while a producer streams: every
// acknowledged record is delivered or quarantined exactly once, in offset order per partition,
// and the records processed after the switch carry the new transform.

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "rapidjson/document.h"
#include "tests/support/wharfd_process.h"

namespace wharf::testing {
namespace {

using namespace std::chrono_literals;

constexpr char kHashKey[] = "contracts-test-hash-key-0123456789";

// Lower-case hex HMAC-SHA256, computed here with OpenSSL's one-shot HMAC (not wharfd's code).
std::string HmacHex(const std::string& key, const std::string& data) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac, &length);
  static const char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) {
    hex += kHex[mac[i] >> 4];
    hex += kHex[mac[i] & 15];
  }
  return hex;
}

// The orders contract (YAML at `indent` spaces) with the rule `amount < limit`.
std::string OrdersContract(int limit, const std::string& indent) {
  const std::string body = absl::StrCat(R"(contract:
  schema:
    type: object
    required: [id, amount]
    properties:
      id: {type: integer}
      amount: {type: number, minimum: 0}
      email: {type: string}
  rules:
    - name: amount_below_limit
      expr: 'amount < )",
                                        limit, R"('
  pii:
    - detector: email
      fields: [/email]
      action: hash
  transforms:
    - op: rename
      path: /amount
      to: /amount_total
    - op: filter
      expr: 'id >= 9000'
)");
  std::string out;
  size_t start = 0;
  while (start < body.size()) {
    const size_t end = body.find('\n', start);
    out += indent + body.substr(start, end - start + 1);
    start = end + 1;
  }
  return out;
}

// A dataset spec document of the running "orders" dataset of `config` with `contract` (YAML
// lines starting with "contract:" at indent 0).
std::string OrdersSpec(const WharfdConfig& config, const std::string& contract) {
  return absl::StrCat("name: orders\npartitions: ", config.partitions,
                      "\ndestinations:\n  - name: files\n    type: file\n    directory: ",
                      config.out_dir, "\n", contract);
}

bool ParseObject(const std::string& text, rapidjson::Document* doc) {
  doc->Parse<rapidjson::kParseIterativeFlag>(text.c_str());
  return !doc->HasParseError() && doc->IsObject();
}

std::vector<std::string> DeliveredLines(const std::string& dir) {
  std::vector<std::string> lines;
  for (const auto& f : ReadDestination(dir, "orders")) {
    lines.insert(lines.end(), f.lines.begin(), f.lines.end());
  }
  return lines;
}

class ContractsTest : public ::testing::Test {
 protected:
  std::unique_ptr<WharfdProcess> StartWharfd(const std::string& contract_yaml) {
    WharfdConfig config;
    config.data_dir = tmp_.path() + "/data";
    config.out_dir = tmp_.path() + "/out";
    const std::string key_file = tmp_.path() + "/hash.key";
    WriteFile(key_file, std::string(kHashKey) + "\n");
    config.extra_top = absl::StrCat("hash_key_file: ", key_file, "\n");
    config.extra_dataset = contract_yaml;
    auto wharfd = std::make_unique<WharfdProcess>(config);
    absl::Status started = wharfd->Start();
    EXPECT_TRUE(started.ok()) << started << "\n" << wharfd->Log();
    return started.ok() ? std::move(wharfd) : nullptr;
  }

  std::vector<wharf::v1::QuarantineEntry> Quarantine(WharfdProcess& wharfd) {
    auto listed = wharfd.control().ListAllQuarantine("orders", 10000);
    EXPECT_TRUE(listed.ok()) << listed.status();
    if (!listed.ok()) return {};
    return {listed->entries().begin(), listed->entries().end()};
  }

  TempDir tmp_;
};

TEST_F(ContractsTest, GoodRecordsDeliveredTransformedBadOnesQuarantinedThenRepaired) {
  std::unique_ptr<WharfdProcess> wharfd = StartWharfd(OrdersContract(1000, "    "));
  ASSERT_NE(wharfd, nullptr);

  std::string lines;
  for (int i = 1; i <= 20; ++i) {  // good
    absl::StrAppend(&lines, R"({"id":)", i, R"(,"amount":)", i * 10, R"(,"email":"user)", i,
                    R"(@example.com"})", "\n");
  }
  for (int i = 9001; i <= 9003; ++i) {  // filtered
    absl::StrAppend(&lines, R"({"id":)", i, R"(,"amount":1,"email":"t@example.com"})", "\n");
  }
  for (int i = 101; i <= 103; ++i) {  // schema: amount below the minimum
    absl::StrAppend(&lines, R"({"id":)", i, R"(,"amount":-5})", "\n");
  }
  absl::StrAppend(&lines, R"({"amount":1})", "\n");  // schema: id missing
  for (int i = 301; i <= 305; ++i) {                 // rule: amount too large
    absl::StrAppend(&lines, R"({"id":)", i, R"(,"amount":5000,"email":"big)", i,
                    R"(@example.com"})", "\n");
  }
  absl::StrAppend(&lines, "not json\n");
  const std::string file = tmp_.path() + "/orders.jsonl";
  WriteFile(file, lines);
  auto [code, out] = RunCommand(
      {WHARFCTL_PATH, "--server", wharfd->target(), "produce", "--dataset", "orders", file});
  ASSERT_EQ(code, 0) << out;

  const std::string out_dir = wharfd->config().out_dir;
  ASSERT_TRUE(WaitFor([&] { return AllDelivered(wharfd->control()); }, 20s));
  ASSERT_TRUE(WaitFor([&] { return Quarantine(*wharfd).size() == 10; }, 10s))
      << Quarantine(*wharfd).size();

  // Delivered: exactly the good records, renamed and with the e-mail hashed.
  const auto check_delivered = [&](const std::set<int64_t>& expected_ids) {
    std::vector<std::string> delivered = DeliveredLines(out_dir);
    EXPECT_EQ(delivered.size(), expected_ids.size());
    std::set<int64_t> ids;
    for (const std::string& line : delivered) {
      rapidjson::Document doc;
      ASSERT_TRUE(ParseObject(line, &doc)) << line;
      ASSERT_TRUE(doc.HasMember("id") && doc["id"].IsInt64()) << line;
      const int64_t id = doc["id"].GetInt64();
      EXPECT_TRUE(ids.insert(id).second) << "delivered twice: " << line;
      EXPECT_FALSE(doc.HasMember("amount")) << line;
      ASSERT_TRUE(doc.HasMember("amount_total") && doc["amount_total"].IsNumber()) << line;
      const bool big = id > 300;
      EXPECT_EQ(doc["amount_total"].GetDouble(), big ? 5000.0 : id * 10.0) << line;
      ASSERT_TRUE(doc.HasMember("email") && doc["email"].IsString()) << line;
      const std::string email = absl::StrCat(big ? "big" : "user", id, "@example.com");
      EXPECT_EQ(doc["email"].GetString(), HmacHex(kHashKey, email)) << line;
    }
    EXPECT_EQ(ids, expected_ids);
  };
  std::set<int64_t> good;
  for (int i = 1; i <= 20; ++i) good.insert(i);
  check_delivered(good);

  // Quarantined: the bad ones, with their reasons and the contract's versions.
  std::map<wharf::v1::QuarantineReason, int> reasons;
  for (const wharf::v1::QuarantineEntry& e : Quarantine(*wharfd)) {
    ++reasons[e.reason()];
    EXPECT_EQ(e.schema_version(), 1u) << e.ShortDebugString();
    EXPECT_EQ(e.transform_version(), 1u) << e.ShortDebugString();
    const std::string& payload = e.original().record().payload();
    if (absl::StrContains(payload, "-5")) {
      EXPECT_EQ(e.reason(), wharf::v1::SCHEMA_VIOLATION) << e.ShortDebugString();
      EXPECT_EQ(e.field_path(), "/amount") << e.ShortDebugString();
      EXPECT_EQ(e.rule(), "minimum") << e.ShortDebugString();
    } else if (absl::StrContains(payload, "5000")) {
      EXPECT_EQ(e.reason(), wharf::v1::RULE_VIOLATION) << e.ShortDebugString();
      EXPECT_EQ(e.rule(), "amount_below_limit") << e.ShortDebugString();
    } else if (payload == R"({"amount":1})") {
      EXPECT_EQ(e.reason(), wharf::v1::SCHEMA_VIOLATION) << e.ShortDebugString();
      EXPECT_EQ(e.rule(), "required") << e.ShortDebugString();
    } else {
      EXPECT_EQ(e.reason(), wharf::v1::PARSE_ERROR) << e.ShortDebugString();
      EXPECT_EQ(payload, "not json");
    }
  }
  EXPECT_EQ(reasons[wharf::v1::SCHEMA_VIOLATION], 4);
  EXPECT_EQ(reasons[wharf::v1::RULE_VIOLATION], 5);
  EXPECT_EQ(reasons[wharf::v1::PARSE_ERROR], 1);

  // The fixed contract (a higher limit), applied at runtime, then a replay of the rule failures.
  auto applied = wharfd->control().ApplyContract(
      OrdersSpec(wharfd->config(), OrdersContract(10000, "")), false);
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_TRUE(applied->changed());
  EXPECT_EQ(applied->version().schema_version(), 2u);
  EXPECT_EQ(applied->version().transform_version(), 1u);
  wharf::v1::ReplayQuarantineRequest replay;
  replay.set_dataset("orders");
  replay.set_reason(wharf::v1::RULE_VIOLATION);
  auto replayed = wharfd->control().ReplayQuarantine(replay);
  ASSERT_TRUE(replayed.ok()) << replayed.status();
  EXPECT_EQ(replayed->replayed(), 5u);

  ASSERT_TRUE(WaitFor([&] { return DeliveredLines(out_dir).size() >= 25; }, 20s));
  ASSERT_TRUE(WaitFor([&] { return AllDelivered(wharfd->control()); }, 20s));
  std::this_thread::sleep_for(300ms);  // a duplicate would show up by now
  for (int i = 301; i <= 305; ++i) good.insert(i);
  check_delivered(good);
  reasons.clear();
  for (const wharf::v1::QuarantineEntry& e : Quarantine(*wharfd)) ++reasons[e.reason()];
  EXPECT_EQ(reasons[wharf::v1::SCHEMA_VIOLATION], 4);
  EXPECT_EQ(reasons[wharf::v1::RULE_VIOLATION], 0);
  EXPECT_EQ(reasons[wharf::v1::PARSE_ERROR], 1);
}

// Identity of a record in the landing zone.
using Position = std::pair<uint32_t, uint64_t>;

TEST_F(ContractsTest, ContractChangedWhileStreaming) {
  const std::string v1 = R"(contract:
  schema:
    type: object
    required: [id]
    properties:
      id: {type: integer}
  transforms:
    - op: add_metadata
      fields: {partition: /_p, offset: /_o, transform_version: /_tv}
)";
  const std::string v2 = v1 + "    - op: set\n      path: /v2\n      value: true\n";
  std::string indented;
  const std::vector<std::string> v1_lines = absl::StrSplit(v1, '\n', absl::SkipEmpty());
  for (const std::string& line : v1_lines) {
    absl::StrAppend(&indented, "    ", line, "\n");
  }
  std::unique_ptr<WharfdProcess> wharfd = StartWharfd(indented);
  ASSERT_NE(wharfd, nullptr);

  ProducerLoadOptions options;
  options.target = wharfd->target();
  options.producers = 2;
  options.batch = 20;
  options.pause = 10ms;
  options.flush_timeout = 30s;
  // Every 25th record has a string id: SCHEMA_VIOLATION.
  options.payload = [](int p, int64_t i) {
    return i % 25 == 7 ? absl::StrCat(R"({"id":"bad-)", p, "-", i, R"("})") : LoadPayload(p, i);
  };
  ProducerLoad load(options);
  load.Start();
  ASSERT_TRUE(WaitFor([&] { return load.acked_count() >= 300; }, 10s));
  auto applied = wharfd->control().ApplyContract(OrdersSpec(wharfd->config(), v2), false);
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(applied->version().transform_version(), 2u);
  const size_t at_switch = load.acked_count();
  ASSERT_TRUE(WaitFor([&] { return load.acked_count() >= at_switch + 300; }, 10s));
  load.Stop();
  EXPECT_EQ(load.failed(), 0u);
  ASSERT_TRUE(WaitFor([&] { return AllDelivered(wharfd->control()); }, 20s));

  const std::map<Position, std::string> acked = load.acked();
  std::map<Position, int> seen;  // delivered or quarantined, how often
  size_t delivered_v1 = 0, delivered_v2 = 0;
  std::map<uint32_t, uint64_t> last_offset;  // per partition, in delivery order
  std::map<uint32_t, int64_t> last_tv;
  for (const DestinationFile& f : ReadDestination(wharfd->config().out_dir, "orders")) {
    for (const std::string& line : f.lines) {
      rapidjson::Document doc;
      ASSERT_TRUE(ParseObject(line, &doc)) << line;
      ASSERT_TRUE(doc.HasMember("_p") && doc["_p"].IsUint()) << line;
      ASSERT_TRUE(doc.HasMember("_o") && doc["_o"].IsUint64()) << line;
      ASSERT_TRUE(doc.HasMember("_tv") && doc["_tv"].IsInt64()) << line;
      const uint32_t partition = doc["_p"].GetUint();
      const uint64_t offset = doc["_o"].GetUint64();
      const int64_t tv = doc["_tv"].GetInt64();
      ++seen[{partition, offset}];
      auto it = acked.find({partition, offset});
      ASSERT_NE(it, acked.end()) << "delivered, never acked: " << line;
      EXPECT_EQ(doc["id"].GetUint64(), LoadPayloadId(it->second)) << line;
      // Offsets in order per partition; the transform version never goes back.
      if (last_offset.count(partition) > 0) {
        EXPECT_GT(offset, last_offset[partition]) << line;
        EXPECT_GE(tv, last_tv[partition]) << line;
      }
      last_offset[partition] = offset;
      last_tv[partition] = tv;
      if (tv == 1) {
        ++delivered_v1;
        EXPECT_FALSE(doc.HasMember("v2")) << line;
      } else {
        ASSERT_EQ(tv, 2) << line;
        ++delivered_v2;
        EXPECT_TRUE(doc.HasMember("v2") && doc["v2"].IsTrue()) << line;
      }
    }
  }
  size_t quarantined = 0;
  for (const wharf::v1::QuarantineEntry& e : Quarantine(*wharfd)) {
    ++quarantined;
    ++seen[{e.partition(), e.offset()}];
    EXPECT_EQ(e.reason(), wharf::v1::SCHEMA_VIOLATION) << e.ShortDebugString();
    EXPECT_TRUE(absl::StrContains(e.original().record().payload(), "bad-")) << e.ShortDebugString();
    EXPECT_EQ(e.original().record().payload(), acked.at({e.partition(), e.offset()}));
  }
  EXPECT_GT(delivered_v1, 0u);
  EXPECT_GT(delivered_v2, 0u);
  EXPECT_GT(quarantined, 0u);
  size_t missing = 0, duplicated = 0;
  for (const auto& [position, payload] : acked) {
    auto it = seen.find(position);
    if (it == seen.end()) {
      ++missing;
    } else if (it->second > 1) {
      ++duplicated;
    }
  }
  EXPECT_EQ(missing, 0u);
  EXPECT_EQ(duplicated, 0u);
  EXPECT_EQ(seen.size(), acked.size());
}

}  // namespace
}  // namespace wharf::testing
