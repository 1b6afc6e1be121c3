#include "server/control_service.h"

#include <algorithm>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "server/status.h"
#include "storage/keys.h"

namespace wharf::server {
namespace {

using wharf::v1::QuarantineEntry;
using wharf::v1::QuarantineReason;

constexpr size_t kMaxPageSize = 1000;
constexpr size_t kDefaultPageSize = 100;
constexpr size_t kScanChunk = 1000;
constexpr int kMaxSampleFailures = 10;

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl and gRPC share the canonical code numbers.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* context, const absl::Status& status) {
  auto* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpc(status));
  return reactor;
}

// How the API addresses an entry; the store's key order is (partition, offset, destination).
std::string EntryToken(const QuarantineEntry& e) {
  if (e.reason() == wharf::v1::DESTINATION_REJECTED && !e.destination().empty()) {
    return absl::StrCat(e.partition(), "/", e.offset(), "/", e.destination());
  }
  return absl::StrCat(e.partition(), "/", e.offset());
}

bool AllDigits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// "partition/offset" or "partition/offset/destination".
absl::Status ValidateToken(const std::string& token) {
  std::vector<std::string> parts = absl::StrSplit(token, absl::MaxSplits('/', 2));
  uint32_t partition = 0;
  uint64_t offset = 0;
  if (parts.size() < 2 || !AllDigits(parts[0]) || !AllDigits(parts[1]) ||
      !absl::SimpleAtoi(parts[0], &partition) || !absl::SimpleAtoi(parts[1], &offset) ||
      (parts.size() == 3 && !storage::ValidateName("destination", parts[2]).ok())) {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed quarantine token \"", token.substr(0, 200),
                     "\" (expected partition/offset or partition/offset/destination, e.g. "
                     "\"2/1041\")"));
  }
  return absl::OkStatus();
}

absl::Status ValidateReason(int reason) {
  if (!wharf::v1::QuarantineReason_IsValid(reason)) {
    return absl::InvalidArgumentError(absl::StrCat("unknown quarantine reason ", reason));
  }
  return absl::OkStatus();
}

bool Before(const google::protobuf::Timestamp& a, const google::protobuf::Timestamp& b) {
  return a.seconds() < b.seconds() || (a.seconds() == b.seconds() && a.nanos() < b.nanos());
}

absl::Status ValidateTimestamp(const google::protobuf::Timestamp& t, const char* name) {
  // The range google.protobuf.Timestamp allows: 0001-01-01 to 9999-12-31.
  if (t.seconds() < -62135596800 || t.seconds() > 253402300799 || t.nanos() < 0 ||
      t.nanos() > 999999999) {
    return absl::InvalidArgumentError(absl::StrCat(name, " is not a valid timestamp"));
  }
  return absl::OkStatus();
}

// Entries selected by a replay or discard request, handed to `visit` one at a time (so that a
// dry run never holds more than one chunk of records). With tokens: each entry that exists and
// matches `reason` (unknown tokens are skipped: a repeated request is harmless). Without: every
// entry matching `reason`, within the bounds of ControlService; *truncated tells whether it
// stopped at one of them.
absl::Status SelectEntries(storage::StagingStore& store, const std::string& dataset,
                           const std::vector<std::string>& tokens, QuarantineReason reason,
                           const std::function<absl::Status(QuarantineEntry&)>& visit,
                           bool* truncated) {
  *truncated = false;
  const auto matches = [&](const QuarantineEntry& e) {
    return reason == wharf::v1::QUARANTINE_REASON_UNSPECIFIED || e.reason() == reason;
  };
  if (!tokens.empty()) {
    for (const std::string& token : tokens) {
      absl::StatusOr<QuarantineEntry> entry = store.GetQuarantine(dataset, token);
      if (absl::IsNotFound(entry.status())) continue;
      if (!entry.ok()) return entry.status();
      if (!matches(*entry)) continue;
      if (absl::Status st = visit(*entry); !st.ok()) return st;
    }
    return absl::OkStatus();
  }
  std::string after;
  size_t scanned = 0, selected = 0;
  std::vector<QuarantineEntry> chunk;
  while (true) {
    std::string next;
    const size_t n = std::min(kScanChunk, ControlService::kMaxBulkScan - scanned);
    if (absl::Status st = store.ListQuarantine(dataset, after, n, &chunk, &next); !st.ok()) {
      return st;
    }
    for (size_t i = 0; i < chunk.size(); ++i) {
      ++scanned;
      if (!matches(chunk[i])) continue;
      if (absl::Status st = visit(chunk[i]); !st.ok()) return st;
      if (++selected == ControlService::kMaxBulkEntries) {
        *truncated = i + 1 < chunk.size() || !next.empty();
        return absl::OkStatus();
      }
    }
    if (next.empty()) return absl::OkStatus();
    if (scanned >= ControlService::kMaxBulkScan) {
      *truncated = true;
      return absl::OkStatus();
    }
    after = std::move(next);
  }
}

// Checks shared by replay and discard; returns the deduplicated tokens.
absl::StatusOr<std::vector<std::string>> CheckSelection(
    const google::protobuf::RepeatedPtrField<std::string>& tokens, int reason, bool all) {
  if (absl::Status st = ValidateReason(reason); !st.ok()) return st;
  if (static_cast<size_t>(tokens.size()) > ControlService::kMaxTokens) {
    return absl::InvalidArgumentError(absl::StrCat("too many tokens (", tokens.size(), "; at most ",
                                                   ControlService::kMaxTokens, " per request)"));
  }
  if (tokens.empty() && !all && reason == wharf::v1::QUARANTINE_REASON_UNSPECIFIED) {
    return absl::InvalidArgumentError(
        "nothing selected: name entries by token, or select them with all or a reason");
  }
  if (!tokens.empty() && all) {
    return absl::InvalidArgumentError("all and tokens are exclusive: give one or the other");
  }
  std::vector<std::string> unique;
  std::set<std::string> seen;
  for (const std::string& token : tokens) {
    if (absl::Status st = ValidateToken(token); !st.ok()) return st;
    if (seen.insert(token).second) unique.push_back(token);
  }
  return unique;
}

// Every way the non-contract parts of a spec document's dataset differ from the running
// configuration's, one phrase each (empty: equal).
std::vector<std::string> ConfigDifferences(const DatasetConfig& running,
                                           const DatasetConfig& document) {
  std::vector<std::string> diffs;
  if (running.partitions != document.partitions) {
    diffs.push_back(absl::StrCat("partitions (running ", running.partitions, ", document ",
                                 document.partitions, ")"));
  }
  if (running.format != document.format) {
    diffs.push_back(
        absl::StrCat("format (running ", running.format, ", document ", document.format, ")"));
  }
  if (running.quota_bytes != document.quota_bytes) {
    diffs.push_back(absl::StrCat("quota (running ", running.quota_bytes, " bytes, document ",
                                 document.quota_bytes, " bytes)"));
  }
  if (running.quarantine_quota_bytes != document.quarantine_quota_bytes) {
    diffs.push_back(absl::StrCat("quarantine.quota (running ", running.quarantine_quota_bytes,
                                 " bytes, document ", document.quarantine_quota_bytes, " bytes)"));
  }
  if (running.quarantine_retention != document.quarantine_retention) {
    diffs.push_back(absl::StrCat("quarantine.retention (running ",
                                 running.quarantine_retention.count(), " ms, document ",
                                 document.quarantine_retention.count(), " ms)"));
  }
  const auto find = [](const std::vector<DestinationConfig>& list, const std::string& name) {
    return std::find_if(list.begin(), list.end(),
                        [&](const DestinationConfig& d) { return d.name == name; });
  };
  bool named_differences = false;
  for (const DestinationConfig& d : running.destinations) {
    auto it = find(document.destinations, d.name);
    if (it == document.destinations.end()) {
      diffs.push_back(absl::StrCat("destination \"", d.name, "\" is missing from the document"));
      named_differences = true;
    } else if (!(*it == d)) {
      diffs.push_back(
          absl::StrCat("destination \"", d.name, "\" differs (type, options or retry)"));
      named_differences = true;
    }
  }
  for (const DestinationConfig& d : document.destinations) {
    if (find(running.destinations, d.name) == running.destinations.end()) {
      diffs.push_back(
          absl::StrCat("destination \"", d.name, "\" is not in the running configuration"));
      named_differences = true;
    }
  }
  if (!named_differences && running.destinations != document.destinations) {
    diffs.push_back("destinations are listed in another order");
  }
  return diffs;
}

// The registry lists compile errors joined by "; " after "does not compile: "; one per line is
// easier to read (wharfctl prints the message as it is).
absl::Status CompileErrorsOnePerLine(const absl::Status& status) {
  static constexpr char kMarker[] = "does not compile: ";
  const std::string message(status.message());
  const size_t at = message.find(kMarker);
  if (!absl::IsInvalidArgument(status) || at == std::string::npos) return status;
  const size_t rest = at + sizeof(kMarker) - 1;
  std::vector<std::string> errors = absl::StrSplit(message.substr(rest), "; ");
  return absl::InvalidArgumentError(
      absl::StrCat(message.substr(0, rest - 1), "\n", absl::StrJoin(errors, "\n")));
}

}  // namespace

ControlService::ControlService(storage::StagingStore* store, pipeline::Pipeline* pipeline,
                               ServerMetrics* metrics,
                               std::chrono::system_clock::time_point start_time,
                               storage::Durability durability,
                               pipeline::contract::ContractRegistry* contracts,
                               std::vector<DatasetConfig> datasets, DeliveryConfig delivery)
    : store_(store),
      pipeline_(pipeline),
      metrics_(metrics),
      start_time_(start_time),
      durability_(durability),
      contracts_(contracts),
      datasets_(std::move(datasets)),
      delivery_(delivery) {}

absl::Status ControlService::CheckDataset(const std::string& dataset) const {
  if (dataset.empty()) return absl::InvalidArgumentError("dataset is required");
  if (!store_->HasDataset(dataset)) {
    return absl::NotFoundError(absl::StrCat("unknown dataset \"", dataset.substr(0, 200), "\""));
  }
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* ControlService::GetStatus(grpc::CallbackServerContext* context,
                                                    const wharf::v1::GetStatusRequest* request,
                                                    wharf::v1::GetStatusResponse* response) {
  std::vector<std::string> only(request->datasets().begin(), request->datasets().end());
  for (const auto& name : only) {
    if (!store_->HasDataset(name)) {
      return Finish(context, absl::NotFoundError(absl::StrCat("unknown dataset \"", name, "\"")));
    }
  }
  *response = BuildStatus(*store_, *pipeline_, *metrics_, only, start_time_, durability_);
  return Finish(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* ControlService::ListQuarantine(
    grpc::CallbackServerContext* context, const wharf::v1::ListQuarantineRequest* request,
    wharf::v1::ListQuarantineResponse* response) {
  if (absl::Status st = CheckDataset(request->dataset()); !st.ok()) return Finish(context, st);
  if (request->limit() > kMaxPageSize) {
    return Finish(context, absl::InvalidArgumentError(absl::StrCat("limit ", request->limit(),
                                                                   " is above ", kMaxPageSize)));
  }
  if (absl::Status st = ValidateReason(request->reason()); !st.ok()) return Finish(context, st);
  if (!request->page_token().empty()) {
    if (absl::Status st = ValidateToken(request->page_token()); !st.ok()) {
      return Finish(context, absl::InvalidArgumentError(
                                 absl::StrCat("malformed page token: ", st.message())));
    }
  }
  const bool has_since = request->has_since();
  const bool has_until = request->has_until();
  if (has_since) {
    if (absl::Status st = ValidateTimestamp(request->since(), "since"); !st.ok()) {
      return Finish(context, st);
    }
  }
  if (has_until) {
    if (absl::Status st = ValidateTimestamp(request->until(), "until"); !st.ok()) {
      return Finish(context, st);
    }
  }
  if (has_since && has_until && Before(request->until(), request->since())) {
    return Finish(context, absl::InvalidArgumentError("until is before since"));
  }
  const QuarantineReason reason = request->reason();
  const bool filtered =
      reason != wharf::v1::QUARANTINE_REASON_UNSPECIFIED || has_since || has_until;
  const auto matches = [&](const QuarantineEntry& e) {
    if (reason != wharf::v1::QUARANTINE_REASON_UNSPECIFIED && e.reason() != reason) return false;
    if (has_since && Before(e.quarantine_time(), request->since())) return false;
    if (has_until && !Before(e.quarantine_time(), request->until())) return false;
    return true;
  };

  const size_t limit = request->limit() == 0 ? kDefaultPageSize : request->limit();
  std::string after = request->page_token();
  size_t scanned = 0;
  std::vector<QuarantineEntry> chunk;
  // Scans chunks until `limit` entries matched, the end, or the scan bound. The token returned
  // is the last entry scanned, so that the next call continues right after it whether or not it
  // matched.
  while (true) {
    const size_t wanted = filtered ? kScanChunk : limit - response->entries_size();
    const size_t n = std::min(wanted, kMaxListScan - scanned);
    std::string next;
    if (absl::Status st = store_->ListQuarantine(request->dataset(), after, n, &chunk, &next);
        !st.ok()) {
      return Finish(context, st);
    }
    for (size_t i = 0; i < chunk.size(); ++i) {
      ++scanned;
      if (!matches(chunk[i])) continue;
      QuarantineEntry* e = response->add_entries();
      *e = std::move(chunk[i]);
      e->set_token(EntryToken(*e));
      if (static_cast<size_t>(response->entries_size()) == limit) {
        const bool more = i + 1 < chunk.size() || !next.empty();
        response->set_next_page_token(more ? e->token() : "");
        return Finish(context, absl::OkStatus());
      }
    }
    if (next.empty() || scanned >= kMaxListScan) {
      response->set_next_page_token(next);
      return Finish(context, absl::OkStatus());
    }
    after = std::move(next);
  }
}

grpc::ServerUnaryReactor* ControlService::GetQuarantineEntry(
    grpc::CallbackServerContext* context, const wharf::v1::GetQuarantineEntryRequest* request,
    wharf::v1::QuarantineEntry* response) {
  if (absl::Status st = CheckDataset(request->dataset()); !st.ok()) return Finish(context, st);
  if (request->token().empty()) {
    return Finish(context, absl::InvalidArgumentError("token is required"));
  }
  if (absl::Status st = ValidateToken(request->token()); !st.ok()) return Finish(context, st);
  absl::StatusOr<QuarantineEntry> entry =
      store_->GetQuarantine(request->dataset(), request->token());
  if (!entry.ok()) return Finish(context, entry.status());
  *response = std::move(*entry);
  response->set_token(EntryToken(*response));
  return Finish(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* ControlService::ReplayQuarantine(
    grpc::CallbackServerContext* context, const wharf::v1::ReplayQuarantineRequest* request,
    wharf::v1::ReplayQuarantineResponse* response) {
  const std::string& dataset = request->dataset();
  if (absl::Status st = CheckDataset(dataset); !st.ok()) return Finish(context, st);
  absl::StatusOr<std::vector<std::string>> tokens =
      CheckSelection(request->tokens(), request->reason(), request->all());
  if (!tokens.ok()) return Finish(context, tokens.status());
  std::shared_ptr<const pipeline::RecordProcessor> processor = pipeline_->GetProcessor(dataset);
  if (request->dry_run() && processor == nullptr) {
    return Finish(context, absl::FailedPreconditionError(
                               absl::StrCat("dataset \"", dataset, "\" has no processor")));
  }
  const size_t destinations = pipeline_->DestinationStatuses(dataset).size();

  std::vector<std::string> selected;
  bool truncated = false;
  const auto visit = [&](QuarantineEntry& e) -> absl::Status {
    // Replaying appends the record again, and the pipeline then delivers it to EVERY
    // destination of the dataset: the ones that accepted it would get it twice.
    if (e.reason() == wharf::v1::DESTINATION_REJECTED && destinations > 1) {
      return absl::FailedPreconditionError(absl::StrCat(
          "entry ", EntryToken(e), " was rejected by destination \"", e.destination(),
          "\", and dataset \"", dataset, "\" has ", destinations,
          " destinations: replaying re-appends the record, which would deliver it again to the "
          "destinations that accepted it. Replay is only possible for DESTINATION_REJECTED "
          "entries of single-destination datasets; select other entries (e.g. by reason)"));
    }
    response->set_matched(response->matched() + 1);
    if (!request->dry_run()) {
      selected.push_back(EntryToken(e));
      return absl::OkStatus();
    }
    const pipeline::RecordContext record_context{dataset, e.partition(), e.offset()};
    std::string payload;
    QuarantineEntry failure;
    const pipeline::ProcessResult result =
        processor->ProcessRecord(record_context, e.original(), &payload, &failure);
    if (result == pipeline::ProcessResult::kQuarantine) {
      response->set_would_fail(response->would_fail() + 1);
      if (response->sample_failures_size() < kMaxSampleFailures) {
        response->add_sample_failures(
            absl::StrCat(EntryToken(e), ": ", wharf::v1::QuarantineReason_Name(failure.reason()),
                         ": ", failure.message()));
      }
    } else {
      // Delivered or deliberately filtered: either way not quarantined again.
      response->set_would_pass(response->would_pass() + 1);
    }
    return absl::OkStatus();
  };
  if (absl::Status st =
          SelectEntries(*store_, dataset, *tokens, request->reason(), visit, &truncated);
      !st.ok()) {
    return Finish(context, st);
  }
  response->set_truncated(truncated);
  if (request->dry_run() || selected.empty()) return Finish(context, absl::OkStatus());

  // The store does the replay on its writer thread (one synced write: each record is either
  // still in quarantine or back in the landing zone); the reactor finishes from its callback.
  auto* reactor = context->DefaultReactor();
  store_->ReplayQuarantine(dataset, std::move(selected),
                           [reactor, response](absl::StatusOr<uint64_t> replayed) {
                             if (!replayed.ok()) {
                               reactor->Finish(ToGrpc(replayed.status()));
                               return;
                             }
                             response->set_replayed(*replayed);
                             reactor->Finish(grpc::Status::OK);
                           });
  return reactor;
}

grpc::ServerUnaryReactor* ControlService::DiscardQuarantine(
    grpc::CallbackServerContext* context, const wharf::v1::DiscardQuarantineRequest* request,
    wharf::v1::DiscardQuarantineResponse* response) {
  const std::string& dataset = request->dataset();
  if (absl::Status st = CheckDataset(dataset); !st.ok()) return Finish(context, st);
  absl::StatusOr<std::vector<std::string>> tokens =
      CheckSelection(request->tokens(), request->reason(), request->all());
  if (!tokens.ok()) return Finish(context, tokens.status());
  std::vector<std::string> selected;
  bool truncated = false;
  if (tokens->empty() || request->reason() != wharf::v1::QUARANTINE_REASON_UNSPECIFIED) {
    const auto visit = [&](QuarantineEntry& e) {
      selected.push_back(EntryToken(e));
      return absl::OkStatus();
    };
    if (absl::Status st =
            SelectEntries(*store_, dataset, *tokens, request->reason(), visit, &truncated);
        !st.ok()) {
      return Finish(context, st);
    }
  } else {
    // Named entries without a filter: the store skips the ones that do not exist.
    selected = std::move(*tokens);
  }
  if (!selected.empty()) {
    absl::StatusOr<uint64_t> discarded = store_->DiscardQuarantine(dataset, selected);
    if (!discarded.ok()) return Finish(context, discarded.status());
    response->set_discarded(*discarded);
  }
  response->set_truncated(truncated);
  return Finish(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* ControlService::SetPaused(grpc::CallbackServerContext* context,
                                                    const std::string& dataset,
                                                    const std::string& destination, bool paused) {
  if (absl::Status st = CheckDataset(dataset); !st.ok()) return Finish(context, st);
  if (destination.empty()) {
    return Finish(context, absl::InvalidArgumentError("destination is required"));
  }
  return Finish(context, pipeline_->SetPaused(dataset, destination, paused));
}

grpc::ServerUnaryReactor* ControlService::PauseDestination(
    grpc::CallbackServerContext* context, const wharf::v1::PauseDestinationRequest* request,
    wharf::v1::PauseDestinationResponse* /*response*/) {
  return SetPaused(context, request->dataset(), request->destination(), true);
}

grpc::ServerUnaryReactor* ControlService::ResumeDestination(
    grpc::CallbackServerContext* context, const wharf::v1::ResumeDestinationRequest* request,
    wharf::v1::ResumeDestinationResponse* /*response*/) {
  return SetPaused(context, request->dataset(), request->destination(), false);
}

grpc::ServerUnaryReactor* ControlService::ApplyContract(
    grpc::CallbackServerContext* context, const wharf::v1::ApplyContractRequest* request,
    wharf::v1::ApplyContractResponse* response) {
  return Finish(context, DoApplyContract(*request, response));
}

absl::Status ControlService::DoApplyContract(const wharf::v1::ApplyContractRequest& request,
                                             wharf::v1::ApplyContractResponse* response) {
  absl::StatusOr<DatasetConfig> document =
      ParseDatasetSpec(request.spec_yaml(), "<request>", delivery_);
  if (!document.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the dataset spec is invalid: ", document.status().message()));
  }
  const std::string& dataset = document->name;
  auto running = std::find_if(datasets_.begin(), datasets_.end(),
                              [&](const DatasetConfig& d) { return d.name == dataset; });
  if (running == datasets_.end() || !store_->HasDataset(dataset)) {
    return absl::NotFoundError(absl::StrCat("unknown dataset \"", dataset.substr(0, 200),
                                            "\": datasets are added in the configuration"));
  }
  if (!document->contract.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the spec of dataset ", dataset, " has no contract: nothing to apply (only `contract` ",
        "is applied at runtime)"));
  }
  if (std::vector<std::string> diffs = ConfigDifferences(*running, *document); !diffs.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the spec of dataset ", dataset,
        " differs from the running configuration in more than its contract (only the contract "
        "is applied at runtime; the rest needs a configuration change and a restart):\n",
        absl::StrJoin(diffs, "\n")));
  }
  if (running->format == "raw") {
    return absl::FailedPreconditionError(
        absl::StrCat("dataset ", dataset,
                     " has format raw: a contract needs format json, which "
                     "needs a configuration change and a restart"));
  }

  // Serialises Apply + SetProcessor (see apply_mu_). Apply's version write is a synced PutMeta
  // done inline on this gRPC thread, as PauseDestination does: a confirmed apply survives a
  // crash, and the write is small and rare.
  std::lock_guard<std::mutex> lock(apply_mu_);
  absl::StatusOr<pipeline::contract::ContractRegistry::ApplyResult> applied =
      contracts_->Apply(dataset, *document->contract, request.spec_yaml(), request.dry_run());
  if (!applied.ok()) return CompileErrorsOnePerLine(applied.status());
  if (!request.dry_run() && applied->changed) {
    // The version is durable now; records validated from here on use it. Should this fail, the
    // stored version still becomes current at the next start, so say so.
    if (absl::Status st = pipeline_->SetProcessor(dataset, contracts_->Current(dataset));
        !st.ok()) {
      return absl::InternalError(absl::StrCat("contract of dataset ", dataset,
                                              " was stored but could not be installed (it will "
                                              "be at the next start): ",
                                              st.message()));
    }
  }
  *response->mutable_version() = std::move(applied->version);
  response->set_changed(applied->changed);
  for (std::string& note : applied->notes) response->add_notes(std::move(note));
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* ControlService::GetContract(grpc::CallbackServerContext* context,
                                                      const wharf::v1::GetContractRequest* request,
                                                      wharf::v1::GetContractResponse* response) {
  const std::string& dataset = request->dataset();
  if (absl::Status st = CheckDataset(dataset); !st.ok()) return Finish(context, st);
  if (request->history()) {
    std::vector<wharf::v1::ContractVersion> history = contracts_->History(dataset);
    if (history.empty()) {
      return Finish(context,
                    absl::NotFoundError(absl::StrCat("dataset ", dataset, " has no contract")));
    }
    for (wharf::v1::ContractVersion& v : history) *response->add_versions() = std::move(v);
    return Finish(context, absl::OkStatus());
  }
  std::optional<uint32_t> schema_version;
  if (request->has_schema_version()) schema_version = request->schema_version();
  absl::StatusOr<wharf::v1::ContractVersion> version = contracts_->Get(dataset, schema_version);
  if (!version.ok()) return Finish(context, version.status());
  *response->add_versions() = std::move(*version);
  return Finish(context, absl::OkStatus());
}

}  // namespace wharf::server
