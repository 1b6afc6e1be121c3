#pragma once

// The Wharf producer: streams records to Ingest.Produce with pipelining, retries and
// exactly-once sequencing.

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/support/sync_stream.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/rpc_status.h"
#include "wharf/v1/ingest.grpc.pb.h"
#include "wharf/v1/ingest.pb.h"
#include "wharf/v1/record.pb.h"

namespace wharf::client {

struct ProducerOptions {
  std::string dataset;
  // Deduplication identity. Empty: a random 128-bit hex id. To resume a producer after a
  // restart, pass its id and the next_sequence() it reported.
  std::string producer_id;
  uint64_t first_sequence = 0;
  // Requests queued by Send() and not yet answered (sent or waiting to be sent). Send() blocks
  // while this many are outstanding. At most 64: the server deduplicates retries within a window
  // of the last 64 requests of a producer.
  size_t max_inflight_requests = 8;
  // Backoff between retries: exponential from initial_backoff, capped at max_backoff, with
  // jitter; never shorter than the RetryInfo delay the server asks for.
  std::chrono::milliseconds initial_backoff{100};
  std::chrono::milliseconds max_backoff{5000};
  // How long a request may be retried, measured from its Send(). 0: retry retryable errors
  // forever. When it expires the producer fails every unanswered request with
  // DEADLINE_EXCEEDED and refuses further Sends (see Producer).
  std::chrono::milliseconds retry_timeout{0};
  // Send() refuses requests whose encoded size exceeds this (0: no limit). A message larger than
  // the server's gRPC limit (4 MiB unless wharfd raises it) would break the stream on every
  // attempt.
  size_t max_request_bytes = 4 << 20;
};

// What became of one Send(). Passed to its callback exactly once.
struct SendResult {
  // OK when the records are durable; otherwise the permanent error (or CANCELLED when the
  // producer was closed first, DEADLINE_EXCEEDED when retry_timeout expired).
  absl::Status status;
  // One per record, in order, when status is OK.
  std::vector<wharf::v1::RecordAck> acks;
  // The server had already stored this request (a retry after a lost answer): acks are the
  // original ones.
  bool duplicate = false;
  // The sequence number of the first record, as finally sent (it changes when an earlier
  // request failed permanently and the later ones were renumbered).
  uint64_t first_sequence = 0;
  size_t records = 0;
  // How many times the request was written to a stream (0 when it never was).
  int attempts = 1;
  // When Send() accepted the request.
  std::chrono::steady_clock::time_point queued_time;
};

struct ProducerStats {
  uint64_t requests_queued = 0;  // accepted by Send()
  uint64_t requests_acked = 0;   // answered OK (duplicates included)
  uint64_t requests_failed = 0;  // answered with an error
  uint64_t records_acked = 0;
  uint64_t duplicates = 0;       // OK answers with duplicate=true
  uint64_t attempts_sent = 0;    // requests written to a stream, retries included
  uint64_t retries = 0;          // requests written again after a failed attempt
  uint64_t retry_rounds = 0;     // backoffs taken
  uint64_t reconnects = 0;       // streams opened after a broken one
  uint64_t stream_failures = 0;  // streams that ended with requests outstanding
  uint64_t renumbered = 0;       // requests renumbered after a permanent failure
};

// Streams records of one dataset under one producer id.
//
// Send() assigns each request the next sequence numbers and queues it; a background sender
// writes queued requests on a single bidi stream without waiting for answers (up to
// max_inflight_requests outstanding), and a reader thread matches answers to requests by
// request_id.
//
// Failures:
//  - Retryable (UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, ABORTED, a broken stream, and
//    "out of order" that follows an earlier failed request): the producer backs off, then resends
//    every unanswered request in sequence order with the same sequence numbers, reconnecting if
//    the stream broke. Each attempt has a fresh request_id; answers of earlier attempts are
//    ignored. The server answers a resent request it had already stored with its original acks.
//  - Permanent (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, other FAILED_PRECONDITION, ...)
//    for request i: i's callback gets the error, the producer waits until every attempt in
//    flight has been answered, renumbers the remaining requests so that they start at i's
//    first_sequence, and resends them in order.
//  - A stream that ends with UNIMPLEMENTED, UNAUTHENTICATED, PERMISSION_DENIED, INVALID_ARGUMENT
//    or NOT_FOUND, and an expired retry_timeout, are fatal: every unanswered request fails with
//    that error and later Sends return it. next_sequence() then is the first sequence that is
//    not known to be stored; some of the failed requests may have been stored, so a producer
//    that resumes from there must resend the same records in the same requests.
//
// Callbacks run on a dedicated callback thread, one at a time, in the order requests are
// resolved (not necessarily Send order). A callback may call Send() but must not call Flush()
// or Close() or destroy the producer.
//
// Thread safety: thread-safe. Send(), Flush(), Close() and the accessors may be called
// concurrently from any threads; sequence numbers follow the order in which Send() calls take
// the internal lock.
class Producer {
 public:
  using Callback = std::function<void(const SendResult&)>;

  static absl::StatusOr<std::unique_ptr<Producer>> Create(std::shared_ptr<grpc::Channel> channel,
                                                          ProducerOptions options);
  // For tests: any stub implementation.
  static absl::StatusOr<std::unique_ptr<Producer>> Create(
      std::unique_ptr<wharf::v1::Ingest::StubInterface> stub, ProducerOptions options);

  Producer(const Producer&) = delete;
  Producer& operator=(const Producer&) = delete;
  // Closes the producer (see Close()).
  ~Producer();

  // Queues one request with `records` (at least one) and the next records.size() sequence
  // numbers. Blocks while max_inflight_requests are outstanding. On OK, `done` will be called
  // exactly once; on error (closed, fatal failure, no records, request too large) it is never
  // called.
  absl::Status Send(std::vector<wharf::v1::Record> records, Callback done);

  // Waits until every accepted Send() has been answered and its callback has returned.
  // DEADLINE_EXCEEDED if that takes longer than `timeout`.
  absl::Status Flush(std::chrono::milliseconds timeout);

  // Stops the producer: cancels the stream, answers every unanswered request with CANCELLED
  // and returns once all callbacks have run. Sends after Close() fail. Idempotent.
  void Close();

  const std::string& producer_id() const { return options_.producer_id; }
  const std::string& dataset() const { return options_.dataset; }
  // The sequence number the next Send() will start at.
  uint64_t next_sequence() const;
  // Requests accepted and not yet answered.
  size_t outstanding_requests() const;
  ProducerStats stats() const;

 private:
  using Stream =
      grpc::ClientReaderWriterInterface<wharf::v1::ProduceRequest, wharf::v1::ProduceResponse>;

  struct Request {
    wharf::v1::ProduceRequest proto;  // request_id and first_sequence set per attempt
    Callback done;
    uint64_t first_sequence = 0;
    size_t records = 0;
    int attempts = 0;
    bool sent = false;        // the current attempt has been (or is being) written
    uint64_t request_id = 0;  // of the current attempt, when sent
    std::chrono::steady_clock::time_point queued_time;
  };
  using RequestPtr = std::shared_ptr<Request>;

  struct Completion {
    Callback done;
    SendResult result;
  };

  // A permanently failed request's sequence range, in the current numbering.
  struct Hole {
    uint64_t first_sequence;
    uint64_t count;
  };

  Producer(std::unique_ptr<wharf::v1::Ingest::StubInterface> stub, ProducerOptions options);

  void SenderLoop();
  void ReaderLoop(Stream* stream);
  void CallbackLoop();
  void HandleResponse(const wharf::v1::ProduceResponse& response);

  // The methods below require mu_ held.
  void OpenStreamLocked(std::unique_lock<std::mutex>& lock);
  void TearDownStreamLocked(std::unique_lock<std::mutex>& lock);
  RequestPtr FirstUnsentLocked() const;
  // Marks pending_[index..] as not sent; answers to their current attempts will be ignored.
  void InvalidateFromLocked(size_t index);
  void ScheduleRetryLocked(size_t index, const absl::Status& cause,
                           std::optional<std::chrono::milliseconds> server_delay);
  void FailPermanentlyLocked(size_t index, const absl::Status& status);
  void FailAllLocked(const absl::Status& status, bool fatal);
  void ApplyHolesLocked();
  void CompleteLocked(const RequestPtr& request, SendResult result);
  std::chrono::milliseconds NextBackoffLocked();

  const ProducerOptions options_;
  const std::unique_ptr<wharf::v1::Ingest::StubInterface> stub_;

  std::mutex close_mu_;  // serializes Close()
  bool closed_ = false;  // guarded by close_mu_

  mutable std::mutex mu_;
  std::condition_variable sender_cv_;    // wakes the sender
  std::condition_variable space_cv_;     // wakes Send() waiting for a free slot
  std::condition_variable callback_cv_;  // wakes the callback thread
  std::condition_variable idle_cv_;      // wakes Flush()

  bool closing_ = false;
  absl::Status fatal_status_;  // non-OK once the producer has given up
  uint64_t next_sequence_;
  uint64_t next_request_id_ = 1;
  // Unanswered requests in sequence order: a prefix of sent ones, then unsent ones.
  std::deque<RequestPtr> pending_;
  // Current attempts by request_id.
  std::unordered_map<uint64_t, RequestPtr> by_request_id_;
  // Every attempt written on the current stream and not yet answered, stale ones included.
  std::unordered_set<uint64_t> outstanding_attempts_;
  std::vector<Hole> holes_;
  std::chrono::steady_clock::time_point paused_until_{};
  int consecutive_failures_ = 0;
  std::mt19937_64 rng_;

  // The current stream. Created and destroyed by the sender thread only.
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<Stream> stream_;
  std::thread reader_;
  bool reader_done_ = false;
  bool write_failed_ = false;
  bool stream_opened_before_ = false;

  std::deque<Completion> completions_;
  size_t unanswered_ = 0;  // accepted Sends whose callback has not returned yet
  bool callbacks_stop_ = false;

  ProducerStats stats_;

  std::thread sender_;
  std::thread callback_thread_;
};

struct ProduceOneOptions {
  std::chrono::milliseconds timeout{10000};  // per attempt
  int max_attempts = 5;
  std::chrono::milliseconds initial_backoff{100};
  std::chrono::milliseconds max_backoff{5000};
};

// Ingest.ProduceOne with retries of UNAVAILABLE, RESOURCE_EXHAUSTED (honouring RetryInfo),
// DEADLINE_EXCEEDED and ABORTED. Thread-safe.
absl::StatusOr<wharf::v1::ProduceResponse> ProduceOne(wharf::v1::Ingest::StubInterface& stub,
                                                      const wharf::v1::ProduceRequest& request,
                                                      const ProduceOneOptions& options = {});

// A random 128-bit id as 32 lowercase hex digits.
std::string RandomProducerId();

}  // namespace wharf::client
