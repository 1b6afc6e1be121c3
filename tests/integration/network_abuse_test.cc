// Network and abuse tests (docs/reliability/network_and_abuse.md): a real wharfd behind a TCP
// proxy that adds latency, resets and stalls (tests/support/tcp_proxy.h); 1,000 concurrent
// Produce streams; clients that never read their acks; peers that vanish; garbage, truncated and
// oversized frames. Every test that stores records ends with the shared checker
// (tests/support/checker.h): lost = duplicated = unexpected = 0. WHARF_EXTENDED=1 runs longer.

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "client/channel.h"
#include "client/rpc_status.h"
#include "tests/support/checker.h"
#include "tests/support/tcp_proxy.h"
#include "tests/support/wharfd_process.h"
#include "wharf/v1/ingest.grpc.pb.h"

namespace wharf::testing {
namespace {

using namespace std::chrono_literals;
using wharf::v1::ProduceRequest;
using wharf::v1::ProduceResponse;
using Clock = std::chrono::steady_clock;

// Upper bound on wharfd's resident memory under every abuse here: the sum of its configured
// bounds with their defaults, plus a base. RocksDB's block cache with the memtables 96 MiB, the
// store's ingest queue (max_pending_bytes) 64 MiB, decoded requests in flight
// (limits.max_inflight_bytes) 64 MiB, gRPC's buffers (limits.max_grpc_memory) 128 MiB, and
// about 40 MiB of code, threads and allocator slack: about 390 MiB. Anything unbounded passes it
// within the test's duration: 20 clients that read no acks took wharfd to 790 MiB before
// max_grpc_memory existed; a stream whose acks piled up, or a message buffered up to the 1 GiB
// its length prefix claims, would grow past it too.
constexpr uint64_t kRssBoundKiB = 400 * 1024;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// VmRSS and VmHWM of a process, in KiB (0 when unreadable).
struct Memory {
  uint64_t rss_kib = 0;
  uint64_t hwm_kib = 0;
};
Memory ReadMemory(pid_t pid) {
  Memory m;
  const std::string status = ReadFile(absl::StrCat("/proc/", pid, "/status"));
  auto field = [&](const std::string& name) -> uint64_t {
    const size_t at = status.find(name + ":");
    if (at == std::string::npos) return 0;
    const size_t end = status.find('\n', at);
    std::string v = status.substr(at + name.size() + 1, end - at - name.size() - 1);
    v.erase(0, v.find_first_not_of(" \t"));
    v = v.substr(0, v.find(' '));
    uint64_t kib = 0;
    return absl::SimpleAtoi(v, &kib) ? kib : 0;
  };
  m.rss_kib = field("VmRSS");
  m.hwm_kib = field("VmHWM");
  return m;
}

std::string Mib(uint64_t kib) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f MiB", static_cast<double>(kib) / 1024.0);
  return buf;
}

// Records of producer `producer` with sequence numbers [first, first + n), as LoadPayload()s.
ProduceRequest MakeRequest(const std::string& producer_id, int producer, int64_t first, int n,
                           size_t payload_bytes = 120) {
  ProduceRequest r;
  r.set_dataset("orders");
  r.set_producer_id(producer_id);
  r.set_first_sequence(static_cast<uint64_t>(first));
  r.set_request_id(static_cast<uint64_t>(first) + 1);
  for (int i = 0; i < n; ++i)
    r.add_records()->set_payload(LoadPayload(producer, first + i, payload_bytes));
  return r;
}

std::vector<uint64_t> Ids(const ProduceRequest& r) {
  std::vector<uint64_t> ids;
  for (const auto& rec : r.records()) ids.push_back(LoadPayloadId(rec.payload()));
  return ids;
}

// The SendResult a client::Producer would report for `response`.
client::SendResult ResultOf(const ProduceResponse& response) {
  client::SendResult r;
  r.status = client::FromRpcStatus(response.status());
  r.acks.assign(response.acks().begin(), response.acks().end());
  r.duplicate = response.duplicate();
  return r;
}

client::SendResult NoAnswer() {
  client::SendResult r;
  r.status = absl::UnavailableError("no answer");
  return r;
}

// The records of `dataset` at the file destination and in quarantine, split by record id: ids
// of producers below `split` (times 10^9) and the others.
struct Found {
  std::vector<FoundRecord> delivered_low, delivered_high, quarantined_low, quarantined_high;
};
Found FindRecords(WharfdProcess& wharfd, int split) {
  Found f;
  const uint64_t limit = static_cast<uint64_t>(split) * 1000000000ull;
  for (const FoundRecord& r : FileDestinationRecords(wharfd.config().out_dir, "orders")) {
    (r.id != 0 && r.id < limit ? f.delivered_low : f.delivered_high).push_back(r);
  }
  auto q = QuarantinedRecords(wharfd.control(), "orders");
  EXPECT_TRUE(q.ok()) << q.status();
  if (q.ok()) {
    for (const FoundRecord& r : *q) {
      (r.id != 0 && r.id < limit ? f.quarantined_low : f.quarantined_high).push_back(r);
    }
  }
  return f;
}

uint64_t StoredRecords(WharfdProcess& wharfd) {
  wharf::v1::GetStatusRequest req;
  req.add_datasets("orders");
  auto st = wharfd.control().GetStatus(req, 5s);
  if (!st.ok() || st->datasets_size() != 1) return 0;
  uint64_t n = 0;
  for (const auto& p : st->datasets(0).partition_status()) n += p.next_offset();
  return n;
}

// Samples wharfd's VmRSS every 50 ms in a thread and keeps the largest value.
// Thread safety: peak_kib() from any thread; Stop() from the owner (joins).
class RssSampler {
 public:
  explicit RssSampler(pid_t pid) : pid_(pid), thread_([this] { Run(); }) {}
  ~RssSampler() { Stop(); }
  void Stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  uint64_t peak_kib() const { return peak_.load(); }

 private:
  void Run() {
    while (!stop_.load()) {
      const uint64_t rss = ReadMemory(pid_).rss_kib;
      if (rss > peak_.load()) peak_.store(rss);
      std::this_thread::sleep_for(50ms);
    }
  }
  const pid_t pid_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> peak_{0};
  std::thread thread_;
};

WharfdConfig BaseConfig(const TempDir& tmp) {
  WharfdConfig config;
  config.data_dir = tmp.path() + "/data";
  config.out_dir = tmp.path() + "/out";
  config.linger = "20ms";
  config.max_records = 500;
  return config;
}

void DrainAndCheck(WharfdProcess& wharfd, const History& history, const std::string& what,
                   CheckerCounts* out = nullptr) {
  ASSERT_TRUE(WaitFor([&] { return AllDelivered(wharfd.control()); }, 120s))
      << "backlog did not drain";
  auto quarantined = QuarantinedRecords(wharfd.control(), "orders");
  ASSERT_TRUE(quarantined.ok()) << quarantined.status();
  const CheckerCounts c =
      Check(history, FileDestinationRecords(wharfd.config().out_dir, "orders"), *quarantined);
  ExpectCheckerOk(c, what);
  if (out != nullptr) *out = c;
}

// ---------------------------------------------------------------------------------------------
// Latency, resets and stalls between the producers and wharfd.

TEST(NetworkAbuse, ProducersThroughFaultyProxyLoseAndDuplicateNothing) {
  const auto started = Clock::now();
  TempDir tmp;
  WharfdProcess wharfd(BaseConfig(tmp));
  ASSERT_TRUE(wharfd.Start().ok());
  TcpProxy proxy(wharfd.config().port);
  ASSERT_TRUE(proxy.Start().ok());

  ProducerLoadOptions lo;
  lo.target = proxy.target();
  lo.producers = 4;
  lo.batch = 50;
  lo.pause = 20ms;
  lo.payload_bytes = 150;
  // Requests caught in a stall longer than this end unknown; the producer goes on under a new
  // id, so the checker sees genuinely unknown outcomes (recovered when they were stored).
  lo.retry_timeout = 3s;
  ProducerLoad load(lo);
  load.Start();

  const auto duration = Extended() ? 180s : 12s;
  std::mt19937 rng(static_cast<unsigned>(std::random_device{}()));
  std::uniform_int_distribution<int> latency_ms(0, 40);
  std::uniform_int_distribution<int> reset_every_ms(700, 2500);
  std::uniform_int_distribution<int> stall_ms(300, 4500);
  int resets = 0, stalls = 0;
  const auto end = Clock::now() + duration;
  auto next_reset = Clock::now() + std::chrono::milliseconds(reset_every_ms(rng));
  auto next_stall = Clock::now() + 2s;
  auto next_latency = Clock::now();
  const TcpProxy::Direction kDirections[] = {TcpProxy::Direction::kBoth,
                                             TcpProxy::Direction::kServerToClient,
                                             TcpProxy::Direction::kClientToServer};
  while (Clock::now() < end) {
    const auto now = Clock::now();
    if (now >= next_latency) {
      proxy.SetLatency(std::chrono::milliseconds(latency_ms(rng)));
      next_latency = now + 1s;
    }
    if (now >= next_reset) {
      proxy.ResetAll();
      ++resets;
      next_reset = now + std::chrono::milliseconds(reset_every_ms(rng));
    }
    if (now >= next_stall) {
      const auto d = std::chrono::milliseconds(stall_ms(rng));
      proxy.Stall(kDirections[stalls % 3], d);
      ++stalls;
      next_stall = now + d + 2s;
    }
    std::this_thread::sleep_for(50ms);
  }
  proxy.SetLatency(0ms);
  proxy.Stall(TcpProxy::Direction::kBoth, 0ms);
  std::this_thread::sleep_for(500ms);
  load.Stop();

  CheckerCounts c;
  DrainAndCheck(wharfd, load.history(),
                absl::StrCat("network faults, ", resets, " resets, ", stalls, " stalls"), &c);
  std::printf(
      "faulty proxy: %.0f s of faults, %d resets (%llu connections reset), %d stalls, %llu "
      "connections, %zu requests, %.1f s in all\n",
      std::chrono::duration<double>(duration).count(), resets,
      static_cast<unsigned long long>(proxy.connections_reset()), stalls,
      static_cast<unsigned long long>(proxy.connections_accepted()), load.history().requests(),
      Seconds(started));
  EXPECT_GT(proxy.connections_reset(), 0u) << "the resets hit live connections";
  EXPECT_GT(proxy.connections_accepted(), 1u) << "the producers reconnected";
  EXPECT_EQ(c.failed, 0u) << "wharfd refused no request";
  EXPECT_EQ(c.acked + c.unknown, load.sent_count()) << "every sent record has an outcome";
  EXPECT_GT(c.acked, 0u);
  EXPECT_EQ(c.delivered + c.quarantined, c.acked + c.recovered);
  auto code = wharfd.Terminate();
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0);
}

// ---------------------------------------------------------------------------------------------
// 1,000 concurrent Produce streams.

// One raw Produce stream on the callback API: writes its first request, waits for Continue(),
// writes the others, half-closes, and reads every answer.
// Thread safety: gRPC runs the reactions on its threads; the state they share with the test
// thread is guarded by mu_. Destroy only after WaitDone() returned true.
class RawStream final : public grpc::ClientBidiReactor<ProduceRequest, ProduceResponse> {
 public:
  RawStream(wharf::v1::Ingest::Stub* stub, std::vector<ProduceRequest> requests,
            std::atomic<int>* first_acks)
      : requests_(std::move(requests)), first_acks_(first_acks) {
    stub->async()->Produce(&context_, this);
    StartRead(&response_);
    StartWrite(&requests_[0]);
    StartCall();
  }

  // Lets the stream write its remaining requests (once its first write is done).
  void Continue() {
    bool write = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      continue_ = true;
      write = first_written_ && next_ == 1;
      if (write) next_ = 2;
    }
    if (write) WriteNext(1);
  }

  bool WaitDone(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return done_; });
  }
  void Cancel() { context_.TryCancel(); }

  const std::vector<ProduceRequest>& requests() const { return requests_; }
  // request_id -> answer.
  std::map<uint64_t, ProduceResponse> responses() const {
    std::lock_guard<std::mutex> lock(mu_);
    return responses_;
  }
  grpc::Status status() const {
    std::lock_guard<std::mutex> lock(mu_);
    return status_;
  }

  void OnWriteDone(bool ok) override {
    size_t index;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!ok) return;  // the stream broke; OnDone follows
      if (!first_written_) {
        first_written_ = true;
        if (!continue_) return;
        next_ = 2;
        index = 1;
      } else {
        index = next_++;
      }
    }
    WriteNext(index);
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      const bool first = responses_.empty();
      responses_[response_.request_id()] = response_;
      if (first) first_acks_->fetch_add(1);
    }
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& status) override {
    std::lock_guard<std::mutex> lock(mu_);
    status_ = status;
    done_ = true;
    cv_.notify_all();
  }

 private:
  void WriteNext(size_t index) {
    if (index < requests_.size()) {
      StartWrite(&requests_[index]);
    } else if (index == requests_.size()) {
      StartWritesDone();
    }
  }

  grpc::ClientContext context_;
  std::vector<ProduceRequest> requests_;
  std::atomic<int>* const first_acks_;
  ProduceResponse response_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool first_written_ = false;                     // guarded by mu_
  bool continue_ = false;                          // guarded by mu_
  size_t next_ = 1;                                // guarded by mu_: the next request to write
  bool done_ = false;                              // guarded by mu_
  std::map<uint64_t, ProduceResponse> responses_;  // guarded by mu_
  grpc::Status status_;                            // guarded by mu_
};

TEST(NetworkAbuse, ThousandConcurrentStreamsAllAcked) {
  const auto started = Clock::now();
  TempDir tmp;
  WharfdProcess wharfd(BaseConfig(tmp));
  ASSERT_TRUE(wharfd.Start().ok());
  const Memory before = ReadMemory(wharfd.pid());

  constexpr int kStreams = 1000;
  constexpr int kConnections = 4;
  const int requests_per_stream = Extended() ? 20 : 3;
  constexpr int kRecordsPerRequest = 10;
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<wharf::v1::Ingest::Stub>> stubs;
  client::ChannelOptions co;
  co.dedicated_connection = true;
  for (int i = 0; i < kConnections; ++i) {
    channels.push_back(client::CreateChannel(wharfd.target(), co));
    stubs.push_back(wharf::v1::Ingest::NewStub(channels.back()));
  }
  RssSampler rss(wharfd.pid());
  std::atomic<int> first_acks{0};
  std::vector<std::unique_ptr<RawStream>> streams;
  for (int s = 0; s < kStreams; ++s) {
    std::vector<ProduceRequest> reqs;
    const std::string pid = absl::StrCat("many-", client::RandomProducerId(), "-", s);
    for (int r = 0; r < requests_per_stream; ++r) {
      reqs.push_back(
          MakeRequest(pid, s, static_cast<int64_t>(r) * kRecordsPerRequest, kRecordsPerRequest));
    }
    streams.push_back(std::make_unique<RawStream>(
        stubs[static_cast<size_t>(s % kConnections)].get(), std::move(reqs), &first_acks));
  }
  // Every stream is open and has had its first request acked, and none has finished: 1,000
  // streams are concurrently open on wharfd.
  const bool all_open = WaitFor([&] { return first_acks.load() == kStreams; }, 60s);
  if (!all_open) {
    // Which connections are behind (the streams go round-robin over them).
    std::string per_connection;
    for (int i = 0; i < kConnections; ++i) {
      int acked = 0;
      for (int s = i; s < kStreams; s += kConnections) {
        if (!streams[static_cast<size_t>(s)]->responses().empty()) ++acked;
      }
      absl::StrAppend(&per_connection, " connection ", i, ": ", acked,
                      " first acks, channel state ",
                      static_cast<int>(channels[static_cast<size_t>(i)]->GetState(false)), ";");
    }
    ADD_FAILURE() << first_acks.load() << " of " << kStreams << " streams got a first ack;"
                  << per_connection << " wharfd's log:\n"
                  << wharfd.Log();
  }
  const double open_s = Seconds(started);
  const Memory all_open_memory = ReadMemory(wharfd.pid());
  for (auto& s : streams) s->Continue();
  History history;
  size_t requests = 0, acked_requests = 0, ok_streams = 0;
  for (auto& s : streams) {
    if (!s->WaitDone(60s)) {
      ADD_FAILURE() << "a stream did not finish";
      s->Cancel();
      s->WaitDone(10s);
    }
    if (s->status().ok()) ++ok_streams;
    const auto responses = s->responses();
    for (const auto& req : s->requests()) {
      ++requests;
      auto it = responses.find(req.request_id());
      if (it == responses.end()) {
        history.Log(Ids(req), NoAnswer());
        continue;
      }
      history.Log(Ids(req), ResultOf(it->second));
      if (it->second.status().code() == 0) ++acked_requests;
    }
  }
  rss.Stop();
  EXPECT_EQ(ok_streams, static_cast<size_t>(kStreams)) << "every stream ends OK";
  EXPECT_EQ(acked_requests, requests) << "every request is acked";
  CheckerCounts c;
  DrainAndCheck(wharfd, history, absl::StrCat(kStreams, " concurrent streams"), &c);
  EXPECT_EQ(c.acked, static_cast<size_t>(kStreams * requests_per_stream * kRecordsPerRequest));
  const Memory after = ReadMemory(wharfd.pid());
  std::printf(
      "%d concurrent streams on %d connections, %zu requests, %zu acked: all open after %.1f s, "
      "RSS %s before, %s with all open, peak %s (VmHWM %s), %.1f s in all\n",
      kStreams, kConnections, requests, acked_requests, open_s, Mib(before.rss_kib).c_str(),
      Mib(all_open_memory.rss_kib).c_str(), Mib(rss.peak_kib()).c_str(), Mib(after.hwm_kib).c_str(),
      Seconds(started));
  EXPECT_LT(after.hwm_kib, kRssBoundKiB);
  streams.clear();
  auto code = wharfd.Terminate();
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0);
}

// ---------------------------------------------------------------------------------------------
// Clients that do not read their acks.

// A client that streams requests and never reads an answer: Write() blocks once flow control
// stops it. Every request it wrote has an unknown outcome.
// Thread safety: its writer thread writes; stream() may be read from one other thread (gRPC
// allows one reader beside one writer); the rest is thread-safe.
class DeafWriter {
 public:
  DeafWriter(const std::string& target, int producer, int records_per_request, int max_requests,
             size_t payload_bytes = 200)
      : channel_(DeafChannel(target)),
        stub_(wharf::v1::Ingest::NewStub(channel_)),
        thread_([this, producer, records_per_request, max_requests, payload_bytes] {
          Run(producer, records_per_request, max_requests, payload_bytes);
        }) {}
  ~DeafWriter() { Stop(); }

  // Cancels the stream (unblocking Write()) and joins.
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      if (context_ != nullptr) context_->TryCancel();
    }
    if (thread_.joinable()) thread_.join();
  }
  size_t written() const { return written_.load(); }
  bool finished() const { return finished_.load(); }
  // Logs every request written (and the one being written) as unknown.
  void LogTo(History* history) const {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& ids : attempted_) history->Log(ids, NoAnswer());
  }
  grpc::ClientReaderWriter<ProduceRequest, ProduceResponse>* stream() { return stream_.get(); }
  grpc::ClientContext* context() { return context_.get(); }
  // Waits for the writer thread to have written everything (or to have stopped).
  void Join() {
    if (thread_.joinable()) thread_.join();
  }

 private:
  // Its own connection, with gRPC's BDP probing off: the client's receive windows then stay at
  // gRPC's initial 64 KiB instead of growing to several MiB, so that the answers it does not read
  // fill them after about a thousand requests rather than after tens of thousands (the server
  // side is the same either way; the test only gets there sooner).
  static std::shared_ptr<grpc::Channel> DeafChannel(const std::string& target) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    args.SetMaxSendMessageSize(-1);
    return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  }
  void Run(int producer, int records_per_request, int max_requests, size_t payload_bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
      context_ = std::make_unique<grpc::ClientContext>();
      stream_ = stub_->Produce(context_.get());
    }
    const std::string pid = absl::StrCat("deaf-", client::RandomProducerId(), "-", producer);
    for (int i = 0; i < max_requests; ++i) {
      ProduceRequest r = MakeRequest(pid, producer, static_cast<int64_t>(i) * records_per_request,
                                     records_per_request, payload_bytes);
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stop_) break;
        attempted_.push_back(Ids(r));
      }
      if (!stream_->Write(r)) break;
      written_.fetch_add(1);
    }
    finished_.store(true);
  }

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<wharf::v1::Ingest::Stub> stub_;
  mutable std::mutex mu_;
  bool stop_ = false;                             // guarded by mu_
  std::unique_ptr<grpc::ClientContext> context_;  // set under mu_, then read-only
  std::unique_ptr<grpc::ClientReaderWriter<ProduceRequest, ProduceResponse>> stream_;
  std::vector<std::vector<uint64_t>> attempted_;  // guarded by mu_
  std::atomic<size_t> written_{0};
  std::atomic<bool> finished_{false};
  std::thread thread_;
};

TEST(NetworkAbuse, StreamWhoseAcksAreNotReadIsPausedNotBuffered) {
  // Regression test of the ack backpressure in server/ingest_service.cc: before it, wharfd kept
  // reading (and storing) the requests of a stream whose client read no answer, queueing the
  // answers without bound. Now it stops reading once max_inflight_per_stream (64) answers are
  // unwritten, so the client's Write() blocks; once the client reads, everything is answered.
  TempDir tmp;
  WharfdProcess wharfd(BaseConfig(tmp));
  ASSERT_TRUE(wharfd.Start().ok());
  constexpr int kRequests = 3000;
  constexpr int kRecords = 20;
  DeafWriter deaf(wharfd.target(), 7, kRecords, kRequests);
  // Wait until the writer is stuck: no progress for 2 s.
  size_t last = 0;
  auto last_change = Clock::now();
  const auto deadline = Clock::now() + 60s;
  while (Clock::now() < deadline && !deaf.finished() && Clock::now() - last_change < 2s) {
    std::this_thread::sleep_for(100ms);
    if (deaf.written() != last) {
      last = deaf.written();
      last_change = Clock::now();
    }
  }
  const uint64_t stored = StoredRecords(wharfd);
  const size_t written = deaf.written();
  std::printf(
      "deaf stream: %zu of %d requests written before Write() blocked, %llu records (%llu "
      "requests) stored\n",
      written, kRequests, static_cast<unsigned long long>(stored),
      static_cast<unsigned long long>(stored / kRecords));
  EXPECT_FALSE(deaf.finished()) << "wharfd read all " << kRequests
                                << " requests of a client that reads no answer";
  EXPECT_LT(stored / kRecords, static_cast<uint64_t>(kRequests / 2));
  // Now the client reads: every request is answered, in order of its request ids.
  ProduceResponse response;
  std::map<uint64_t, ProduceResponse> answers;
  while (answers.size() < static_cast<size_t>(kRequests) && deaf.stream()->Read(&response)) {
    answers[response.request_id()] = response;
  }
  deaf.Join();
  EXPECT_TRUE(deaf.finished());
  deaf.stream()->WritesDone();
  const grpc::Status st = deaf.stream()->Finish();
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(answers.size(), static_cast<size_t>(kRequests));
  History history;
  for (int i = 0; i < kRequests; ++i) {
    const uint64_t first = static_cast<uint64_t>(i) * kRecords;
    std::vector<uint64_t> ids;
    for (int k = 0; k < kRecords; ++k) ids.push_back(7ull * 1000000000ull + first + k + 1);
    auto it = answers.find(first + 1);
    history.Log(ids, it == answers.end() ? NoAnswer() : ResultOf(it->second));
  }
  CheckerCounts c;
  DrainAndCheck(wharfd, history, "deaf stream, then read", &c);
  // None refused: a paused stream must hand its requests to the store in sequence order.
  EXPECT_EQ(c.failed, 0u);
  EXPECT_EQ(c.acked, static_cast<size_t>(kRequests * kRecords));
}

// Normal producers stream while 100 clients send requests and never read an ack, and one
// producer behind the proxy has its acks stalled at the socket level. wharfd's memory must stay
// bounded and the normal producers must keep going. With per-stream windows fixed
// (limits.stream_window, BDP probing off) the deaf streams park little in gRPC; most of the peak
// is their initial burst of requests in flight to the store (bounded by max_inflight_bytes).
// Measured 56-108% of the baseline throughput kept (docs/reliability/network_and_abuse.md). Only
// a generous lower bound is asserted: 2 loaded cores.
TEST(NetworkAbuse, SlowAckReadersDoNotStarveOtherProducers) {
  TempDir tmp;
  // 100 in both variants (producers 500..599: the stalled producer below is 600, and the records
  // are told apart by producer). With BDP probing on (before limits.stream_window) wharfd peaked
  // at 436 MiB with 100 and 466 MiB with 50; docs/reliability/network_and_abuse.md.
  const int deaf_clients = 100;
  // max_inflight_bytes 32MiB instead of the default 64MiB: the deaf clients' first burst fills it,
  // and requests in flight cost about 2.8 times their wire size in RSS (decoded records plus
  // gRPC's copy), so at the default it alone takes about 180 MiB (100 deaf clients peaked at
  // 376-402 MiB, 242 MiB with 16MiB). That part is bounded by the setting whatever the number of
  // clients; this test is about what grows with them, under the 400 MiB bound.
  WharfdConfig config = BaseConfig(tmp);
  config.extra_top = "limits:\n  max_inflight_bytes: 32MiB\n";
  WharfdProcess wharfd(config);
  ASSERT_TRUE(wharfd.Start().ok());
  const auto window = Extended() ? 15s : 4s;

  ProducerLoadOptions lo;
  lo.target = wharfd.target();
  lo.producers = 2;
  lo.batch = 100;
  lo.pause = 2ms;
  ProducerLoad load(lo);
  RssSampler rss(wharfd.pid());
  load.Start();
  std::this_thread::sleep_for(1s);  // warm-up
  size_t a0 = load.acked_count();
  auto t0 = Clock::now();
  std::this_thread::sleep_for(window);
  const double baseline = static_cast<double>(load.acked_count() - a0) / Seconds(t0);
  const uint64_t baseline_peak = rss.peak_kib();

  // Deaf clients (their own connections) and, through a proxy, a producer whose acks stall at
  // the socket level (the proxy stops forwarding server -> client).
  std::vector<std::unique_ptr<DeafWriter>> deaf;
  for (int i = 0; i < deaf_clients; ++i) {
    deaf.push_back(std::make_unique<DeafWriter>(wharfd.target(), 500 + i, 100, 1000000));
  }
  TcpProxy proxy(wharfd.config().port);
  ASSERT_TRUE(proxy.Start().ok());
  ProducerLoadOptions stalled_lo = lo;
  stalled_lo.target = proxy.target();
  stalled_lo.producers = 1;
  stalled_lo.retry_timeout = 2s;
  stalled_lo.payload = [](int p, int64_t i) { return LoadPayload(600 + p, i); };
  ProducerLoad stalled(stalled_lo);
  stalled.Start();
  std::this_thread::sleep_for(300ms);
  // Until its acks fill its flow-control window, a deaf client is just a fast producer; the
  // abuse is what comes after. Wait until they are all stuck (nothing written for 1 s).
  const auto abuse_start = Clock::now();
  auto deaf_total = [&] {
    size_t n = 0;
    for (auto& d : deaf) n += d->written();
    return n;
  };
  size_t last_total = deaf_total();
  auto last_change = Clock::now();
  while (Clock::now() - last_change < 1s && Clock::now() - abuse_start < 30s) {
    std::this_thread::sleep_for(100ms);
    if (const size_t n = deaf_total(); n != last_total) {
      last_total = n;
      last_change = Clock::now();
    }
  }
  const double stuck_after = Seconds(abuse_start);
  proxy.Stall(TcpProxy::Direction::kServerToClient, window + 2s);
  std::this_thread::sleep_for(500ms);
  const size_t a1 = load.acked_count();
  const auto t1 = Clock::now();
  std::this_thread::sleep_for(window);
  const double abused = static_cast<double>(load.acked_count() - a1) / Seconds(t1);
  size_t deaf_written = 0;
  for (auto& d : deaf) deaf_written += d->written();
  const uint64_t abuse_peak = rss.peak_kib();

  const auto stopping = Clock::now();
  for (auto& d : deaf) d->Stop();
  proxy.Stall(TcpProxy::Direction::kBoth, 0ms);
  load.Stop();
  stalled.Stop();
  rss.Stop();

  std::printf(
      "slow ack readers: %d deaf clients wrote %zu requests of 100 records (20 KB) in all, stuck "
      "after %.1f s; normal "
      "producers %.0f records/s alone, %.0f records/s with the abuse (%.0f%%); RSS peak %s "
      "before, %s during the abuse\n",
      deaf_clients, deaf_written, stuck_after, baseline, abused, 100.0 * abused / baseline,
      Mib(baseline_peak).c_str(), Mib(abuse_peak).c_str());
#if defined(__SANITIZE_ADDRESS__)
  // The ASan build (tests/run.sh's second stage) runs an ASan wharfd: shadow memory, the
  // allocator's quarantine and a Debug build put its RSS near 600 MiB before any abuse and make
  // it several times slower, so the memory bound and the throughput share are properties of the
  // normal build, where the same test asserts them. Here: the normal producers still make
  // progress, and the checker below still has to find nothing lost.
  EXPECT_GT(abused, 0.0) << "normal producers stalled behind the slow ack readers";
#else
  EXPECT_GT(abused, 0.2 * baseline) << "normal producers keep most of their throughput";
  EXPECT_LT(abuse_peak, kRssBoundKiB);
#endif
  // Each deaf client is paused after about max_inflight_per_stream requests plus what its
  // flow-control windows hold; far below the million it tries to send.
  EXPECT_LT(deaf_written, static_cast<size_t>(deaf_clients) * 1000);

  // The normal producers and the stalled one are checked against their ids (producers 0-1 and
  // 600); the deaf clients' records (producers 500+) have unknown outcomes.
  History deaf_history;
  for (auto& d : deaf) d->LogTo(&deaf_history);
  ASSERT_TRUE(WaitFor([&] { return AllDelivered(wharfd.control()); }, 120s));
  std::printf("slow ack readers: stopped and drained in %.1f s\n", Seconds(stopping));
  const Found found = FindRecords(wharfd, 500);
  std::vector<FoundRecord> deaf_found, stalled_found;
  for (const FoundRecord& r : found.delivered_high) {
    (r.id >= 600ull * 1000000000ull ? stalled_found : deaf_found).push_back(r);
  }
  const CheckerCounts normal = Check(load.history(), found.delivered_low, found.quarantined_low);
  ExpectCheckerOk(normal, "producers beside slow ack readers");
  EXPECT_EQ(normal.unknown, 0u);
  const CheckerCounts s = Check(stalled.history(), stalled_found, {});
  ExpectCheckerOk(s, "producer with stalled acks (proxy)");
  const CheckerCounts d = Check(deaf_history, deaf_found, found.quarantined_high);
  ExpectCheckerOk(d, "clients that never read acks");
  EXPECT_EQ(d.acked, 0u);
  auto code = wharfd.Terminate();
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0);
}

// ---------------------------------------------------------------------------------------------
// Peers that vanish.

TEST(NetworkAbuse, DeadPeerIsCutByKeepaliveLivePeerIsNot) {
  TempDir tmp;
  WharfdConfig config = BaseConfig(tmp);
  config.extra_top = "limits:\n  keepalive_time: 1s\n  keepalive_timeout: 1s\n";
  WharfdProcess wharfd(config);
  ASSERT_TRUE(wharfd.Start().ok());
  // Two idle streams, each through its own proxy: one peer goes silent (nothing it sends reaches
  // wharfd, so neither do its ping answers), the other stays alive but idle.
  TcpProxy dead_proxy(wharfd.config().port), live_proxy(wharfd.config().port);
  ASSERT_TRUE(dead_proxy.Start().ok());
  ASSERT_TRUE(live_proxy.Start().ok());
  struct Peer {
    std::unique_ptr<wharf::v1::Ingest::Stub> stub;
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReaderWriter<ProduceRequest, ProduceResponse>> stream;
  };
  Peer dead, live;
  History history;
  int n = 0;
  for (auto [peer, proxy] :
       {std::make_pair(&dead, &dead_proxy), std::make_pair(&live, &live_proxy)}) {
    peer->stub = wharf::v1::Ingest::NewStub(client::CreateChannel(
        proxy->target(), client::ChannelOptions{.dedicated_connection = true}));
    peer->context.set_deadline(std::chrono::system_clock::now() + 60s);
    peer->stream = peer->stub->Produce(&peer->context);
    const ProduceRequest r = MakeRequest(absl::StrCat("keepalive-", n), 700 + n, 0, 5);
    ++n;
    ASSERT_TRUE(peer->stream->Write(r));
    ProduceResponse resp;
    ASSERT_TRUE(peer->stream->Read(&resp));
    history.Log(Ids(r), ResultOf(resp));
  }
  // The live peer waits for its next answer, as client::Producer's reader thread always does: a
  // gRPC C++ client answers pings only while something polls its connection (an idle sync client
  // only every 5 s, from gRPC's backup poller: keepalive_timeout must stay above that).
  ProduceResponse live_resp;
  bool live_read = false;
  std::thread live_reader([&] { live_read = live.stream->Read(&live_resp); });
  const auto stalled_at = Clock::now();
  dead_proxy.Stall(TcpProxy::Direction::kClientToServer, 60s);
  // keepalive_time 1 s + keepalive_timeout 1 s, with slack for a loaded machine.
  EXPECT_TRUE(WaitFor([&] { return dead_proxy.closed_by_server() > 0; }, 15s))
      << "wharfd did not close the connection of a peer that stopped answering";
  const double cut_after = Seconds(stalled_at);
  std::this_thread::sleep_for(2s);
  EXPECT_EQ(live_proxy.closed_by_server(), 0u) << "an idle but live peer was disconnected";
  ProduceResponse resp;
  EXPECT_FALSE(dead.stream->Read(&resp));
  const grpc::Status dead_status = dead.stream->Finish();
  EXPECT_FALSE(dead_status.ok());
  // The live stream still works.
  const ProduceRequest r = MakeRequest("keepalive-1", 701, 5, 5);
  EXPECT_TRUE(live.stream->Write(r));
  live_reader.join();
  ASSERT_TRUE(live_read);
  history.Log(Ids(r), ResultOf(live_resp));
  live.stream->WritesDone();
  EXPECT_TRUE(live.stream->Finish().ok());
  std::printf(
      "dead peer cut %.1f s after it went silent (keepalive 1 s + 1 s); dead stream "
      "ended with code %d; live idle peer kept\n",
      cut_after, static_cast<int>(dead_status.error_code()));
  dead_proxy.Stop();
  DrainAndCheck(wharfd, history, "keepalive: dead and live peers");
}

// ---------------------------------------------------------------------------------------------
// Garbage, truncated and oversized frames.

int ConnectTo(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  timeval tv{2, 0};  // a send blocked by a full window gives up after 2 s
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  return fd;
}

// Sends what it can (the server may close the connection half-way: that is the point).
size_t SendSome(int fd, const std::string& bytes) {
  size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  return sent;
}

// Reads and discards until the server closes the connection; false if it is still open after
// `timeout`.
// Reads the server's frames until it closes the connection, sends GOAWAY or resets stream 1;
// returns which ("closed", "GOAWAY", "RST_STREAM"), or "" if none came within `timeout`.
std::string WaitServerRefusal(int fd, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::string in;
  size_t pos = 0;  // start of the next frame header in `in`
  char buf[4096];
  while (Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return "closed";
    in.append(buf, static_cast<size_t>(n));
    while (in.size() >= pos + 9) {
      const auto* h = reinterpret_cast<const unsigned char*>(in.data() + pos);
      const size_t len = (size_t{h[0]} << 16) | (size_t{h[1]} << 8) | h[2];
      if (h[3] == 7) return "GOAWAY";
      if (h[3] == 3) return "RST_STREAM";
      pos += 9 + len;
    }
  }
  return "";
}

bool WaitServerClose(int fd, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  char buf[4096];
  while (Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return true;
  }
  return false;
}

std::string Frame(uint8_t type, uint8_t flags, uint32_t stream, const std::string& payload,
                  uint32_t claimed_length = UINT32_MAX) {
  const uint32_t len =
      claimed_length != UINT32_MAX ? claimed_length : static_cast<uint32_t>(payload.size());
  std::string f;
  f.push_back(static_cast<char>((len >> 16) & 0xff));
  f.push_back(static_cast<char>((len >> 8) & 0xff));
  f.push_back(static_cast<char>(len & 0xff));
  f.push_back(static_cast<char>(type));
  f.push_back(static_cast<char>(flags));
  f.push_back(static_cast<char>((stream >> 24) & 0x7f));
  f.push_back(static_cast<char>((stream >> 16) & 0xff));
  f.push_back(static_cast<char>((stream >> 8) & 0xff));
  f.push_back(static_cast<char>(stream & 0xff));
  return f + payload;
}

constexpr uint8_t kData = 0, kHeaders = 1, kSettings = 4;
constexpr uint8_t kEndStream = 1, kEndHeaders = 4, kAck = 1;
const std::string kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// HPACK "literal header field without indexing, new name", no Huffman (names and values here
// are shorter than 127 bytes).
std::string Literal(const std::string& name, const std::string& value) {
  std::string s;
  s.push_back(0);
  s.push_back(static_cast<char>(name.size()));
  s += name;
  s.push_back(static_cast<char>(value.size()));
  s += value;
  return s;
}

// The start of an HTTP/2 connection carrying one Produce call on stream 1.
std::string ProduceCallHeaders() {
  const std::string block = Literal(":method", "POST") + Literal(":scheme", "http") +
                            Literal(":path", "/wharf.v1.Ingest/Produce") +
                            Literal(":authority", "127.0.0.1") +
                            Literal("content-type", "application/grpc") + Literal("te", "trailers");
  return kPreface + Frame(kSettings, 0, 0, "") + Frame(kSettings, kAck, 0, "") +
         Frame(kHeaders, kEndHeaders, 1, block);
}

// A gRPC length-prefixed message (uncompressed) claiming `claimed` bytes.
std::string GrpcPrefix(uint32_t claimed) {
  std::string p(1, '\0');
  p.push_back(static_cast<char>(claimed >> 24));
  p.push_back(static_cast<char>((claimed >> 16) & 0xff));
  p.push_back(static_cast<char>((claimed >> 8) & 0xff));
  p.push_back(static_cast<char>(claimed & 0xff));
  return p;
}

std::string RandomBytes(std::mt19937& rng, size_t n) {
  std::string s(n, '\0');
  for (auto& ch : s) ch = static_cast<char>(rng() & 0xff);
  return s;
}

TEST(NetworkAbuse, GarbageTruncatedAndOversizedFramesLeaveWharfdServing) {
  const auto started = Clock::now();
  TempDir tmp;
  WharfdConfig config = BaseConfig(tmp);
  // gRPC's own receive limit is twice max_message_bytes (server/wharf_server.cc): 2 MiB.
  config.extra_top = "limits:\n  max_message_bytes: 1MiB\n  max_record_bytes: 1MiB\n";
  WharfdProcess wharfd(config);
  ASSERT_TRUE(wharfd.Start().ok());
  const int port = wharfd.config().port;
  RssSampler rss(wharfd.pid());
  std::mt19937 rng(12345);
  History history;
  int closed = 0;

  // 1. Random bytes instead of the HTTP/2 preface.
  for (int i = 0; i < 5; ++i) {
    const int fd = ConnectTo(port);
    ASSERT_GE(fd, 0);
    SendSome(fd, RandomBytes(rng, 256 * 1024));
    EXPECT_TRUE(WaitServerClose(fd, 10s)) << "garbage connection " << i << " left open";
    closed++;
    close(fd);
  }
  // 2. A valid preface, then a DATA frame claiming 16 MiB - 1 bytes (above the 16 KiB
  // SETTINGS_MAX_FRAME_SIZE) followed by junk.
  {
    const int fd = ConnectTo(port);
    ASSERT_GE(fd, 0);
    SendSome(fd, ProduceCallHeaders() + Frame(kData, 0, 1, RandomBytes(rng, 64 * 1024), 0xffffff));
    EXPECT_TRUE(WaitServerClose(fd, 10s)) << "oversized frame: connection left open";
    closed++;
    close(fd);
  }
  // 3. A HEADERS frame whose HPACK block is garbage: the stream or the connection is refused.
  std::string hpack_reaction;
  {
    const int fd = ConnectTo(port);
    ASSERT_GE(fd, 0);
    SendSome(fd, kPreface + Frame(kSettings, 0, 0, "") +
                     Frame(kHeaders, kEndHeaders, 1, RandomBytes(rng, 300)));
    hpack_reaction = WaitServerRefusal(fd, 10s);
    EXPECT_NE(hpack_reaction, "") << "garbage HPACK: neither refused nor closed";
    close(fd);
  }
  // 4. A frame header cut in the middle, then close; and a connection closed right after the
  // preface.
  for (const std::string& bytes : {kPreface + Frame(kSettings, 0, 0, "").substr(0, 5), kPreface}) {
    const int fd = ConnectTo(port);
    ASSERT_GE(fd, 0);
    SendSome(fd, bytes);
    close(fd);
  }
  // 5. Produce calls whose message is cut short, then the connection closes: records of an
  // incomplete message can never be stored (logged as refused: the checker counts any of them
  // found as unexpected).
  for (int i = 0; i < 5; ++i) {
    const ProduceRequest r = MakeRequest(absl::StrCat("truncated-", i), 800 + i, 0, 50);
    const std::string msg = r.SerializeAsString();
    const int fd = ConnectTo(port);
    ASSERT_GE(fd, 0);
    const std::string part = GrpcPrefix(static_cast<uint32_t>(msg.size())) +
                             msg.substr(0, msg.size() * static_cast<size_t>(i + 1) / 7);
    SendSome(fd, ProduceCallHeaders() + Frame(kData, 0, 1, part.substr(0, 16000)));
    std::this_thread::sleep_for(50ms);
    close(fd);
    history.LogRefused(Ids(r));
  }
  // 6. A gRPC message whose length prefix claims 1 GiB, then as much data as wharfd lets in
  // within a few seconds (frames of 16 KiB, up to 64 MiB): it must refuse or bound it, not
  // buffer towards 1 GiB.
  size_t pumped = 0;
  {
    const int fd = ConnectTo(port);
    ASSERT_GE(fd, 0);
    SendSome(fd, ProduceCallHeaders() + Frame(kData, 0, 1, GrpcPrefix(1u << 30)));
    const std::string chunk = Frame(kData, 0, 1, RandomBytes(rng, 16384));
    const auto until = Clock::now() + 4s;
    while (Clock::now() < until && pumped < (64u << 20)) {
      const size_t n = SendSome(fd, chunk);
      pumped += n;
      if (n < chunk.size()) break;  // the window is shut (send timed out) or the server closed
    }
    close(fd);
  }
  // 7. Through gRPC: a message above gRPC's 2 MiB receive limit (RESOURCE_EXHAUSTED, never seen
  // by the ingest service: logged as refused), and one above max_message_bytes but below the
  // gRPC limit (INVALID_ARGUMENT from the ingest service).
  auto stub = wharf::v1::Ingest::NewStub(client::CreateChannel(wharfd.target()));
  grpc::StatusCode huge_code = grpc::StatusCode::OK;
  {
    const ProduceRequest r = MakeRequest("huge", 900, 0, 6, 512 * 1024);  // about 3 MiB
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 30s);
    auto stream = stub->Produce(&ctx);
    stream->Write(r);
    ProduceResponse resp;
    EXPECT_FALSE(stream->Read(&resp)) << "an answer to a message over gRPC's limit";
    const grpc::Status st = stream->Finish();
    huge_code = st.error_code();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
    history.LogRefused(Ids(r));
  }
  {
    const ProduceRequest r = MakeRequest("big", 901, 0, 3, 512 * 1024);  // about 1.5 MiB
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 30s);
    auto stream = stub->Produce(&ctx);
    ASSERT_TRUE(stream->Write(r));
    ProduceResponse resp;
    ASSERT_TRUE(stream->Read(&resp));
    EXPECT_EQ(resp.status().code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT))
        << resp.status().message();
    history.Log(Ids(r), ResultOf(resp));
    stream->WritesDone();
    EXPECT_TRUE(stream->Finish().ok());
  }

  // wharfd is still there, serves, and its memory stayed bounded.
  EXPECT_FALSE(wharfd.CheckExited()) << "wharfd died; log:\n" << wharfd.Log();
  ASSERT_TRUE(wharfd.running());
  ProducerLoadOptions lo;
  lo.target = wharfd.target();
  lo.producers = 2;
  lo.records_per_producer = Extended() ? 20000 : 2000;
  lo.pause = 5ms;
  ProducerLoad load(lo);
  load.Start();
  load.Stop();
  rss.Stop();
  for (const auto& [id, outcome] : load.history().Outcomes()) {
    (void)id;
    EXPECT_EQ(outcome, RequestOutcome::kAcked);
  }
  // The load's records must all be there, the refused ones must not.
  ASSERT_TRUE(WaitFor([&] { return AllDelivered(wharfd.control()); }, 120s));
  const Found drained = FindRecords(wharfd, 800);
  const CheckerCounts normal =
      Check(load.history(), drained.delivered_low, drained.quarantined_low);
  ExpectCheckerOk(normal, "producers after garbage and oversized frames");
  EXPECT_EQ(normal.acked, static_cast<size_t>(2 * lo.records_per_producer));
  const CheckerCounts abuse = Check(history, drained.delivered_high, drained.quarantined_high);
  ExpectCheckerOk(abuse, "truncated and oversized messages");
  EXPECT_EQ(abuse.delivered + abuse.quarantined, 0u) << "no record of a refused message stored";
  EXPECT_GT(abuse.failed, 0u);
  std::printf(
      "garbage/oversized: %d connections closed by wharfd, garbage HPACK answered with %s, %zu "
      "bytes pumped after a 1 GiB length prefix, >2 MiB message: code %d, RSS peak %s, %.1f s\n",
      closed, hpack_reaction.c_str(), pumped, static_cast<int>(huge_code),
      Mib(rss.peak_kib()).c_str(), Seconds(started));
  EXPECT_LT(rss.peak_kib(), kRssBoundKiB);
  auto code = wharfd.Terminate();
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0);
}

}  // namespace
}  // namespace wharf::testing
