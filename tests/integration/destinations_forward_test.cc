// Integration test of the wharf (forward) destination: an edge wharfd forwards its dataset to a
// central wharfd, while both are killed with SIGKILL at random moments and restarted. At the end
// the central's file destination holds every record the edge acknowledged, exactly once.

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
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

TEST(DestinationsForward, EdgeToCentralWithKills) {
  TempDir tmp;
  WharfdConfig central_config;
  central_config.data_dir = tmp.path() + "/central";
  central_config.out_dir = tmp.path() + "/central-out";
  central_config.linger = "20ms";
  central_config.max_records = 500;
  WharfdProcess central(central_config);

  WharfdConfig edge_config;
  edge_config.data_dir = tmp.path() + "/edge";
  edge_config.out_dir = tmp.path() + "/edge-out";
  edge_config.linger = "20ms";
  edge_config.max_records = 500;
  edge_config.extra_top = "node_id: edge-1\n";
  edge_config.file_destination = false;
  edge_config.extra_destinations =
      absl::StrCat("      - name: central\n", "        type: wharf\n",
                   "        target: ", central.target(), "\n", "        dataset: orders\n",
                   "        retry: {initial_backoff: 50ms, max_backoff: 1s, down_after: 5, "
                   "probe_interval: 500ms}\n");
  WharfdProcess edge(edge_config);
  ASSERT_TRUE(central.Start().ok());
  ASSERT_TRUE(edge.Start().ok());

  ProducerLoadOptions lo;
  lo.target = edge.target();
  lo.producers = 3;
  lo.batch = 100;
  lo.pause = 20ms;
  ProducerLoad load(lo);
  load.Start();

  const int kills = Extended() ? 40 : 6;
  std::mt19937 rng(static_cast<unsigned>(std::random_device{}()));
  std::uniform_int_distribution<int> run_ms(300, 1500);
  std::uniform_int_distribution<int> down_ms(0, 300);
  int edge_kills = 0, central_kills = 0;
  for (int k = 0; k < kills; ++k) {
    std::this_thread::sleep_for(std::chrono::milliseconds(run_ms(rng)));
    WharfdProcess& victim = (k % 2 == 0) ? edge : central;
    (k % 2 == 0 ? edge_kills : central_kills)++;
    victim.Kill9();
    std::this_thread::sleep_for(std::chrono::milliseconds(down_ms(rng)));
    absl::Status st = victim.Start(60s);
    ASSERT_TRUE(st.ok()) << "restart " << k << " failed: " << st;
  }
  std::this_thread::sleep_for(500ms);
  load.Stop();
  ASSERT_EQ(load.failed(), 0u);
  EXPECT_EQ(load.acked_count(), load.sent_count()) << "every sent record is acked in the end";

  ASSERT_TRUE(WaitFor([&] { return AllDelivered(edge.control()); }, 180s))
      << "the edge's backlog did not drain";
  ASSERT_TRUE(WaitFor([&] { return AllDelivered(central.control()); }, 120s))
      << "the central's backlog did not drain";

  // The central's file names carry the central's positions, not the edge's acked ones: the
  // records are compared by id only. Records quarantined on either node count as kept.
  std::vector<std::string> delivered;
  for (const auto& f : ReadDestination(central_config.out_dir, "orders")) {
    delivered.insert(delivered.end(), f.lines.begin(), f.lines.end());
  }
  auto edge_quarantine = QuarantinedRecords(edge.control(), "orders");
  auto central_quarantine = QuarantinedRecords(central.control(), "orders");
  ASSERT_TRUE(edge_quarantine.ok()) << edge_quarantine.status();
  ASSERT_TRUE(central_quarantine.ok()) << central_quarantine.status();
  std::vector<FoundRecord> quarantined = *edge_quarantine;
  quarantined.insert(quarantined.end(), central_quarantine->begin(), central_quarantine->end());
  const CheckerCounts c = Check(load.history(), PayloadRecords(delivered), quarantined);
  ExpectCheckerOk(c, absl::StrCat("edge -> central, ", edge_kills, " edge kills, ", central_kills,
                                  " central kills"));
  EXPECT_EQ(c.unknown, 0u);
  EXPECT_EQ(c.delivered, c.acked);

  auto d = FindDestinationStatus(edge.control(), "orders", "central");
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->type(), "wharf");
  EXPECT_EQ(d->records_delivered(), c.acked);
  auto edge_code = edge.Terminate();
  ASSERT_TRUE(edge_code.ok());
  EXPECT_EQ(*edge_code, 0);
  auto central_code = central.Terminate();
  ASSERT_TRUE(central_code.ok());
  EXPECT_EQ(*central_code, 0);
}

}  // namespace
}  // namespace wharf::testing
