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

void RunStoreFailure(const std::string& fault) {
  TempDir tmp;
  WharfdConfig config;
  config.data_dir = tmp.path() + "/data";
  config.out_dir = tmp.path() + "/out";
  config.durability = "sync";
  config.linger = "20ms";
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
  EXPECT_NE(log.find("staging store write failed"), std::string::npos) << log;
  const size_t acked_before = load.acked_count();
  EXPECT_GT(acked_before, 0u) << "nothing was acknowledged before the failure";

  // systemd restarts it (Restart=on-failure); here: the same config without the fault.
  wharfd.mutable_config().env.clear();
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
  std::printf("store failure (%s): acked before exit %zu, %s, retries answered as duplicates %lu\n",
              fault.c_str(), acked_before, counts.ToString().c_str(),
              static_cast<unsigned long>(load.duplicate_acks()));
  EXPECT_TRUE(counts.ok()) << counts.ToString();
  auto code = wharfd.Terminate(30s);
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
}

TEST(StoreFailureTest, WalSyncErrorExitsWithCode4AndRestartLosesNothing) {
  RunStoreFailure("sync_error_after=150,wal_only");
}

TEST(StoreFailureTest, WalWriteErrorExitsWithCode4AndRestartLosesNothing) {
  RunStoreFailure("write_error_after=150,wal_only");
}

TEST(StoreFailureTest, MalformedFaultSpecIsAConfigurationError) {
  TempDir tmp;
  WharfdConfig config;
  config.data_dir = tmp.path() + "/data";
  config.out_dir = tmp.path() + "/out";
  config.env = {"WHARF_FAULT_FS=sync_error_after=soon"};
  WharfdProcess wharfd(config);
  EXPECT_FALSE(wharfd.Start(10s).ok());
  ASSERT_TRUE(WaitFor([&] { return wharfd.CheckExited(); }, 10s));
  EXPECT_TRUE(WIFEXITED(wharfd.exit_status()));
  EXPECT_EQ(WEXITSTATUS(wharfd.exit_status()), 2) << wharfd.Log();
}

}  // namespace
}  // namespace wharf::testing
