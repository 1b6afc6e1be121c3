#include "client/producer.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "client/channel.h"
#include "google/rpc/error_details.pb.h"
#include "wharf/v1/ingest.grpc.pb.h"

namespace wharf::client {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// What the fake does with a request that is next in sequence (the hook is not consulted for
// duplicates, out-of-order requests or invalid ones).
enum class Fault {
  kNone,
  kResourceExhausted,  // answered at once with RESOURCE_EXHAUSTED + RetryInfo
  kUnavailable,        // answered at once with UNAVAILABLE
  kAbortBeforeStore,   // the stream ends with UNAVAILABLE, nothing stored
  kAbortAfterStore,    // stored, then the stream ends before the answer is written
};

// An Ingest service that checks sequences like wharfd: per producer, each request must start
// at the next expected sequence; a retry of one of the last 64 stored requests is answered with
// its original acks (duplicate=true); anything else is FAILED_PRECONDITION. A request holding a
// record with payload "INVALID" is answered INVALID_ARGUMENT at once. OK answers are written
// after ack_delay by a writer thread, so errors overtake them like on the real server.
//
// Thread safety: thread-safe; configuration setters may be called while streams run.
class FakeIngest final : public wharf::v1::Ingest::Service {
 public:
  struct Received {
    uint64_t first_sequence;
    size_t records;
    int stream;
    Clock::time_point time;
  };
  struct Stored {
    std::string producer_id;
    uint64_t sequence;
    std::string payload;
  };

  void set_fault_hook(std::function<Fault(const wharf::v1::ProduceRequest&)> hook) {
    std::lock_guard<std::mutex> lock(mu_);
    hook_ = std::move(hook);
  }
  void set_ack_delay(milliseconds delay) {
    std::lock_guard<std::mutex> lock(mu_);
    ack_delay_ = delay;
  }
  void set_retry_delay(milliseconds delay) {
    std::lock_guard<std::mutex> lock(mu_);
    retry_delay_ = delay;
  }
  std::vector<Received> received() const {
    std::lock_guard<std::mutex> lock(mu_);
    return received_;
  }
  std::vector<Stored> stored() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stored_;
  }
  int max_inflight() const {
    std::lock_guard<std::mutex> lock(mu_);
    return max_inflight_;
  }
  int streams() const {
    std::lock_guard<std::mutex> lock(mu_);
    return streams_;
  }

  grpc::Status Produce(grpc::ServerContext* /*context*/,
                       grpc::ServerReaderWriter<wharf::v1::ProduceResponse,
                                                wharf::v1::ProduceRequest>* stream) override {
    int stream_no;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stream_no = ++streams_;
    }
    // Answers due at a time, written by `writer`.
    std::mutex wmu;
    std::condition_variable wcv;
    std::multimap<Clock::time_point, wharf::v1::ProduceResponse> queue;
    bool stop = false;
    int inflight = 0;
    std::thread writer([&] {
      std::unique_lock<std::mutex> lock(wmu);
      while (!stop) {
        if (queue.empty()) {
          wcv.wait(lock);
          continue;
        }
        auto it = queue.begin();
        if (Clock::now() < it->first) {
          wcv.wait_until(lock, it->first);
          continue;
        }
        wharf::v1::ProduceResponse response = std::move(it->second);
        queue.erase(it);
        --inflight;
        lock.unlock();
        const bool ok = stream->Write(response);
        lock.lock();
        if (!ok) break;
      }
    });

    grpc::Status result = grpc::Status::OK;
    wharf::v1::ProduceRequest request;
    while (stream->Read(&request)) {
      Decision decision = Process(request, stream_no);
      if (decision.abort) {
        result = grpc::Status(grpc::StatusCode::UNAVAILABLE, "injected stream abort");
        break;
      }
      std::lock_guard<std::mutex> lock(wmu);
      ++inflight;
      {
        std::lock_guard<std::mutex> state_lock(mu_);
        max_inflight_ = std::max(max_inflight_, inflight);
      }
      queue.emplace(Clock::now() + decision.delay, std::move(decision.response));
      wcv.notify_all();
    }
    {
      std::lock_guard<std::mutex> lock(wmu);
      stop = true;
      wcv.notify_all();
    }
    writer.join();
    return result;
  }

  grpc::Status ProduceOne(grpc::ServerContext* /*context*/,
                          const wharf::v1::ProduceRequest* request,
                          wharf::v1::ProduceResponse* response) override {
    Decision decision = Process(*request, 0);
    if (decision.abort) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "injected abort");
    const google::rpc::Status& status = decision.response.status();
    if (status.code() != 0) {
      return grpc::Status(static_cast<grpc::StatusCode>(status.code()), status.message(),
                          status.SerializeAsString());
    }
    *response = std::move(decision.response);
    return grpc::Status::OK;
  }

 private:
  struct Decision {
    wharf::v1::ProduceResponse response;
    milliseconds delay{0};
    bool abort = false;
  };
  struct WindowEntry {
    uint64_t first_sequence;
    size_t records;
    std::vector<wharf::v1::RecordAck> acks;
  };
  struct ProducerState {
    uint64_t expected = 0;
    std::vector<WindowEntry> window;
  };

  Decision Process(const wharf::v1::ProduceRequest& request, int stream_no) {
    std::lock_guard<std::mutex> lock(mu_);
    received_.push_back(Received{request.first_sequence(),
                                 static_cast<size_t>(request.records_size()), stream_no,
                                 Clock::now()});
    Decision decision;
    decision.response.set_request_id(request.request_id());
    google::rpc::Status* status = decision.response.mutable_status();
    for (const wharf::v1::Record& record : request.records()) {
      if (record.payload() == "INVALID") {
        status->set_code(grpc::StatusCode::INVALID_ARGUMENT);
        status->set_message("record is invalid");
        return decision;
      }
    }
    ProducerState& state = producers_[request.producer_id()];
    const uint64_t first = request.first_sequence();
    const size_t count = static_cast<size_t>(request.records_size());
    if (first != state.expected) {
      for (const WindowEntry& entry : state.window) {
        if (entry.first_sequence == first && entry.records == count) {
          decision.response.set_duplicate(true);
          for (const wharf::v1::RecordAck& ack : entry.acks) *decision.response.add_acks() = ack;
          decision.delay = ack_delay_;
          return decision;
        }
      }
      status->set_code(grpc::StatusCode::FAILED_PRECONDITION);
      status->set_message("out of order sequence: expected " + std::to_string(state.expected) +
                          ", got " + std::to_string(first));
      return decision;
    }
    const Fault fault = hook_ ? hook_(request) : Fault::kNone;
    switch (fault) {
      case Fault::kResourceExhausted: {
        status->set_code(grpc::StatusCode::RESOURCE_EXHAUSTED);
        status->set_message("quota exceeded");
        google::rpc::RetryInfo info;
        info.mutable_retry_delay()->set_seconds(retry_delay_.count() / 1000);
        info.mutable_retry_delay()->set_nanos(static_cast<int32_t>(retry_delay_.count() % 1000) *
                                              1'000'000);
        status->add_details()->PackFrom(info);
        return decision;
      }
      case Fault::kUnavailable:
        status->set_code(grpc::StatusCode::UNAVAILABLE);
        status->set_message("store failure");
        return decision;
      case Fault::kAbortBeforeStore:
        decision.abort = true;
        return decision;
      case Fault::kNone:
      case Fault::kAbortAfterStore:
        break;
    }
    WindowEntry entry{first, count, {}};
    for (int i = 0; i < request.records_size(); ++i) {
      wharf::v1::RecordAck ack;
      ack.set_partition(0);
      ack.set_offset(next_offset_++);
      entry.acks.push_back(ack);
      *decision.response.add_acks() = ack;
      stored_.push_back(Stored{request.producer_id(), first + i, request.records(i).payload()});
    }
    state.window.push_back(std::move(entry));
    if (state.window.size() > 64) state.window.erase(state.window.begin());
    state.expected = first + count;
    decision.delay = ack_delay_;
    decision.abort = fault == Fault::kAbortAfterStore;
    return decision;
  }

  mutable std::mutex mu_;
  std::function<Fault(const wharf::v1::ProduceRequest&)> hook_;
  milliseconds ack_delay_{0};
  milliseconds retry_delay_{0};
  std::map<std::string, ProducerState> producers_;
  std::vector<Received> received_;
  std::vector<Stored> stored_;
  uint64_t next_offset_ = 0;
  int max_inflight_ = 0;
  int streams_ = 0;
};

// A gRPC server on 127.0.0.1 running a FakeIngest. Not thread-safe.
class FakeServer {
 public:
  explicit FakeServer(FakeIngest* service, int port = 0, int max_receive_bytes = -1)
      : service_(service), max_receive_bytes_(max_receive_bytes) {
    Start(port);
  }
  ~FakeServer() { Stop(); }

  void Start(int port) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:" + std::to_string(port), grpc::InsecureServerCredentials(),
                             &port_);
    builder.RegisterService(service_);
    if (max_receive_bytes_ > 0) builder.SetMaxReceiveMessageSize(max_receive_bytes_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_NE(port_, 0);
  }
  void Stop() {
    if (server_ == nullptr) return;
    server_->Shutdown(std::chrono::system_clock::now() + milliseconds(100));
    server_->Wait();
    server_.reset();
  }
  void Restart() {
    Stop();
    Start(port_);
  }
  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }

 private:
  FakeIngest* service_;
  const int max_receive_bytes_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

std::vector<wharf::v1::Record> MakeRecords(uint64_t first_index, size_t count) {
  std::vector<wharf::v1::Record> records(count);
  for (size_t i = 0; i < count; ++i) records[i].set_payload("r" + std::to_string(first_index + i));
  return records;
}

// Collects callback results, one slot per Send.
class Results {
 public:
  Producer::Callback Slot(size_t index) {
    std::lock_guard<std::mutex> lock(mu_);
    if (results_.size() <= index) {
      results_.resize(index + 1);
      calls_.resize(index + 1, 0);
    }
    return [this, index](const SendResult& result) {
      std::lock_guard<std::mutex> lock(mu_);
      results_[index] = result;
      ++calls_[index];
      cv_.notify_all();
    };
  }
  SendResult Get(size_t index) const {
    std::lock_guard<std::mutex> lock(mu_);
    return results_.at(index);
  }
  int Calls(size_t index) const {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_.at(index);
  }
  size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return results_.size();
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<SendResult> results_;
  std::vector<int> calls_;
};

ProducerOptions FastOptions(const std::string& producer_id = "p1") {
  ProducerOptions options;
  options.dataset = "events";
  options.producer_id = producer_id;
  options.initial_backoff = milliseconds(5);
  options.max_backoff = milliseconds(50);
  return options;
}

std::shared_ptr<grpc::Channel> Connect(const FakeServer& server) {
  ChannelOptions options;
  options.min_reconnect_backoff = milliseconds(50);
  options.max_reconnect_backoff = milliseconds(200);
  return CreateChannel(server.target(), options);
}

// The stored sequences of `producer_id`, in store order.
std::vector<uint64_t> StoredSequences(const FakeIngest& fake, const std::string& producer_id) {
  std::vector<uint64_t> sequences;
  for (const FakeIngest::Stored& s : fake.stored()) {
    if (s.producer_id == producer_id) sequences.push_back(s.sequence);
  }
  return sequences;
}

std::vector<uint64_t> Iota(uint64_t count) {
  std::vector<uint64_t> v(count);
  for (uint64_t i = 0; i < count; ++i) v[i] = i;
  return v;
}

TEST(ProducerTest, CreateValidatesOptions) {
  FakeIngest fake;
  FakeServer server(&fake);
  ProducerOptions options;
  EXPECT_EQ(Producer::Create(Connect(server), options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.dataset = "events";
  options.max_inflight_requests = 65;
  EXPECT_EQ(Producer::Create(Connect(server), options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.max_inflight_requests = 8;
  absl::StatusOr<std::unique_ptr<Producer>> producer = Producer::Create(Connect(server), options);
  ASSERT_TRUE(producer.ok()) << producer.status();
  EXPECT_EQ((*producer)->producer_id().size(), 32u);
  EXPECT_EQ((*producer)->Send({}, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ProducerTest, RefusesOversizedRequests) {
  FakeIngest fake;
  FakeServer server(&fake);
  ProducerOptions options = FastOptions();
  options.max_request_bytes = 1000;
  auto producer = Producer::Create(Connect(server), options);
  ASSERT_TRUE(producer.ok());
  std::vector<wharf::v1::Record> records(1);
  records[0].set_payload(std::string(2000, 'x'));
  EXPECT_EQ((*producer)->Send(std::move(records), nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*producer)->next_sequence(), 0u);
  Results results;
  ASSERT_TRUE((*producer)->Send(MakeRecords(0, 3), results.Slot(0)).ok());
  ASSERT_TRUE((*producer)->Flush(milliseconds(5000)).ok());
  EXPECT_TRUE(results.Get(0).status.ok());
}

TEST(ProducerTest, RequestLargerThanServerLimitFailsAlone) {
  FakeIngest fake;
  FakeServer server(&fake, 0, /*max_receive_bytes=*/64 << 10);
  auto producer = Producer::Create(Connect(server), FastOptions());
  ASSERT_TRUE(producer.ok());
  Results results;
  ASSERT_TRUE((*producer)->Send(MakeRecords(0, 2), results.Slot(0)).ok());
  std::vector<wharf::v1::Record> big(1);
  big[0].set_payload(std::string(100 << 10, 'x'));
  ASSERT_TRUE((*producer)->Send(std::move(big), results.Slot(1)).ok());
  ASSERT_TRUE((*producer)->Send(MakeRecords(10, 3), results.Slot(2)).ok());
  ASSERT_TRUE((*producer)->Flush(milliseconds(5000)).ok());
  EXPECT_TRUE(results.Get(0).status.ok());
  EXPECT_EQ(results.Get(1).status.code(), absl::StatusCode::kInvalidArgument)
      << results.Get(1).status;
  EXPECT_TRUE(results.Get(2).status.ok()) << results.Get(2).status;
  EXPECT_EQ(results.Get(2).first_sequence, 2u);
  EXPECT_EQ(StoredSequences(fake, "p1"), Iota(5));
}

TEST(ProducerTest, PipelinesRequestsAndAcksEveryRecord) {
  FakeIngest fake;
  fake.set_ack_delay(milliseconds(200));
  FakeServer server(&fake);
  auto producer = Producer::Create(Connect(server), FastOptions());
  ASSERT_TRUE(producer.ok()) << producer.status();
  Results results;
  const Clock::time_point start = Clock::now();
  for (size_t i = 0; i < 8; ++i) {
    ASSERT_TRUE((*producer)->Send(MakeRecords(i * 10, 10), results.Slot(i)).ok());
  }
  ASSERT_TRUE((*producer)->Flush(milliseconds(5000)).ok());
  const auto elapsed = Clock::now() - start;
  // Serial request/answer would take 8 x 200 ms.
  EXPECT_LT(elapsed, milliseconds(1200));
  EXPECT_GE(fake.max_inflight(), 4);
  for (size_t i = 0; i < 8; ++i) {
    const SendResult r = results.Get(i);
    EXPECT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(r.first_sequence, i * 10);
    EXPECT_EQ(r.acks.size(), 10u);
    EXPECT_FALSE(r.duplicate);
    EXPECT_EQ(r.attempts, 1);
    EXPECT_EQ(results.Calls(i), 1);
  }
  EXPECT_EQ(StoredSequences(fake, "p1"), Iota(80));
  EXPECT_EQ((*producer)->next_sequence(), 80u);
  EXPECT_EQ((*producer)->stats().records_acked, 80u);
}

TEST(ProducerTest, SendBlocksAtMaxInflight) {
  FakeIngest fake;
  fake.set_ack_delay(milliseconds(300));
  FakeServer server(&fake);
  ProducerOptions options = FastOptions();
  options.max_inflight_requests = 2;
  auto producer = Producer::Create(Connect(server), options);
  ASSERT_TRUE(producer.ok());
  Results results;
  const Clock::time_point start = Clock::now();
  for (size_t i = 0; i < 3; ++i) {
    ASSERT_TRUE((*producer)->Send(MakeRecords(i, 1), results.Slot(i)).ok());
  }
  // The third Send had to wait for the first answer.
  EXPECT_GE(Clock::now() - start, milliseconds(250));
  ASSERT_TRUE((*producer)->Flush(milliseconds(5000)).ok());
  EXPECT_LE(fake.max_inflight(), 2);
}

TEST(ProducerTest, RetryResendsSameSequencesInOrder) {
  FakeIngest fake;
  fake.set_ack_delay(milliseconds(30));
  std::atomic<bool> failed{false};
  fake.set_fault_hook([&](const wharf::v1::ProduceRequest& request) {
    if (request.first_sequence() == 20 && !failed.exchange(true)) {
      return Fault::kResourceExhausted;
    }
    return Fault::kNone;
  });
  FakeServer server(&fake);
  auto producer = Producer::Create(Connect(server), FastOptions());
  ASSERT_TRUE(producer.ok());
  Results results;
  for (size_t i = 0; i < 5; ++i) {
    ASSERT_TRUE((*producer)->Send(MakeRecords(i * 10, 10), results.Slot(i)).ok());
  }
  ASSERT_TRUE((*producer)->Flush(milliseconds(5000)).ok());
  for (size_t i = 0; i < 5; ++i) {
    const SendResult r = results.Get(i);
    ASSERT_TRUE(r.status.ok()) << i << ": " << r.status;
    EXPECT_EQ(r.first_sequence, i * 10);
    EXPECT_EQ(results.Calls(i), 1);
  }
  EXPECT_EQ(results.Get(2).attempts, 2);
  EXPECT_EQ(results.Get(0).attempts, 1);
  EXPECT_EQ(StoredSequences(fake, "p1"), Iota(50));

  // After the failed attempt of 20, the requests were resent from 20 on, in order, with the
  // same sequence numbers.
  const std::vector<FakeIngest::Received> received = fake.received();
  size_t first_fail = 0;
  while (first_fail < received.size() && received[first_fail].first_sequence != 20) ++first_fail;
  ASSERT_LT(first_fail, received.size());
  std::vector<uint64_t> resent;
  for (size_t i = first_fail + 1; i < received.size(); ++i) {
    if (received[i].first_sequence == 20) {
      for (size_t j = i; j < received.size(); ++j) resent.push_back(received[j].first_sequence);
      break;
    }
  }
  EXPECT_EQ(resent, (std::vector<uint64_t>{20, 30, 40}));
  EXPECT_GE((*producer)->stats().retries, 1u);
}

TEST(ProducerTest, HonoursRetryInfoDelay) {
  FakeIngest fake;
  fake.set_retry_delay(milliseconds(700));
  std::atomic<int> failures{0};
  fake.set_fault_hook([&](const wharf::v1::ProduceRequest&) {
    return failures.fetch_add(1) == 0 ? Fault::kResourceExhausted : Fault::kNone;
  });
  FakeServer server(&fake);
  ProducerOptions options = FastOptions();
  options.initial_backoff = milliseconds(1);
  auto producer = Producer::Create(Connect(server), options);
  ASSERT_TRUE(producer.ok());
  Results results;
  const Clock::time_point start = Clock::now();
  ASSERT_TRUE((*producer)->Send(MakeRecords(0, 3), results.Slot(0)).ok());
  ASSERT_TRUE((*producer)->Flush(milliseconds(5000)).ok());
  const auto elapsed = Clock::now() - start;
  EXPECT_TRUE(results.Get(0).status.ok());
  EXPECT_EQ(results.Get(0).attempts, 2);
  EXPECT_GE(elapsed, milliseconds(690));
  EXPECT_LT(elapsed, milliseconds(3000));
  const std::vector<FakeIngest::Received> received = fake.received();
  ASSERT_EQ(received.size(), 2u);
  EXPECT_GE(received[1].time - received[0].time, milliseconds(690));
}

TEST(ProducerTest, ReconnectsAfterStreamAbortAndStoresEveryRecordOnce) {
  FakeIngest fake;
  fake.set_ack_delay(milliseconds(10));
  std::atomic<bool> aborted_after{false};
  std::atomic<bool> aborted_before{false};
  fake.set_fault_hook([&](const wharf::v1::ProduceRequest& request) {
    if (request.first_sequence() == 30 && !aborted_after.exchange(true)) {
      return Fault::kAbortAfterStore;
    }
    if (request.first_sequence() == 60 && !aborted_before.exchange(true)) {
      return Fault::kAbortBeforeStore;
    }
    return Fault::kNone;
  });
  FakeServer server(&fake);
  ProducerOptions options = FastOptions();
  options.max_inflight_requests = 4;
  auto producer = Producer::Create(Connect(server), options);
  ASSERT_TRUE(producer.ok());
  Results results;
  for (size_t i = 0; i < 20; ++i) {
    ASSERT_TRUE((*producer)->Send(MakeRecords(i * 5, 5), results.Slot(i)).ok());
  }
  ASSERT_TRUE((*producer)->Flush(milliseconds(8000)).ok());
  bool saw_duplicate = false;
  for (size_t i = 0; i < 20; ++i) {
    const SendResult r = results.Get(i);
    ASSERT_TRUE(r.status.ok()) << i << ": " << r.status;
    EXPECT_EQ(r.first_sequence, i * 5);
    EXPECT_EQ(r.acks.size(), 5u);
    EXPECT_EQ(results.Calls(i), 1);
    saw_duplicate |= r.duplicate;
  }
  EXPECT_TRUE(saw_duplicate);  // the request stored before the first abort
  EXPECT_EQ(StoredSequences(fake, "p1"), Iota(100));
  const ProducerStats stats = (*producer)->stats();
  EXPECT_GE(stats.reconnects, 2u);
  EXPECT_GE(fake.streams(), 3);
}

TEST(ProducerTest, SurvivesServerRestart) {
  FakeIngest fake;
  fake.set_ack_delay(milliseconds(20));
  FakeServer server(&fake);
  auto producer = Producer::Create(Connect(server), FastOptions());
  ASSERT_TRUE(producer.ok());
  Results results;
  for (size_t i = 0; i < 5; ++i) {
    ASSERT_TRUE((*producer)->Send(MakeRecords(i, 1), results.Slot(i)).ok());
  }
  ASSERT_TRUE((*producer)->Flush(milliseconds(5000)).ok());
  server.Stop();
  for (size_t i = 5; i < 10; ++i) {
    ASSERT_TRUE((*producer)->Send(MakeRecords(i, 1), results.Slot(i)).ok());
  }
  std::this_thread::sleep_for(milliseconds(300));
  server.Start(server.port());
  ASSERT_TRUE((*producer)->Flush(milliseconds(8000)).ok());
  for (size_t i = 0; i < 10; ++i) {
    EXPECT_TRUE(results.Get(i).status.ok()) << i << ": " << results.Get(i).status;
    EXPECT_EQ(results.Calls(i), 1);
  }
  EXPECT_EQ(StoredSequences(fake, "p1"), Iota(10));
}

TEST(ProducerTest, PermanentFailureRenumbersLaterRequests) {
  FakeIngest fake;
  fake.set_ack_delay(milliseconds(50));
  FakeServer server(&fake);
  auto producer = Producer::Create(Connect(server), FastOptions());
  ASSERT_TRUE(producer.ok());
  Results results;
  for (size_t i = 0; i < 5; ++i) {
    std::vector<wharf::v1::Record> records = MakeRecords(i * 10, 10);
    if (i == 2) records[3].set_payload("INVALID");
    ASSERT_TRUE((*producer)->Send(std::move(records), results.Slot(i)).ok());
  }
  ASSERT_TRUE((*producer)->Flush(milliseconds(5000)).ok());
  EXPECT_EQ(results.Get(2).status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(results.Get(0).status.ok());
  EXPECT_TRUE(results.Get(1).status.ok());
  EXPECT_TRUE(results.Get(3).status.ok()) << results.Get(3).status;
  EXPECT_TRUE(results.Get(4).status.ok()) << results.Get(4).status;
  EXPECT_EQ(results.Get(3).first_sequence, 20u);
  EXPECT_EQ(results.Get(4).first_sequence, 30u);
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ(results.Calls(i), 1);
  EXPECT_EQ(StoredSequences(fake, "p1"), Iota(40));
  EXPECT_EQ((*producer)->next_sequence(), 40u);
  // The records of request 3 are stored under the sequences of the failed one.
  const std::vector<FakeIngest::Stored> stored = fake.stored();
  EXPECT_EQ(stored[20].payload, "r30");
  // The producer goes on from there.
  ASSERT_TRUE((*producer)->Send(MakeRecords(50, 2), results.Slot(5)).ok());
  ASSERT_TRUE((*producer)->Flush(milliseconds(5000)).ok());
  EXPECT_EQ(results.Get(5).first_sequence, 40u);
  EXPECT_EQ(StoredSequences(fake, "p1"), Iota(42));
}

TEST(ProducerTest, LastRequestFailingPermanentlyRewindsNextSequence) {
  FakeIngest fake;
  FakeServer server(&fake);
  auto producer = Producer::Create(Connect(server), FastOptions());
  ASSERT_TRUE(producer.ok());
  Results results;
  ASSERT_TRUE((*producer)->Send(MakeRecords(0, 4), results.Slot(0)).ok());
  std::vector<wharf::v1::Record> bad = MakeRecords(4, 3);
  bad[0].set_payload("INVALID");
  ASSERT_TRUE((*producer)->Send(std::move(bad), results.Slot(1)).ok());
  ASSERT_TRUE((*producer)->Flush(milliseconds(5000)).ok());
  EXPECT_TRUE(results.Get(0).status.ok());
  EXPECT_EQ(results.Get(1).status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*producer)->next_sequence(), 4u);
}

TEST(ProducerTest, WrongFirstSequenceFailsWithoutLooping) {
  FakeIngest fake;
  FakeServer server(&fake);
  ProducerOptions options = FastOptions();
  options.first_sequence = 7;  // the server expects 0
  auto producer = Producer::Create(Connect(server), options);
  ASSERT_TRUE(producer.ok());
  Results results;
  for (size_t i = 0; i < 3; ++i) {
    ASSERT_TRUE((*producer)->Send(MakeRecords(i, 2), results.Slot(i)).ok());
  }
  ASSERT_TRUE((*producer)->Flush(milliseconds(5000)).ok());
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(results.Get(i).status.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(results.Calls(i), 1);
  }
  EXPECT_TRUE(fake.stored().empty());
  EXPECT_EQ((*producer)->next_sequence(), 7u);
}

TEST(ProducerTest, ResumedProducerGetsDuplicates) {
  FakeIngest fake;
  FakeServer server(&fake);
  std::vector<SendResult> first_run;
  {
    auto producer = Producer::Create(Connect(server), FastOptions("resumable"));
    ASSERT_TRUE(producer.ok());
    Results results;
    ASSERT_TRUE((*producer)->Send(MakeRecords(0, 3), results.Slot(0)).ok());
    ASSERT_TRUE((*producer)->Flush(milliseconds(5000)).ok());
    first_run.push_back(results.Get(0));
  }
  auto producer = Producer::Create(Connect(server), FastOptions("resumable"));
  ASSERT_TRUE(producer.ok());
  Results results;
  ASSERT_TRUE((*producer)->Send(MakeRecords(0, 3), results.Slot(0)).ok());
  ASSERT_TRUE((*producer)->Flush(milliseconds(5000)).ok());
  const SendResult r = results.Get(0);
  ASSERT_TRUE(r.status.ok());
  EXPECT_TRUE(r.duplicate);
  ASSERT_EQ(r.acks.size(), 3u);
  EXPECT_EQ(r.acks[2].offset(), first_run[0].acks[2].offset());
  EXPECT_EQ(StoredSequences(fake, "resumable"), Iota(3));
}

TEST(ProducerTest, CloseAnswersPendingRequests) {
  FakeIngest fake;
  fake.set_ack_delay(milliseconds(20000));
  FakeServer server(&fake);
  auto producer = Producer::Create(Connect(server), FastOptions());
  ASSERT_TRUE(producer.ok());
  Results results;
  for (size_t i = 0; i < 3; ++i) {
    ASSERT_TRUE((*producer)->Send(MakeRecords(i, 1), results.Slot(i)).ok());
  }
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_EQ((*producer)->Flush(milliseconds(50)).code(), absl::StatusCode::kDeadlineExceeded);
  const Clock::time_point start = Clock::now();
  (*producer)->Close();
  EXPECT_LT(Clock::now() - start, milliseconds(2000));
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(results.Calls(i), 1);
    EXPECT_EQ(results.Get(i).status.code(), absl::StatusCode::kCancelled);
  }
  EXPECT_EQ((*producer)->next_sequence(), 0u);
  EXPECT_EQ((*producer)->Send(MakeRecords(0, 1), nullptr).code(),
            absl::StatusCode::kFailedPrecondition);
  (*producer)->Close();  // idempotent
}

TEST(ProducerTest, CloseWhileServerIsDownIsPrompt) {
  FakeIngest fake;
  auto server = std::make_unique<FakeServer>(&fake);
  const std::string target = server->target();
  server.reset();
  auto producer = Producer::Create(CreateChannel(target), FastOptions());
  ASSERT_TRUE(producer.ok());
  Results results;
  ASSERT_TRUE((*producer)->Send(MakeRecords(0, 1), results.Slot(0)).ok());
  std::this_thread::sleep_for(milliseconds(300));
  const Clock::time_point start = Clock::now();
  (*producer)->Close();
  EXPECT_LT(Clock::now() - start, milliseconds(2000));
  EXPECT_EQ(results.Calls(0), 1);
  EXPECT_EQ(results.Get(0).status.code(), absl::StatusCode::kCancelled);
  EXPECT_GE((*producer)->stats().stream_failures, 1u);
}

TEST(ProducerTest, RetryTimeoutGivesUp) {
  FakeIngest fake;
  auto server = std::make_unique<FakeServer>(&fake);
  const std::string target = server->target();
  server.reset();
  ProducerOptions options = FastOptions();
  options.retry_timeout = milliseconds(300);
  auto producer = Producer::Create(CreateChannel(target), options);
  ASSERT_TRUE(producer.ok());
  Results results;
  ASSERT_TRUE((*producer)->Send(MakeRecords(0, 1), results.Slot(0)).ok());
  ASSERT_TRUE((*producer)->Send(MakeRecords(1, 1), results.Slot(1)).ok());
  ASSERT_TRUE((*producer)->Flush(milliseconds(5000)).ok());
  EXPECT_EQ(results.Get(0).status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(results.Get(1).status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ((*producer)->Send(MakeRecords(2, 1), nullptr).code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ((*producer)->next_sequence(), 0u);
}

TEST(ProducerTest, UnavailableAnswersAreRetried) {
  FakeIngest fake;
  std::atomic<int> count{0};
  fake.set_fault_hook([&](const wharf::v1::ProduceRequest&) {
    return count.fetch_add(1) < 3 ? Fault::kUnavailable : Fault::kNone;
  });
  FakeServer server(&fake);
  auto producer = Producer::Create(Connect(server), FastOptions());
  ASSERT_TRUE(producer.ok());
  Results results;
  ASSERT_TRUE((*producer)->Send(MakeRecords(0, 2), results.Slot(0)).ok());
  ASSERT_TRUE((*producer)->Flush(milliseconds(5000)).ok());
  EXPECT_TRUE(results.Get(0).status.ok());
  EXPECT_EQ(results.Get(0).attempts, 4);
}

// Random faults of every kind with several producers: every callback runs once, and the records
// each producer got acked are stored exactly once, contiguously and in Send order.
TEST(ProducerTest, RandomFaultsKeepExactlyOnceAndOrder) {
  FakeIngest fake;
  fake.set_retry_delay(milliseconds(2));
  std::mutex rng_mu;
  std::mt19937 rng(42);
  fake.set_fault_hook([&](const wharf::v1::ProduceRequest&) {
    std::lock_guard<std::mutex> lock(rng_mu);
    const int roll = static_cast<int>(rng() % 100);
    if (roll < 8) return Fault::kResourceExhausted;
    if (roll < 12) return Fault::kUnavailable;
    if (roll < 15) return Fault::kAbortAfterStore;
    if (roll < 18) return Fault::kAbortBeforeStore;
    return Fault::kNone;
  });
  fake.set_ack_delay(milliseconds(2));
  FakeServer server(&fake);

  constexpr int kProducers = 3;
  constexpr size_t kRequests = 120;
  std::vector<std::thread> threads;
  std::vector<Results> results(kProducers);
  std::vector<std::vector<std::string>> expected(kProducers);
  std::vector<ProducerStats> stats(kProducers);
  for (int p = 0; p < kProducers; ++p) {
    threads.emplace_back([&, p] {
      ProducerOptions options = FastOptions("stress" + std::to_string(p));
      options.initial_backoff = milliseconds(1);
      options.max_backoff = milliseconds(10);
      auto producer = Producer::Create(Connect(server), options);
      ASSERT_TRUE(producer.ok());
      std::mt19937 local(p);
      for (size_t i = 0; i < kRequests; ++i) {
        std::vector<wharf::v1::Record> records = MakeRecords(i * 10, 1 + local() % 4);
        const bool invalid = p == 2 && local() % 10 == 0;  // producer 2 also sees permanent errors
        if (invalid) records.back().set_payload("INVALID");
        if (!invalid) {
          for (const auto& r : records) expected[p].push_back(r.payload());
        }
        ASSERT_TRUE((*producer)->Send(std::move(records), results[p].Slot(i)).ok());
      }
      ASSERT_TRUE((*producer)->Flush(milliseconds(8000)).ok());
      stats[p] = (*producer)->stats();
    });
  }
  for (std::thread& t : threads) t.join();

  const std::vector<FakeIngest::Stored> stored = fake.stored();
  for (int p = 0; p < kProducers; ++p) {
    const std::string id = "stress" + std::to_string(p);
    EXPECT_GT(stats[p].retries, 0u) << id;
    EXPECT_GT(stats[p].reconnects, 0u) << id;
    EXPECT_GT(stats[p].duplicates, 0u) << id;
    if (p == 2) {
      EXPECT_GT(stats[p].renumbered, 0u);
    }
    std::vector<std::string> payloads;
    std::vector<uint64_t> sequences;
    for (const FakeIngest::Stored& s : stored) {
      if (s.producer_id != id) continue;
      payloads.push_back(s.payload);
      sequences.push_back(s.sequence);
    }
    EXPECT_EQ(payloads, expected[p]) << id;
    EXPECT_EQ(sequences, Iota(expected[p].size())) << id;
    for (size_t i = 0; i < kRequests; ++i) {
      EXPECT_EQ(results[p].Calls(i), 1) << id << " request " << i;
      const SendResult r = results[p].Get(i);
      if (r.status.ok()) {
        EXPECT_EQ(r.acks.size(), r.records);
      } else {
        EXPECT_EQ(r.status.code(), absl::StatusCode::kInvalidArgument) << r.status;
      }
    }
  }
}

TEST(ProduceOneTest, RetriesResourceExhaustedHonouringRetryInfo) {
  FakeIngest fake;
  fake.set_retry_delay(milliseconds(300));
  std::atomic<int> count{0};
  fake.set_fault_hook([&](const wharf::v1::ProduceRequest&) {
    return count.fetch_add(1) == 0 ? Fault::kResourceExhausted : Fault::kNone;
  });
  FakeServer server(&fake);
  auto stub = wharf::v1::Ingest::NewStub(Connect(server));
  wharf::v1::ProduceRequest request;
  request.set_dataset("events");
  request.set_producer_id("unary");
  *request.add_records() = MakeRecords(0, 1)[0];
  ProduceOneOptions options;
  options.initial_backoff = milliseconds(1);
  const Clock::time_point start = Clock::now();
  absl::StatusOr<wharf::v1::ProduceResponse> response = ProduceOne(*stub, request, options);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_GE(Clock::now() - start, milliseconds(290));
  EXPECT_EQ(response->acks_size(), 1);
}

TEST(ProduceOneTest, PermanentErrorIsNotRetried) {
  FakeIngest fake;
  FakeServer server(&fake);
  auto stub = wharf::v1::Ingest::NewStub(Connect(server));
  wharf::v1::ProduceRequest request;
  request.set_dataset("events");
  request.add_records()->set_payload("INVALID");
  absl::StatusOr<wharf::v1::ProduceResponse> response = ProduceOne(*stub, request);
  EXPECT_EQ(response.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(fake.received().size(), 1u);
}

}  // namespace
}  // namespace wharf::client
