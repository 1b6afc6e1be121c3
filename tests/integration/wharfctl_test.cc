// wharfctl against a real wharfd: produce from a JSON Lines file, status as a table and as JSON,
// quarantine listing, resuming a producer without duplicates, and its errors; pausing and
// resuming a destination (across a restart); quarantine list filters and paging, show, replay
// (dry run and real) and discard; the OPEN state of a failing destination; contracts: apply,
// schema check and get contract, with their refusals.

#include <gtest/gtest.h>

#include <filesystem>
#include <set>
#include <sstream>
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

class WharfctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WharfdConfig config;
    config.data_dir = tmp_.path() + "/data";
    config.out_dir = tmp_.path() + "/out";
    Configure(config);
    wharfd_ = std::make_unique<WharfdProcess>(config);
    ASSERT_TRUE(wharfd_->Start().ok());
  }

  // Lets a derived fixture change the config before the first start.
  virtual void Configure(WharfdConfig& /*config*/) {}

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

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// The state column of `destination` in `wharfctl status` output ("" when not found).
std::string StateOf(const std::string& status_output, const std::string& destination) {
  std::istringstream lines(status_output);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::string dataset, name, type, state;
    if (words >> dataset >> name >> type >> state && name == destination && type == "file") {
      return state;
    }
  }
  return "";
}

TEST_F(WharfctlTest, PauseAndResumeADestinationAcrossARestart) {
  auto [code, out] = Ctl({"destination", "pause", "orders", "files"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_TRUE(Contains(out, "paused orders/files")) << out;
  std::tie(code, out) = Ctl({"status"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_EQ(StateOf(out, "files"), "PAUSED") << out;

  std::string lines;
  for (int i = 0; i < 50; ++i) absl::StrAppend(&lines, R"({"i":)", i, "}\n");
  const std::string file = tmp_.path() + "/in.jsonl";
  WriteFile(file, lines);
  std::tie(code, out) = Ctl({"produce", "--dataset", "orders", "--file", file});
  ASSERT_EQ(code, 0) << out;
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(DeliveredLines(), 0u);

  // The pause is persisted: still paused after a restart, still nothing delivered.
  auto exit_code = wharfd_->Terminate();
  ASSERT_TRUE(exit_code.ok()) << exit_code.status();
  ASSERT_EQ(*exit_code, 0);
  ASSERT_TRUE(wharfd_->Start().ok());
  std::tie(code, out) = Ctl({"status"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_EQ(StateOf(out, "files"), "PAUSED") << out;
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(DeliveredLines(), 0u);

  std::tie(code, out) = Ctl({"-o", "json", "destination", "resume", "orders", "files"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_TRUE(Contains(out, R"("paused":"false")")) << out;
  ASSERT_TRUE(WaitFor([&] { return DeliveredLines() == 50; }, 30s)) << DeliveredLines();
  std::tie(code, out) = Ctl({"status"});
  EXPECT_EQ(StateOf(out, "files"), "HEALTHY") << out;

  // Errors.
  std::tie(code, out) = Ctl({"destination", "pause", "nope", "files"});
  EXPECT_NE(code, 0) << out;
  EXPECT_TRUE(Contains(out, "NOT_FOUND")) << out;
  std::tie(code, out) = Ctl({"destination", "resume", "orders", "nope"});
  EXPECT_NE(code, 0) << out;
  EXPECT_TRUE(Contains(out, "no destination \"nope\"")) << out;
  std::tie(code, out) = Ctl({"destination", "pause", "orders"});
  EXPECT_NE(code, 0) << out;
  std::tie(code, out) = Ctl({"destination", "stop", "orders", "files"});
  EXPECT_NE(code, 0) << out;
}

// One partition, so that tokens are "0/<offset>".
class WharfctlQuarantineTest : public WharfctlTest {
 protected:
  void Configure(WharfdConfig& config) override { config.partitions = 1; }

  // Produces {"a":0}, bad-1, {"a":2}, bad-3, {"a":4}, bad-5: quarantine 0/1, 0/3, 0/5.
  void ProduceMixed() {
    std::string lines;
    for (int i = 0; i < 6; ++i) {
      absl::StrAppend(
          &lines, i % 2 == 0 ? absl::StrCat(R"({"a":)", i, "}") : absl::StrCat("bad-", i), "\n");
    }
    const std::string file = tmp_.path() + "/mixed.jsonl";
    WriteFile(file, lines);
    auto [code, out] = Ctl({"produce", "--dataset", "orders", "--file", file});
    ASSERT_EQ(code, 0) << out;
    ASSERT_TRUE(WaitFor([&] { return QuarantineTokens().size() == 3; }, 30s));
    ASSERT_TRUE(WaitFor([&] { return DeliveredLines() == 3; }, 30s));
  }

  // Tokens and attempts of every entry, from `wharfctl -o json quarantine list`.
  std::vector<std::pair<std::string, int>> Quarantine() {
    auto [code, out] = Ctl({"-o", "json", "quarantine", "list", "orders"});
    std::vector<std::pair<std::string, int>> entries;
    rapidjson::Document doc;
    if (code != 0 || doc.Parse(out.c_str()).HasParseError() || !doc.IsObject()) return entries;
    if (!doc.HasMember("entries")) return entries;
    for (const auto& e : doc["entries"].GetArray()) {
      entries.emplace_back(e["token"].GetString(), e["attempts"].GetInt());
    }
    return entries;
  }
  std::vector<std::string> QuarantineTokens() {
    std::vector<std::string> tokens;
    for (const auto& [token, attempts] : Quarantine()) tokens.push_back(token);
    return tokens;
  }
};

TEST_F(WharfctlQuarantineTest, ListFiltersAndPages) {
  ProduceMixed();
  EXPECT_EQ(QuarantineTokens(), (std::vector<std::string>{"0/1", "0/3", "0/5"}));

  auto [code, out] = Ctl({"quarantine", "list", "orders"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_TRUE(Contains(out, "TOKEN")) << out;
  for (const char* token : {"0/1 ", "0/3 ", "0/5 "}) EXPECT_TRUE(Contains(out, token)) << out;
  // The older --dataset form still works.
  std::tie(code, out) = Ctl({"quarantine", "list", "--dataset", "orders"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_TRUE(Contains(out, "0/5 ")) << out;

  std::tie(code, out) = Ctl({"quarantine", "list", "orders", "--reason", "parse_error"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_TRUE(Contains(out, "0/1 ") && Contains(out, "0/5 ")) << out;
  std::tie(code, out) = Ctl({"quarantine", "list", "orders", "--reason", "SCHEMA_VIOLATION"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_TRUE(Contains(out, "no matching quarantined records")) << out;
  std::tie(code, out) = Ctl({"quarantine", "list", "orders", "--reason", "bogus"});
  EXPECT_NE(code, 0) << out;
  EXPECT_TRUE(Contains(out, "unknown reason \"bogus\"")) << out;

  std::tie(code, out) = Ctl({"quarantine", "list", "orders", "--limit", "2"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_TRUE(Contains(out, "0/1 ") && Contains(out, "0/3 ") && !Contains(out, "0/5 ")) << out;
  EXPECT_TRUE(Contains(out, "--page-token 0/3")) << out;
  std::tie(code, out) = Ctl({"quarantine", "list", "orders", "--page-token", "0/3"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_TRUE(!Contains(out, "0/1 ") && !Contains(out, "0/3 ") && Contains(out, "0/5 ")) << out;
  std::tie(code, out) = Ctl({"quarantine", "list", "orders", "--page-token", "three"});
  EXPECT_NE(code, 0) << out;
  EXPECT_TRUE(Contains(out, "INVALID_ARGUMENT")) << out;

  std::tie(code, out) = Ctl({"quarantine", "list", "orders", "--since", "2000-01-01T00:00:00Z",
                             "--until", "2999-01-01T00:00:00Z"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_TRUE(Contains(out, "0/1 ") && Contains(out, "0/5 ")) << out;
  std::tie(code, out) = Ctl({"quarantine", "list", "orders", "--since", "2999-01-01T00:00:00Z"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_TRUE(Contains(out, "no matching quarantined records")) << out;
  std::tie(code, out) = Ctl({"quarantine", "list", "orders", "--until", "2000-01-01T00:00:00Z"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_TRUE(Contains(out, "no matching quarantined records")) << out;
  std::tie(code, out) = Ctl({"quarantine", "list", "orders", "--since", "yesterday"});
  EXPECT_NE(code, 0) << out;
  EXPECT_TRUE(Contains(out, "expected an RFC 3339 time")) << out;
  std::tie(code, out) = Ctl({"quarantine", "list", "orders", "--since", "2030-01-01T00:00:00Z",
                             "--until", "2020-01-01T00:00:00Z"});
  EXPECT_NE(code, 0) << out;
  EXPECT_TRUE(Contains(out, "until is before since")) << out;
  std::tie(code, out) = Ctl({"quarantine", "list", "nope"});
  EXPECT_NE(code, 0) << out;
  EXPECT_TRUE(Contains(out, "unknown dataset \"nope\"")) << out;
  std::tie(code, out) = Ctl({"quarantine", "list"});
  EXPECT_NE(code, 0) << out;
}

TEST_F(WharfctlQuarantineTest, ShowPrintsEveryFieldAndThePayload) {
  ProduceMixed();
  auto [code, out] = Ctl({"quarantine", "show", "orders", "0/3"});
  ASSERT_EQ(code, 0) << out;
  for (const char* expected :
       {"token", "0/3", "PARSE_ERROR", "attempts", "first error", "quarantined", "ingested",
        "producer", "payload", "(5 bytes)", "\nbad-3\n"}) {
    EXPECT_TRUE(Contains(out, expected)) << expected << " missing in\n" << out;
  }
  std::tie(code, out) = Ctl({"-o", "json", "quarantine", "show", "orders", "0/3"});
  ASSERT_EQ(code, 0) << out;
  rapidjson::Document doc;
  ASSERT_FALSE(doc.Parse(out.c_str()).HasParseError()) << out;
  EXPECT_EQ(std::string(doc["token"].GetString()), "0/3");
  // Protobuf JSON writes bytes as base64: "bad-3" is "YmFkLTM=".
  EXPECT_EQ(std::string(doc["original"]["record"]["payload"].GetString()), "YmFkLTM=");

  std::tie(code, out) = Ctl({"quarantine", "show", "orders", "0/2"});
  EXPECT_NE(code, 0) << out;
  EXPECT_TRUE(Contains(out, "NOT_FOUND")) << out;
  std::tie(code, out) = Ctl({"quarantine", "show", "orders", "not-a-token"});
  EXPECT_NE(code, 0) << out;
  EXPECT_TRUE(Contains(out, "malformed quarantine token")) << out;
  std::tie(code, out) = Ctl({"quarantine", "show", "orders"});
  EXPECT_NE(code, 0) << out;
}

TEST_F(WharfctlQuarantineTest, ReplayDryRunThenReplayThenDiscard) {
  ProduceMixed();
  auto [code, out] = Ctl({"quarantine", "replay", "orders", "--all", "--dry-run"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_TRUE(Contains(out, "3 matching entries; 0 would pass, 3 would fail again")) << out;
  EXPECT_TRUE(Contains(out, "0/1: PARSE_ERROR: ")) << out;
  std::tie(code, out) =
      Ctl({"-o", "json", "quarantine", "replay", "orders", "--reason", "parse_error", "--dry-run"});
  ASSERT_EQ(code, 0) << out;
  rapidjson::Document doc;
  ASSERT_FALSE(doc.Parse(out.c_str()).HasParseError()) << out;
  EXPECT_EQ(std::string(doc["wouldFail"].GetString()), "3") << out;
  EXPECT_EQ(doc["sampleFailures"].Size(), 3u) << out;
  EXPECT_EQ(QuarantineTokens().size(), 3u);  // a dry run changes nothing

  // Nothing selected, or tokens with --all: refused by wharfctl.
  std::tie(code, out) = Ctl({"quarantine", "replay", "orders"});
  EXPECT_NE(code, 0) << out;
  EXPECT_TRUE(Contains(out, "--all or --reason")) << out;
  std::tie(code, out) = Ctl({"quarantine", "replay", "orders", "0/1", "--all"});
  EXPECT_NE(code, 0) << out;
  std::tie(code, out) = Ctl({"quarantine", "replay", "orders", "1-2"});
  EXPECT_NE(code, 0) << out;
  EXPECT_TRUE(Contains(out, "malformed quarantine token")) << out;

  // A real replay: the record goes through the same processor and is quarantined again, at a
  // new offset, with attempts = 2.
  std::tie(code, out) = Ctl({"quarantine", "replay", "orders", "0/3"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_TRUE(Contains(out, "replayed 1 of 1 matching entries")) << out;
  ASSERT_TRUE(WaitFor(
      [&] { return QuarantineTokens().size() == 3 && Quarantine()[2].first == "0/6"; }, 30s));
  const auto entries = Quarantine();
  EXPECT_EQ(entries,
            (std::vector<std::pair<std::string, int>>{{"0/1", 1}, {"0/5", 1}, {"0/6", 2}}));
  std::tie(code, out) = Ctl({"quarantine", "show", "orders", "0/6"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_TRUE(Contains(out, "replayed from") && Contains(out, "0/3")) << out;
  EXPECT_TRUE(Contains(out, "\nbad-3\n")) << out;
  EXPECT_EQ(DeliveredLines(), 3u);

  // Discard: refused without --yes.
  std::tie(code, out) = Ctl({"quarantine", "discard", "orders", "--all"});
  EXPECT_NE(code, 0) << out;
  EXPECT_TRUE(Contains(out, "--yes")) << out;
  std::tie(code, out) = Ctl({"quarantine", "discard", "orders", "--yes"});
  EXPECT_NE(code, 0) << out;
  EXPECT_EQ(QuarantineTokens().size(), 3u);
  std::tie(code, out) = Ctl({"quarantine", "discard", "orders", "0/1", "--yes"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_TRUE(Contains(out, "discarded 1 entries")) << out;
  std::tie(code, out) =
      Ctl({"quarantine", "discard", "orders", "--reason", "schema_violation", "--yes"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_TRUE(Contains(out, "discarded 0 entries")) << out;
  std::tie(code, out) = Ctl({"quarantine", "discard", "orders", "--all", "--yes"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_TRUE(Contains(out, "discarded 2 entries")) << out;
  EXPECT_TRUE(QuarantineTokens().empty());
  std::tie(code, out) = Ctl({"quarantine", "discard", "nope", "--all", "--yes"});
  EXPECT_NE(code, 0) << out;
  EXPECT_TRUE(Contains(out, "unknown dataset")) << out;
}

TEST_F(WharfctlTest, StatusShowsAnOpenCircuitAndTheNextAttempt) {
  // The destination directory is replaced by a file: every delivery fails, and after
  // down_after (5) failures the circuit opens; probes follow every probe_interval (30s).
  const std::string out_dir = wharfd_->config().out_dir;
  std::filesystem::remove_all(out_dir);
  WriteFile(out_dir, "not a directory\n");
  const std::string file = tmp_.path() + "/one.jsonl";
  WriteFile(file, "{\"a\":1}\n");
  auto [code, out] = Ctl({"produce", "--dataset", "orders", "--file", file});
  ASSERT_EQ(code, 0) << out;
  ASSERT_TRUE(WaitFor(
      [&] {
        std::tie(code, out) = Ctl({"status"});
        return StateOf(out, "files") == "OPEN";
      },
      30s))
      << out;
  EXPECT_TRUE(Contains(out, "NEXT ATTEMPT")) << out;
  EXPECT_TRUE(Contains(out, "REJECTED")) << out;
  EXPECT_TRUE(Contains(out, " in ")) << out;  // "in 29.8s"
  std::tie(code, out) = Ctl({"-o", "json", "status"});
  ASSERT_EQ(code, 0) << out;
  rapidjson::Document doc;
  ASSERT_FALSE(doc.Parse(out.c_str()).HasParseError()) << out;
  const auto& dest = doc["datasets"][0]["destinations"][0];
  EXPECT_EQ(std::string(dest["state"].GetString()), "OPEN") << out;
  EXPECT_TRUE(dest.HasMember("nextAttemptTime")) << out;
  EXPECT_TRUE(dest.HasMember("recordsRejected")) << out;
}

// ---------------------------------------------------------------------------------------------
// Contracts: apply, schema check, get contract

// The running orders dataset (4 partitions, the files destination) with a contract: n a
// non-negative integer below `limit`, renamed to num.
std::string OrdersSpec(const WharfdConfig& config, const std::string& contract) {
  return absl::StrCat("name: orders\npartitions: ", config.partitions,
                      "\ndestinations:\n  - name: files\n    type: file\n    directory: ",
                      config.out_dir, "\ncontract:\n", contract);
}
std::string LimitContract(int limit) {
  return absl::StrCat(
      "  schema:\n    type: object\n    required: [n]\n    properties:\n"
      "      n: {type: integer, minimum: 0}\n"
      "  rules:\n    - name: small\n      expr: 'n < ",
      limit, "'\n  transforms:\n    - op: rename\n      path: /n\n      to: /num\n");
}

TEST_F(WharfctlTest, ApplySchemaCheckAndGetContract) {
  const WharfdConfig& config = wharfd_->config();
  const std::string v1 = tmp_.path() + "/v1.yaml";
  const std::string v2 = tmp_.path() + "/v2.yaml";
  WriteFile(v1, OrdersSpec(config, LimitContract(100)));
  WriteFile(v2, OrdersSpec(config, LimitContract(200)));

  auto [code, out] = Ctl({"get", "contract", "orders"});
  EXPECT_NE(code, 0) << out;
  EXPECT_TRUE(Contains(out, "NOT_FOUND")) << out;

  std::tie(code, out) = Ctl({"schema", "check", "-f", v1});
  ASSERT_EQ(code, 0) << out;
  EXPECT_TRUE(Contains(out, "compatible: would be schema version 1, transform version 1")) << out;
  std::tie(code, out) = Ctl({"get", "contract", "orders"});
  EXPECT_NE(code, 0) << out;  // a dry run stores nothing

  std::tie(code, out) = Ctl({"apply", "-f", v1});
  ASSERT_EQ(code, 0) << out;
  EXPECT_TRUE(Contains(out, "orders: contract applied: schema version 1, transform version 1"))
      << out;
  std::tie(code, out) = Ctl({"apply", "--file", v1});
  ASSERT_EQ(code, 0) << out;
  EXPECT_TRUE(Contains(out, "orders: unchanged")) << out;

  std::tie(code, out) = Ctl({"schema", "check", "-f", v2});
  ASSERT_EQ(code, 0) << out;
  EXPECT_TRUE(Contains(out, "compatible: would be schema version 2, transform version 1")) << out;
  // From stdin.
  std::tie(code, out) = RunCommand(
      {"/bin/sh", "-c",
       absl::StrCat(WHARFCTL_PATH, " --server ", wharfd_->target(), " apply -f - < ", v2)});
  ASSERT_EQ(code, 0) << out;
  EXPECT_TRUE(Contains(out, "orders: contract applied: schema version 2, transform version 1"))
      << out;

  std::tie(code, out) = Ctl({"get", "contract", "orders"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_TRUE(Contains(out, "schema version     2")) << out;
  EXPECT_TRUE(Contains(out, "transform version  1")) << out;
  EXPECT_TRUE(Contains(out, "expr: 'n < 200'")) << out;  // the YAML as applied
  std::tie(code, out) = Ctl({"get", "contract", "orders", "--version", "1"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_TRUE(Contains(out, "expr: 'n < 100'")) << out;
  std::tie(code, out) = Ctl({"get", "contract", "orders", "--version", "3"});
  EXPECT_NE(code, 0) << out;
  EXPECT_TRUE(Contains(out, "NOT_FOUND")) << out;
  std::tie(code, out) = Ctl({"get", "contract", "orders", "--history"});
  ASSERT_EQ(code, 0) << out;
  std::vector<std::string> lines = absl::StrSplit(out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u) << out;  // header and two versions
  EXPECT_TRUE(absl::StartsWith(lines[1], "1 ")) << out;
  EXPECT_TRUE(absl::StartsWith(lines[2], "2 ")) << out;
  std::tie(code, out) = Ctl({"-o", "json", "get", "contract", "orders", "--history"});
  ASSERT_EQ(code, 0) << out;
  rapidjson::Document doc;
  ASSERT_FALSE(doc.Parse(out.c_str()).HasParseError()) << out;
  ASSERT_TRUE(doc.HasMember("versions") && doc["versions"].IsArray()) << out;
  EXPECT_EQ(doc["versions"].Size(), 2u) << out;
  std::tie(code, out) = Ctl({"-o", "json", "apply", "-f", v2});
  ASSERT_EQ(code, 0) << out;
  ASSERT_FALSE(doc.Parse(out.c_str()).HasParseError()) << out;
  EXPECT_FALSE(doc["changed"].GetBool()) << out;

  // Produced records go through the contract: renamed, the large one quarantined.
  WriteFile(tmp_.path() + "/n.jsonl", "{\"n\":1}\n{\"n\":150}\n{\"n\":250}\n");
  std::tie(code, out) = Ctl({"produce", "--dataset", "orders", "--file", tmp_.path() + "/n.jsonl"});
  ASSERT_EQ(code, 0) << out;
  ASSERT_TRUE(WaitFor([&] { return DeliveredLines() == 2; }, 30s)) << DeliveredLines();
  std::set<std::string> delivered;
  for (const auto& f : ReadDestination(config.out_dir, "orders")) {
    delivered.insert(f.lines.begin(), f.lines.end());
  }
  EXPECT_EQ(delivered, (std::set<std::string>{R"({"num":1})", R"({"num":150})"}));

  // The applied version is current after a restart with the unchanged config.
  auto exit_code = wharfd_->Terminate();
  ASSERT_TRUE(exit_code.ok()) << exit_code.status();
  ASSERT_TRUE(wharfd_->Start().ok());
  std::tie(code, out) = Ctl({"get", "contract", "orders"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_TRUE(Contains(out, "schema version     2")) << out;
}

TEST_F(WharfctlTest, ApplyAndSchemaCheckListEveryRefusal) {
  const WharfdConfig& config = wharfd_->config();
  const std::string v1 = tmp_.path() + "/v1.yaml";
  WriteFile(v1, OrdersSpec(config, LimitContract(100)));
  auto [code, out] = Ctl({"apply", "-f", v1});
  ASSERT_EQ(code, 0) << out;

  // Every compile error, one per line.
  const std::string broken = tmp_.path() + "/broken.yaml";
  WriteFile(broken, OrdersSpec(config,
                               "  rules:\n    - name: first\n      expr: 'n <'\n"
                               "    - name: second\n      expr: '(( n'\n"));
  for (const char* cmd : {"apply", "check"}) {
    SCOPED_TRACE(cmd);
    std::vector<std::string> args = {"apply", "-f", broken};
    if (std::string(cmd) == "check") args = {"schema", "check", "-f", broken};
    std::tie(code, out) = Ctl(args);
    EXPECT_NE(code, 0) << out;
    EXPECT_TRUE(Contains(out, "INVALID_ARGUMENT")) << out;
    std::vector<std::string> lines = absl::StrSplit(out, '\n', absl::SkipEmpty());
    int first = 0, second = 0;
    for (const std::string& line : lines) {
      first += Contains(line, "rules[0] (first)");
      second += Contains(line, "rules[1] (second)");
    }
    EXPECT_EQ(first, 1) << out;
    EXPECT_EQ(second, 1) << out;
  }

  // Every incompatibility, one per line.
  const std::string incompatible = tmp_.path() + "/incompatible.yaml";
  WriteFile(incompatible,
            OrdersSpec(config,
                       "  schema:\n    type: object\n    required: [n, m]\n"
                       "    properties:\n      n: {type: string}\n      m: {type: string}\n"));
  std::tie(code, out) = Ctl({"schema", "check", "-f", incompatible});
  EXPECT_NE(code, 0) << out;
  EXPECT_TRUE(Contains(out, "FAILED_PRECONDITION")) << out;
  std::vector<std::string> lines = absl::StrSplit(out, '\n', absl::SkipEmpty());
  EXPECT_GE(lines.size(), 3u) << out;

  // Not only the contract differs.
  WharfdConfig other = config;
  other.partitions = config.partitions + 1;
  const std::string repartitioned = tmp_.path() + "/repartitioned.yaml";
  WriteFile(repartitioned, OrdersSpec(other, LimitContract(100)));
  std::tie(code, out) = Ctl({"apply", "-f", repartitioned});
  EXPECT_NE(code, 0) << out;
  EXPECT_TRUE(Contains(out, "partitions")) << out;
  EXPECT_TRUE(Contains(out, "restart")) << out;

  // Unknown dataset, malformed YAML, no contract, no file.
  const std::string unknown = tmp_.path() + "/unknown.yaml";
  std::string text = OrdersSpec(config, LimitContract(100));
  text.replace(0, 12, "name: nope");
  WriteFile(unknown, text);
  std::tie(code, out) = Ctl({"apply", "-f", unknown});
  EXPECT_NE(code, 0) << out;
  EXPECT_TRUE(Contains(out, "NOT_FOUND")) << out;
  const std::string malformed = tmp_.path() + "/malformed.yaml";
  WriteFile(malformed, "name: [orders\n");
  std::tie(code, out) = Ctl({"apply", "-f", malformed});
  EXPECT_NE(code, 0) << out;
  EXPECT_TRUE(Contains(out, "INVALID_ARGUMENT")) << out;
  const std::string bare = tmp_.path() + "/bare.yaml";
  WriteFile(bare, OrdersSpec(config, "").substr(0, OrdersSpec(config, "").size() - 10));
  std::tie(code, out) = Ctl({"apply", "-f", bare});
  EXPECT_NE(code, 0) << out;
  EXPECT_TRUE(Contains(out, "no contract")) << out;
  std::tie(code, out) = Ctl({"apply", "-f", tmp_.path() + "/missing.yaml"});
  EXPECT_NE(code, 0) << out;
  EXPECT_TRUE(Contains(out, "cannot open")) << out;
  std::tie(code, out) = Ctl({"apply"});
  EXPECT_NE(code, 0) << out;
  std::tie(code, out) = Ctl({"get", "contract"});
  EXPECT_NE(code, 0) << out;
  std::tie(code, out) = Ctl({"get", "contract", "orders", "--version", "x"});
  EXPECT_NE(code, 0) << out;
  std::tie(code, out) = Ctl({"get", "contract", "orders", "--version", "1", "--history"});
  EXPECT_NE(code, 0) << out;

  // Still version 1.
  std::tie(code, out) = Ctl({"get", "contract", "orders", "--history"});
  ASSERT_EQ(code, 0) << out;
  lines = absl::StrSplit(out, '\n', absl::SkipEmpty());
  EXPECT_EQ(lines.size(), 2u) << out;
}

}  // namespace
}  // namespace wharf::testing