// Crash tests: producers stream continuously while wharfd is killed with SIGKILL (at random
// moments, and at failpoints inside delivery and retention) and restarted. At the end the shared
// checker (tests/support/checker.h) compares every request's outcome with the file destination
// and the quarantine: no acknowledged record lost, none delivered twice or away from its acked
// position, nothing delivered that was never sent. WHARF_EXTENDED=1 runs many more kills.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/support/checker.h"
#include "tests/support/wharfd_process.h"

namespace wharf::testing {
namespace {

using namespace std::chrono_literals;

// How wharfd is taken down between restarts.
enum class Stop { kKill9, kSigterm };

// The failpoints a campaign cycles through (storage/failpoint.h): right after a destination
// committed a batch and before the delivery cursor moved, and inside a retention pass after its
// batch delete and after its raw delete.
const std::vector<std::string> kCampaignFailpoints = {
    "pipeline.after_deliver_before_cursor",
    "pipeline.retention_after_delete_batches",
    "pipeline.retention_after_delete_raw",
};

struct CrashRun {
  std::string durability = "sync";
  int kills = 10;
  Stop how = Stop::kKill9;
  // Every second kill is made by the next of these failpoints (armed at a random 1..5th hit)
  // instead of a timer. Empty: timers only.
  std::vector<std::string> failpoints;
  std::string retention_raw = "24h";
  std::string retention_interval = "10s";
  // ProducerLoadOptions::retry_timeout: non-zero lets requests that outlast a restart end with an
  // unknown outcome, which the checker then finds recovered (or not) at the destination.
  std::chrono::milliseconds retry_timeout{0};
  // Every invalid_every-th record of a producer carries its id but is not JSON, so validation
  // quarantines it: quarantine entries must survive the kills too. 0: none.
  int invalid_every = 0;
};

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

// Checks the shape of the file destination's output: each file holds its offset range (less the
// quarantined records when there are) and files of a partition never overlap (a redelivered
// batch must reuse its file).
void ExpectWellFormedFiles(const std::string& dir, bool with_quarantine) {
  std::map<uint32_t, uint64_t> next_offset;
  for (const auto& f : ReadDestination(dir, "orders")) {
    ASSERT_GE(f.last_offset, f.first_offset) << f.name;
    if (with_quarantine) {
      EXPECT_LE(f.lines.size(), f.last_offset - f.first_offset + 1) << f.name;
    } else {
      EXPECT_EQ(f.lines.size(), f.last_offset - f.first_offset + 1) << f.name;
    }
    EXPECT_GE(f.first_offset, next_offset[f.partition]) << f.name << " overlaps";
    next_offset[f.partition] = f.last_offset + 1;
  }
}

void RunCrashTest(const std::string& name, const CrashRun& run) {
  const auto started = std::chrono::steady_clock::now();
  TempDir tmp;
  WharfdConfig config;
  config.data_dir = tmp.path() + "/data";
  config.out_dir = tmp.path() + "/out";
  config.durability = run.durability;
  config.linger = "20ms";
  config.max_records = 500;
  config.retention_raw = run.retention_raw;
  config.retention_interval = run.retention_interval;
  WharfdProcess wharfd(config);
  ASSERT_TRUE(wharfd.Start().ok());

  // Sustained load while wharfd is being killed: about 5,000 records/s per producer, a third of
  // them keyed (keyed records keep their partition across retries).
  ProducerLoadOptions lo;
  lo.target = wharfd.target();
  lo.producers = 4;
  lo.batch = 100;
  lo.pause = 20ms;
  lo.payload_bytes = 120;
  lo.key = [](int, int64_t i) { return i % 3 == 0 ? absl::StrCat("key-", i % 17) : std::string(); };
  lo.retry_timeout = run.retry_timeout;
  if (run.invalid_every > 0) {
    lo.payload = [every = run.invalid_every, bytes = lo.payload_bytes](int p, int64_t i) {
      if (i % every != every / 2) return LoadPayload(p, i, bytes);
      return absl::StrCat(R"({"id":)", LoadPayloadId(LoadPayload(p, i)), R"(,"not json)");
    };
  }
  ProducerLoad load(lo);
  load.Start();

  std::mt19937 rng(static_cast<unsigned>(std::random_device{}()));
  std::uniform_int_distribution<int> run_ms(200, 1200);
  std::uniform_int_distribution<int> down_ms(0, 200);
  std::uniform_int_distribution<int> nth_hit(1, 5);
  int failpoint_kills = 0, failpoints_fired = 0;
  // Each round: wharfd runs (restarted, from the second round on) until it is killed.
  for (int k = 0; k < run.kills; ++k) {
    const bool by_failpoint = !run.failpoints.empty() && k % 2 == 1;
    std::string fp;
    if (by_failpoint) {
      fp = run.failpoints[static_cast<size_t>(failpoint_kills++) % run.failpoints.size()];
      wharfd.mutable_config().env = {absl::StrCat("WHARF_FAILPOINTS=", fp, ":", nth_hit(rng))};
    }
    if (k > 0) {
      absl::Status st = wharfd.Start(60s);
      wharfd.mutable_config().env.clear();
      // An armed wharfd may reach its failpoint before it answered its first GetStatus.
      const bool fired_early = !st.ok() && by_failpoint && !wharfd.running();
      ASSERT_TRUE(st.ok() || fired_early) << "restart " << k << " failed: " << st;
    }
    if (by_failpoint) {
      // wharfd kills itself at the failpoint's n-th hit.
      if (WaitFor([&] { return wharfd.CheckExited(); }, 20s)) {
        // Anything but the failpoint's SIGKILL (an abort, a failed check) is a bug.
        EXPECT_TRUE(WIFSIGNALED(wharfd.exit_status()) && WTERMSIG(wharfd.exit_status()) == SIGKILL)
            << "wharfd ended with wait status " << wharfd.exit_status() << " instead of the " << fp
            << " failpoint's SIGKILL; log:\n"
            << wharfd.Log();
        ++failpoints_fired;
      } else {
        ADD_FAILURE() << "failpoint " << fp << " did not fire within 20 s";
        wharfd.Kill9();
      }
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(run_ms(rng)));
      if (run.how == Stop::kKill9) {
        wharfd.Kill9();
      } else {
        auto code = wharfd.Terminate(30s);
        ASSERT_TRUE(code.ok()) << code.status();
        ASSERT_EQ(*code, 0) << "graceful stop under load must exit 0";
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(down_ms(rng)));
  }
  ASSERT_TRUE(wharfd.Start(60s).ok());
  std::this_thread::sleep_for(500ms);
  load.Stop();

  ASSERT_TRUE(WaitFor([&] { return AllDelivered(wharfd.control()); }, 180s))
      << "backlog did not drain";
  ExpectWellFormedFiles(config.out_dir, run.invalid_every > 0);
  auto quarantined = QuarantinedRecords(wharfd.control(), "orders");
  ASSERT_TRUE(quarantined.ok()) << quarantined.status();
  const CheckerCounts c =
      Check(load.history(), FileDestinationRecords(config.out_dir, "orders"), *quarantined);
  std::printf("%s: %d restarts (%d at failpoints, %d fired), %zu requests, %.1f s\n", name.c_str(),
              run.kills, failpoint_kills, failpoints_fired, load.history().requests(),
              Seconds(started));
  ExpectCheckerOk(c, name);
  EXPECT_EQ(c.failed, 0u) << "wharfd refused no request";
  if (run.invalid_every == 0) {
    EXPECT_EQ(c.quarantined, 0u) << "every record is valid JSON";
  } else {
    EXPECT_GT(c.quarantined, 0u) << "the invalid records are in quarantine";
  }
  EXPECT_EQ(c.acked + c.unknown, load.sent_count()) << "every sent record has an outcome";
  if (run.retry_timeout.count() == 0) {
    EXPECT_EQ(c.unknown, 0u) << "producers that retry forever learn every outcome";
  }
  // Kept = acked + recovered: with no loss and no duplicate, nothing else can be there.
  EXPECT_EQ(c.delivered + c.quarantined, c.acked + c.recovered);
  auto code = wharfd.Terminate();
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0);
}

TEST(Crash, KillNineCampaignSyncDurability) {
  // Random kills alternate with kills at failpoints inside delivery and inside retention, with
  // retention deleting right behind delivery so that its deletes run while wharfd is killed.
  // Producers give up on requests after 3 s, so some outcomes are unknown to them; one record in
  // 500 is not JSON and goes to quarantine.
  CrashRun run;
  run.kills = Extended() ? 200 : 20;
  run.failpoints = kCampaignFailpoints;
  run.retention_raw = "0s";
  run.retention_interval = "200ms";
  run.retry_timeout = 3s;
  run.invalid_every = 500;
  RunCrashTest(absl::StrCat("crash campaign sync, ", run.kills, " kill -9"), run);
}

TEST(Crash, GracefulRestartsUnderLoadLoseAndDuplicateNothing) {
  // SIGTERM drains: queued requests are committed and answered, later ones get UNAVAILABLE and
  // are retried by the producers against the restarted daemon.
  CrashRun run;
  run.kills = Extended() ? 30 : 3;
  run.how = Stop::kSigterm;
  RunCrashTest(absl::StrCat("crash sigterm, ", run.kills, " restarts"), run);
}

TEST(Crash, KillNineUnderLoadAsyncDurability) {
  // async mode survives a process crash (the WAL write is in the page cache), not power loss.
  CrashRun run;
  run.durability = "async";
  run.kills = Extended() ? 50 : 5;
  run.failpoints = kCampaignFailpoints;
  run.retention_raw = "1s";
  run.retention_interval = "200ms";
  RunCrashTest(absl::StrCat("crash async, ", run.kills, " kill -9"), run);
}

}  // namespace
}  // namespace wharf::testing
