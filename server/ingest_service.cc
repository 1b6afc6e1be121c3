#include "server/ingest_service.h"

#include <deque>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "google/protobuf/duration.pb.h"
#include "google/rpc/error_details.pb.h"
#include "spdlog/spdlog.h"

namespace wharf::server {
namespace {

using wharf::v1::ProduceRequest;
using wharf::v1::ProduceResponse;
using SteadyClock = std::chrono::steady_clock;

// Producer ids longer than this are refused: they are part of every deduplication key.
constexpr size_t kMaxProducerIdBytes = 256;

// A stream keeps the parsed objects and buffers of its last request for the next parse to reuse
// when that request held at most this many record bytes (payload, keys, headers); a larger one is
// freed, so that an idle stream never holds more than this. 1 MiB: four times a request of 1,000
// records of 250 bytes.
constexpr uint64_t kMaxRetainedRequestBytes = 1 << 20;

uint64_t RequestBytes(const ProduceRequest& r) {
  uint64_t n = 0;
  for (const auto& rec : r.records()) {
    n += rec.payload().size() + rec.key().size();
    for (const auto& [k, v] : rec.headers()) n += k.size() + v.size();
  }
  return n;
}

// One Produce stream. Lifetime: deleted when gRPC has called OnDone() and every request handed
// to the store has been answered (the store's callback may arrive after the stream ended).
class ProduceReactor final : public grpc::ServerBidiReactor<ProduceRequest, ProduceResponse> {
 public:
  explicit ProduceReactor(IngestService* service) : service_(service) { StartRead(&request_); }

  void OnReadDone(bool ok) override {
    if (!ok) {
      Actions actions;
      {
        std::unique_lock<std::mutex> lock(mu_);
        reads_done_ = true;
        MaybeFinishLocked(&actions);
      }
      Run(actions);
      return;
    }
    const auto received = SteadyClock::now();
    // request_ is used in place and emptied before the next read (ResetRequest): Clear() keeps
    // its records' objects and string buffers, which the next request's parse reuses, so a
    // steady stream parses without allocating per record (and nothing decoded here is freed on
    // the store's writer thread).
    const uint64_t request_id = request_.request_id();
    const std::string dataset = request_.dataset();
    const uint64_t records = static_cast<uint64_t>(request_.records_size());

    absl::Status invalid = service_->Validate(request_);
    uint64_t bytes = 0;
    if (invalid.ok()) {
      bytes = RequestBytes(request_);
      if (!service_->TryReserve(bytes)) {
        invalid = absl::ResourceExhaustedError(
            "too many bytes in flight on this node; nothing was stored");
      }
    }
    if (!invalid.ok()) {
      ResetRequest(bytes != 0 ? bytes : RequestBytes(request_));
      ProduceResponse response;
      response.set_request_id(request_id);
      const auto retry = invalid.code() == absl::StatusCode::kResourceExhausted
                             ? std::chrono::milliseconds(100)
                             : std::chrono::milliseconds(0);
      ToRpcStatus(invalid, retry, response.mutable_status());
      service_->metrics()->OnRequest(
          dataset, invalid, false, records, 0,
          std::chrono::duration<double>(SteadyClock::now() - received).count());
      Actions actions;
      {
        std::unique_lock<std::mutex> lock(mu_);
        QueueWriteLocked(std::move(response), &actions);
        // A refused request is answered at once, but its answer still waits for the client to
        // read it: refusals count against the same bound as accepted requests.
        if (MayReadLocked()) {
          actions.read = true;
        } else {
          read_paused_ = true;
        }
      }
      Run(actions);
      return;
    }

    // Encoded here, on gRPC's thread, so that the store's single writer thread does not have to
    // (storage::EncodeAppend). No read is outstanding while this reaction runs, and none can
    // be started by another reaction before this one sets appending_/read_paused_ below, so
    // request_ may be reused for the next read once encoded.
    storage::EncodedAppend encoded = storage::EncodeAppend(request_);
    ResetRequest(bytes);
    {
      std::unique_lock<std::mutex> lock(mu_);
      ++inflight_;
      // No other reaction may start the next read until this request is in the store's queue:
      // a request read and appended before this one would reach the store out of sequence
      // order (and be refused as such). OnWriteDone and OnAppended can run meanwhile and free a
      // slot; they leave the read to the code below while appending_ is set.
      appending_ = true;
    }
    // The reactor cannot be deleted before this returns: that needs Finish(), which needs
    // reads_done_, which needs a read that has not been started yet.
    service_->store()->AppendEncoded(std::move(encoded), [this, request_id, dataset, records, bytes,
                                                          received](storage::AppendResult result) {
      OnAppended(request_id, dataset, records, bytes, received, std::move(result));
    });
    Actions actions;
    {
      std::unique_lock<std::mutex> lock(mu_);
      appending_ = false;
      if (MayReadLocked()) {
        actions.read = true;
      } else {
        read_paused_ = true;
      }
    }
    Run(actions);
  }

  void OnWriteDone(bool ok) override {
    Actions actions;
    {
      std::unique_lock<std::mutex> lock(mu_);
      writing_ = false;
      if (!ok) {
        // The stream is broken (client gone). Answers still queued cannot be delivered; the
        // producer will retry those requests with the same sequence numbers and get the
        // original acks from the deduplication window.
        write_broken_ = true;
        writes_.clear();
      } else if (!writes_.empty()) {
        writes_.pop_front();
      }
      if (!writes_.empty() && !write_broken_) {
        writing_ = true;
        actions.write = &writes_.front();
      }
      MaybeResumeReadLocked(&actions);
      MaybeFinishLocked(&actions);
    }
    Run(actions);
  }

  void OnDone() override {
    bool del;
    {
      std::unique_lock<std::mutex> lock(mu_);
      done_ = true;
      del = inflight_ == 0;
    }
    if (del) delete this;
  }

 private:
  // gRPC operations decided under mu_ and started after it is released: a Start*() or Finish()
  // call may run another reaction of this reactor before it returns (for example when the
  // stream is already cancelled), which would then deadlock on mu_.
  struct Actions {
    const ProduceResponse* write = nullptr;  // element of writes_; deque references stay valid
    bool read = false;
    bool finish = false;
  };

  // Empties request_ for the next read (see kMaxRetainedRequestBytes); `bytes`: its record bytes.
  void ResetRequest(uint64_t bytes) {
    if (bytes > kMaxRetainedRequestBytes) {
      ProduceRequest().Swap(&request_);  // the temporary frees the large request's memory
    } else {
      request_.Clear();  // keeps records and string buffers for the next parse
    }
  }

  void Run(const Actions& actions) {
    if (actions.write != nullptr) StartWrite(actions.write);
    if (actions.read) StartRead(&request_);
    if (actions.finish) Finish(grpc::Status::OK);
  }

  // Called on the store's writer thread: must not block. Durability: this is the only place a
  // stream's OK answer is produced, and the store calls it only after the group commit holding
  // the records returned (fsynced in sync mode); a crash before this point leaves the request
  // unanswered, and the producer's retry is deduplicated by its sequence numbers.
  void OnAppended(uint64_t request_id, const std::string& dataset, uint64_t records, uint64_t bytes,
                  SteadyClock::time_point received, storage::AppendResult result) {
    service_->Release(bytes);
    ProduceResponse response;
    response.set_request_id(request_id);
    ToRpcStatus(result.status, result.retry_after, response.mutable_status());
    if (result.status.ok()) {
      response.mutable_acks()->Reserve(static_cast<int>(result.acks.size()));
      for (auto& a : result.acks) *response.add_acks() = std::move(a);
      response.set_duplicate(result.duplicate);
    }
    service_->metrics()->OnRequest(
        dataset, result.status, result.duplicate, records, bytes,
        std::chrono::duration<double>(SteadyClock::now() - received).count());
    Actions actions;
    bool del = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      --inflight_;
      if (!done_) {
        QueueWriteLocked(std::move(response), &actions);
        MaybeResumeReadLocked(&actions);
        MaybeFinishLocked(&actions);
      } else {
        del = inflight_ == 0;
      }
    }
    if (del) {
      delete this;
      return;
    }
    Run(actions);
  }

  void QueueWriteLocked(ProduceResponse response, Actions* actions) {
    if (write_broken_ || finished_) return;
    writes_.push_back(std::move(response));
    if (!writing_) {
      writing_ = true;
      actions->write = &writes_.front();
    }
  }

  // Whether the next request may be read: fewer than max_inflight_per_stream requests of this
  // stream are unanswered, counting both those waiting for the store and those whose answer
  // waits to be written. Why the answers count: a client that sends but never reads its acks
  // (a bug, a stuck consumer thread, a peer behind a stalled link) lets gRPC flow control fill
  // up on the answer side only, so each answered request would free its store slot and the next
  // one would be read: the queue of unwritten answers, and with it wharfd's memory, would grow
  // without bound while the records kept being stored. Counting them makes the reactor stop
  // reading instead, so that HTTP/2 flow control pushes back on the client's writes. Safe for
  // well-behaved producers: client::Producer keeps at most 64 requests unanswered (the
  // deduplication window), and answers normally leave the queue as soon as they are written.
  // Nothing is dropped: a paused stream resumes when an answer is written, or ends (and the
  // producer retries) when the client goes away.
  bool MayReadLocked() const {
    return inflight_ + writes_.size() < service_->limits().max_inflight_per_stream;
  }

  void MaybeResumeReadLocked(Actions* actions) {
    if (!read_paused_ || appending_ || reads_done_ || finished_ || !MayReadLocked()) return;
    read_paused_ = false;
    actions->read = true;
  }

  void MaybeFinishLocked(Actions* actions) {
    if (finished_) return;
    if (!reads_done_ || inflight_ > 0) return;
    if (writing_ && !write_broken_) return;
    finished_ = true;
    actions->finish = true;
  }

  IngestService* const service_;
  ProduceRequest request_;  // owned by the pending read
  std::mutex mu_;
  std::deque<ProduceResponse> writes_;  // front is being written when writing_
  bool writing_ = false;
  bool write_broken_ = false;
  bool reads_done_ = false;
  bool read_paused_ = false;
  bool appending_ = false;  // OnReadDone is handing a request to the store (see there)
  bool finished_ = false;
  bool done_ = false;
  uint32_t inflight_ = 0;  // requests handed to the store and not yet answered
};

}  // namespace

void ToRpcStatus(const absl::Status& st, std::chrono::milliseconds retry_after,
                 google::rpc::Status* status) {
  status->Clear();
  status->set_code(static_cast<int>(st.code()));
  status->set_message(std::string(st.message()));
  if (retry_after.count() > 0) {
    google::rpc::RetryInfo info;
    info.mutable_retry_delay()->set_seconds(retry_after.count() / 1000);
    info.mutable_retry_delay()->set_nanos(static_cast<int>((retry_after.count() % 1000) * 1000000));
    status->add_details()->PackFrom(info);
  }
}

IngestService::IngestService(storage::StagingStore* store, const LimitsConfig& limits,
                             ServerMetrics* metrics)
    : store_(store), limits_(limits), metrics_(metrics) {}

bool IngestService::TryReserve(uint64_t bytes) {
  uint64_t cur = inflight_bytes_.load();
  while (true) {
    if (cur > 0 && cur + bytes > limits_.max_inflight_bytes) return false;
    if (inflight_bytes_.compare_exchange_weak(cur, cur + bytes)) return true;
  }
}

void IngestService::Release(uint64_t bytes) { inflight_bytes_.fetch_sub(bytes); }

absl::Status IngestService::Validate(const wharf::v1::ProduceRequest& request) const {
  return ValidateProduceRequest(
      request, limits_, [this](std::string_view dataset) { return store_->HasDataset(dataset); });
}

absl::Status ValidateProduceRequest(const wharf::v1::ProduceRequest& request,
                                    const LimitsConfig& limits,
                                    const std::function<bool(std::string_view)>& has_dataset) {
  if (request.dataset().empty()) return absl::InvalidArgumentError("dataset is required");
  if (!has_dataset(request.dataset())) {
    return absl::NotFoundError(absl::StrCat("unknown dataset \"", request.dataset(), "\""));
  }
  if (request.records_size() == 0) {
    return absl::InvalidArgumentError("request has no records");
  }
  if (static_cast<uint64_t>(request.records_size()) > limits.max_records_per_request) {
    return absl::InvalidArgumentError(absl::StrCat("request has ", request.records_size(),
                                                   " records; max_records_per_request is ",
                                                   limits.max_records_per_request));
  }
  if (request.producer_id().size() > kMaxProducerIdBytes) {
    return absl::InvalidArgumentError(absl::StrCat("producer_id is ", request.producer_id().size(),
                                                   " bytes; at most ", kMaxProducerIdBytes));
  }
  if (request.first_sequence() > UINT64_MAX - static_cast<uint64_t>(request.records_size())) {
    return absl::InvalidArgumentError("first_sequence + record count overflows 64 bits");
  }
  const size_t message_bytes = request.ByteSizeLong();
  if (message_bytes > limits.max_message_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request is ", message_bytes, " bytes; max_message_bytes is ", limits.max_message_bytes));
  }
  for (int i = 0; i < request.records_size(); ++i) {
    const auto& r = request.records(i);
    uint64_t size = r.payload().size() + r.key().size();
    for (const auto& [k, v] : r.headers()) size += k.size() + v.size();
    if (size > limits.max_record_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "record ", i, " is ", size, " bytes; max_record_bytes is ", limits.max_record_bytes));
    }
    if (r.payload().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("record ", i, " has an empty payload"));
    }
    if (r.has_event_time() && (r.event_time().nanos() < 0 || r.event_time().nanos() > 999999999)) {
      return absl::InvalidArgumentError(absl::StrCat("record ", i, ": event_time.nanos ",
                                                     r.event_time().nanos(), " is out of range"));
    }
  }
  return absl::OkStatus();
}

grpc::ServerBidiReactor<ProduceRequest, ProduceResponse>* IngestService::Produce(
    grpc::CallbackServerContext*) {
  return new ProduceReactor(this);
}

grpc::ServerUnaryReactor* IngestService::ProduceOne(grpc::CallbackServerContext* context,
                                                    const ProduceRequest* request,
                                                    ProduceResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const auto received = SteadyClock::now();
  auto finish_error = [this, reactor, received, request](const absl::Status& st,
                                                         std::chrono::milliseconds retry) {
    google::rpc::Status rpc;
    ToRpcStatus(st, retry, &rpc);
    metrics_->OnRequest(request->dataset(), st, false, 0, 0,
                        std::chrono::duration<double>(SteadyClock::now() - received).count());
    reactor->Finish(grpc::Status(static_cast<grpc::StatusCode>(st.code()),
                                 std::string(st.message()), rpc.SerializeAsString()));
  };
  absl::Status invalid = Validate(*request);
  if (!invalid.ok()) {
    finish_error(invalid, std::chrono::milliseconds(0));
    return reactor;
  }
  const uint64_t bytes = RequestBytes(*request);
  if (!TryReserve(bytes)) {
    finish_error(
        absl::ResourceExhaustedError("too many bytes in flight on this node; nothing was stored"),
        std::chrono::milliseconds(100));
    return reactor;
  }
  const std::string dataset = request->dataset();
  const uint64_t records = static_cast<uint64_t>(request->records_size());
  const uint64_t request_id = request->request_id();
  // Append encodes the request (a copy of its records' bytes): gRPC owns `request` until
  // Finish().
  store_->Append(*request, [this, reactor, response, dataset, records, bytes, request_id,
                            received](storage::AppendResult result) {
    Release(bytes);
    metrics_->OnRequest(dataset, result.status, result.duplicate, records, bytes,
                        std::chrono::duration<double>(SteadyClock::now() - received).count());
    if (!result.status.ok()) {
      google::rpc::Status rpc;
      ToRpcStatus(result.status, result.retry_after, &rpc);
      reactor->Finish(grpc::Status(static_cast<grpc::StatusCode>(result.status.code()),
                                   std::string(result.status.message()), rpc.SerializeAsString()));
      return;
    }
    // Durability: answered from the store's callback, after the durable group commit.
    response->set_request_id(request_id);
    ToRpcStatus(result.status, std::chrono::milliseconds(0), response->mutable_status());
    for (auto& a : result.acks) *response->add_acks() = std::move(a);
    response->set_duplicate(result.duplicate);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

}  // namespace wharf::server
