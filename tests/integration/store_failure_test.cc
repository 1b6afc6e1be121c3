// wharfd under fsync / write errors of its staging store (test-only WHARF_FAULT_FS installs the
// fault-injection file system): producers stream, a WAL sync (or append) fails, wharfd must exit
// with code 4 ("store write failed; restart") instead of acknowledging anything it could not
// make durable. Restarted without the fault, every acknowledged record reaches the file
// destination exactly once, and the producers' retries of the failed requests are deduplicated.

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/support/wharfd_process.h"

namespace wharf::testing {
namespace {

using namespace std::chrono_literals;

// `fault`: the WHARF_FAULT_FS spec. `expect_duplicates`: the failing WAL write reached the file
// (only its fsync failed), so the producers' retries after the restart must find it stored and
// be answered as duplicates.
void RunStoreFailure(const std::string& fault, bool expect_duplicates) {
  TempDir tmp;
  WharfdConfig config;
  config.data_dir = tmp.path() + "/data";
  config.out_dir = tmp.path() + "/out";
  config.durability = "sync";
  // No batch commits before the failure (they also sync the WAL): the failing WAL write is
  // then a group commit of produce requests, whose producers must not get an ack.
  config.linger = "1h";
  config.max_records = 1000000;
  config.env = {"WHARF_FAULT_FS=" + fault};
  WharfdProcess wharfd(config);
  ASSERT_TRUE(wharfd.Start().ok()) << wharfd.Log();

  ProducerLoadOptions lo;
  lo.target = wharfd.target();
  lo.producers = 4;
  lo.batch = 50;
  lo.pause = 5ms;
  lo.flush_timeout = 120s;
  ProducerLoad load(lo);
  load.Start();

  // The fault hits after a few hundred WAL writes; wharfd must notice within its 1 s poll and
  // exit with 4, not hang, not abort.
  ASSERT_TRUE(WaitFor([&] { return wharfd.CheckExited(); }, 60s))
      << "wharfd did not exit after the injected store failure\n"
      << wharfd.Log();
  const int ws = wharfd.exit_status();
  ASSERT_TRUE(WIFEXITED(ws)) << "wharfd died of signal " << (WIFSIGNALED(ws) ? WTERMSIG(ws) : 0)
                             << "\n"
                             << wharfd.Log();
  EXPECT_EQ(WEXITSTATUS(ws), 4) << wharfd.Log();
  const std::string log = wharfd.Log();
  const size_t at = log.find("staging store write failed");
  ASSERT_NE(at, std::string::npos) << log;
  const std::string failure_line = log.substr(at, log.find('\n', at) - at);
  const size_t acked_before = load.acked_count();
  EXPECT_GT(acked_before, 0u) << "nothing was acknowledged before the failure";

  // systemd restarts it (Restart=on-failure); here: the same config without the fault.
  wharfd.mutable_config().env.clear();
  wharfd.mutable_config().linger = "20ms";
  wharfd.mutable_config().max_records = 1000;
  ASSERT_TRUE(wharfd.Start(60s).ok()) << wharfd.Log();
  std::this_thread::sleep_for(500ms);
  load.Stop();  // every producer retries until all its records are acknowledged
  EXPECT_EQ(load.failed(), 0u);
  EXPECT_EQ(load.acked_count(), load.sent_count());

  ASSERT_TRUE(WaitFor([&] { return AllDelivered(wharfd.control()); }, 120s))
      << "backlog did not drain";
  std::vector<std::string> acked, delivered;
  for (const auto& [where, payload] : load.acked()) acked.push_back(payload);
  for (const auto& f : ReadDestination(config.out_dir, "orders")) {
    for (const auto& line : f.lines) delivered.push_back(line);
  }
  const ExactlyOnceCounts counts = CompareExactlyOnce(acked, delivered);
  std::printf(
      "store failure (%s): acked before exit %zu, %s, retries answered as duplicates %lu\n"
      "  wharfd logged: %s\n",
      fault.c_str(), acked_before, counts.ToString().c_str(),
      static_cast<unsigned long>(load.duplicate_acks()), failure_line.c_str());
  EXPECT_TRUE(counts.ok()) << counts.ToString();
  if (expect_duplicates) {
    EXPECT_GT(load.duplicate_acks(), 0u)
        << "the failed group commit reached the WAL; its retry must be a duplicate";
  }
  auto code = wharfd.Terminate(30s);
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
}

TEST(StoreFailureTest, WalSyncErrorExitsWithCode4AndRestartLosesNothing) {
  RunStoreFailure("sync_error_after=150,wal_only", /*expect_duplicates=*/true);
}

TEST(StoreFailureTest, WalWriteErrorExitsWithCode4AndRestartLosesNothing) {
  RunStoreFailure("write_error_after=150,wal_only", /*expect_duplicates=*/false);
}

TEST(StoreFailureTest, MalformedFaultSpecIsAConfigurationError) {
  TempDir tmp;
  WharfdConfig config;
  config.data_dir = tmp.path() + "/data";
  config.out_dir = tmp.path() + "/out";
  config.env = {"WHARF_FAULT_FS=sync_error_after=soon"};
  WharfdProcess wharfd(config);
  absl::Status st = wharfd.Start(10s);
  ASSERT_FALSE(st.ok());
  // Start() reaps a child that exits during start-up and reports its wait status: exit code 2.
  EXPECT_NE(std::string(st.message()).find(absl::StrCat("(status ", 2 << 8, ")")),
            std::string::npos)
      << st;
  EXPECT_NE(wharfd.Log().find("WHARF_FAULT_FS"), std::string::npos) << wharfd.Log();
}

}  // namespace
}  // namespace wharf::testing
