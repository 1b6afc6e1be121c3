#include "client/producer.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"

namespace wharf::client {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr size_t kServerDedupWindow = 64;

// A stream that ends with one of these codes will not get better by reconnecting.
bool IsFatalStreamCode(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kUnimplemented:
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
      return true;
    default:
      return false;
  }
}

// gRPC ends a call whose message exceeds the receiver's limit with RESOURCE_EXHAUSTED
// "Received message larger than max (<size> vs. <limit>)". Returns the limit, 0 when `status`
// is such an error without a readable limit, nullopt for other errors.
std::optional<size_t> MessageSizeLimit(const absl::Status& status) {
  if (status.code() != absl::StatusCode::kResourceExhausted) return std::nullopt;
  const absl::string_view message = status.message();
  if (message.find("larger than max") == absl::string_view::npos) return std::nullopt;
  const size_t vs = message.find("vs. ");
  if (vs == absl::string_view::npos) return 0;
  size_t limit = 0;
  bool digits = false;
  for (size_t i = vs + 4; i < message.size() && message[i] >= '0' && message[i] <= '9'; ++i) {
    limit = limit * 10 + static_cast<size_t>(message[i] - '0');
    digits = true;
  }
  return digits ? limit : 0;
}

milliseconds ExponentialBackoff(milliseconds initial, milliseconds max, int failures) {
  double delay = static_cast<double>(std::max<int64_t>(initial.count(), 1));
  for (int i = 1; i < failures && delay < static_cast<double>(max.count()); ++i) delay *= 2;
  return milliseconds(static_cast<int64_t>(std::min(delay, static_cast<double>(max.count()))));
}

}  // namespace

std::string RandomProducerId() {
  std::random_device device;
  std::uniform_int_distribution<uint32_t> dist;
  std::string id;
  id.reserve(32);
  for (int i = 0; i < 4; ++i) {
    char chunk[9];
    std::snprintf(chunk, sizeof(chunk), "%08" PRIx32, dist(device));
    id += chunk;
  }
  return id;
}

absl::StatusOr<std::unique_ptr<Producer>> Producer::Create(std::shared_ptr<grpc::Channel> channel,
                                                           ProducerOptions options) {
  if (channel == nullptr) return absl::InvalidArgumentError("channel is null");
  return Create(wharf::v1::Ingest::NewStub(std::move(channel)), std::move(options));
}

absl::StatusOr<std::unique_ptr<Producer>> Producer::Create(
    std::unique_ptr<wharf::v1::Ingest::StubInterface> stub, ProducerOptions options) {
  if (stub == nullptr) return absl::InvalidArgumentError("stub is null");
  if (options.dataset.empty()) return absl::InvalidArgumentError("dataset is required");
  if (options.max_inflight_requests == 0 || options.max_inflight_requests > kServerDedupWindow) {
    return absl::InvalidArgumentError(absl::StrCat("max_inflight_requests must be in [1, ",
                                                   kServerDedupWindow, "], got ",
                                                   options.max_inflight_requests));
  }
  if (options.initial_backoff.count() < 0 || options.max_backoff < options.initial_backoff) {
    return absl::InvalidArgumentError("backoff must satisfy 0 <= initial_backoff <= max_backoff");
  }
  if (options.retry_timeout.count() < 0) {
    return absl::InvalidArgumentError("retry_timeout must not be negative");
  }
  if (options.producer_id.empty()) options.producer_id = RandomProducerId();
  return std::unique_ptr<Producer>(new Producer(std::move(stub), std::move(options)));
}

Producer::Producer(std::unique_ptr<wharf::v1::Ingest::StubInterface> stub, ProducerOptions options)
    : options_(std::move(options)),
      stub_(std::move(stub)),
      next_sequence_(options_.first_sequence),
      rng_(std::random_device{}()) {
  sender_ = std::thread(&Producer::SenderLoop, this);
  callback_thread_ = std::thread(&Producer::CallbackLoop, this);
}

Producer::~Producer() { Close(); }

absl::Status Producer::Send(std::vector<wharf::v1::Record> records, Callback done) {
  if (records.empty()) return absl::InvalidArgumentError("a request needs at least one record");
  auto request = std::make_shared<Request>();
  request->records = records.size();
  request->done = std::move(done);
  request->proto.set_dataset(options_.dataset);
  request->proto.set_producer_id(options_.producer_id);
  request->proto.mutable_records()->Reserve(static_cast<int>(records.size()));
  for (wharf::v1::Record& record : records)
    request->proto.mutable_records()->Add(std::move(record));
  // request_id and first_sequence are set per attempt: at most 11 bytes each with their tags.
  constexpr size_t kPerAttemptBytes = 22;
  const size_t size = request->proto.ByteSizeLong() + kPerAttemptBytes;
  if (options_.max_request_bytes > 0 && size > options_.max_request_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("request of ", size, " bytes exceeds ",
                                                   options_.max_request_bytes,
                                                   " bytes (max_request_bytes)"));
  }

  std::unique_lock<std::mutex> lock(mu_);
  space_cv_.wait(lock, [this] {
    return closing_ || !fatal_status_.ok() || pending_.size() < options_.max_inflight_requests;
  });
  if (closing_) return absl::FailedPreconditionError("producer is closed");
  if (!fatal_status_.ok()) return fatal_status_;
  request->first_sequence = next_sequence_;
  request->queued_time = Clock::now();
  next_sequence_ += request->records;
  pending_.push_back(std::move(request));
  ++unanswered_;
  ++stats_.requests_queued;
  sender_cv_.notify_all();
  return absl::OkStatus();
}

absl::Status Producer::Flush(milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (idle_cv_.wait_for(lock, timeout, [this] { return unanswered_ == 0; })) {
    return absl::OkStatus();
  }
  return absl::DeadlineExceededError(
      absl::StrCat(unanswered_, " requests still unanswered after ", timeout.count(), " ms"));
}

void Producer::Close() {
  std::lock_guard<std::mutex> close_lock(close_mu_);
  if (closed_) return;
  closed_ = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    closing_ = true;
    if (context_ != nullptr) context_->TryCancel();
    sender_cv_.notify_all();
    space_cv_.notify_all();
  }
  if (sender_.joinable()) sender_.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    callbacks_stop_ = true;
    callback_cv_.notify_all();
  }
  if (callback_thread_.joinable()) callback_thread_.join();
}

uint64_t Producer::next_sequence() const {
  std::lock_guard<std::mutex> lock(mu_);
  // Holes not applied yet will shift the numbering of everything after them.
  uint64_t shift = 0;
  for (const Hole& hole : holes_) shift += hole.count;
  return next_sequence_ - shift;
}

size_t Producer::outstanding_requests() const {
  std::lock_guard<std::mutex> lock(mu_);
  return unanswered_;
}

ProducerStats Producer::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void Producer::SenderLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!closing_) {
    if (stream_ != nullptr && reader_done_) {
      TearDownStreamLocked(lock);
      continue;
    }
    // Renumbering is safe only once no attempt with the old numbers can still be stored.
    if (!holes_.empty() && outstanding_attempts_.empty()) {
      ApplyHolesLocked();
      continue;
    }
    RequestPtr next = FirstUnsentLocked();
    if (next == nullptr || !holes_.empty()) {
      sender_cv_.wait(lock);
      continue;
    }
    if (Clock::now() < paused_until_) {
      sender_cv_.wait_until(lock, paused_until_);
      continue;
    }
    if (stream_ == nullptr) {
      OpenStreamLocked(lock);
      continue;
    }
    if (write_failed_) {
      // The stream is dead; wait for the reader to see its end.
      sender_cv_.wait(lock);
      continue;
    }
    const uint64_t request_id = next_request_id_++;
    next->request_id = request_id;
    next->sent = true;
    if (++next->attempts > 1) ++stats_.retries;
    ++stats_.attempts_sent;
    next->proto.set_request_id(request_id);
    next->proto.set_first_sequence(next->first_sequence);
    by_request_id_[request_id] = next;
    outstanding_attempts_.insert(request_id);
    Stream* stream = stream_.get();
    // Only this thread mutates next->proto, and `next` keeps it alive while it is written even
    // if the answer arrives (and completes the request) first.
    lock.unlock();
    const bool ok = stream->Write(next->proto);
    lock.lock();
    if (!ok) write_failed_ = true;
  }
  if (stream_ != nullptr) {
    context_->TryCancel();
    TearDownStreamLocked(lock);
  }
  FailAllLocked(absl::CancelledError("producer closed before the request was acknowledged"),
                /*fatal=*/false);
}

void Producer::OpenStreamLocked(std::unique_lock<std::mutex>& lock) {
  // Close() cancels context_ if it is set, also while the call is being started below.
  context_ = std::make_unique<grpc::ClientContext>();
  grpc::ClientContext* context = context_.get();
  lock.unlock();
  std::unique_ptr<Stream> stream = stub_->Produce(context);
  lock.lock();
  stream_ = std::move(stream);
  reader_done_ = false;
  write_failed_ = false;
  if (stream_opened_before_) ++stats_.reconnects;
  stream_opened_before_ = true;
  reader_ = std::thread(&Producer::ReaderLoop, this, stream_.get());
}

void Producer::TearDownStreamLocked(std::unique_lock<std::mutex>& lock) {
  std::unique_ptr<Stream> stream = std::move(stream_);
  std::unique_ptr<grpc::ClientContext> context = std::move(context_);
  std::thread reader = std::move(reader_);
  lock.unlock();
  if (reader.joinable()) reader.join();
  const grpc::Status status = stream->Finish();
  stream.reset();
  context.reset();
  lock.lock();
  reader_done_ = false;
  write_failed_ = false;
  // Nothing sent on the old stream will be answered any more.
  outstanding_attempts_.clear();
  InvalidateFromLocked(0);
  if (closing_ || pending_.empty()) return;
  ++stats_.stream_failures;
  absl::Status cause = FromGrpcStatus(status);
  if (IsFatalStreamCode(cause.code())) {
    FailAllLocked(cause, /*fatal=*/true);
    return;
  }
  if (const std::optional<size_t> limit = MessageSizeLimit(cause)) {
    // A request too large for the server breaks every stream it is sent on: fail it like a
    // request the server refused, and go on with the others.
    bool failed_any = false;
    for (size_t i = 0; *limit > 0 && i < pending_.size();) {
      const size_t size = pending_[i]->proto.ByteSizeLong();
      if (size <= *limit) {
        ++i;
        continue;
      }
      FailPermanentlyLocked(
          i, absl::InvalidArgumentError(absl::StrCat(
                 "request of ", size, " bytes exceeds the server's limit of ", *limit, " bytes")));
      failed_any = true;
    }
    if (!failed_any) {
      FailAllLocked(cause, /*fatal=*/true);
      return;
    }
    if (pending_.empty()) return;
  }
  if (cause.ok()) cause = absl::UnavailableError("the server closed the stream");
  ScheduleRetryLocked(0, absl::UnavailableError(absl::StrCat("stream broken: ", cause.ToString())),
                      RetryDelay(status));
}

void Producer::ReaderLoop(Stream* stream) {
  wharf::v1::ProduceResponse response;
  while (stream->Read(&response)) HandleResponse(response);
  std::lock_guard<std::mutex> lock(mu_);
  reader_done_ = true;
  sender_cv_.notify_all();
}

void Producer::HandleResponse(const wharf::v1::ProduceResponse& response) {
  std::lock_guard<std::mutex> lock(mu_);
  outstanding_attempts_.erase(response.request_id());
  sender_cv_.notify_all();
  auto it = by_request_id_.find(response.request_id());
  if (it == by_request_id_.end()) return;  // an answer to an earlier attempt
  RequestPtr request = std::move(it->second);
  by_request_id_.erase(it);
  const auto pos = std::find(pending_.begin(), pending_.end(), request);
  if (pos == pending_.end()) return;  // cannot happen: current attempts are pending
  const size_t index = static_cast<size_t>(pos - pending_.begin());

  if (response.status().code() == 0) {
    consecutive_failures_ = 0;
    pending_.erase(pos);
    SendResult result;
    result.acks.assign(response.acks().begin(), response.acks().end());
    result.duplicate = response.duplicate();
    ++stats_.requests_acked;
    stats_.records_acked += request->records;
    if (response.duplicate()) ++stats_.duplicates;
    CompleteLocked(request, std::move(result));
    return;
  }

  const absl::Status status = FromRpcStatus(response.status());
  // "Out of order" is a consequence of an earlier request that failed (or is failing) when one
  // is still unanswered before this one or left a hole to renumber.
  const bool consequential =
      IsOutOfOrderSequence(response.status()) && (index > 0 || !holes_.empty());
  if (IsRetryableCode(status.code()) || consequential) {
    ScheduleRetryLocked(index, status, RetryDelay(response.status()));
  } else {
    FailPermanentlyLocked(index, status);
  }
}

Producer::RequestPtr Producer::FirstUnsentLocked() const {
  for (const RequestPtr& request : pending_) {
    if (!request->sent) return request;
  }
  return nullptr;
}

void Producer::InvalidateFromLocked(size_t index) {
  for (size_t i = index; i < pending_.size(); ++i) {
    Request& request = *pending_[i];
    if (!request.sent) continue;
    by_request_id_.erase(request.request_id);
    request.sent = false;
    request.request_id = 0;
  }
}

void Producer::ScheduleRetryLocked(size_t index, const absl::Status& cause,
                                   std::optional<milliseconds> server_delay) {
  const Clock::time_point now = Clock::now();
  if (index < pending_.size() && options_.retry_timeout.count() > 0 &&
      now - pending_[index]->queued_time >= options_.retry_timeout) {
    FailAllLocked(
        absl::DeadlineExceededError(absl::StrCat("gave up after ", options_.retry_timeout.count(),
                                                 " ms of retries: ", cause.ToString())),
        /*fatal=*/true);
    return;
  }
  InvalidateFromLocked(index);
  milliseconds delay(0);
  if (now >= paused_until_) {
    // The first failure of a round decides the backoff; later ones only extend it as far as
    // the server asks.
    ++stats_.retry_rounds;
    delay = NextBackoffLocked();
  }
  if (server_delay.has_value()) delay = std::max(delay, *server_delay);
  paused_until_ = std::max(paused_until_, now + delay);
  sender_cv_.notify_all();
}

void Producer::FailPermanentlyLocked(size_t index, const absl::Status& status) {
  RequestPtr request = pending_[index];
  pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(index));
  holes_.push_back(Hole{request->first_sequence, request->records});
  // The requests after it cannot be stored with their current numbers; they are resent once
  // renumbered.
  InvalidateFromLocked(index);
  ++stats_.requests_failed;
  SendResult result;
  result.status = status;
  CompleteLocked(request, std::move(result));
  sender_cv_.notify_all();
}

void Producer::FailAllLocked(const absl::Status& status, bool fatal) {
  if (fatal) fatal_status_ = status;
  // Report the numbering the unanswered requests would have had, so that next_sequence() is
  // where a successor resumes.
  ApplyHolesLocked();
  if (!pending_.empty()) next_sequence_ = pending_.front()->first_sequence;
  InvalidateFromLocked(0);
  std::deque<RequestPtr> pending = std::move(pending_);
  pending_.clear();
  for (const RequestPtr& request : pending) {
    ++stats_.requests_failed;
    SendResult result;
    result.status = status;
    CompleteLocked(request, std::move(result));
  }
  if (fatal && context_ != nullptr) context_->TryCancel();
  space_cv_.notify_all();
  sender_cv_.notify_all();
}

void Producer::ApplyHolesLocked() {
  if (holes_.empty()) return;
  uint64_t total = 0;
  for (const Hole& hole : holes_) total += hole.count;
  for (const RequestPtr& request : pending_) {
    uint64_t shift = 0;
    for (const Hole& hole : holes_) {
      if (hole.first_sequence < request->first_sequence) shift += hole.count;
    }
    if (shift > 0) {
      request->first_sequence -= shift;
      ++stats_.renumbered;
    }
  }
  next_sequence_ -= total;
  holes_.clear();
}

void Producer::CompleteLocked(const RequestPtr& request, SendResult result) {
  result.first_sequence = request->first_sequence;
  result.records = request->records;
  result.attempts = request->attempts;
  result.queued_time = request->queued_time;
  completions_.push_back(Completion{std::move(request->done), std::move(result)});
  callback_cv_.notify_all();
  space_cv_.notify_all();
}

milliseconds Producer::NextBackoffLocked() {
  ++consecutive_failures_;
  const milliseconds base =
      ExponentialBackoff(options_.initial_backoff, options_.max_backoff, consecutive_failures_);
  // Equal jitter: between half the backoff and the full backoff.
  std::uniform_int_distribution<int64_t> jitter(base.count() / 2, base.count());
  return milliseconds(jitter(rng_));
}

void Producer::CallbackLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    callback_cv_.wait(lock, [this] { return !completions_.empty() || callbacks_stop_; });
    if (completions_.empty()) return;  // stopping, and everything has been delivered
    std::deque<Completion> batch = std::move(completions_);
    completions_.clear();
    lock.unlock();
    for (Completion& completion : batch) {
      if (completion.done) completion.done(completion.result);
    }
    lock.lock();
    unanswered_ -= batch.size();
    idle_cv_.notify_all();
  }
}

absl::StatusOr<wharf::v1::ProduceResponse> ProduceOne(wharf::v1::Ingest::StubInterface& stub,
                                                      const wharf::v1::ProduceRequest& request,
                                                      const ProduceOneOptions& options) {
  std::mt19937_64 rng(std::random_device{}());
  absl::Status last;
  for (int attempt = 1; attempt <= std::max(options.max_attempts, 1); ++attempt) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + options.timeout);
    wharf::v1::ProduceResponse response;
    const grpc::Status status = stub.ProduceOne(&context, request, &response);
    if (status.ok()) return response;
    last = FromGrpcStatus(status);
    if (!IsRetryableCode(last.code()) || attempt == options.max_attempts) break;
    const milliseconds base =
        ExponentialBackoff(options.initial_backoff, options.max_backoff, attempt);
    std::uniform_int_distribution<int64_t> jitter(base.count() / 2, base.count());
    milliseconds delay(jitter(rng));
    if (std::optional<milliseconds> server_delay = RetryDelay(status)) {
      delay = std::max(delay, *server_delay);
    }
    std::this_thread::sleep_for(delay);
  }
  return last;
}

}  // namespace wharf::client
