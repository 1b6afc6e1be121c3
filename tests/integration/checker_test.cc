// Tests of the reliability checker itself (tests/support/checker.h): a checker that cannot see a
// lost, duplicated, unexpected or misplaced record would make every crash test pass vacuously.
// The last tests run it against a real wharfd quarantine and a real PostgreSQL table.

#include "tests/support/checker.h"

#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/support/postgres_server.h"
#include "tests/support/wharfd_process.h"

namespace wharf::testing {
namespace {

using namespace std::chrono_literals;

client::SendResult Acked(const std::vector<std::pair<uint32_t, uint64_t>>& positions) {
  client::SendResult r;
  for (const auto& [partition, offset] : positions) {
    wharf::v1::RecordAck ack;
    ack.set_partition(partition);
    ack.set_offset(offset);
    r.acks.push_back(ack);
  }
  return r;
}

client::SendResult WithStatus(absl::Status status) {
  client::SendResult r;
  r.status = std::move(status);
  return r;
}

FoundRecord At(uint64_t id, uint32_t partition, uint64_t offset) {
  return FoundRecord{id, std::make_pair(partition, offset)};
}

TEST(Checker, ClassifiesSendResults) {
  EXPECT_EQ(ClassifySendResult(Acked({{0, 1}})), RequestOutcome::kAcked);
  for (const absl::Status& definite :
       {absl::InvalidArgumentError("x"), absl::NotFoundError("x"), absl::PermissionDeniedError("x"),
        absl::FailedPreconditionError("out of order"), absl::OutOfRangeError("x"),
        absl::AlreadyExistsError("x")}) {
    EXPECT_EQ(ClassifySendResult(WithStatus(definite)), RequestOutcome::kFailed) << definite;
  }
  // Whatever does not say "refused" may have been stored: the producer was closed, its retry
  // timeout expired, the stream broke.
  for (const absl::Status& maybe :
       {absl::CancelledError("closed"), absl::DeadlineExceededError("gave up"),
        absl::UnavailableError("stream broken"), absl::AbortedError("x"), absl::UnknownError("x"),
        absl::InternalError("x"), absl::ResourceExhaustedError("x"), absl::DataLossError("x"),
        absl::UnimplementedError("x"), absl::UnauthenticatedError("x")}) {
    EXPECT_EQ(ClassifySendResult(WithStatus(maybe)), RequestOutcome::kUnknown) << maybe;
  }
  EXPECT_STREQ(RequestOutcomeName(RequestOutcome::kAcked), "acked");
  EXPECT_STREQ(RequestOutcomeName(RequestOutcome::kFailed), "failed");
  EXPECT_STREQ(RequestOutcomeName(RequestOutcome::kUnknown), "unknown");
}

TEST(Checker, HistoryKeepsTheStrongestOutcomeAndCountsBrokenAcks) {
  History h;
  h.Log({1, 2}, WithStatus(absl::InvalidArgumentError("refused")));
  h.Log({2, 3}, WithStatus(absl::DeadlineExceededError("gave up")));
  h.Log({3, 4}, Acked({{0, 10}, {0, 11}}));
  h.Log({4}, WithStatus(absl::CancelledError("closed")));  // a later retry's outcome
  h.Log({0, 5}, Acked({{1, 0}, {1, 1}}));                  // 0: a record without id
  h.LogRefused({6});
  const auto outcomes = h.Outcomes();
  ASSERT_EQ(outcomes.size(), 6u);
  EXPECT_EQ(outcomes.at(1), RequestOutcome::kFailed);
  EXPECT_EQ(outcomes.at(2), RequestOutcome::kUnknown);  // unknown beats failed
  EXPECT_EQ(outcomes.at(3), RequestOutcome::kAcked);    // acked beats unknown
  EXPECT_EQ(outcomes.at(4), RequestOutcome::kAcked);
  EXPECT_EQ(outcomes.at(5), RequestOutcome::kAcked);
  EXPECT_EQ(outcomes.at(6), RequestOutcome::kFailed);
  EXPECT_EQ(h.AckedPositions().at(3), std::make_pair(0u, uint64_t{10}));
  EXPECT_EQ(h.AckedPositions().at(5), std::make_pair(1u, uint64_t{1}));
  EXPECT_EQ(h.requests(), 6u);
  EXPECT_EQ(h.untracked(), 1u);
  EXPECT_EQ(h.conflicting_acks(), 0u);

  // Two records acked at one position, and an OK answer with fewer acks than records.
  h.Log({7}, Acked({{0, 10}}));
  h.Log({8, 9}, Acked({{2, 0}}));
  EXPECT_EQ(h.conflicting_acks(), 2u);
  EXPECT_EQ(h.Outcomes().at(8), RequestOutcome::kUnknown);
  EXPECT_EQ(h.Outcomes().at(9), RequestOutcome::kUnknown);
}

TEST(Checker, FindsEveryClass) {
  History h;
  h.Log({1, 2, 3, 4, 5, 10}, Acked({{0, 0}, {0, 1}, {0, 2}, {0, 3}, {0, 4}, {0, 5}}));
  h.Log({6}, WithStatus(absl::InvalidArgumentError("refused")));
  h.Log({7, 8}, WithStatus(absl::DeadlineExceededError("gave up")));
  const std::vector<FoundRecord> delivered = {
      At(1, 0, 0),  At(2, 0, 1), At(3, 0, 2), At(3, 0, 2),  // duplicated
      At(4, 1, 3),                                          // misplaced
      At(7, 0, 9),                                          // recovered
      At(6, 0, 8),   // its request failed definitely: unexpected
      At(99, 0, 7),  // never sent: unexpected
      At(0, 0, 6),   // no id: unexpected
  };
  const std::vector<FoundRecord> quarantined = {At(5, 0, 4)};  // 10 is lost, 8 never arrived
  const CheckerCounts c = Check(h, delivered, quarantined);
  EXPECT_EQ(c.acked, 6u);
  EXPECT_EQ(c.failed, 1u);
  EXPECT_EQ(c.unknown, 2u);
  EXPECT_EQ(c.delivered, 9u);
  EXPECT_EQ(c.quarantined, 1u);
  EXPECT_EQ(c.lost, 1u);
  EXPECT_EQ(c.duplicated, 1u);
  EXPECT_EQ(c.unexpected, 3u);
  EXPECT_EQ(c.recovered, 1u);
  EXPECT_EQ(c.misplaced, 1u);
  EXPECT_FALSE(c.ok());
  EXPECT_EQ(c.ToString(),
            "checker: acked=6 failed=1 unknown=2 delivered=9 lost=1 duplicated=1 unexpected=3 "
            "recovered=1 quarantined=1 misplaced=1");
}

TEST(Checker, CleanRunIsOk) {
  History h;
  h.Log({1, 2}, Acked({{0, 0}, {1, 0}}));
  h.Log({3}, WithStatus(absl::UnavailableError("broken")));
  // Positions are checked only where the destination tells them.
  const CheckerCounts c = Check(h, {At(1, 0, 0), FoundRecord{2, std::nullopt}}, {});
  EXPECT_TRUE(c.ok()) << c.ToString();
  EXPECT_EQ(c.lost, 0u);
  EXPECT_EQ(c.recovered, 0u);
  EXPECT_EQ(c.unknown, 1u);
}

TEST(Checker, QuarantineCountsAsKeptButNotTwice) {
  History h;
  h.Log({1, 2}, Acked({{0, 0}, {0, 1}}));
  const CheckerCounts c = Check(h, {At(1, 0, 0)}, {At(1, 0, 0), At(2, 0, 1), At(2, 0, 1)});
  EXPECT_EQ(c.lost, 0u);
  EXPECT_EQ(c.duplicated, 2u) << "delivered and quarantined, and quarantined twice";
}

TEST(Checker, AtLeastOnceToleratesOnlyDuplicates) {
  History h;
  h.Log({1, 2}, Acked({{0, 0}, {0, 1}}));
  const std::vector<FoundRecord> copies = {
      FoundRecord{1, std::nullopt}, FoundRecord{1, std::nullopt}, FoundRecord{2, std::nullopt}};
  const CheckerCounts once = Check(h, copies, {});
  EXPECT_FALSE(once.ok());
  const CheckerCounts at_least = Check(h, copies, {}, CheckOptions{.exactly_once = false});
  EXPECT_EQ(at_least.duplicated, 1u);
  EXPECT_TRUE(at_least.ok());
  EXPECT_NE(at_least.ToString().find("(at least once)"), std::string::npos);
  const CheckerCounts lossy =
      Check(h, {FoundRecord{1, std::nullopt}}, {}, CheckOptions{.exactly_once = false});
  EXPECT_FALSE(lossy.ok()) << "a loss is a loss at any destination";
}

TEST(Checker, ExpectCheckerOkFailsOnEveryViolationAndWritesTheLog) {
  TempDir tmp;
  const std::string log = tmp.path() + "/checker.log";
  // Restored at the end: tests/run.sh may have set it for the whole run.
  const char* outer = std::getenv("WHARF_CHECKER_LOG");
  const std::optional<std::string> saved =
      outer != nullptr ? std::optional<std::string>(outer) : std::nullopt;
  ASSERT_EQ(setenv("WHARF_CHECKER_LOG", log.c_str(), 1), 0);
  CheckerCounts good;
  good.acked = good.delivered = 3;
  ExpectCheckerOk(good, "good");
  for (size_t CheckerCounts::*field :
       {&CheckerCounts::lost, &CheckerCounts::duplicated, &CheckerCounts::unexpected,
        &CheckerCounts::misplaced, &CheckerCounts::conflicting_acks}) {
    CheckerCounts bad = good;
    bad.*field = 1;
    EXPECT_NONFATAL_FAILURE(ExpectCheckerOk(bad, "bad"), "bad");
  }
  CheckerCounts dup = good;
  dup.duplicated = 1;
  dup.exactly_once = false;
  ExpectCheckerOk(dup, "at least once");  // no failure
  if (saved.has_value()) {
    setenv("WHARF_CHECKER_LOG", saved->c_str(), 1);
  } else {
    unsetenv("WHARF_CHECKER_LOG");
  }
  const std::string text = ReadFile(log);
  EXPECT_NE(text.find("checker: acked=3 failed=0 unknown=0 delivered=3 lost=0 duplicated=0 "
                      "unexpected=0 recovered=0 quarantined=0 misplaced=0 [good]\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("conflicting_acks=1 [bad]\n"), std::string::npos) << text;
  EXPECT_NE(text.find("(at least once) [at least once]\n"), std::string::npos) << text;
}

TEST(Checker, ReadsIdsAndPositionsAndRejectsMalformedInput) {
  EXPECT_EQ(LoadPayloadId(LoadPayload(2, 41)), 2000000042u);
  for (const std::string& bad :
       {std::string(), std::string("{}"), std::string("not json"), std::string(R"({"id":)"),
        std::string(R"({"id":-5,"x":1})"), std::string(R"({"no_id":1})"),
        std::string(R"( {"id":5,"x":1})"), std::string(R"({"id":5})"),
        std::string(R"({"id":+5,"x":1})"), std::string(R"({"id":99999999999999999999,"x":1})")}) {
    EXPECT_EQ(LoadPayloadId(bad), 0u) << bad;
  }
  const auto found = PayloadRecords({LoadPayload(0, 0), "garbage"});
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(found[0].id, 1u);
  EXPECT_EQ(found[1].id, 0u);
  EXPECT_FALSE(found[0].position.has_value());

  TempDir tmp;
  WriteFile(tmp.path() + "/orders-p0001-00000000000000000007-00000000000000000008.jsonl",
            LoadPayload(0, 3) + "\nnot a load record\n");
  WriteFile(tmp.path() + "/orders-p0001-garbage.jsonl", LoadPayload(0, 4) + "\n");
  WriteFile(tmp.path() + "/other-p0000-00000000000000000000-00000000000000000000.jsonl",
            LoadPayload(0, 5) + "\n");
  WriteFile(tmp.path() + "/.orders-p0000-00000000000000000000-00000000000000000000.jsonl.x.tmp",
            LoadPayload(0, 6) + "\n");
  const auto files = FileDestinationRecords(tmp.path(), "orders");
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[0].id, 4u);
  EXPECT_EQ(files[0].position, std::make_pair(1u, uint64_t{7}));
  EXPECT_EQ(files[1].id, 0u);
  EXPECT_EQ(files[1].position, std::make_pair(1u, uint64_t{8}));
  // A file with fewer lines than its range (quarantined records) tells no line's offset.
  WriteFile(tmp.path() + "/orders-p0002-00000000000000000000-00000000000000000002.jsonl",
            LoadPayload(0, 7) + "\n" + LoadPayload(0, 8) + "\n");
  const auto short_file = FileDestinationRecords(tmp.path(), "orders");
  ASSERT_EQ(short_file.size(), 4u);
  EXPECT_EQ(short_file[2].id, 8u);
  EXPECT_FALSE(short_file[2].position.has_value());
  EXPECT_FALSE(short_file[3].position.has_value());
  EXPECT_TRUE(FileDestinationRecords(tmp.path() + "/missing", "orders").empty());
}

TEST(Checker, PostgresRowsWithoutIdOrPositionAreUnattributable) {
  PostgresServer pg;
  ASSERT_TRUE(pg.Start().ok());
  ASSERT_TRUE(
      pg.Query("CREATE TABLE t (id bigint, src_partition integer, src_offset bigint)").ok());
  ASSERT_TRUE(pg.Query("INSERT INTO t VALUES (5, 1, 2), (NULL, 0, 3), (6, NULL, NULL)").ok());
  auto rows = PostgresRecords(pg, "t");
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 3u);
  std::map<uint64_t, std::optional<std::pair<uint32_t, uint64_t>>> by_id;
  for (const auto& r : *rows) by_id[r.id] = r.position;
  EXPECT_EQ(by_id.at(5), std::make_pair(1u, uint64_t{2}));
  EXPECT_EQ(by_id.at(0), std::make_pair(0u, uint64_t{3}));
  EXPECT_FALSE(by_id.at(6).has_value());
  EXPECT_FALSE(PostgresRecords(pg, "missing_table").ok());
  pg.Stop();
}

TEST(Checker, AckedRecordsInQuarantineAreNotLost) {
  TempDir tmp;
  WharfdConfig config;
  config.data_dir = tmp.path() + "/data";
  config.out_dir = tmp.path() + "/out";
  config.linger = "20ms";
  WharfdProcess wharfd(config);
  ASSERT_TRUE(wharfd.Start().ok());
  // Records 3 and 7 carry an id but are not JSON: validation quarantines them (PARSE_ERROR).
  ProducerLoadOptions lo;
  lo.target = wharfd.target();
  lo.producers = 1;
  lo.records_per_producer = 10;
  lo.batch = 5;
  lo.pause = 0ms;
  lo.payload = [](int p, int64_t i) {
    if (i == 3 || i == 7) return absl::StrCat(R"({"id":)", LoadPayloadId(LoadPayload(p, i)), ",");
    return LoadPayload(p, i);
  };
  ProducerLoad load(lo);
  load.Start();
  load.Stop();
  ASSERT_TRUE(WaitFor([&] { return AllDelivered(wharfd.control()); }, 60s));
  auto quarantined = QuarantinedRecords(wharfd.control(), "orders");
  ASSERT_TRUE(quarantined.ok()) << quarantined.status();
  ASSERT_EQ(quarantined->size(), 2u);
  const CheckerCounts c =
      Check(load.history(), FileDestinationRecords(config.out_dir, "orders"), *quarantined);
  ExpectCheckerOk(c, "checker self-test: quarantine");
  EXPECT_EQ(c.acked, 10u);
  EXPECT_EQ(c.delivered, 8u);
  EXPECT_EQ(c.quarantined, 2u);
  // Without the quarantine the two would be lost: the checker must see that.
  EXPECT_EQ(Check(load.history(), FileDestinationRecords(config.out_dir, "orders"), {}).lost, 2u);
  EXPECT_FALSE(QuarantinedRecords(wharfd.control(), "no_such_dataset").ok());
  auto code = wharfd.Terminate();
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0);
}

}  // namespace
}  // namespace wharf::testing
