#include "pipeline/contract/contract_registry.h"

#include <google/protobuf/text_format.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "pipeline/contract/schema_compat.h"
#include "storage/staging_store.h"
#include "wharf/v1/contract.pb.h"
#include "wharf/v1/record.pb.h"

namespace wharf::pipeline::contract {
namespace {

using google::protobuf::util::MessageDifferencer;
using wharf::v1::ContractSpec;
using wharf::v1::ContractVersion;

constexpr char kKey[] = "registry-test-hash-key";

// Closed content model (additionalProperties false): adding an optional property is BACKWARD
// compatible, making a new property required is not.
constexpr char kOrdersV1[] = R"({"type": "object",
  "properties": {"id": {"type": "integer"}, "amount": {"type": "number", "minimum": 0}},
  "required": ["id", "amount"], "additionalProperties": false})";
constexpr char kOrdersV2[] = R"({"type": "object",
  "properties": {"id": {"type": "integer"}, "amount": {"type": "number", "minimum": 0},
                 "note": {"type": "string"}},
  "required": ["id", "amount"], "additionalProperties": false})";
// Required "currency" (new) and amount as a string: two incompatibilities.
constexpr char kOrdersV3[] = R"({"type": "object",
  "properties": {"id": {"type": "integer"}, "amount": {"type": "string"},
                 "note": {"type": "string"}, "currency": {"type": "string"}},
  "required": ["id", "amount", "currency"], "additionalProperties": false})";

ContractSpec Spec(const std::string& schema, const std::string& rest) {
  ContractSpec spec;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(rest, &spec)) << rest;
  spec.set_json_schema(schema);
  return spec;
}

constexpr char kOrdersRest[] = R"pb(
  compatibility: BACKWARD
  rules { name: "positive_id" expr: "id > 0" }
  transforms { op: "rename" path: "/amount" to: "/total" }
)pb";

wharf::v1::StoredRecord Record(const std::string& payload) {
  wharf::v1::StoredRecord r;
  r.mutable_record()->set_payload(payload);
  return r;
}

class ContractRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = "/tmp/wharf-contract-registry-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr) << std::strerror(errno);
    dir_ = tmpl;
    ASSERT_NO_FATAL_FAILURE(OpenStore());
    registry_ = std::make_unique<ContractRegistry>(store_.get(), kKey);
    ASSERT_TRUE(registry_->Load().ok());
  }

  void TearDown() override {
    registry_.reset();
    store_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  void OpenStore() {
    storage::StoreOptions options;
    options.path = dir_ + "/store";
    options.min_free_bytes = 0;  // independent of the test machine's free space
    options.block_cache_bytes = 4 << 20;
    options.write_buffer_bytes = 4 << 20;
    auto store = storage::StagingStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }

  // Closes registry and store, reopens the store and loads a fresh registry from it.
  void Reopen(std::string hash_key = kKey) {
    registry_.reset();
    store_.reset();
    ASSERT_NO_FATAL_FAILURE(OpenStore());
    registry_ = std::make_unique<ContractRegistry>(store_.get(), std::move(hash_key));
  }

  std::vector<std::string> StoredKeys() {
    auto listed = store_->ListMeta("contract/");
    EXPECT_TRUE(listed.ok()) << listed.status();
    std::vector<std::string> keys;
    if (listed.ok()) {
      for (const auto& [key, value] : *listed) keys.push_back(key);
    }
    return keys;
  }

  ContractRegistry::ApplyResult MustApply(const std::string& dataset, const ContractSpec& spec,
                                          bool dry_run = false) {
    auto result = registry_->Apply(dataset, spec, "# yaml of " + dataset, dry_run);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : ContractRegistry::ApplyResult{};
  }

  std::string dir_;
  std::unique_ptr<storage::StagingStore> store_;
  std::unique_ptr<ContractRegistry> registry_;
};

bool HasNote(const ContractRegistry::ApplyResult& r, const std::string& text) {
  for (const std::string& n : r.notes) {
    if (n.find(text) != std::string::npos) return true;
  }
  return false;
}

TEST_F(ContractRegistryTest, KeyFormat) {
  EXPECT_EQ(ContractRegistry::Key("orders", 2, 1), "contract/orders/0000000002/0000000001");
  EXPECT_EQ(ContractRegistry::Key("x", 4000000000u, 0), "contract/x/4000000000/0000000000");
}

TEST_F(ContractRegistryTest, ApplyFirstVersionStoresAndCompiles) {
  EXPECT_EQ(registry_->Current("orders"), nullptr);
  ContractRegistry::ApplyResult r = MustApply("orders", Spec(kOrdersV1, kOrdersRest));
  EXPECT_TRUE(r.changed);
  EXPECT_EQ(r.version.dataset(), "orders");
  EXPECT_EQ(r.version.schema_version(), 1u);
  EXPECT_EQ(r.version.transform_version(), 1u);
  EXPECT_EQ(r.version.source_yaml(), "# yaml of orders");
  EXPECT_GT(r.version.applied_time().seconds(), 1700000000);
  EXPECT_TRUE(HasNote(r, "first contract of dataset orders")) << r.notes[0];
  EXPECT_EQ(StoredKeys(), std::vector<std::string>{"contract/orders/0000000001/0000000001"});

  auto stored = store_->GetMeta("contract/orders/0000000001/0000000001");
  ASSERT_TRUE(stored.ok() && stored->has_value());
  ContractVersion parsed;
  ASSERT_TRUE(parsed.ParseFromString(**stored));
  EXPECT_TRUE(MessageDifferencer::Equals(parsed, r.version));

  std::shared_ptr<const Contract> current = registry_->Current("orders");
  ASSERT_NE(current, nullptr);
  EXPECT_EQ(current->schema_version(), 1u);
  EXPECT_EQ(current->transform_version(), 1u);
  std::string payload;
  wharf::v1::QuarantineEntry q;
  EXPECT_EQ(
      current->ProcessRecord({"orders", 0, 0}, Record(R"({"id": 1, "amount": 5})"), &payload, &q),
      ProcessResult::kDeliver);
  EXPECT_EQ(payload, R"({"id":1,"total":5})");
  EXPECT_EQ(
      current->ProcessRecord({"orders", 0, 1}, Record(R"({"id": 0, "amount": 5})"), &payload, &q),
      ProcessResult::kQuarantine);
  EXPECT_EQ(q.rule(), "positive_id");

  // Without transforms the first transform_version is 0.
  ContractRegistry::ApplyResult plain = MustApply("plain", Spec(kOrdersV1, ""));
  EXPECT_EQ(plain.version.schema_version(), 1u);
  EXPECT_EQ(plain.version.transform_version(), 0u);
}

TEST_F(ContractRegistryTest, CompatibleChangeIsAcceptedIncompatibleRefusedWithEveryReason) {
  MustApply("orders", Spec(kOrdersV1, kOrdersRest));
  ContractRegistry::ApplyResult v2 = MustApply("orders", Spec(kOrdersV2, kOrdersRest));
  EXPECT_TRUE(v2.changed);
  EXPECT_EQ(v2.version.schema_version(), 2u);
  EXPECT_EQ(v2.version.transform_version(), 1u);  // transforms unchanged
  EXPECT_TRUE(HasNote(v2, "schema is BACKWARD compatible with 1 previous schema"));
  EXPECT_TRUE(HasNote(v2, "schema_version 1 -> 2 (json_schema changed)"));
  EXPECT_FALSE(HasNote(v2, "transform_version"));
  ASSERT_NE(registry_->Current("orders"), nullptr);
  EXPECT_EQ(registry_->Current("orders")->schema_version(), 2u);

  auto v3 = registry_->Apply("orders", Spec(kOrdersV3, kOrdersRest), "", false);
  ASSERT_FALSE(v3.ok());
  EXPECT_EQ(v3.status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string m(v3.status().message());
  auto expected = CheckCompatibility(wharf::v1::BACKWARD, {kOrdersV2}, kOrdersV3);
  ASSERT_TRUE(expected.ok());
  ASSERT_EQ(expected->size(), 2u);  // both problems, not only the first
  EXPECT_EQ(m,
            "schema of dataset orders is not BACKWARD compatible with its previous "
            "versions:\n" +
                FormatIncompatibilities(*expected));
  EXPECT_NE(m.find("/properties/currency"), std::string::npos) << m;
  EXPECT_NE(m.find("/properties/amount: type \"number\" -> \"string\""), std::string::npos) << m;
  // Nothing stored, v2 still current.
  EXPECT_EQ(StoredKeys().size(), 2u);
  EXPECT_EQ(registry_->History("orders").size(), 2u);
  EXPECT_EQ(registry_->Current("orders")->schema_version(), 2u);

  // The same schema is accepted when the operator opts out of the check.
  ContractSpec none = Spec(kOrdersV3, kOrdersRest);
  none.set_compatibility(wharf::v1::NONE);
  ContractRegistry::ApplyResult forced = MustApply("orders", none);
  EXPECT_EQ(forced.version.schema_version(), 3u);
  EXPECT_TRUE(HasNote(forced, "compatibility NONE"));
  EXPECT_TRUE(HasNote(forced, "json_schema, compatibility changed"));
}

TEST_F(ContractRegistryTest, FullTransitiveWithThreeVersions) {
  const std::string e1 = R"({"type": "object", "properties": {"id": {"type": "integer"}},
    "additionalProperties": false})";
  // Annotations only: equivalent to e1 in both directions.
  const std::string e2 = R"({"type": "object", "description": "events",
    "properties": {"id": {"type": "integer", "title": "event id"}},
    "additionalProperties": false})";
  const std::string e3 = R"({"type": "object", "description": "events v3",
    "properties": {"id": {"type": "integer", "description": "the event id"}},
    "additionalProperties": false})";
  const std::string rest = "compatibility: FULL_TRANSITIVE";
  EXPECT_EQ(MustApply("events", Spec(e1, rest)).version.schema_version(), 1u);
  EXPECT_EQ(MustApply("events", Spec(e2, rest)).version.schema_version(), 2u);
  ContractRegistry::ApplyResult third = MustApply("events", Spec(e3, rest));
  EXPECT_EQ(third.version.schema_version(), 3u);
  EXPECT_TRUE(HasNote(third, "schema is FULL_TRANSITIVE compatible with 2 previous schemas"));

  // Adding an optional property to the closed model is backward but not forward compatible:
  // refused against each of the three earlier schemas, all reasons listed.
  const std::string e4 = R"({"type": "object", "properties": {"id": {"type": "integer"},
    "kind": {"type": "string"}}, "additionalProperties": false})";
  auto refused = registry_->Apply("events", Spec(e4, rest), "", false);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string m(refused.status().message());
  for (const char* which :
       {"[previous version 1 of 3]", "[previous version 2 of 3]", "[previous version 3 of 3]"}) {
    EXPECT_NE(m.find(which), std::string::npos) << m;
  }
  EXPECT_NE(m.find("widened"), std::string::npos) << m;
  EXPECT_NE(m.find("previous versions: 1 = schema_version 1, 2 = schema_version 2, "
                   "3 = schema_version 3"),
            std::string::npos)
      << m;
  EXPECT_EQ(registry_->History("events").size(), 3u);
}

TEST_F(ContractRegistryTest, TransitiveModesCompareWithEveryEarlierSchema) {
  const std::string max100 = R"({"properties": {"n": {"type": "number", "maximum": 100}}})";
  const std::string max1000 = R"({"properties": {"n": {"type": "number", "maximum": 1000}}})";
  const std::string max500 = R"({"properties": {"n": {"type": "number", "maximum": 500}}})";
  MustApply("ledger", Spec(max100, "compatibility: BACKWARD"));
  MustApply("ledger", Spec(max1000, "compatibility: BACKWARD"));  // widening: backward ok
  // Narrowing to 500: forward compatible with 1000 (the latest), not with 100.
  auto transitive = registry_->Apply("ledger", Spec(max500, "compatibility: FORWARD_TRANSITIVE"),
                                     "", /*dry_run=*/true);
  ASSERT_FALSE(transitive.ok());
  EXPECT_NE(transitive.status().message().find("/properties/n: maximum 100 -> 500"),
            std::string::npos)
      << transitive.status();
  EXPECT_NE(transitive.status().message().find("[previous version 1 of 2]"), std::string::npos)
      << transitive.status();
  ContractRegistry::ApplyResult latest_only =
      MustApply("ledger", Spec(max500, "compatibility: FORWARD"));
  EXPECT_EQ(latest_only.version.schema_version(), 3u);

  // After a revert to 100 the current schema is the last one compared in non-transitive modes:
  // going back to 1000 is BACKWARD compatible with 100 even though 500 came later than 100.
  MustApply("ledger", Spec(max100, "compatibility: NONE"));
  auto back_to_1000 =
      registry_->Apply("ledger", Spec(max1000, "compatibility: BACKWARD"), "", false);
  EXPECT_TRUE(back_to_1000.ok()) << back_to_1000.status();
  // Whereas narrowing the current schema is refused.
  const std::string max50 = R"({"properties": {"n": {"type": "number", "maximum": 50}}})";
  auto narrowed = registry_->Apply("ledger", Spec(max50, "compatibility: BACKWARD"), "", false);
  EXPECT_EQ(narrowed.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(ContractRegistryTest, DryRunStoresNothing) {
  ContractRegistry::ApplyResult r = MustApply("orders", Spec(kOrdersV1, kOrdersRest), true);
  EXPECT_TRUE(r.changed);
  EXPECT_EQ(r.version.schema_version(), 1u);
  EXPECT_TRUE(HasNote(r, "dry run: nothing stored"));
  EXPECT_TRUE(StoredKeys().empty());
  EXPECT_TRUE(registry_->History("orders").empty());
  EXPECT_EQ(registry_->Current("orders"), nullptr);

  MustApply("orders", Spec(kOrdersV1, kOrdersRest));
  ContractRegistry::ApplyResult v2 = MustApply("orders", Spec(kOrdersV2, kOrdersRest), true);
  EXPECT_EQ(v2.version.schema_version(), 2u);
  EXPECT_EQ(StoredKeys().size(), 1u);
  EXPECT_EQ(registry_->Current("orders")->schema_version(), 1u);
  // A dry run still reports incompatibilities and compile errors.
  auto refused = registry_->Apply("orders", Spec(kOrdersV3, kOrdersRest), "", true);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  auto broken = registry_->Apply("orders", Spec("{\"type\": 5}", kOrdersRest), "", true);
  EXPECT_EQ(broken.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ContractRegistryTest, IdenticalSpecChangesNothing) {
  ContractRegistry::ApplyResult v1 = MustApply("orders", Spec(kOrdersV1, kOrdersRest));
  auto again = registry_->Apply("orders", Spec(kOrdersV1, kOrdersRest), "# edited comment", false);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->changed);
  EXPECT_TRUE(MessageDifferencer::Equals(again->version, v1.version));
  EXPECT_TRUE(HasNote(*again, "identical"));
  EXPECT_EQ(StoredKeys().size(), 1u);
  EXPECT_EQ(registry_->History("orders").size(), 1u);

  // Spelling out defaults is not a change either.
  ContractSpec spelled = Spec(kOrdersV1, kOrdersRest);
  spelled.set_format_assertions(true);
  ContractRegistry::ApplyResult same = MustApply("orders", spelled);
  EXPECT_FALSE(same.changed);
  ContractRegistry::ApplyResult unspecified = MustApply("unspecified", Spec(kOrdersV1, ""));
  ContractSpec explicit_backward = Spec(kOrdersV1, "compatibility: BACKWARD");
  EXPECT_FALSE(MustApply("unspecified", explicit_backward).changed);
  // But turning format assertions off is.
  spelled.set_format_assertions(false);
  ContractRegistry::ApplyResult changed = MustApply("orders", spelled);
  EXPECT_TRUE(changed.changed);
  EXPECT_EQ(changed.version.schema_version(), 2u);
  EXPECT_TRUE(HasNote(changed, "(format_assertions changed)"));
}

TEST_F(ContractRegistryTest, TransformOnlyChangeBumpsOnlyTransformVersion) {
  MustApply("orders", Spec(kOrdersV1, kOrdersRest));
  ContractSpec changed = Spec(kOrdersV1, kOrdersRest);
  changed.mutable_transforms(0)->set_to("/sum");
  ContractRegistry::ApplyResult r = MustApply("orders", changed);
  EXPECT_TRUE(r.changed);
  EXPECT_EQ(r.version.schema_version(), 1u);
  EXPECT_EQ(r.version.transform_version(), 2u);
  EXPECT_TRUE(HasNote(r, "transform_version 1 -> 2 (transforms changed)"));
  EXPECT_FALSE(HasNote(r, "schema_version"));
  EXPECT_EQ(registry_->Current("orders")->transform_version(), 2u);
  // Removing every transform is a change as well.
  ContractRegistry::ApplyResult removed =
      MustApply("orders", Spec(kOrdersV1, R"pb(
                  compatibility: BACKWARD
                  rules { name: "positive_id" expr: "id > 0" })pb"));
  EXPECT_EQ(removed.version.schema_version(), 1u);
  EXPECT_EQ(removed.version.transform_version(), 3u);
  // A rule change bumps the schema version only.
  ContractRegistry::ApplyResult rule =
      MustApply("orders", Spec(kOrdersV1, R"pb(
                  compatibility: BACKWARD
                  rules { name: "positive_id" expr: "id > 1" })pb"));
  EXPECT_EQ(rule.version.schema_version(), 2u);
  EXPECT_EQ(rule.version.transform_version(), 3u);
  EXPECT_TRUE(HasNote(rule, "(rules changed)"));
  EXPECT_EQ(StoredKeys(),
            (std::vector<std::string>{
                "contract/orders/0000000001/0000000001", "contract/orders/0000000001/0000000002",
                "contract/orders/0000000001/0000000003", "contract/orders/0000000002/0000000003"}));
}

TEST_F(ContractRegistryTest, VersionsSurviveReopeningTheStore) {
  MustApply("orders", Spec(kOrdersV1, kOrdersRest));
  MustApply("orders", Spec(kOrdersV2, kOrdersRest));
  ContractSpec t = Spec(kOrdersV2, kOrdersRest);
  t.mutable_transforms(0)->set_to("/sum");
  MustApply("orders", t);
  MustApply("events", Spec(R"({"type": "object"})", ""));
  const std::vector<ContractVersion> orders = registry_->History("orders");
  ASSERT_EQ(orders.size(), 3u);

  ASSERT_NO_FATAL_FAILURE(Reopen());
  EXPECT_TRUE(registry_->History("orders").empty());  // nothing until Load()
  ASSERT_TRUE(registry_->Load().ok());
  const std::vector<ContractVersion> loaded = registry_->History("orders");
  ASSERT_EQ(loaded.size(), orders.size());
  for (size_t i = 0; i < loaded.size(); ++i) {
    EXPECT_TRUE(MessageDifferencer::Equals(loaded[i], orders[i])) << i;
  }
  std::shared_ptr<const Contract> current = registry_->Current("orders");
  ASSERT_NE(current, nullptr);
  EXPECT_EQ(current->schema_version(), 2u);
  EXPECT_EQ(current->transform_version(), 2u);
  std::string payload;
  wharf::v1::QuarantineEntry q;
  EXPECT_EQ(current->ProcessRecord({"orders", 0, 0}, Record(R"({"id":1,"amount":2,"note":"n"})"),
                                   &payload, &q),
            ProcessResult::kDeliver);
  EXPECT_EQ(payload, R"({"id":1,"note":"n","sum":2})");
  ASSERT_NE(registry_->Current("events"), nullptr);
  EXPECT_EQ(registry_->History("events").size(), 1u);

  // Numbering continues from the loaded versions; an identical spec is still recognised.
  EXPECT_FALSE(MustApply("orders", t).changed);
  ContractRegistry::ApplyResult next = MustApply("orders", Spec(kOrdersV2, kOrdersRest));
  EXPECT_EQ(next.version.schema_version(), 2u);
  EXPECT_EQ(next.version.transform_version(), 3u);
}

TEST_F(ContractRegistryTest, GetByVersionAndHistory) {
  MustApply("orders", Spec(kOrdersV1, kOrdersRest));
  ContractSpec t = Spec(kOrdersV1, kOrdersRest);
  t.mutable_transforms(0)->set_to("/sum");
  MustApply("orders", t);                             // 1.2
  MustApply("orders", Spec(kOrdersV2, kOrdersRest));  // 2.3

  auto current = registry_->Get("orders", std::nullopt);
  ASSERT_TRUE(current.ok()) << current.status();
  EXPECT_EQ(current->schema_version(), 2u);
  EXPECT_EQ(current->transform_version(), 3u);
  // schema_version 1 exists twice: the latest (transform_version 2) is returned.
  auto v1 = registry_->Get("orders", 1);
  ASSERT_TRUE(v1.ok()) << v1.status();
  EXPECT_EQ(v1->schema_version(), 1u);
  EXPECT_EQ(v1->transform_version(), 2u);
  EXPECT_EQ(v1->spec().transforms(0).to(), "/sum");
  EXPECT_EQ(registry_->Get("orders", 7).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry_->Get("missing", std::nullopt).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry_->Get("missing", 1).status().code(), absl::StatusCode::kNotFound);

  const std::vector<ContractVersion> history = registry_->History("orders");
  ASSERT_EQ(history.size(), 3u);
  EXPECT_EQ(history[0].schema_version(), 1u);
  EXPECT_EQ(history[0].transform_version(), 1u);
  EXPECT_EQ(history[1].transform_version(), 2u);
  EXPECT_EQ(history[2].schema_version(), 2u);
  EXPECT_EQ(history[2].spec().json_schema(), kOrdersV2);
  EXPECT_TRUE(registry_->History("missing").empty());
}

TEST_F(ContractRegistryTest, RefusesBadDatasetNamesAndSpecsThatDoNotCompile) {
  for (const char* name : {"", "a/b", "/"}) {
    auto r = registry_->Apply(name, Spec(kOrdersV1, ""), "", false);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << name;
  }
  auto r = registry_->Apply("orders", Spec(R"({"type": "object", "requried": ["a"]})", R"pb(
                              rules { name: "r" expr: "a >" }
                              rules { name: "r" expr: "true" }
                              transforms { op: "cast" path: "/a" type: "integer" }
                            )pb"),
                            "", false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string m(r.status().message());
  EXPECT_EQ(m.rfind("contract of dataset orders does not compile: schema: ", 0), 0u) << m;
  EXPECT_NE(m.find("rules[0] (r): position "), std::string::npos) << m;
  EXPECT_NE(m.find("rules[1] (r): duplicate rule name"), std::string::npos) << m;
  EXPECT_NE(m.find("transforms: step 1 (cast)"), std::string::npos) << m;
  EXPECT_TRUE(StoredKeys().empty());

  // Hash actions need the registry's hash key.
  ContractRegistry keyless(store_.get(), "");
  auto no_key = keyless.Apply("orders", Spec("", R"pb(
                                pii { detector: PII_EMAIL action: PII_HASH })pb"),
                              "", false);
  EXPECT_EQ(no_key.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(no_key.status().message().find("pii[0]: "), std::string::npos) << no_key.status();
}

TEST_F(ContractRegistryTest, LoadRefusesCorruptOrMismatchedValuesAndKeepsState) {
  MustApply("orders", Spec(kOrdersV1, kOrdersRest));
  ASSERT_TRUE(store_->PutMeta("contract/orders/0000000009/0000000000", "\xff\xff garbage").ok());
  absl::Status s = registry_->Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_NE(s.message().find("contract/orders/0000000009/0000000000"), std::string::npos) << s;
  // The registry keeps what it had.
  EXPECT_EQ(registry_->History("orders").size(), 1u);
  ASSERT_NE(registry_->Current("orders"), nullptr);

  // A well-formed version under a key that does not match its content.
  auto v1 = registry_->Get("orders", 1);
  ASSERT_TRUE(v1.ok());
  std::string value;
  ASSERT_TRUE(v1->SerializeToString(&value));
  ASSERT_TRUE(store_->PutMeta("contract/orders/0000000009/0000000000", value).ok());
  s = registry_->Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;

  ASSERT_TRUE(store_->DeleteMeta("contract/orders/0000000009/0000000000").ok());
  EXPECT_TRUE(registry_->Load().ok());
  EXPECT_EQ(registry_->History("orders").size(), 1u);
}

TEST_F(ContractRegistryTest, LoadRefusesACurrentContractThatNoLongerCompiles) {
  MustApply("orders", Spec("", R"pb(pii { detector: PII_EMAIL action: PII_HASH })pb"));
  ASSERT_NO_FATAL_FAILURE(Reopen(/*hash_key=*/""));
  absl::Status s = registry_->Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("dataset orders"), std::string::npos) << s;
  EXPECT_EQ(registry_->Current("orders"), nullptr);
  ASSERT_NO_FATAL_FAILURE(Reopen(kKey));
  EXPECT_TRUE(registry_->Load().ok());
  EXPECT_NE(registry_->Current("orders"), nullptr);
}

}  // namespace
}  // namespace wharf::pipeline::contract
