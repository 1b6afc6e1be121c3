#include "pipeline/destinations/wharf_forward_destination.h"

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>
#include <grpcpp/support/status.h>

#include <algorithm>
#include <cctype>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "spdlog/spdlog.h"
#include "wharf/v1/ingest.pb.h"

namespace wharf::pipeline {
namespace {

// Mirrors the central's limit on producer ids (server/ingest_service.cc). Checked here because the
// central answers an over-long id with INVALID_ARGUMENT, which would quarantine every record for
// what is a configuration error.
constexpr size_t kMaxProducerIdBytes = 256;
constexpr std::string_view kSourceHeader = "wharf-source";

bool Contains(const std::string& haystack, std::string_view needle) {
  return haystack.find(needle) != std::string::npos;
}

// The retry_delay of the first google.rpc.RetryInfo in the call's grpc-status-details-bin.
std::optional<std::chrono::milliseconds> RetryDelay(const grpc::Status& status) {
  if (status.error_details().empty()) return std::nullopt;
  google::rpc::Status rpc;
  if (!rpc.ParseFromString(status.error_details())) return std::nullopt;
  for (const google::protobuf::Any& detail : rpc.details()) {
    google::rpc::RetryInfo info;
    if (!detail.Is<google::rpc::RetryInfo>() || !detail.UnpackTo(&info)) continue;
    const int64_t seconds = std::max<int64_t>(info.retry_delay().seconds(), 0);
    const int64_t nanos = std::max<int64_t>(info.retry_delay().nanos(), 0);
    return std::chrono::milliseconds(seconds * 1000 + (nanos + 999'999) / 1'000'000);
  }
  return std::nullopt;
}

// True when the central refused the request for its size or record count rather than for a
// record: the central's INVALID_ARGUMENT for max_message_bytes / max_records_per_request, or
// gRPC's own RESOURCE_EXHAUSTED for a message above its hard receive limit (no RetryInfo there).
// Splitting the request fixes these; if the central's wording ever changes, the pipeline's
// bisection still gets below the limits (through INVALID_ARGUMENT), so this is an optimisation
// that keeps records out of quarantine, not a correctness condition.
bool IsRequestTooLarge(const grpc::Status& status) {
  const std::string& msg = status.error_message();
  if (status.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
    return Contains(msg, "max_message_bytes") || Contains(msg, "max_records_per_request");
  }
  return status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED && !RetryDelay(status) &&
         Contains(msg, "larger than max");
}

// The central's FAILED_PRECONDITION for a first_sequence below its next expected sequence that is
// not the start of a stored request with the same record count (storage/staging_store.cc).
bool IsSequenceBehind(const grpc::Status& status) {
  const std::string& msg = status.error_message();
  return status.error_code() == grpc::StatusCode::FAILED_PRECONDITION &&
         (Contains(msg, "was stored with") || Contains(msg, "older than the deduplication window"));
}

// The central's content errors start with "record <index in the request>"; the index is
// translated to the source offset for the quarantine message.
std::optional<size_t> RecordIndexOf(const std::string& msg) {
  constexpr std::string_view kPrefix = "record ";
  if (msg.rfind(kPrefix, 0) != 0) return std::nullopt;
  size_t pos = kPrefix.size();
  size_t index = 0;
  bool any = false;
  while (pos < msg.size() && std::isdigit(static_cast<unsigned char>(msg[pos])) &&
         index < 1000000) {
    index = index * 10 + static_cast<size_t>(msg[pos] - '0');
    any = true;
    ++pos;
  }
  if (!any) return std::nullopt;
  return index;
}

// Bytes a record of `size` bytes adds to a ProduceRequest (field tag, length, message).
size_t RecordFieldBytes(size_t size) {
  return 1 + google::protobuf::io::CodedOutputStream::VarintSize64(size) + size;
}

}  // namespace

absl::StatusOr<std::unique_ptr<WharfForwardDestination>> WharfForwardDestination::Create(
    WharfForwardOptions options) {
  if (options.name.empty()) return absl::InvalidArgumentError("wharf forward: name is required");
  if (options.node_id.empty()) {
    return absl::InvalidArgumentError("wharf forward: node_id is required");
  }
  if (options.target.empty()) {
    return absl::InvalidArgumentError("wharf forward: target (host:port) is required");
  }
  if (options.max_request_bytes == 0 || options.max_request_records == 0) {
    return absl::InvalidArgumentError(
        "wharf forward: max_request_bytes and max_request_records must be positive");
  }
  if (options.rpc_timeout.count() <= 0) {
    return absl::InvalidArgumentError("wharf forward: rpc_timeout must be positive");
  }
  // The longest possible producer id is known only per batch (dataset name and partition), but
  // the fixed part alone must leave room for them.
  if (options.node_id.size() + options.name.size() + 64 > kMaxProducerIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("wharf forward: node_id and destination name are too long for a producer id (",
                     kMaxProducerIdBytes, " bytes at most, including the dataset name)"));
  }
  return std::unique_ptr<WharfForwardDestination>(new WharfForwardDestination(std::move(options)));
}

WharfForwardDestination::WharfForwardDestination(WharfForwardOptions options)
    : options_(std::move(options)), connection_(Connect(options_)) {}

std::shared_ptr<const WharfForwardDestination::Connection> WharfForwardDestination::Connect(
    const WharfForwardOptions& options) {
  grpc::ChannelArguments args;
  const int min_ms = static_cast<int>(std::max<int64_t>(options.min_reconnect_backoff.count(), 1));
  const int max_ms = static_cast<int>(std::max<int64_t>(options.max_reconnect_backoff.count(),
                                                        options.min_reconnect_backoff.count()));
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, min_ms);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, min_ms);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, max_ms);
  // Own subchannels: a replacement channel must not inherit the failed one's backoff state from
  // gRPC's global subchannel pool.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // Requests are bounded by max_request_bytes already; the central enforces its own limit.
  args.SetMaxSendMessageSize(-1);
  // Plaintext for now (see the header); the channel connects on the first call.
  auto connection = std::make_shared<Connection>();
  connection->channel =
      grpc::CreateCustomChannel(options.target, grpc::InsecureChannelCredentials(), args);
  connection->stub = wharf::v1::Ingest::NewStub(connection->channel);
  return connection;
}

std::shared_ptr<const WharfForwardDestination::Connection>
WharfForwardDestination::CurrentConnection() const {
  std::lock_guard<std::mutex> lock(connection_mu_);
  return connection_;
}

void WharfForwardDestination::Reconnect(const std::shared_ptr<const Connection>& failed) {
  std::shared_ptr<const Connection> fresh = Connect(options_);
  std::lock_guard<std::mutex> lock(connection_mu_);
  // Concurrent deliveries of other partitions may have replaced it already.
  if (connection_ == failed) connection_ = std::move(fresh);
}

WharfForwardDestination::~WharfForwardDestination() = default;

void WharfForwardDestination::Remember(const std::string& producer, uint64_t begin, uint64_t end) {
  std::lock_guard<std::mutex> lock(ledger_mu_);
  RangeMap& ranges = ledger_[producer];
  uint64_t& stored_end = ranges[begin];
  stored_end = std::max(stored_end, end);
  // Bounded: only the most recent ranges matter, because the pipeline delivers a partition's
  // offsets in increasing order and a bisection only revisits the batch in flight.
  while (ranges.size() > kLedgerRanges) ranges.erase(ranges.begin());
}

uint64_t WharfForwardDestination::RememberedEnd(const std::string& producer,
                                                uint64_t offset) const {
  std::lock_guard<std::mutex> lock(ledger_mu_);
  auto p = ledger_.find(producer);
  if (p == ledger_.end()) return 0;
  uint64_t end = 0;
  // Every range beginning at or before `offset` (at most kLedgerRanges of them).
  for (auto it = p->second.upper_bound(offset); it != p->second.begin();) {
    --it;
    if (it->second > offset) end = std::max(end, it->second);
  }
  return end;
}

absl::Status WharfForwardDestination::Deliver(const wharf::v1::StoredBatch& batch,
                                              DeliveryReport* report) {
  const wharf::v1::BatchManifest& m = batch.manifest();
  const std::string& source = m.dataset();
  const std::string where = absl::StrCat("wharf forward \"", options_.name, "\" to ",
                                         options_.target, " (batch ", m.batch_id(), ")");
  // Configuration and batch-shape problems are FAILED_PRECONDITION, never INVALID_ARGUMENT:
  // that code would quarantine records that are not at fault.
  if (source.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(where, ": the batch names no dataset"));
  }
  const std::string& dataset = options_.target_dataset.empty() ? source : options_.target_dataset;
  const std::string producer = absl::StrCat("wharf-forward/", options_.node_id, "/", source, "/",
                                            options_.name, "/p", m.partition());
  if (producer.size() > kMaxProducerIdBytes) {
    return absl::FailedPreconditionError(
        absl::StrCat(where, ": producer id \"", producer, "\" is longer than ", kMaxProducerIdBytes,
                     " bytes; use a shorter node_id or destination name"));
  }
  const int n = batch.records_size();
  for (int r = 0; r < n; ++r) {
    const uint64_t offset = batch.records(r).offset();
    if (offset < m.first_offset() || offset > m.last_offset() ||
        (r > 0 && offset <= batch.records(r - 1).offset())) {
      return absl::FailedPreconditionError(
          absl::StrCat(where, ": malformed batch: record ", r, " has offset ", offset,
                       ", not increasing within [", m.first_offset(), ", ", m.last_offset(), "]"));
    }
  }
  if (n == 0) return absl::OkStatus();  // every record of the range went to quarantine

  // The records as the central receives them.
  std::vector<wharf::v1::Record> records(n);
  std::vector<size_t> sizes(n);
  for (int r = 0; r < n; ++r) {
    const wharf::v1::BatchRecord& in = batch.records(r);
    wharf::v1::Record& out = records[r];
    out.set_key(in.key());
    out.set_payload(in.payload());
    if (in.has_event_time()) *out.mutable_event_time() = in.event_time();
    *out.mutable_headers() = in.headers();
    if (out.headers().count(std::string(kSourceHeader)) == 0) {
      (*out.mutable_headers())[std::string(kSourceHeader)] =
          absl::StrCat(options_.node_id, "/", source, "/p", m.partition(), "/", in.offset());
    }
    sizes[r] = out.ByteSizeLong();
  }
  // Everything of a request but its records, with the largest first_sequence of the batch.
  wharf::v1::ProduceRequest shell;
  shell.set_request_id(m.last_offset());
  shell.set_dataset(dataset);
  shell.set_producer_id(producer);
  shell.set_first_sequence(m.last_offset());
  shell.set_allow_sequence_gap(true);
  const size_t shell_bytes = shell.ByteSizeLong();

  bool any_new = false;
  size_t requests = 0;
  // Set when the central refused a request for its size: the next request has at most this many
  // records. Reset after each stored request, so the requests stay a function of the batch and
  // of the central's limits, and a retry resends the same ones.
  size_t cap = std::numeric_limits<size_t>::max();
  int i = 0;
  while (i < n) {
    // The request: a run of consecutive offsets starting at record i, within the limits.
    const size_t max_records = std::min(cap, options_.max_request_records);
    size_t bytes = shell_bytes + RecordFieldBytes(sizes[i]);
    int end = i + 1;
    while (end < n && static_cast<size_t>(end - i) < max_records &&
           batch.records(end).offset() == batch.records(end - 1).offset() + 1 &&
           bytes + RecordFieldBytes(sizes[end]) <= options_.max_request_bytes) {
      bytes += RecordFieldBytes(sizes[end]);
      ++end;
    }
    const uint64_t first = batch.records(i).offset();
    const uint64_t last = batch.records(end - 1).offset();
    wharf::v1::ProduceRequest request = shell;
    request.set_request_id(first);
    request.set_first_sequence(first);
    for (int r = i; r < end; ++r) *request.add_records() = records[r];

    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + options_.rpc_timeout);
    wharf::v1::ProduceResponse response;
    const std::shared_ptr<const Connection> connection = CurrentConnection();
    const grpc::Status status = connection->stub->ProduceOne(&context, request, &response);
    ++requests;
    const std::string what =
        absl::StrCat(where, ", offsets ", first, "-", last, " to dataset \"", dataset, "\"");

    if (status.ok() && response.status().code() == 0) {
      if (response.acks_size() != end - i) {
        return absl::UnavailableError(absl::StrCat(what, ": the central answered ",
                                                   response.acks_size(), " acks for ", end - i,
                                                   " records"));
      }
      if (report->commit_id.empty()) {
        report->commit_id =
            absl::StrCat(response.acks(0).partition(), "/", response.acks(0).offset());
      }
      any_new = any_new || !response.duplicate();
      Remember(producer, first, last + 1);
      i = end;
      cap = std::numeric_limits<size_t>::max();
      continue;
    }
    if (status.ok()) {
      // ProduceOne reports errors as call statuses; a response status is not expected. Retry.
      return absl::UnavailableError(absl::StrCat(what, ": the central answered code ",
                                                 response.status().code(), ": ",
                                                 response.status().message()));
    }
    const std::string& msg = status.error_message();
    if (IsRequestTooLarge(status) && end - i > 1) {
      cap = static_cast<size_t>(end - i) / 2;
      spdlog::debug("{}: request of {} records refused for its size ({}); splitting", what, end - i,
                    msg);
      continue;
    }
    if (IsSequenceBehind(status)) {
      // The central stored these offsets in requests split differently (a bisection of this
      // batch, earlier in this process's life). Skip what this process saw acknowledged.
      const uint64_t known_end = RememberedEnd(producer, first);
      if (known_end > first) {
        while (i < n && batch.records(i).offset() < known_end) ++i;
        cap = std::numeric_limits<size_t>::max();
        continue;
      }
      return absl::FailedPreconditionError(absl::StrCat(
          what, ": the central refused the sequence: ", msg,
          ". The records were most likely stored by an earlier attempt split differently, which "
          "the central no longer remembers; if the edge's data directory was reset, give it a new "
          "node_id. Needs an operator."));
    }
    switch (status.error_code()) {
      case grpc::StatusCode::INVALID_ARGUMENT: {
        // Content: nothing of this request was stored; the pipeline bisects down to the record.
        std::string offset_note;
        if (std::optional<size_t> index = RecordIndexOf(msg);
            index && *index < static_cast<size_t>(end - i)) {
          offset_note = absl::StrCat(" (source offset ", batch.records(i + *index).offset(), ")");
        }
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": the central rejected a record", offset_note, ": ", msg));
      }
      case grpc::StatusCode::NOT_FOUND:
        return absl::FailedPreconditionError(
            absl::StrCat(what, ": the central has no such dataset: ", msg));
      case grpc::StatusCode::FAILED_PRECONDITION:
        return absl::FailedPreconditionError(absl::StrCat(
            what, ": ", msg,
            Contains(msg, "out of order")
                ? " (a central that ignores allow_sequence_gap is too old for forwarding)"
                : ""));
      case grpc::StatusCode::RESOURCE_EXHAUSTED:
        if (std::optional<std::chrono::milliseconds> delay = RetryDelay(status)) {
          report->retry_after = *delay;
        }
        return absl::UnavailableError(absl::StrCat(what, ": the central is at a limit: ", msg));
      case grpc::StatusCode::UNIMPLEMENTED:
      case grpc::StatusCode::PERMISSION_DENIED:
      case grpc::StatusCode::UNAUTHENTICATED:
      case grpc::StatusCode::OUT_OF_RANGE:
      case grpc::StatusCode::ALREADY_EXISTS:
        return absl::FailedPreconditionError(
            absl::StrCat(what, ": the central refused the call (gRPC code ",
                         static_cast<int>(status.error_code()), "): ", msg));
      default:
        if (status.error_code() == grpc::StatusCode::UNAVAILABLE &&
            connection->channel->GetState(false) == GRPC_CHANNEL_TRANSIENT_FAILURE) {
          Reconnect(connection);
        }
        // UNAVAILABLE (down, unreachable, shutting down), DEADLINE_EXCEEDED, ABORTED, CANCELLED,
        // UNKNOWN, INTERNAL, DATA_LOSS: possibly stored; the retry resends the same requests
        // and finds the stored ones as duplicates.
        return absl::UnavailableError(absl::StrCat(what, ": ", msg, " (gRPC code ",
                                                   static_cast<int>(status.error_code()), ")"));
    }
  }
  report->already_delivered = !any_new;
  if (requests > kMaxRequestsPerBatch) {
    spdlog::warn(
        "{}: the batch needed {} requests; above {} a crash in the middle of a batch may exceed "
        "the central's deduplication window (64 requests) and stop the destination with "
        "FAILED_PRECONDITION. Requests are runs of consecutive offsets below max_request_bytes: "
        "raise max_request_bytes (up to the central's max_message_bytes) if the batch is large.",
        where, requests, kMaxRequestsPerBatch);
  }
  return absl::OkStatus();
}

}  // namespace wharf::pipeline
