// WharfServer::Create and data contracts: the hash key file (missing, short, fine), the start-up
// rule for config contracts (applied once, not again on an unchanged restart, a runtime-applied
// newer version survives a restart with an unchanged config, an edited config contract is
// applied, an incompatible or non-compiling one fails the start as a configuration error), and
// stored contracts that no longer compile. The server is created (store opened, contracts loaded,
// pipeline built) but never started: nothing listens.

#include "server/wharf_server.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "pipeline/contract/contract_registry.h"
#include "server/config.h"
#include "storage/staging_store.h"

namespace wharf::server {
namespace {

constexpr char kKey[] = "a-hash-key-of-32-bytes-0123456789";

// n: a non-negative integer below `limit` (`required` lists the required fields).
std::string Contract(int limit, const std::string& required = "[n]") {
  return absl::StrCat(R"(    contract:
      schema:
        type: object
        required: )",
                      required, R"(
        properties:
          n: {type: integer, minimum: 0}
          m: {type: integer}
      rules:
        - name: small
          expr: 'n < )",
                      limit, "'\n");
}

class WharfServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "wharf-server-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    key_file_ = dir_ + "/hash.key";
    Write(key_file_, std::string(kKey) + "\n");
  }
  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  static void Write(const std::string& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
  }

  // The config: dataset orders (one partition, a file destination) with `dataset_extra` (YAML
  // lines at 4-space indent, e.g. a contract), and `top_extra` at the top level.
  absl::StatusOr<Config> MakeConfig(const std::string& dataset_extra,
                                    const std::string& top_extra) {
    const std::string yaml =
        absl::StrCat("data_dir: ", dir_, "/data\n", "min_free_disk: 1MiB\n", top_extra,
                     "datasets:\n  - name: orders\n    partitions: 1\n    destinations:\n",
                     "      - name: files\n        type: file\n        directory: ", dir_, "/out\n",
                     dataset_extra);
    return ParseConfig(yaml, dir_ + "/wharf.yaml");
  }

  absl::Status Create(const std::string& dataset_extra, const std::string& top_extra = "") {
    absl::StatusOr<Config> config = MakeConfig(dataset_extra, top_extra);
    if (!config.ok()) {
      ADD_FAILURE() << config.status();
      return config.status();
    }
    absl::StatusOr<std::unique_ptr<WharfServer>> server = WharfServer::Create(*config);
    return server.status();  // the server is destroyed here: the store is closed
  }
  std::string KeyLine() const { return absl::StrCat("hash_key_file: ", key_file_, "\n"); }

  // Runs `f` with the dataset's contract registry, loaded from the store while no server runs.
  template <typename F>
  void WithRegistry(F f) {
    storage::StoreOptions so;
    so.path = dir_ + "/data";
    so.min_free_bytes = 1 << 20;
    so.datasets.push_back({"orders", 1, 0});
    auto store = storage::StagingStore::Open(std::move(so));
    ASSERT_TRUE(store.ok()) << store.status();
    pipeline::contract::ContractRegistry registry(store->get(), kKey);
    ASSERT_TRUE(registry.Load().ok());
    f(registry);
  }

  std::vector<wharf::v1::ContractVersion> History() {
    std::vector<wharf::v1::ContractVersion> history;
    WithRegistry([&](pipeline::contract::ContractRegistry& r) { history = r.History("orders"); });
    return history;
  }

  std::string dir_;
  std::string key_file_;
};

TEST_F(WharfServerTest, HashKeyFileMissingShortOrFine) {
  // Missing.
  absl::Status st = Create("", absl::StrCat("hash_key_file: ", dir_, "/nope.key\n"));
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(IsConfigError(st)) << st;
  EXPECT_TRUE(absl::StrContains(st.message(), "nope.key")) << st;

  // 15 bytes after trimming trailing whitespace (the key must not appear in the message).
  const std::string short_key = "fifteen-bytes!!";
  Write(key_file_, short_key + " \t\r\n\n");
  st = Create("", KeyLine());
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(IsConfigError(st)) << st;
  EXPECT_TRUE(absl::StrContains(st.message(), "15 bytes")) << st;
  EXPECT_FALSE(absl::StrContains(st.message(), short_key)) << st;

  // Empty.
  Write(key_file_, "\n");
  st = Create("", KeyLine());
  EXPECT_TRUE(IsConfigError(st)) << st;

  // Fine: exactly 16 bytes plus whitespace, and a contract that hashes.
  Write(key_file_, "sixteen-bytes-ok\n");
  const std::string hashing =
      Contract(100) + "      pii:\n        - detector: email\n          action: hash\n";
  st = Create(hashing, KeyLine());
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(History().size(), 1u);
}

TEST_F(WharfServerTest, AContractThatHashesNeedsAKey) {
  const std::string hashing =
      Contract(100) + "      pii:\n        - detector: email\n          action: hash\n";
  absl::Status st = Create(hashing);  // no hash_key_file
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(IsConfigError(st)) << st;
  EXPECT_TRUE(History().empty());

  // Stored with a key; the key removed from the config: the stored contract no longer compiles.
  ASSERT_TRUE(Create(hashing, KeyLine()).ok());
  st = Create("");
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(IsConfigError(st)) << st;
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_TRUE(absl::StrContains(st.message(), "orders")) << st;
}

TEST_F(WharfServerTest, ConfigContractIsAppliedOnceAndNotAgainOnAnUnchangedRestart) {
  ASSERT_TRUE(Create(Contract(100)).ok());
  std::vector<wharf::v1::ContractVersion> history = History();
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(history[0].schema_version(), 1u);
  EXPECT_TRUE(absl::StrContains(history[0].source_yaml(), "n < 100")) << history[0].source_yaml();
  const auto applied = history[0].applied_time();

  ASSERT_TRUE(Create(Contract(100)).ok());
  history = History();
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(history[0].applied_time().seconds(), applied.seconds());
  EXPECT_EQ(history[0].applied_time().nanos(), applied.nanos());
}

TEST_F(WharfServerTest, RuntimeAppliedVersionSurvivesARestartWithAnUnchangedConfig) {
  ASSERT_TRUE(Create(Contract(100)).ok());
  // What `wharfctl apply` does: a newer version in the registry.
  WithRegistry([](pipeline::contract::ContractRegistry& r) {
    wharf::v1::ContractSpec spec = r.Current("orders")->version().spec();
    spec.mutable_rules(0)->set_expr("n < 500");
    auto applied = r.Apply("orders", spec, "applied at runtime", false);
    ASSERT_TRUE(applied.ok()) << applied.status();
    EXPECT_TRUE(applied->changed);
  });
  ASSERT_TRUE(Create(Contract(100)).ok());
  std::vector<wharf::v1::ContractVersion> history = History();
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history.back().schema_version(), 2u);
  EXPECT_EQ(history.back().spec().rules(0).expr(), "n < 500");

  // Editing the config's contract applies it at the next start, on top of the runtime one.
  ASSERT_TRUE(Create(Contract(300)).ok());
  history = History();
  ASSERT_EQ(history.size(), 3u);
  EXPECT_EQ(history.back().schema_version(), 3u);
  EXPECT_EQ(history.back().spec().rules(0).expr(), "n < 300");
  EXPECT_TRUE(absl::StrContains(history.back().source_yaml(), "n < 300"));

  // And then not again.
  ASSERT_TRUE(Create(Contract(300)).ok());
  EXPECT_EQ(History().size(), 3u);
}

TEST_F(WharfServerTest, RemovedAndReaddedConfigContractIsApplied) {
  ASSERT_TRUE(Create(Contract(100)).ok());
  WithRegistry([](pipeline::contract::ContractRegistry& r) {
    wharf::v1::ContractSpec spec = r.Current("orders")->version().spec();
    spec.mutable_rules(0)->set_expr("n < 500");
    ASSERT_TRUE(r.Apply("orders", spec, "runtime", false).ok());
  });
  // No contract in the config: the stored one stays current.
  ASSERT_TRUE(Create("").ok());
  ASSERT_EQ(History().size(), 2u);
  EXPECT_EQ(History().back().spec().rules(0).expr(), "n < 500");
  // The first contract back in the config: an edit since the previous start, so applied.
  ASSERT_TRUE(Create(Contract(100)).ok());
  ASSERT_EQ(History().size(), 3u);
  EXPECT_EQ(History().back().spec().rules(0).expr(), "n < 100");
}

TEST_F(WharfServerTest, IncompatibleOrBrokenEditedConfigContractFailsTheStart) {
  ASSERT_TRUE(Create(Contract(100)).ok());
  // m becomes required: records valid before are not any more (BACKWARD).
  absl::Status st = Create(Contract(100, "[n, m]"));
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(IsConfigError(st)) << st;
  EXPECT_TRUE(absl::StrContains(st.message(), "orders")) << st;
  EXPECT_TRUE(absl::StrContains(st.message(), "BACKWARD")) << st;
  EXPECT_TRUE(absl::StrContains(st.message(), "m")) << st;

  // A rule that does not compile.
  std::string broken = Contract(100);
  broken.replace(broken.find("n < 100"), 7, "n <");
  st = Create(broken);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(IsConfigError(st)) << st;
  EXPECT_TRUE(absl::StrContains(st.message(), "rules[0] (small)")) << st;

  // Nothing was stored by the failed starts, and the unchanged config starts again.
  EXPECT_EQ(History().size(), 1u);
  EXPECT_TRUE(Create(Contract(100)).ok());
  EXPECT_EQ(History().size(), 1u);
}

TEST_F(WharfServerTest, DamagedConfigContractRecordIsDataLoss) {
  ASSERT_TRUE(Create(Contract(100)).ok());
  {
    storage::StoreOptions so;
    so.path = dir_ + "/data";
    so.min_free_bytes = 1 << 20;
    so.datasets.push_back({"orders", 1, 0});
    auto store = storage::StagingStore::Open(std::move(so));
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->PutMeta("contract-config/orders", "\xff\xff\xff").ok());
  }
  absl::Status st = Create(Contract(100));
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  EXPECT_FALSE(IsConfigError(st)) << st;
}

}  // namespace
}  // namespace wharf::server
