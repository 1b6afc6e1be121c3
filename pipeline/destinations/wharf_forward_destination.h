#pragma once

#include <grpcpp/channel.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "pipeline/destination.h"
#include "wharf/v1/ingest.grpc.pb.h"
#include "wharf/v1/record.pb.h"

namespace wharf::pipeline {

struct WharfForwardOptions {
  // Destination name (from the config). Part of the producer id, so renaming a destination makes
  // the central treat its records as new ones (see "Exactly once" below).
  std::string name;
  // This node's stable id (config; the caller defaults it to the host name). Part of the producer
  // id: two edges must never share one, and an edge whose data directory was reset (offsets start
  // again at 0) needs a new one.
  std::string node_id;
  // "host:port" of the central wharfd's gRPC listener.
  std::string target;
  // Dataset name at the central. Default (empty): the source dataset's name.
  std::string target_dataset;
  // Deadline of each ProduceOne call. Default 30 s: the central answers after its durable group
  // commit, which is well below that unless its disk stalls.
  std::chrono::milliseconds rpc_timeout{30000};
  // A batch is split into requests of at most this many bytes (serialized ProduceRequest; a
  // single record larger than this still goes alone). Default 4 MiB, below the central's default
  // max_message_bytes (16 MiB). Must not exceed the central's max_message_bytes by much: requests
  // up to twice that limit are answered INVALID_ARGUMENT and split further here automatically,
  // larger ones are refused by gRPC itself and retried forever.
  size_t max_request_bytes = 4 << 20;
  // At most this many records per request. Default 10000, the central's default
  // max_records_per_request; a central with a lower limit is handled by splitting further.
  size_t max_request_records = 10000;
  // Reconnection backoff of the channel after a failed connect attempt. Defaults 100 ms / 5 s:
  // a central that comes back is found within a few seconds without hammering a dead one.
  std::chrono::milliseconds min_reconnect_backoff{100};
  std::chrono::milliseconds max_reconnect_backoff{5000};
};

// Forwards committed batches of an edge wharfd to a central wharfd over the public
// Ingest.ProduceOne API, exactly once across the hop.
//
// Transport: PLAINTEXT (insecure channel credentials) for now; TLS comes later. Use only on
// trusted networks. The channel connects lazily, so Create() succeeds while the central is down.
// After a call failed because the channel could not connect (TRANSIENT_FAILURE), the next call
// uses a new channel: gRPC 1.51 otherwise keeps such a channel failing for about 10 s after the
// central is back, whatever the reconnect backoff options say. The connection attempts are then
// paced by the pipeline's retry backoff (one per Deliver() call).
//
// Exactly once. Each source partition is one producer at the central, with producer id
// "wharf-forward/<node_id>/<source dataset>/<destination name>/p<partition>": partitions are
// delivered independently and concurrently, while one producer's sequences must increase. The
// sequence number of a record is its source offset. A ProduceRequest holds records with
// consecutive sequences, so a batch is sent as its maximal runs of consecutive offsets (offsets
// of quarantined records are holes), each run further cut by max_request_bytes /
// max_request_records, each piece one request with first_sequence = its first offset and
// allow_sequence_gap = true (the holes are skipped sequences that are never sent later). The
// pieces are derived only from the batch's records, so a retry after a crash on either side
// resends the same requests, and the central answers those it already stored with
// duplicate=true and the original acks (its dedup window: the last 64 requests per producer).
// Because every request's sequences are exactly its records' offsets, the central's "next
// expected sequence" is always one past the last stored offset: a resent offset is either
// recognised as a duplicate or refused (FAILED_PRECONDITION), never stored twice, whatever the
// edge does.
//
// Window size. A redelivered batch is the most recent one of its partition (batches of a
// partition are delivered in order, and the cursor only advances after OK), so the central's
// window holds its requests as long as it stored at most 64 of them. A batch is split into at most
// 32 requests in normal operation (a warning is logged above that), leaving room for the extra
// requests the pipeline's bisection creates after a content rejection. Above 64, an edge crash in
// the middle of the batch makes the redelivery fail with FAILED_PRECONDITION ("older than the
// deduplication window"): loud and retried, never a duplicate.
//
// Different splits. When the pipeline bisects a batch after INVALID_ARGUMENT, a sub-batch may
// start inside, or cover only part of, a request the central already stored. The central
// answers such a request as a duplicate when every sequence of it is held by requests in its
// producer window (the store's rule for allow_sequence_gap requests), also after either side
// restarted. As a second line (e.g. a central of an older version), this object also
// remembers, in memory and per producer, the offset ranges the central acknowledged (the last
// kLedgerRanges requests) and treats refused records in such a range as delivered.
//
// Records are forwarded with the key, payload, event_time and headers of the BatchRecord, plus
// the header "wharf-source" = "<node_id>/<source dataset>/p<partition>/<offset>" naming where the
// record came from (kept unchanged if the record already has one from an earlier hop, so it names
// the origin). The header counts towards the central's max_record_bytes.
//
// Status of Deliver():
//   OK                   every record is stored at the central (report->already_delivered when
//                        all of them had been stored before).
//   INVALID_ARGUMENT     the central refused a record's content (too large, empty payload, ...);
//                        nothing of that request was stored. The message names the offset.
//   FAILED_PRECONDITION  needs an operator: unknown dataset at the central, sequence refused
//                        (older than the dedup window, out of order), malformed batch.
//   UNAVAILABLE          central unreachable, overloaded, timed out, or at its quota
//                        (report->retry_after from the central's RetryInfo).
// Requests before the failing one stay stored; the retry finds them as duplicates.
//
// Thread safety: thread-safe. Deliver() may be called concurrently (for different partitions;
// for the same partition the pipeline never does, and the result would still hold no
// duplicates). The gRPC stub is thread-safe; the current connection is guarded by
// connection_mu_, the ledger by ledger_mu_.
class WharfForwardDestination final : public Destination {
 public:
  // Ranges remembered per producer (see "Different splits").
  static constexpr size_t kLedgerRanges = 256;
  // Requests per batch above which a warning is logged (see "Window size").
  static constexpr size_t kMaxRequestsPerBatch = 32;

  // Validates the options and creates the channel (lazily connecting: the central may be down).
  // INVALID_ARGUMENT for missing name, node_id or target, or zero limits.
  static absl::StatusOr<std::unique_ptr<WharfForwardDestination>> Create(
      WharfForwardOptions options);
  ~WharfForwardDestination() override;

  std::string_view type() const override { return "wharf"; }

  // report->commit_id: "<central partition>/<central offset>" of the first record the central
  // acknowledged in this call (original acks for duplicates), empty when none was answered.
  absl::Status Deliver(const wharf::v1::StoredBatch& batch, DeliveryReport* report) override;

 private:
  // One acknowledged request: offsets [begin, end) of a producer are stored at the central.
  using RangeMap = std::map<uint64_t, uint64_t>;  // begin -> end

  // A channel and its stub. Replaced (never mutated) after a connection failure.
  struct Connection {
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<wharf::v1::Ingest::Stub> stub;
  };

  explicit WharfForwardDestination(WharfForwardOptions options);

  static std::shared_ptr<const Connection> Connect(const WharfForwardOptions& options);
  std::shared_ptr<const Connection> CurrentConnection() const;
  // Replaces `failed` (if it is still the current connection) by a new one.
  void Reconnect(const std::shared_ptr<const Connection>& failed);

  void Remember(const std::string& producer, uint64_t begin, uint64_t end);
  // The end of the remembered range holding `offset`, or 0 when none does.
  uint64_t RememberedEnd(const std::string& producer, uint64_t offset) const;

  const WharfForwardOptions options_;

  mutable std::mutex connection_mu_;
  std::shared_ptr<const Connection> connection_ ABSL_GUARDED_BY(connection_mu_);

  mutable std::mutex ledger_mu_;
  std::map<std::string, RangeMap> ledger_ ABSL_GUARDED_BY(ledger_mu_);
};

}  // namespace wharf::pipeline
