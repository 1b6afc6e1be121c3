// Dataset specs (ParseDatasetSpec), contracts in the config and `spec_file` entries.

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "pipeline/contract/contract.h"
#include "server/config.h"

namespace wharf::server {
namespace {

// A complete dataset spec, as docs/CONTRACTS.md describes it.
constexpr char kSpec[] = R"(# Orders from the web shop.
name: orders
partitions: 8
destinations:
  - name: files
    type: file
    directory: /tmp/out
contract:
  compatibility: BACKWARD_TRANSITIVE
  format_assertions: false
  schema:
    $schema: https://json-schema.org/draft/2020-12/schema
    type: object
    required: [id, amount]
    properties:
      id: {type: string, pattern: "^o-[0-9]+$"}
      amount: {type: number, minimum: 0}
      note: {type: [string, "null"]}
      ok: {const: true}
      zip: {const: "01234"}
  rules:
    - name: refund_has_reason
      expr: 'status != "refund" || reason != null'
  pii:
    - detector: email
      fields: [/customer/email]
      action: hash
    - detector: payment_card
      action: quarantine
  transforms:
    - op: rename
      path: /amount
      to: /amount_eur
    - op: set
      path: /source
      value: web
    - op: default
      path: /count
      value: 0
    - op: default
      path: /meta
      value: {tags: [a, 1, 2.5, null, true], text: "007"}
    - op: cast
      path: /created
      type: timestamp
      input_formats: ["%Y-%m-%d %H:%M:%S"]
    - op: truncate
      path: /note
      length: 10
    - op: flatten
      path: /customer
      separator: _
    - op: add_metadata
      fields: {offset: /meta/offset, partition: /meta/partition}
    - op: drop
      paths: [/debug, /tmp]
    - op: filter
      expr: 'test == true'
)";

::testing::AssertionResult SpecFailsWith(const std::string& yaml, int line, const std::string& path,
                                         const std::string& fragment) {
  absl::StatusOr<DatasetConfig> spec = ParseDatasetSpec(yaml, "orders.yaml");
  if (spec.ok()) return ::testing::AssertionFailure() << "parsed without error";
  if (!absl::IsInvalidArgument(spec.status())) {
    return ::testing::AssertionFailure() << "wrong code: " << spec.status();
  }
  const std::string message(spec.status().message());
  const std::string prefix =
      absl::StrCat("orders.yaml:", line, ": ", path, path.empty() ? "" : ": ");
  if (!absl::StartsWith(message, prefix) || !absl::StrContains(message, fragment)) {
    return ::testing::AssertionFailure() << "message \"" << message << "\" does not start with \""
                                         << prefix << "\" and contain \"" << fragment << "\"";
  }
  return ::testing::AssertionSuccess();
}

// The smallest spec with `contract` (indented by 2 inside `contract:`) appended; the contract's
// first line is line 7.
std::string WithContract(const std::string& contract) {
  return absl::StrCat(R"(name: orders
destinations:
  - name: files
    type: file
    directory: /tmp/out
contract:
)",
                      contract);
}

TEST(DatasetSpec, ParsesEveryPart) {
  absl::StatusOr<DatasetConfig> spec = ParseDatasetSpec(kSpec, "orders.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name, "orders");
  EXPECT_EQ(spec->partitions, 8u);
  ASSERT_EQ(spec->destinations.size(), 1u);
  EXPECT_EQ(spec->destinations[0].file_directory, "/tmp/out");
  EXPECT_EQ(spec->source_yaml, kSpec);
  ASSERT_TRUE(spec->contract.has_value());
  const wharf::v1::ContractSpec& c = *spec->contract;
  EXPECT_EQ(c.compatibility(), wharf::v1::BACKWARD_TRANSITIVE);
  ASSERT_TRUE(c.has_format_assertions());
  EXPECT_FALSE(c.format_assertions());
  // YAML scalars typed as JSON: quoted ones stay strings ("null" in the list, "01234").
  EXPECT_EQ(c.json_schema(),
            R"({"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object",)"
            R"("required":["id","amount"],"properties":{"id":{"type":"string","pattern":)"
            R"("^o-[0-9]+$"},"amount":{"type":"number","minimum":0},"note":{"type":)"
            R"(["string","null"]},"ok":{"const":true},"zip":{"const":"01234"}}})");
  ASSERT_EQ(c.rules_size(), 1);
  EXPECT_EQ(c.rules(0).name(), "refund_has_reason");
  EXPECT_EQ(c.rules(0).expr(), R"(status != "refund" || reason != null)");
  ASSERT_EQ(c.pii_size(), 2);
  EXPECT_EQ(c.pii(0).detector(), wharf::v1::PII_EMAIL);
  EXPECT_EQ(c.pii(0).action(), wharf::v1::PII_HASH);
  ASSERT_EQ(c.pii(0).fields_size(), 1);
  EXPECT_EQ(c.pii(0).fields(0), "/customer/email");
  EXPECT_EQ(c.pii(1).detector(), wharf::v1::PII_PAYMENT_CARD);
  EXPECT_EQ(c.pii(1).action(), wharf::v1::PII_QUARANTINE);
  EXPECT_EQ(c.pii(1).fields_size(), 0);
  ASSERT_EQ(c.transforms_size(), 10);
  EXPECT_EQ(c.transforms(0).op(), "rename");
  EXPECT_EQ(c.transforms(0).path(), "/amount");
  EXPECT_EQ(c.transforms(0).to(), "/amount_eur");
  EXPECT_EQ(c.transforms(1).value_json(), R"("web")");
  EXPECT_EQ(c.transforms(2).value_json(), "0");
  EXPECT_EQ(c.transforms(3).value_json(), R"({"tags":["a",1,2.5,null,true],"text":"007"})");
  EXPECT_EQ(c.transforms(4).type(), "timestamp");
  ASSERT_EQ(c.transforms(4).input_formats_size(), 1);
  EXPECT_EQ(c.transforms(4).input_formats(0), "%Y-%m-%d %H:%M:%S");
  EXPECT_EQ(c.transforms(5).length(), 10u);
  EXPECT_EQ(c.transforms(6).separator(), "_");
  EXPECT_EQ(c.transforms(7).fields().at("offset"), "/meta/offset");
  EXPECT_EQ(c.transforms(7).fields().at("partition"), "/meta/partition");
  ASSERT_EQ(c.transforms(8).paths_size(), 2);
  EXPECT_EQ(c.transforms(8).paths(1), "/tmp");
  EXPECT_EQ(c.transforms(9).expr(), "test == true");
}

TEST(DatasetSpec, ParsedContractCompiles) {
  absl::StatusOr<DatasetConfig> spec = ParseDatasetSpec(kSpec, "orders.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  wharf::v1::ContractVersion version;
  version.set_dataset("orders");
  version.set_schema_version(1);
  version.set_transform_version(1);
  *version.mutable_spec() = *spec->contract;
  auto contract = pipeline::contract::Contract::Compile(version, "0123456789abcdef0123");
  EXPECT_TRUE(contract.ok()) << contract.status();
}

TEST(DatasetSpec, SchemaAsJsonText) {
  absl::StatusOr<DatasetConfig> spec = ParseDatasetSpec(
      WithContract("  schema: |\n    {\"type\": \"object\", \"required\": [\"id\"]}\n"),
      "orders.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->contract->json_schema(), "{\"type\": \"object\", \"required\": [\"id\"]}\n");
  spec = ParseDatasetSpec(WithContract("  schema: true\n"), "orders.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->contract->json_schema(), "true");
}

TEST(DatasetSpec, EmptyContractMeansOnlyTheObjectCheck) {
  absl::StatusOr<DatasetConfig> spec = ParseDatasetSpec(WithContract("  {}\n"), "orders.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_TRUE(spec->contract.has_value());
  EXPECT_EQ(spec->contract->json_schema(), "");
  EXPECT_EQ(spec->contract->compatibility(), wharf::v1::COMPATIBILITY_MODE_UNSPECIFIED);
  EXPECT_FALSE(spec->contract->has_format_assertions());
  spec = ParseDatasetSpec(WithContract("").substr(0, WithContract("").find("contract:")),
                          "orders.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_FALSE(spec->contract.has_value());
}

TEST(DatasetSpec, MalformedDocuments) {
  EXPECT_TRUE(SpecFailsWith("", 1, "", "expected a map describing a dataset, got an empty file"));
  EXPECT_TRUE(SpecFailsWith("- a\n- b\n", 1, "", "expected a map describing a dataset"));
  EXPECT_TRUE(SpecFailsWith("name: a\n---\nname: b\n", 3, "", "a single YAML document"));
  EXPECT_TRUE(SpecFailsWith("name: [a\n", 2, "", ""));
  // Fuzz finding F5 (yaml-cpp 0.7.0 looped on these; see config_test.cc).
  EXPECT_TRUE(SpecFailsWith("!m,\n", 1, "", "unexpected character at column 3"));
  EXPECT_TRUE(SpecFailsWith("name: a\n---\n&x,", 3, "", "unexpected character at column 3"));
  EXPECT_TRUE(SpecFailsWith(WithContract("  schema: {}\n").insert(0, "spec_file: x.yaml\n"), 1,
                            "spec_file", "unknown key"));
  EXPECT_TRUE(SpecFailsWith("destinations: [{name: f, type: file, directory: /tmp}]\n", 1, "name",
                            "required key is missing"));
  EXPECT_TRUE(SpecFailsWith(
      "name: orders\nformat: raw\ndestinations: [{name: f, type: file, directory: /t}]\n"
      "contract: {}\n",
      4, "contract", "a contract needs format json"));
  EXPECT_TRUE(SpecFailsWith(WithContract("  - a\n"), 6, "contract",
                            "expected a map of contract settings, got a list"));
}

TEST(DatasetSpec, MalformedContracts) {
  EXPECT_TRUE(SpecFailsWith(WithContract("  schemas: {}\n"), 7, "contract.schemas",
                            "did you mean \"contract.schema\""));
  EXPECT_TRUE(SpecFailsWith(WithContract("  compatibility: backward\n"), 7,
                            "contract.compatibility", "\"BACKWARD\""));
  EXPECT_TRUE(SpecFailsWith(WithContract("  format_assertions: maybe\n"), 7,
                            "contract.format_assertions", "\"true\" or \"false\""));
  EXPECT_TRUE(SpecFailsWith(WithContract("  schema: '{\"type\": '\n"), 7, "contract.schema",
                            "a string that is not JSON"));
  EXPECT_TRUE(
      SpecFailsWith(WithContract("  schema: '[1, 2]'\n"), 7, "contract.schema", "got other JSON"));
  EXPECT_TRUE(SpecFailsWith(WithContract("  schema: 42\n"), 7, "contract.schema",
                            "expected a JSON Schema"));
  EXPECT_TRUE(SpecFailsWith(WithContract("  schema:\n    minimum: 0x1F\n"), 8,
                            "contract.schema.minimum", "has no JSON form as written"));
  EXPECT_TRUE(SpecFailsWith(WithContract("  schema:\n    type: object\n    type: array\n"), 9,
                            "contract.schema.type", "duplicate key (first set at line 8)"));
  EXPECT_TRUE(SpecFailsWith(WithContract("  schema:\n    ? [a]\n    : 1\n"), 8, "contract.schema",
                            "keys that are strings"));
  EXPECT_TRUE(
      SpecFailsWith(WithContract("  rules: {a: b}\n"), 7, "contract.rules", "a list of rules"));
  EXPECT_TRUE(SpecFailsWith(WithContract("  rules:\n    - name: r\n"), 8, "contract.rules[0].expr",
                            "required key is missing"));
  EXPECT_TRUE(SpecFailsWith(WithContract("  rules:\n    - name: r\n      exp: a\n"), 9,
                            "contract.rules[0].exp", "did you mean \"contract.rules[0].expr\""));
  EXPECT_TRUE(SpecFailsWith(WithContract("  pii:\n    - detector: passport\n      action: mask\n"),
                            8, "contract.pii[0].detector", "\"email\""));
  EXPECT_TRUE(SpecFailsWith(WithContract("  pii:\n    - detector: email\n"), 8,
                            "contract.pii[0].action", "required key is missing"));
  EXPECT_TRUE(SpecFailsWith(
      WithContract("  pii:\n    - detector: email\n      action: hash\n      fields: /a\n"), 10,
      "contract.pii[0].fields", "a list of strings"));
  EXPECT_TRUE(SpecFailsWith(
      WithContract("  pii:\n    - detector: email\n      action: hash\n      fields: [[a]]\n"), 10,
      "contract.pii[0].fields[0]", "a non-empty string"));
  EXPECT_TRUE(SpecFailsWith(WithContract("  transforms:\n    - op: explode\n"), 8,
                            "contract.transforms[0].op", "\"rename\""));
  EXPECT_TRUE(SpecFailsWith(WithContract("  transforms:\n    - path: /a\n"), 8,
                            "contract.transforms[0].op", "required key is missing"));
  EXPECT_TRUE(SpecFailsWith(WithContract("  transforms:\n    - op: truncate\n      length: -1\n"),
                            9, "contract.transforms[0].length", "an integer from 0"));
  EXPECT_TRUE(SpecFailsWith(WithContract("  transforms:\n    - op: set\n      value: .inf\n"), 9,
                            "contract.transforms[0].value", "has no JSON form"));
  EXPECT_TRUE(
      SpecFailsWith(WithContract("  transforms:\n    - op: add_metadata\n      fields: [a]\n"), 9,
                    "contract.transforms[0].fields", "a map of names to strings"));
  EXPECT_TRUE(SpecFailsWith(
      WithContract("  transforms:\n    - op: add_metadata\n      fields: {offset: {a: 1}}\n"), 9,
      "contract.transforms[0].fields.offset", "a non-empty string"));
}

TEST(DatasetSpec, DeepValuesAreRefusedNotRecursed) {
  std::string deep = "  schema: ";
  for (int i = 0; i < 200; ++i) deep += "[";
  for (int i = 0; i < 200; ++i) deep += "]";
  deep += "\n";
  // yaml-cpp itself refuses very deep flow collections; either way it is an error, not a crash.
  absl::StatusOr<DatasetConfig> spec = ParseDatasetSpec(WithContract(deep), "orders.yaml");
  EXPECT_TRUE(absl::IsInvalidArgument(spec.status())) << spec.status();
  std::string nested = "  transforms:\n    - op: set\n      path: /a\n      value: ";
  for (int i = 0; i < 150; ++i) nested += "{a: ";
  nested += "1";
  for (int i = 0; i < 150; ++i) nested += "}";
  nested += "\n";
  spec = ParseDatasetSpec(WithContract(nested), "orders.yaml");
  EXPECT_TRUE(absl::IsInvalidArgument(spec.status())) << spec.status();
}

TEST(DatasetSpec, AliasExpansionIsBounded) {
  // Nine levels of ten aliases: 10^9 values from 600 bytes ("billion laughs"). Refused quickly,
  // not expanded (before the bound this ran for hours, growing gigabytes of JSON).
  std::string laughs = "  schema:\n    l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n";
  for (int i = 1; i < 9; ++i) {
    absl::StrAppend(&laughs, "    l", i, ": &l", i, " [");
    for (int j = 0; j < 10; ++j) absl::StrAppend(&laughs, j > 0 ? ", " : "", "*l", i - 1);
    absl::StrAppend(&laughs, "]\n");
  }
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<DatasetConfig> spec = ParseDatasetSpec(WithContract(laughs), "orders.yaml");
  EXPECT_TRUE(absl::IsInvalidArgument(spec.status())) << spec.status();
  EXPECT_TRUE(absl::StrContains(spec.status().message(), "expands to more than 100000 values"))
      << spec.status();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
  // Aliases as such are fine: a small expansion is accepted.
  spec = ParseDatasetSpec(
      WithContract(
          "  schema:\n    $defs: {p: &p {type: integer}}\n    properties: {a: *p, b: *p}\n"),
      "orders.yaml");
  EXPECT_TRUE(spec.ok()) << spec.status();
}

// A temporary directory holding a config and spec files.
class SpecFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/wharf-spec-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { ASSERT_EQ(std::system(("rm -rf '" + dir_ + "'").c_str()), 0); }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ + "/" + name) << text;
  }

  std::string dir_;
};

constexpr char kTop[] = "node_id: n1\nhash_key_file: /etc/wharf/hash.key\ndatasets:\n";

TEST_F(SpecFiles, ConfigReadsSpecFilesRelativeToItself) {
  ASSERT_EQ(mkdir((dir_ + "/specs").c_str(), 0755), 0);
  Write("specs/orders.yaml", kSpec);
  Write("wharf.yaml", absl::StrCat(kTop, R"(  - spec_file: specs/orders.yaml
  - name: clicks
    destinations: [{name: f, type: file, directory: /tmp/c}]
    contract:
      schema: {type: object}   # inline
)"));
  absl::StatusOr<Config> config = LoadConfig(dir_ + "/wharf.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->hash_key_file, "/etc/wharf/hash.key");
  ASSERT_EQ(config->datasets.size(), 2u);
  EXPECT_EQ(config->datasets[0].name, "orders");
  EXPECT_EQ(config->datasets[0].spec_file, dir_ + "/specs/orders.yaml");
  EXPECT_EQ(config->datasets[0].source_yaml, kSpec);
  ASSERT_TRUE(config->datasets[0].contract.has_value());
  EXPECT_EQ(config->datasets[0].contract->transforms_size(), 10);
  EXPECT_EQ(config->datasets[1].name, "clicks");
  EXPECT_EQ(config->datasets[1].spec_file, "");
  EXPECT_EQ(config->datasets[1].contract->json_schema(), R"({"type":"object"})");
  // An inline contract's source is the dataset's name and contract, not its destinations.
  EXPECT_TRUE(absl::StrContains(config->datasets[1].source_yaml, "name: clicks"));
  EXPECT_TRUE(absl::StrContains(config->datasets[1].source_yaml, "contract:"));
  EXPECT_FALSE(absl::StrContains(config->datasets[1].source_yaml, "destinations"));
}

TEST_F(SpecFiles, SpecFileErrors) {
  Write("wharf.yaml", absl::StrCat(kTop, "  - spec_file: missing.yaml\n"));
  absl::StatusOr<Config> config = LoadConfig(dir_ + "/wharf.yaml");
  ASSERT_TRUE(absl::IsInvalidArgument(config.status())) << config.status();
  EXPECT_TRUE(absl::StrContains(config.status().message(),
                                absl::StrCat("wharf.yaml:4: datasets[0].spec_file: cannot read "
                                             "dataset spec file ",
                                             dir_, "/missing.yaml")))
      << config.status();

  Write("wharf.yaml", absl::StrCat(kTop, "  - spec_file: o.yaml\n    partitions: 2\n"));
  config = LoadConfig(dir_ + "/wharf.yaml");
  ASSERT_FALSE(config.ok());
  EXPECT_TRUE(absl::StrContains(config.status().message(),
                                "datasets[0].partitions: a dataset entry with spec_file takes no"))
      << config.status();

  // Errors inside the spec file name the spec file and its line.
  Write("bad.yaml", WithContract("  rules: [{name: r}]\n"));
  Write("wharf.yaml", absl::StrCat(kTop, "  - spec_file: bad.yaml\n"));
  config = LoadConfig(dir_ + "/wharf.yaml");
  ASSERT_FALSE(config.ok());
  EXPECT_TRUE(absl::StartsWith(config.status().message(),
                               absl::StrCat(dir_, "/bad.yaml:7: contract.rules[0].expr: ")))
      << config.status();

  // The same dataset name twice, once from a file.
  Write("orders.yaml", kSpec);
  Write("wharf.yaml", absl::StrCat(kTop, R"(  - name: orders
    destinations: [{name: f, type: file, directory: /tmp/c}]
  - spec_file: orders.yaml
)"));
  config = LoadConfig(dir_ + "/wharf.yaml");
  ASSERT_FALSE(config.ok());
  EXPECT_TRUE(absl::StrContains(config.status().message(),
                                "wharf.yaml:6: datasets[1].spec_file: duplicate dataset name "
                                "\"orders\""))
      << config.status();

  Write("wharf.yaml", absl::StrCat(kTop, "  - spec_file: ''\n"));
  config = LoadConfig(dir_ + "/wharf.yaml");
  ASSERT_FALSE(config.ok());
  EXPECT_TRUE(absl::StrContains(config.status().message(),
                                "datasets[0].spec_file: expected a "
                                "non-empty string"))
      << config.status();
}

TEST(DatasetSpec, HashKeyFileMustBeAString) {
  absl::StatusOr<Config> config = ParseConfig(
      "node_id: n\nhash_key_file: [a]\ndatasets:\n  - name: o\n    destinations: "
      "[{name: f, type: file, directory: /t}]\n",
      "wharf.yaml");
  ASSERT_FALSE(config.ok());
  EXPECT_TRUE(absl::StartsWith(config.status().message(), "wharf.yaml:2: hash_key_file: expected"))
      << config.status();
}

// The shipped examples: the demo config's contract and the spec the quick start applies compile,
// and the spec describes the same dataset as the config apart from its contract.
TEST(DatasetSpec, ExamplesCompileAndAgree) {
  absl::StatusOr<Config> config = LoadConfig(WHARF_SOURCE_DIR "/deploy/examples/wharf.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  std::ifstream file(WHARF_SOURCE_DIR "/deploy/examples/orders.yaml");
  const std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  absl::StatusOr<DatasetConfig> spec = ParseDatasetSpec(text, "orders.yaml", config->delivery);
  ASSERT_TRUE(spec.ok()) << spec.status();
  const DatasetConfig& in_config = config->datasets[0];
  EXPECT_EQ(spec->name, in_config.name);
  EXPECT_EQ(spec->partitions, in_config.partitions);
  EXPECT_EQ(spec->format, in_config.format);
  ASSERT_EQ(spec->destinations.size(), in_config.destinations.size());
  EXPECT_EQ(spec->destinations[0].file_directory, in_config.destinations[0].file_directory);
  for (const DatasetConfig* dataset : {&in_config, static_cast<const DatasetConfig*>(&*spec)}) {
    ASSERT_TRUE(dataset->contract.has_value());
    wharf::v1::ContractVersion version;
    version.set_dataset(dataset->name);
    *version.mutable_spec() = *dataset->contract;
    auto contract = pipeline::contract::Contract::Compile(version, "");
    EXPECT_TRUE(contract.ok()) << contract.status();
  }
  EXPECT_NE(spec->contract->rules(0).expr(), in_config.contract->rules(0).expr());
}

}  // namespace
}  // namespace wharf::server
