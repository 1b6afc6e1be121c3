// wharfd's start-up with destination configs that only fail when the destinations are built:
// missing secrets and options a destination refuses are configuration errors (exit code 2)
// with a clear message that never contains a secret; so is a hash key file that is too short. And
// the quarantine section is wired: a retention of 1s empties the quarantine.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/support/wharfd_process.h"

namespace wharf::testing {
namespace {

using namespace std::chrono_literals;

constexpr int kExitConfig = 2;

class WharfdConfigTest : public ::testing::Test {
 protected:
  // Runs wharfd (bounded by timeout(1): a wharfd that starts by mistake is stopped after 20s
  // and the test fails on the exit code) with `destination` (YAML lines of one destination,
  // 8-space indented) as the only destination; returns (exit code, output).
  std::pair<int, std::string> RunWith(const std::string& destination) {
    const std::string config = absl::StrCat(
        "listen: 127.0.0.1:", FreePort(), "\nmetrics_listen: 127.0.0.1:", FreePort(),
        "\ndata_dir: ", tmp_.path(), "/data\nmin_free_disk: 1MiB\ndatasets:\n  - name: orders\n",
        "    destinations:\n      - name: d\n", destination);
    const std::string path = tmp_.path() + "/wharf.yaml";
    WriteFile(path, config);
    return RunCommand({"/usr/bin/timeout", "20", WHARFD_PATH, "--config", path});
  }

  TempDir tmp_;
};

TEST_F(WharfdConfigTest, MissingBearerTokenFileIsAConfigError) {
  const std::string missing = tmp_.path() + "/no-such-token";
  auto [code, out] = RunWith(absl::StrCat("        type: http\n        url: http://127.0.0.1:1/\n",
                                          "        bearer_token_file: ", missing, "\n"));
  EXPECT_EQ(code, kExitConfig) << out;
  EXPECT_NE(out.find("invalid configuration: dataset orders, destination d: cannot read the "
                     "bearer token file " +
                     missing),
            std::string::npos)
      << out;
}

TEST_F(WharfdConfigTest, ShortHashKeyIsAConfigErrorWithoutTheKey) {
  const std::string key = "too-short-key";
  const std::string key_file = tmp_.path() + "/hash.key";
  WriteFile(key_file, key + "\n");
  const std::string config = absl::StrCat(
      "listen: 127.0.0.1:", FreePort(), "\nmetrics_listen: 127.0.0.1:", FreePort(),
      "\ndata_dir: ", tmp_.path(), "/data\nmin_free_disk: 1MiB\nhash_key_file: ", key_file,
      "\ndatasets:\n  - name: orders\n    destinations:\n      - name: d\n        type: file\n",
      "        directory: ", tmp_.path(), "/out\n");
  const std::string path = tmp_.path() + "/wharf.yaml";
  WriteFile(path, config);
  auto [code, out] = RunCommand({"/usr/bin/timeout", "20", WHARFD_PATH, "--config", path});
  EXPECT_EQ(code, kExitConfig) << out;
  EXPECT_NE(out.find("hash_key_file: the hash key in " + key_file + " is 13 bytes long"),
            std::string::npos)
      << out;
  EXPECT_EQ(out.find(key), std::string::npos) << out;
}

TEST_F(WharfdConfigTest, EmptyPasswordFileIsAConfigError) {
  const std::string file = tmp_.path() + "/pg.pass";
  WriteFile(file, "\n");
  auto [code, out] =
      RunWith(absl::StrCat("        type: postgres\n        conninfo: host=127.0.0.1 dbname=x\n",
                           "        table: t\n        password_file: ", file, "\n"));
  EXPECT_EQ(code, kExitConfig) << out;
  EXPECT_NE(out.find("the password file " + file + " is empty"), std::string::npos) << out;
}

TEST_F(WharfdConfigTest, UnsetPasswordVariableIsAConfigError) {
  auto [code, out] = RunWith(
      "        type: postgres\n        conninfo: dbname=x\n        table: t\n"
      "        password_env: WHARF_TEST_SURELY_UNSET_PASSWORD\n");
  EXPECT_EQ(code, kExitConfig) << out;
  EXPECT_NE(out.find("the password environment variable WHARF_TEST_SURELY_UNSET_PASSWORD is "
                     "not set"),
            std::string::npos)
      << out;
}

TEST_F(WharfdConfigTest, OptionsTheDestinationRefusesAreAConfigErrorWithoutTheSecret) {
  // HttpDestination refuses a Content-Length header of its own; the token file is read first
  // and its content must not show up anywhere.
  const std::string token = tmp_.path() + "/token";
  WriteFile(token, "s3cret-token-value\n");
  auto [code, out] = RunWith(absl::StrCat(
      "        type: http\n        url: http://127.0.0.1:1/\n        bearer_token_file: ", token,
      "\n        headers: {Content-Length: \"5\"}\n"));
  EXPECT_EQ(code, kExitConfig) << out;
  EXPECT_NE(out.find("invalid configuration: dataset orders, destination d:"), std::string::npos)
      << out;
  EXPECT_NE(out.find("Content-Length"), std::string::npos) << out;
  EXPECT_EQ(out.find("s3cret"), std::string::npos) << out;
}

TEST_F(WharfdConfigTest, ConfigFileErrorsStillExitWithTwo) {
  auto [code, out] = RunWith("        type: postgres\n        conninfo: \"password=x\"\n");
  EXPECT_EQ(code, kExitConfig) << out;
  EXPECT_NE(out.find("must not contain a password"), std::string::npos) << out;
}

TEST(WharfdQuarantineRetentionTest, EntriesOlderThanTheRetentionAreDeleted) {
  TempDir tmp;
  WharfdConfig config;
  config.data_dir = tmp.path() + "/data";
  config.out_dir = tmp.path() + "/out";
  config.partitions = 1;
  config.retention_interval = "200ms";
  config.extra_dataset = "    quarantine: {retention: 1s}\n";
  WharfdProcess wharfd(config);
  ASSERT_TRUE(wharfd.Start().ok());
  const std::string file = tmp.path() + "/bad.jsonl";
  WriteFile(file, "bad-0\nbad-1\n{\"ok\":true}\n");
  auto [code, out] = RunCommand(
      {WHARFCTL_PATH, "--server", wharfd.target(), "produce", "--dataset", "orders", file});
  ASSERT_EQ(code, 0) << out;
  auto quarantined = [&] {
    auto all = wharfd.control().ListAllQuarantine("orders", 100);
    return all.ok() ? all->entries_size() : -1;
  };
  // Seen in quarantine first (the processing is fast, the retention 1s), then gone.
  ASSERT_TRUE(WaitFor([&] { return quarantined() == 2; }, 10s));
  EXPECT_TRUE(WaitFor([&] { return quarantined() == 0; }, 20s)) << quarantined();
}

}  // namespace
}  // namespace wharf::testing
