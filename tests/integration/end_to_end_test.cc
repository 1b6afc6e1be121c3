// End-to-end tests against a real wharfd process on loopback: ingest, delivery to the file
// destination exactly once and in order, deduplication across restarts, bad input, quotas,
// metrics and graceful shutdown.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "client/channel.h"
#include "client/producer.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "rapidjson/document.h"
#include "tests/support/wharfd_process.h"
#include "wharf/v1/ingest.grpc.pb.h"

namespace wharf::testing {
namespace {

using namespace std::chrono_literals;

struct Fixture {
  TempDir tmp;
  WharfdConfig config;
  std::unique_ptr<WharfdProcess> wharfd;

  explicit Fixture(std::function<void(WharfdConfig&)> tweak = nullptr) {
    config.data_dir = tmp.path() + "/data";
    config.out_dir = tmp.path() + "/out";
    if (tweak) tweak(config);
    wharfd = std::make_unique<WharfdProcess>(config);
  }
};

std::string Payload(int producer, int i) {
  return absl::StrCat(R"({"producer":)", producer, R"(,"i":)", i, R"(,"user":"u)", i % 97,
                      R"(","amount":)", (i * 7) % 1000, R"(,"tags":["a","b"],"nested":{"k":"v"}})");
}

wharf::v1::Record MakeRecord(const std::string& payload, const std::string& key = "") {
  wharf::v1::Record r;
  r.set_payload(payload);
  r.set_key(key);
  return r;
}

// Acks by (partition, offset) -> payload, filled from producer callbacks.
struct AckLog {
  std::mutex mu;
  std::map<std::pair<uint32_t, uint64_t>, std::string> acked;
  std::atomic<uint64_t> failures{0};
};

void ProduceAll(const std::string& target, int producer_index, int records, int batch, AckLog* log,
                bool keyed) {
  client::ProducerOptions opts;
  opts.dataset = "orders";
  opts.max_inflight_requests = 16;
  auto producer = client::Producer::Create(client::CreateChannel(target), opts);
  ASSERT_TRUE(producer.ok()) << producer.status();
  for (int start = 0; start < records; start += batch) {
    std::vector<wharf::v1::Record> recs;
    auto payloads = std::make_shared<std::vector<std::string>>();
    for (int i = start; i < std::min(records, start + batch); ++i) {
      payloads->push_back(Payload(producer_index, i));
      recs.push_back(MakeRecord(payloads->back(), keyed ? absl::StrCat("k", i % 13) : ""));
    }
    absl::Status st =
        (*producer)->Send(std::move(recs), [log, payloads](const client::SendResult& r) {
          if (!r.status.ok()) {
            log->failures++;
            return;
          }
          std::lock_guard<std::mutex> lock(log->mu);
          for (size_t i = 0; i < r.acks.size(); ++i) {
            log->acked[{r.acks[i].partition(), r.acks[i].offset()}] = (*payloads)[i];
          }
        });
    ASSERT_TRUE(st.ok()) << st;
  }
  ASSERT_TRUE((*producer)->Flush(120s).ok());
  (*producer)->Close();
}

// Checks that the destination holds exactly the acked records, once each, at their acked
// (partition, offset), in offset order, byte-identical.
void ExpectDeliveredExactly(const std::string& out_dir,
                            const std::map<std::pair<uint32_t, uint64_t>, std::string>& acked) {
  auto files = ReadDestination(out_dir, "orders");
  std::map<std::pair<uint32_t, uint64_t>, std::string> delivered;
  std::map<uint32_t, uint64_t> next_offset;
  for (const auto& f : files) {
    ASSERT_EQ(f.lines.size(), f.last_offset - f.first_offset + 1)
        << f.name << ": a batch without quarantined records covers its whole offset range";
    EXPECT_GE(f.first_offset, next_offset[f.partition]) << f.name << " overlaps the previous file";
    next_offset[f.partition] = f.last_offset + 1;
    for (size_t i = 0; i < f.lines.size(); ++i) {
      auto [it, inserted] =
          delivered.emplace(std::make_pair(f.partition, f.first_offset + i), f.lines[i]);
      EXPECT_TRUE(inserted) << "offset delivered twice";
    }
  }
  EXPECT_EQ(delivered.size(), acked.size());
  size_t mismatches = 0;
  for (const auto& [pos, payload] : acked) {
    auto it = delivered.find(pos);
    if (it == delivered.end() || it->second != payload) ++mismatches;
  }
  EXPECT_EQ(mismatches, 0u) << "acked records missing or different at the destination";
  std::set<std::string> unique_lines;
  for (const auto& [pos, line] : delivered) unique_lines.insert(line);
  EXPECT_EQ(unique_lines.size(), delivered.size()) << "a record was delivered twice";
}

TEST(EndToEnd, FourProducers200kRecordsExactlyOnceInOrder) {
  Fixture fx;
  ASSERT_TRUE(fx.wharfd->Start().ok());
  AckLog log;
  std::vector<std::thread> threads;
  for (int p = 0; p < 4; ++p) {
    threads.emplace_back(
        [&, p] { ProduceAll(fx.wharfd->target(), p, 50000, 500, &log, p % 2 == 0); });
  }
  for (auto& t : threads) t.join();
  ASSERT_EQ(log.failures.load(), 0u);
  ASSERT_EQ(log.acked.size(), 200000u);
  ASSERT_TRUE(
      WaitFor([&] { return DeliveredRecords(fx.wharfd->control(), "orders") >= 200000; }, 120s))
      << "delivered " << DeliveredRecords(fx.wharfd->control(), "orders");
  ExpectDeliveredExactly(fx.config.out_dir, log.acked);

  // Same key, same partition.
  auto st = fx.wharfd->control().GetStatus({});
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->datasets(0).records_ingested(), 200000u);
  EXPECT_EQ(st->datasets(0).destinations(0).state(), wharf::v1::HEALTHY);
  EXPECT_EQ(st->datasets(0).destinations(0).backlog_records(), 0u);

  auto code = fx.wharfd->Terminate();
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0);
}

TEST(EndToEnd, SameKeySamePartition) {
  Fixture fx;
  ASSERT_TRUE(fx.wharfd->Start().ok());
  auto stub = wharf::v1::Ingest::NewStub(client::CreateChannel(fx.wharfd->target()));
  std::map<std::string, std::set<uint32_t>> partitions_of;
  for (int round = 0; round < 5; ++round) {
    wharf::v1::ProduceRequest req;
    req.set_dataset("orders");
    for (int i = 0; i < 40; ++i) {
      *req.add_records() = MakeRecord(Payload(0, i), absl::StrCat("key-", i % 8));
    }
    wharf::v1::ProduceResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->ProduceOne(&ctx, req, &resp).ok());
    ASSERT_EQ(resp.acks_size(), 40);
    for (int i = 0; i < 40; ++i) {
      partitions_of[absl::StrCat("key-", i % 8)].insert(resp.acks(i).partition());
    }
  }
  std::set<uint32_t> used;
  for (const auto& [key, parts] : partitions_of) {
    EXPECT_EQ(parts.size(), 1u) << key;
    used.insert(*parts.begin());
  }
  EXPECT_GT(used.size(), 1u) << "8 keys should spread over more than one of 4 partitions";
}

TEST(EndToEnd, RetryAfterRestartGetsOriginalOffsets) {
  Fixture fx;
  ASSERT_TRUE(fx.wharfd->Start().ok());
  std::vector<wharf::v1::ProduceRequest> requests;
  std::vector<wharf::v1::ProduceResponse> first;
  {
    auto stub = wharf::v1::Ingest::NewStub(client::CreateChannel(fx.wharfd->target()));
    uint64_t seq = 0;
    for (int r = 0; r < 10; ++r) {
      wharf::v1::ProduceRequest req;
      req.set_dataset("orders");
      req.set_producer_id("retrying-producer");
      req.set_first_sequence(seq);
      for (int i = 0; i < 25; ++i) *req.add_records() = MakeRecord(Payload(9, r * 25 + i));
      seq += 25;
      wharf::v1::ProduceResponse resp;
      grpc::ClientContext ctx;
      ASSERT_TRUE(stub->ProduceOne(&ctx, req, &resp).ok());
      EXPECT_FALSE(resp.duplicate());
      requests.push_back(req);
      first.push_back(resp);
    }
  }
  auto code = fx.wharfd->Terminate();
  ASSERT_TRUE(code.ok());
  ASSERT_EQ(*code, 0);
  ASSERT_TRUE(fx.wharfd->Start().ok());
  {
    // The same requests again, on a stream this time: answered from the deduplication window.
    auto stub = wharf::v1::Ingest::NewStub(client::CreateChannel(fx.wharfd->target()));
    grpc::ClientContext ctx;
    auto stream = stub->Produce(&ctx);
    for (size_t r = 0; r < requests.size(); ++r) {
      auto req = requests[r];
      req.set_request_id(1000 + r);
      ASSERT_TRUE(stream->Write(req));
    }
    stream->WritesDone();
    std::map<uint64_t, wharf::v1::ProduceResponse> answers;
    wharf::v1::ProduceResponse resp;
    while (stream->Read(&resp)) answers[resp.request_id()] = resp;
    ASSERT_TRUE(stream->Finish().ok());
    ASSERT_EQ(answers.size(), requests.size());
    for (size_t r = 0; r < requests.size(); ++r) {
      const auto& a = answers[1000 + r];
      EXPECT_EQ(a.status().code(), 0) << a.status().message();
      EXPECT_TRUE(a.duplicate());
      ASSERT_EQ(a.acks_size(), first[r].acks_size());
      for (int i = 0; i < a.acks_size(); ++i) {
        EXPECT_EQ(a.acks(i).partition(), first[r].acks(i).partition());
        EXPECT_EQ(a.acks(i).offset(), first[r].acks(i).offset());
      }
    }
    // A gap in the sequence is refused and stores nothing.
    wharf::v1::ProduceRequest gap;
    gap.set_dataset("orders");
    gap.set_producer_id("retrying-producer");
    gap.set_first_sequence(300);
    *gap.add_records() = MakeRecord(Payload(9, 9999));
    grpc::ClientContext ctx2;
    wharf::v1::ProduceResponse r2;
    grpc::Status gs = stub->ProduceOne(&ctx2, gap, &r2);
    EXPECT_EQ(gs.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_NE(gs.error_message().find("expected 250"), std::string::npos) << gs.error_message();
  }
  ASSERT_TRUE(
      WaitFor([&] { return DeliveredRecords(fx.wharfd->control(), "orders") >= 250; }, 30s));
  std::this_thread::sleep_for(300ms);
  auto files = ReadDestination(fx.config.out_dir, "orders");
  size_t lines = 0;
  for (const auto& f : files) lines += f.lines.size();
  EXPECT_EQ(lines, 250u) << "duplicates were stored";
  auto st = fx.wharfd->control().GetStatus({});
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->datasets(0).records_ingested(), 250u);
  EXPECT_EQ(st->datasets(0).duplicate_requests(), 10u);
}

TEST(EndToEnd, MalformedJsonGoesToQuarantine) {
  Fixture fx;
  ASSERT_TRUE(fx.wharfd->Start().ok());
  auto stub = wharf::v1::Ingest::NewStub(client::CreateChannel(fx.wharfd->target()));
  wharf::v1::ProduceRequest req;
  req.set_dataset("orders");
  const std::vector<std::string> payloads = {R"({"ok":1})", R"({"broken":)", R"([1,2,3])",
                                             R"({"ok":2})", "\xff\xfe",      R"({"a":1} {"b":2})",
                                             R"({"ok":3})"};
  for (const auto& p : payloads) *req.add_records() = MakeRecord(p, "same-key");
  wharf::v1::ProduceResponse resp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub->ProduceOne(&ctx, req, &resp).ok());
  ASSERT_EQ(resp.acks_size(), 7);
  ASSERT_TRUE(WaitFor([&] { return DeliveredRecords(fx.wharfd->control(), "orders") >= 3; }, 30s));
  auto q = fx.wharfd->control().ListAllQuarantine("orders", 100);
  ASSERT_TRUE(q.ok()) << q.status();
  ASSERT_EQ(q->entries_size(), 4);
  const std::vector<int> bad = {1, 2, 4, 5};
  for (int i = 0; i < 4; ++i) {
    const auto& e = q->entries(i);
    EXPECT_EQ(e.reason(), wharf::v1::PARSE_ERROR);
    EXPECT_EQ(e.offset(), resp.acks(bad[i]).offset());
    EXPECT_EQ(e.original().record().payload(), payloads[bad[i]]);
    EXPECT_FALSE(e.message().empty());
  }
  EXPECT_NE(q->entries(0).message().find("at byte"), std::string::npos) << q->entries(0).message();
  auto files = ReadDestination(fx.config.out_dir, "orders");
  std::vector<std::string> lines;
  for (const auto& f : files) lines.insert(lines.end(), f.lines.begin(), f.lines.end());
  EXPECT_EQ(lines, (std::vector<std::string>{R"({"ok":1})", R"({"ok":2})", R"({"ok":3})"}));
  auto st = fx.wharfd->control().GetStatus({});
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->datasets(0).records_quarantined(), 4u);
  // Unknown dataset and missing dataset on the control plane.
  wharf::v1::ListQuarantineRequest lq;
  lq.set_dataset("nope");
  EXPECT_EQ(fx.wharfd->control().ListQuarantine(lq).status().code(), absl::StatusCode::kNotFound);
  lq.set_dataset("");
  EXPECT_EQ(fx.wharfd->control().ListQuarantine(lq).status().code(),
            absl::StatusCode::kInvalidArgument);
  lq.set_dataset("orders");
  lq.set_page_token("garbage");
  EXPECT_EQ(fx.wharfd->control().ListQuarantine(lq).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(EndToEnd, BadRequestsGetPreciseErrorsAndStoreNothing) {
  Fixture fx([](WharfdConfig& c) {
    c.extra_top =
        "limits:\n  max_message_bytes: 64KiB\n  max_record_bytes: 4KiB\n"
        "  max_records_per_request: 100\n";
  });
  ASSERT_TRUE(fx.wharfd->Start().ok());
  auto stub = wharf::v1::Ingest::NewStub(client::CreateChannel(fx.wharfd->target()));
  auto call = [&](const wharf::v1::ProduceRequest& req) {
    grpc::ClientContext ctx;
    wharf::v1::ProduceResponse resp;
    return stub->ProduceOne(&ctx, req, &resp);
  };
  wharf::v1::ProduceRequest req;
  req.set_dataset("orders");
  grpc::Status s = call(req);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "request has no records");

  req.set_dataset("no-such-dataset");
  *req.add_records() = MakeRecord("{}");
  s = call(req);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(s.error_message().find("no-such-dataset"), std::string::npos);

  req.set_dataset("");
  EXPECT_EQ(call(req).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  req.set_dataset("orders");
  req.clear_records();
  *req.add_records() = MakeRecord(std::string(5000, 'x'));
  s = call(req);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("max_record_bytes"), std::string::npos) << s.error_message();

  req.clear_records();
  for (int i = 0; i < 30; ++i) *req.add_records() = MakeRecord(std::string(3000, 'y'));
  s = call(req);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("max_message_bytes"), std::string::npos) << s.error_message();

  req.clear_records();
  for (int i = 0; i < 101; ++i) *req.add_records() = MakeRecord("{}");
  s = call(req);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("max_records_per_request"), std::string::npos);

  req.clear_records();
  *req.add_records() = MakeRecord("");
  EXPECT_EQ(call(req).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // The same errors on a stream keep the stream open and answer per request.
  grpc::ClientContext ctx;
  auto stream = stub->Produce(&ctx);
  wharf::v1::ProduceRequest bad;
  bad.set_request_id(1);
  bad.set_dataset("orders");
  ASSERT_TRUE(stream->Write(bad));
  wharf::v1::ProduceRequest good;
  good.set_request_id(2);
  good.set_dataset("orders");
  *good.add_records() = MakeRecord(R"({"good":true})");
  ASSERT_TRUE(stream->Write(good));
  stream->WritesDone();
  std::map<uint64_t, wharf::v1::ProduceResponse> answers;
  wharf::v1::ProduceResponse resp;
  while (stream->Read(&resp)) answers[resp.request_id()] = resp;
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(answers[1].status().code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_EQ(answers[2].status().code(), 0);
  EXPECT_EQ(answers[2].acks_size(), 1);

  auto st = fx.wharfd->control().GetStatus({});
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->datasets(0).records_ingested(), 1u) << "a refused request stored something";
  wharf::v1::GetStatusRequest unknown;
  unknown.add_datasets("nope");
  EXPECT_EQ(fx.wharfd->control().GetStatus(unknown).status().code(), absl::StatusCode::kNotFound);
}

// One stream reuses its parsed request between reads (ProduceReactor::ResetRequest): a large
// request (over 1 MiB of records: freed after encoding), smaller ones with different shapes
// (keys, headers, fewer records: parsed into the reused objects) and refused ones in between.
// Every accepted record must arrive exactly once with its own payload: nothing of an earlier
// request may leak into a later one through the reused objects.
TEST(EndToEnd, OneStreamReusesItsRequestWithoutMixingRecords) {
  Fixture fx;
  ASSERT_TRUE(fx.wharfd->Start().ok());
  auto stub = wharf::v1::Ingest::NewStub(client::CreateChannel(fx.wharfd->target()));
  grpc::ClientContext ctx;
  auto stream = stub->Produce(&ctx);
  std::vector<wharf::v1::ProduceRequest> requests;
  auto add = [&](int records, size_t filler, bool keyed, bool headers) {
    wharf::v1::ProduceRequest req;
    req.set_request_id(requests.size() + 1);
    req.set_dataset("orders");
    for (int i = 0; i < records; ++i) {
      wharf::v1::Record* r = req.add_records();
      r->set_payload(absl::StrCat(R"({"req":)", requests.size() + 1, R"(,"i":)", i, R"(,"f":")",
                                  std::string(filler, 'a' + static_cast<char>(i % 26)), R"("})"));
      if (keyed) r->set_key(absl::StrCat("key-", i % 7));
      if (headers) (*r->mutable_headers())["h"] = absl::StrCat(i);
    }
    requests.push_back(std::move(req));
  };
  add(400, 3000, true, true);  // ~1.2 MB: released after encoding
  add(50, 100, false, false);
  add(0, 0, false, false);  // refused: no records
  add(300, 20, true, false);
  add(1, 5000, false, true);
  add(120, 60, false, false);
  for (const auto& req : requests) ASSERT_TRUE(stream->Write(req));
  stream->WritesDone();
  std::map<uint64_t, wharf::v1::ProduceResponse> answers;
  wharf::v1::ProduceResponse resp;
  while (stream->Read(&resp)) answers[resp.request_id()] = resp;
  ASSERT_TRUE(stream->Finish().ok());
  ASSERT_EQ(answers.size(), requests.size());
  std::map<std::pair<uint32_t, uint64_t>, std::string> acked;
  uint64_t accepted = 0;
  for (const auto& req : requests) {
    const wharf::v1::ProduceResponse& a = answers[req.request_id()];
    if (req.records_size() == 0) {
      EXPECT_EQ(a.status().code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
      continue;
    }
    ASSERT_EQ(a.status().code(), 0) << a.status().message();
    ASSERT_EQ(a.acks_size(), req.records_size());
    for (int i = 0; i < req.records_size(); ++i) {
      acked[{a.acks(i).partition(), a.acks(i).offset()}] = req.records(i).payload();
    }
    accepted += static_cast<uint64_t>(req.records_size());
  }
  ASSERT_EQ(acked.size(), accepted) << "two records acknowledged at the same offset";
  ASSERT_TRUE(
      WaitFor([&] { return DeliveredRecords(fx.wharfd->control(), "orders") >= accepted; }, 60s))
      << "delivered " << DeliveredRecords(fx.wharfd->control(), "orders");
  ExpectDeliveredExactly(fx.config.out_dir, acked);
}

TEST(EndToEnd, QuotaRefusesWithRetryInfoAndResumesAfterDelivery) {
  Fixture fx([](WharfdConfig& c) {
    c.quota = "200KiB";
    c.retention_raw = "0s";
    c.retention_interval = "100ms";
  });
  ASSERT_TRUE(fx.wharfd->Start().ok());
  // Stop delivery by making the destination directory unwritable: replace it with a file.
  auto stub = wharf::v1::Ingest::NewStub(client::CreateChannel(fx.wharfd->target()));
  std::filesystem::remove_all(fx.config.out_dir);
  WriteFile(fx.config.out_dir, "not a directory");
  wharf::v1::ProduceRequest req;
  req.set_dataset("orders");
  for (int i = 0; i < 100; ++i)
    *req.add_records() = MakeRecord(Payload(1, i) + std::string(500, ' '));
  grpc::Status refused;
  int accepted = 0;
  for (int attempt = 0; attempt < 100; ++attempt) {
    grpc::ClientContext ctx;
    wharf::v1::ProduceResponse resp;
    refused = stub->ProduceOne(&ctx, req, &resp);
    if (!refused.ok()) break;
    ++accepted;
  }
  ASSERT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << refused.error_message();
  EXPECT_GT(accepted, 0);
  EXPECT_NE(refused.error_message().find("quota"), std::string::npos);
  google::rpc::Status details;
  ASSERT_TRUE(details.ParseFromString(refused.error_details()));
  ASSERT_EQ(details.details_size(), 1);
  google::rpc::RetryInfo info;
  ASSERT_TRUE(details.details(0).UnpackTo(&info));
  EXPECT_GT(info.retry_delay().seconds() * 1000 + info.retry_delay().nanos() / 1000000, 0);
  auto st = fx.wharfd->control().GetStatus({});
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->datasets(0).records_ingested(), static_cast<uint64_t>(accepted) * 100)
      << "the refused request stored something";
  // Delivery keeps failing: the destination leaves HEALTHY and reports why.
  wharf::v1::DestinationStatus dest;
  EXPECT_TRUE(WaitFor(
      [&] {
        auto s = fx.wharfd->control().GetStatus({});
        if (!s.ok()) return false;
        dest = s->datasets(0).destinations(0);
        return dest.state() != wharf::v1::HEALTHY;
      },
      20s));
  EXPECT_FALSE(dest.last_error().empty());
  EXPECT_GT(dest.delivery_failures(), 0u);

  // The destination comes back: the backlog drains, retention frees the quota, ingest resumes.
  std::filesystem::remove(fx.config.out_dir);
  std::filesystem::create_directories(fx.config.out_dir);
  EXPECT_TRUE(WaitFor(
      [&] {
        grpc::ClientContext ctx;
        wharf::v1::ProduceResponse resp;
        return stub->ProduceOne(&ctx, req, &resp).ok();
      },
      30s))
      << "ingest did not resume after the quota freed up";
}

TEST(EndToEnd, MetricsEndpointServesWharfMetrics) {
  Fixture fx;
  ASSERT_TRUE(fx.wharfd->Start().ok());
  auto stub = wharf::v1::Ingest::NewStub(client::CreateChannel(fx.wharfd->target()));
  wharf::v1::ProduceRequest req;
  req.set_dataset("orders");
  *req.add_records() = MakeRecord(R"({"m":1})");
  grpc::ClientContext ctx;
  wharf::v1::ProduceResponse resp;
  ASSERT_TRUE(stub->ProduceOne(&ctx, req, &resp).ok());
  ASSERT_TRUE(WaitFor([&] { return DeliveredRecords(fx.wharfd->control(), "orders") >= 1; }, 30s));
  std::string body;
  ASSERT_TRUE(WaitFor(
      [&] {
        auto b = HttpGet(fx.wharfd->config().metrics_port, "/metrics");
        if (!b.ok()) return false;
        body = *b;
        return body.find("wharf_destination_backlog_records") != std::string::npos;
      },
      10s))
      << body;
  for (const char* name :
       {"wharf_ingest_records_total{dataset=\"orders\"} 1", "wharf_ack_latency_seconds_bucket",
        "wharf_handoff_latency_seconds_bucket", "wharf_records_delivered_total",
        "wharf_batches_committed_total", "wharf_store_group_commit_seconds",
        "wharf_destination_state", "wharf_staged_bytes", "wharf_disk_free_bytes"}) {
    EXPECT_NE(body.find(name), std::string::npos) << name;
  }
}

TEST(EndToEnd, BadConfigFailsWithFileLineAndKey) {
  TempDir tmp;
  const std::string path = tmp.path() + "/bad.yaml";
  WriteFile(path, "listen: 127.0.0.1:7400\ndatasets:\n  - name: orders\n    partitions: lots\n");
  auto [code, out] = RunCommand({WHARFD_PATH, "--config", path, "--check-config"});
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find("bad.yaml:4"), std::string::npos) << out;
  EXPECT_NE(out.find("datasets[0].partitions"), std::string::npos) << out;

  WriteFile(path, "listen: 127.0.0.1:7400\nfrobnicate: true\n");
  std::tie(code, out) = RunCommand({WHARFD_PATH, "--config", path});
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find("frobnicate"), std::string::npos) << out;

  std::tie(code, out) = RunCommand({WHARFD_PATH, "--config", tmp.path() + "/missing.yaml"});
  EXPECT_EQ(code, 2) << out;
}

TEST(EndToEnd, PartitionCountCannotChangeUnderStoredData) {
  Fixture fx;
  ASSERT_TRUE(fx.wharfd->Start().ok());
  ASSERT_TRUE(fx.wharfd->Terminate().ok());
  WharfdConfig changed = fx.config;
  changed.partitions = 8;
  WharfdProcess again(changed);
  absl::Status st = again.Start(10s);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(again.Log().find("partition"), std::string::npos) << again.Log();
}

TEST(EndToEnd, SigtermDrainsAndExitsZero) {
  Fixture fx;
  ASSERT_TRUE(fx.wharfd->Start().ok());
  AckLog log;
  std::thread producer([&] { ProduceAll(fx.wharfd->target(), 0, 5000, 100, &log, false); });
  producer.join();
  const auto t0 = std::chrono::steady_clock::now();
  auto code = fx.wharfd->Terminate(20s);
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 15s);
  // Everything acked is delivered after a restart.
  ASSERT_TRUE(fx.wharfd->Start().ok());
  ASSERT_TRUE(
      WaitFor([&] { return DeliveredRecords(fx.wharfd->control(), "orders") >= 5000; }, 30s));
  ExpectDeliveredExactly(fx.config.out_dir, log.acked);
}

}  // namespace
}  // namespace wharf::testing

namespace wharf::testing {
namespace {

TEST(EndToEnd, JsonLogsAreOneJsonObjectPerLine) {
  Fixture fx([](WharfdConfig& c) { c.log_format = "json"; });
  ASSERT_TRUE(fx.wharfd->Start().ok());
  auto code = fx.wharfd->Terminate();
  ASSERT_TRUE(code.ok());
  std::istringstream log(fx.wharfd->Log());
  std::string line;
  int lines = 0;
  while (std::getline(log, line)) {
    rapidjson::Document doc;
    ASSERT_FALSE(doc.Parse(line.c_str()).HasParseError()) << line;
    ASSERT_TRUE(doc.IsObject()) << line;
    for (const char* key : {"time", "level", "msg"}) {
      EXPECT_TRUE(doc.HasMember(key)) << key << " missing in " << line;
    }
    ++lines;
  }
  EXPECT_GE(lines, 2) << "start and stop are logged";
}

}  // namespace
}  // namespace wharf::testing
