// wharfctl against a real wharfd: produce from a JSON Lines file, status as a table and as JSON,
// quarantine listing, resuming a producer without duplicates, and its errors.

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "rapidjson/document.h"
#include "tests/support/wharfd_process.h"

namespace wharf::testing {
namespace {

using namespace std::chrono_literals;

class WharfctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WharfdConfig config;
    config.data_dir = tmp_.path() + "/data";
    config.out_dir = tmp_.path() + "/out";
    wharfd_ = std::make_unique<WharfdProcess>(config);
    ASSERT_TRUE(wharfd_->Start().ok());
  }

  std::pair<int, std::string> Ctl(std::vector<std::string> args) {
    args.insert(args.begin(), {WHARFCTL_PATH, "--server", wharfd_->target()});
    return RunCommand(args);
  }

  size_t DeliveredLines() {
    size_t n = 0;
    for (const auto& f : ReadDestination(wharfd_->config().out_dir, "orders")) n += f.lines.size();
    return n;
  }

  TempDir tmp_;
  std::unique_ptr<WharfdProcess> wharfd_;
};

TEST_F(WharfctlTest, ProduceFileThenStatusAndQuarantine) {
  std::string lines;
  for (int i = 0; i < 1000; ++i) {
    absl::StrAppend(&lines, R"({"id":)", i, R"(,"user":"u)", i % 7, R"("})", "\n");
  }
  lines += "\n";                  // empty lines are skipped
  lines += "this is not json\n";  // sent anyway: the server quarantines it
  const std::string file = tmp_.path() + "/orders.jsonl";
  WriteFile(file, lines);

  auto [code, out] = Ctl({"produce", "--dataset", "orders", "--key-field", "user", "--file", file});
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("1001"), std::string::npos) << out;  // records sent and acked

  ASSERT_TRUE(WaitFor([&] { return DeliveredLines() == 1000; }, 30s)) << DeliveredLines();

  std::tie(code, out) = Ctl({"status"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("orders"), std::string::npos) << out;
  EXPECT_NE(out.find("HEALTHY"), std::string::npos) << out;

  std::tie(code, out) = Ctl({"-o", "json", "status"});
  ASSERT_EQ(code, 0) << out;
  rapidjson::Document doc;
  ASSERT_FALSE(doc.Parse(out.c_str()).HasParseError()) << out;
  ASSERT_TRUE(doc.HasMember("datasets")) << out;
  const auto& ds = doc["datasets"][0];
  // Protobuf JSON prints 64-bit integers as strings.
  EXPECT_EQ(std::string(ds["recordsIngested"].GetString()), "1001") << out;
  EXPECT_EQ(std::string(ds["recordsQuarantined"].GetString()), "1") << out;

  std::tie(code, out) = Ctl({"quarantine", "list", "--dataset", "orders"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("PARSE_ERROR"), std::string::npos) << out;
}

TEST_F(WharfctlTest, ResumingAProducerDoesNotDuplicate) {
  std::string lines;
  for (int i = 0; i < 300; ++i) absl::StrAppend(&lines, R"({"n":)", i, "}\n");
  const std::string file = tmp_.path() + "/n.jsonl";
  WriteFile(file, lines);
  auto [code, out] = Ctl({"produce", "--dataset", "orders", "--producer-id", "resumable",
                          "--batch-size", "50", "--file", file});
  ASSERT_EQ(code, 0) << out;
  // The same file again under the same producer id from sequence 0: every request is a retry
  // of a stored one and is answered with the original offsets; nothing new is stored.
  std::tie(code, out) = Ctl({"produce", "--dataset", "orders", "--producer-id", "resumable",
                             "--first-sequence", "0", "--batch-size", "50", "--file", file});
  ASSERT_EQ(code, 0) << out;
  ASSERT_TRUE(WaitFor([&] { return DeliveredLines() >= 300; }, 30s));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(DeliveredLines(), 300u);
  auto st = wharfd_->control().GetStatus({});
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->datasets(0).records_ingested(), 300u);
  EXPECT_EQ(st->datasets(0).duplicate_requests(), 6u);
}

TEST_F(WharfctlTest, ErrorsAreClearAndExitNonZero) {
  const std::string file = tmp_.path() + "/one.jsonl";
  WriteFile(file, "{\"a\":1}\n");
  auto [code, out] = Ctl({"produce", "--dataset", "no-such-dataset", "--file", file});
  EXPECT_NE(code, 0) << out;
  EXPECT_NE(out.find("no-such-dataset"), std::string::npos) << out;

  std::tie(code, out) = Ctl({"produce", "--dataset", "orders", "--file", tmp_.path() + "/nope"});
  EXPECT_NE(code, 0) << out;

  std::tie(code, out) =
      RunCommand({WHARFCTL_PATH, "--server", "127.0.0.1:1", "--timeout", "1", "status"});
  EXPECT_NE(code, 0) << out;
  EXPECT_NE(out.find("cannot reach"), std::string::npos) << out;

  std::tie(code, out) = Ctl({"frobnicate"});
  EXPECT_NE(code, 0) << out;
}

}  // namespace
}  // namespace wharf::testing
