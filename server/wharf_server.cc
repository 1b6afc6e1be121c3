#include "server/wharf_server.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/resource_quota.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/util/message_differencer.h"
#include "pipeline/contract/contract_registry.h"
#include "pipeline/destinations/file_destination.h"
#include "pipeline/destinations/http_destination.h"
#include "pipeline/destinations/postgres_destination.h"
#include "pipeline/destinations/rolling_file_destination.h"
#include "pipeline/destinations/wharf_forward_destination.h"
#include "pipeline/pipeline.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"
#include "server/control_service.h"
#include "server/ingest_service.h"
#include "server/server_metrics.h"
#include "server/status.h"
#include "spdlog/spdlog.h"
#include "storage/fault_injection_fs.h"
#include "storage/staging_store.h"

namespace wharf::server {
namespace {

// Marks a status as caused by the configuration (see IsConfigError).
constexpr char kConfigErrorPayload[] = "type.wharf/config-error";

absl::Status ConfigError(absl::Status status) {
  status.SetPayload(kConfigErrorPayload, absl::Cord("1"));
  return status;
}

std::string Where(const DatasetConfig& ds, const DestinationConfig& d) {
  return absl::StrCat("dataset ", ds.name, ", destination ", d.name, ": ");
}

// A secret from a file: its content without trailing CR/LF. Missing, unreadable or empty files
// are configuration errors. The content never appears in a message.
absl::StatusOr<std::string> ReadSecretFile(const std::string& path, absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return ConfigError(absl::InvalidArgumentError(
        absl::StrCat("cannot read the ", what, " file ", path, ": ", std::strerror(errno))));
  }
  std::string secret((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) {
    return ConfigError(
        absl::InvalidArgumentError(absl::StrCat("cannot read the ", what, " file ", path)));
  }
  while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
  if (secret.empty()) {
    return ConfigError(
        absl::InvalidArgumentError(absl::StrCat("the ", what, " file ", path, " is empty")));
  }
  return secret;
}

// The HMAC key of PII "hash" actions and hash transforms (Config::hash_key_file): the file's
// content without trailing whitespace, at least kMinHashKeyBytes. "" when no file is configured.
// Every failure is a configuration error; neither the key nor any part of it is ever put into a
// message or a log line.
constexpr size_t kMinHashKeyBytes = 16;

absl::StatusOr<std::string> ReadHashKey(const std::string& path) {
  if (path.empty()) return std::string();
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return ConfigError(absl::InvalidArgumentError(absl::StrCat(
        "hash_key_file: cannot read the hash key file ", path, ": ", std::strerror(errno))));
  }
  std::string key((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) {
    return ConfigError(absl::InvalidArgumentError(
        absl::StrCat("hash_key_file: cannot read the hash key file ", path)));
  }
  while (!key.empty() && (key.back() == ' ' || key.back() == '\t' || key.back() == '\n' ||
                          key.back() == '\r' || key.back() == '\v' || key.back() == '\f')) {
    key.pop_back();
  }
  if (key.size() < kMinHashKeyBytes) {
    return ConfigError(absl::InvalidArgumentError(
        absl::StrCat("hash_key_file: the hash key in ", path, " is ", key.size(),
                     " bytes long (after trimming trailing whitespace); at least ",
                     kMinHashKeyBytes, " are required")));
  }
  return key;
}

}  // namespace

absl::Status CheckContracts(const Config& config) {
  absl::StatusOr<std::string> key = ReadHashKey(config.hash_key_file);
  if (!key.ok()) return key.status();
  for (const DatasetConfig& ds : config.datasets) {
    if (!ds.contract.has_value()) continue;
    wharf::v1::ContractVersion version;
    version.set_dataset(ds.name);
    *version.mutable_spec() = *ds.contract;
    auto compiled = pipeline::contract::Contract::Compile(version, *key);
    if (!compiled.ok()) {
      return ConfigError(absl::InvalidArgumentError(absl::StrCat(
          "dataset ", ds.name, ": the contract does not compile: ", compiled.status().message())));
    }
  }
  return absl::OkStatus();
}

namespace {

// Meta key of the contract a dataset's config held at the last start that applied it (a
// serialized wharf.v1.ContractSpec). Outside ContractRegistry::kKeyPrefix ("contract/"), so the
// registry never sees it.
std::string ConfigContractKey(const std::string& dataset) {
  return absl::StrCat("contract-config/", dataset);
}

// Deterministic, so that equal specs (maps included) give equal bytes.
std::string SerializeDeterministic(const google::protobuf::Message& message) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    message.SerializeToCodedStream(&coded);
  }
  return out;
}

// Loads the stored contracts and applies the config's ones; returns the registry.
//
// Start-up rule: a dataset's config contract is applied only when it differs from the one the
// config held at the previous start (recorded under ConfigContractKey after each successful
// apply). Why: `wharfctl apply` changes contracts at runtime and persists them; a restart with an
// unedited config must not revert such a change to the (older) config contract. Editing the
// config's contract does apply it at the next start, checked like `wharfctl apply` (compile
// errors and incompatibilities with the current version fail the start as a configuration
// error listing them). A dataset whose config has no contract but whose store holds one keeps
// the stored one: contracts are only ever replaced, never silently dropped (records would be
// delivered unchecked); its record is deleted, so that adding a contract to the config later is
// an edit that applies.
//
// Crash safety: the registry's version write and the record write are two synced writes. A
// kill -9 between them leaves the version stored and the record old; the next start then applies
// the same spec again, which the registry finds identical to the current version (nothing
// stored), and writes the record. So the rule converges without duplicating versions.
absl::StatusOr<std::unique_ptr<pipeline::contract::ContractRegistry>> LoadContracts(
    const Config& config, storage::StagingStore* store) {
  absl::StatusOr<std::string> key = ReadHashKey(config.hash_key_file);
  if (!key.ok()) return key.status();
  auto registry = std::make_unique<pipeline::contract::ContractRegistry>(store, std::move(*key));
  if (absl::Status st = registry->Load(); !st.ok()) {
    // DATA_LOSS (a damaged stored version) keeps its code: wharfd exits as for a damaged store.
    // A stored contract that no longer compiles (e.g. the hash key was removed or changed
    // length) is fixed in the configuration.
    if (absl::IsFailedPrecondition(st)) return ConfigError(std::move(st));
    return st;
  }
  for (const DatasetConfig& ds : config.datasets) {
    const std::string record_key = ConfigContractKey(ds.name);
    absl::StatusOr<std::optional<std::string>> recorded = store->GetMeta(record_key);
    if (!recorded.ok()) return recorded.status();
    if (!ds.contract.has_value()) {
      if (recorded->has_value()) {
        // Synced: once deleted, a contract added to the config later is applied.
        if (absl::Status st = store->DeleteMeta(record_key); !st.ok()) return st;
      }
      continue;
    }
    if (ds.format == "raw") {
      return ConfigError(absl::InvalidArgumentError(
          absl::StrCat("dataset ", ds.name, ": a contract needs format json (format is raw)")));
    }
    if (recorded->has_value()) {
      wharf::v1::ContractSpec previous;
      if (!previous.ParseFromString(**recorded)) {
        return absl::DataLossError(
            absl::StrCat("stored metadata ", record_key, " does not parse as a contract spec"));
      }
      if (google::protobuf::util::MessageDifferencer::Equals(previous, *ds.contract)) continue;
    }
    absl::StatusOr<pipeline::contract::ContractRegistry::ApplyResult> applied =
        registry->Apply(ds.name, *ds.contract, ds.source_yaml, /*dry_run=*/false);
    if (!applied.ok()) {
      absl::Status st(applied.status().code(),
                      absl::StrCat("dataset ", ds.name, ": the contract in the configuration",
                                   " cannot be applied: ", applied.status().message()));
      if (absl::IsInvalidArgument(st) || absl::IsFailedPrecondition(st)) {
        return ConfigError(std::move(st));
      }
      return st;
    }
    const wharf::v1::ContractVersion& v = applied->version;
    if (applied->changed) {
      spdlog::info(
          "dataset {}: contract from the configuration applied: schema version {}, "
          "transform version {}",
          ds.name, v.schema_version(), v.transform_version());
    }
    // Synced (PutMeta): recorded only after the version itself is durable, see above.
    if (absl::Status st = store->PutMeta(record_key, SerializeDeterministic(*ds.contract));
        !st.ok()) {
      return st;
    }
  }
  return registry;
}

absl::StatusOr<pipeline::PostgresColumn::Type> ColumnType(const std::string& name) {
  using Type = pipeline::PostgresColumn::Type;
  static const std::map<std::string, Type> kTypes = {{"text", Type::kText},
                                                     {"smallint", Type::kSmallint},
                                                     {"integer", Type::kInteger},
                                                     {"bigint", Type::kBigint},
                                                     {"numeric", Type::kNumeric},
                                                     {"boolean", Type::kBoolean},
                                                     {"timestamptz", Type::kTimestamptz},
                                                     {"jsonb", Type::kJsonb},
                                                     {"double", Type::kDouble}};
  auto it = kTypes.find(name);
  if (it == kTypes.end()) {
    return absl::InvalidArgumentError(absl::StrCat("unknown column type ", name));
  }
  return it->second;
}

pipeline::RetryOptions ToRetryOptions(const DeliveryConfig& c) {
  pipeline::RetryOptions r;
  r.initial_backoff = c.initial_backoff;
  r.max_backoff = c.max_backoff;
  r.multiplier = c.multiplier;
  r.jitter = c.jitter;
  r.down_after = c.down_after;
  r.probe_interval = c.probe_interval;
  return r;
}

absl::StatusOr<std::unique_ptr<pipeline::Destination>> MakeDestinationUnprefixed(
    const Config& config, const DatasetConfig& ds, const DestinationConfig& d) {
  if (d.type == "file" && !d.roll.has_value()) {
    pipeline::FileDestinationOptions o;
    o.directory = d.file_directory;
    auto dest = pipeline::FileDestination::Create(o);
    if (!dest.ok()) return dest.status();
    return std::unique_ptr<pipeline::Destination>(std::move(*dest));
  }
  if (d.type == "file") {
    pipeline::RollingFileDestinationOptions o;
    // Unique per (dataset, destination) among the instances sharing the directory; the config
    // checked that it is a valid name.
    o.name = absl::StrCat(d.name, ".", ds.name);
    o.directory = d.file_directory;
    o.path_template = d.path_template;
    o.max_bytes = d.roll->max_bytes;
    o.max_age = d.roll->max_age;
    o.gzip = d.file_gzip;
    auto dest = pipeline::RollingFileDestination::Create(std::move(o));
    if (!dest.ok()) return dest.status();
    return std::unique_ptr<pipeline::Destination>(std::move(*dest));
  }
  if (d.type == "postgres") {
    pipeline::PostgresDestinationOptions o;
    o.name = d.name;
    o.conninfo = d.pg_conninfo;
    if (!d.pg_password_file.empty()) {
      absl::StatusOr<std::string> password = ReadSecretFile(d.pg_password_file, "password");
      if (!password.ok()) return password.status();
      o.password = std::move(*password);
    } else if (!d.pg_password_env.empty()) {
      const char* value = std::getenv(d.pg_password_env.c_str());
      if (value == nullptr || *value == '\0') {
        return ConfigError(absl::InvalidArgumentError(
            absl::StrCat("the password environment variable ", d.pg_password_env,
                         value == nullptr ? " is not set" : " is empty")));
      }
      o.password = value;
    }
    o.table = d.pg_table;
    for (const PostgresColumnConfig& c : d.pg_columns) {
      absl::StatusOr<pipeline::PostgresColumn::Type> type = ColumnType(c.type);
      if (!type.ok()) return ConfigError(type.status());
      o.columns.push_back({c.name, c.source, *type});
    }
    o.create_table = d.pg_create_table;
    o.ledger_table = d.pg_ledger_table;
    o.connect_timeout = d.pg_connect_timeout;
    o.statement_timeout = d.pg_statement_timeout;
    o.max_connections = d.pg_max_connections;
    auto dest = pipeline::PostgresDestination::Create(std::move(o));
    if (!dest.ok()) return dest.status();
    return std::unique_ptr<pipeline::Destination>(std::move(*dest));
  }
  if (d.type == "http") {
    pipeline::HttpDestinationOptions o;
    o.name = d.name;
    o.url = d.http_url;
    o.format = d.http_format == "json_array" ? pipeline::HttpDestinationOptions::Format::kJsonArray
                                             : pipeline::HttpDestinationOptions::Format::kNdjson;
    o.gzip = d.http_gzip;
    o.headers = d.http_headers;
    if (!d.http_bearer_token_file.empty()) {
      absl::StatusOr<std::string> token = ReadSecretFile(d.http_bearer_token_file, "bearer token");
      if (!token.ok()) return token.status();
      o.bearer_token = std::move(*token);
    }
    o.connect_timeout = d.http_connect_timeout;
    o.request_timeout = d.http_request_timeout;
    o.ca_file = d.http_ca_file;
    o.insecure_skip_verify = d.http_insecure_skip_verify;
    o.client_cert_file = d.http_client_cert_file;
    o.client_key_file = d.http_client_key_file;
    auto dest = pipeline::HttpDestination::Create(std::move(o));
    if (!dest.ok()) return dest.status();
    return std::unique_ptr<pipeline::Destination>(std::move(*dest));
  }
  if (d.type == "wharf") {
    pipeline::WharfForwardOptions o;
    o.name = d.name;
    o.node_id = config.node_id;
    o.target = d.forward_target;
    o.target_dataset = d.forward_dataset;
    o.rpc_timeout = d.forward_rpc_timeout;
    o.max_request_bytes = d.forward_max_request_bytes;
    auto dest = pipeline::WharfForwardDestination::Create(std::move(o));
    if (!dest.ok()) return dest.status();
    return std::unique_ptr<pipeline::Destination>(std::move(*dest));
  }
  return ConfigError(absl::InvalidArgumentError(absl::StrCat("unknown type ", d.type)));
}

// Builds one destination from its config. Errors name the dataset and destination; invalid
// options (INVALID_ARGUMENT from the destination's Create) and unreadable secrets are marked as
// configuration errors.
absl::StatusOr<std::unique_ptr<pipeline::Destination>> MakeDestination(const Config& config,
                                                                       const DatasetConfig& ds,
                                                                       const DestinationConfig& d) {
  auto made = MakeDestinationUnprefixed(config, ds, d);
  if (made.ok()) return made;
  absl::Status status(made.status().code(), absl::StrCat(Where(ds, d), made.status().message()));
  if (IsConfigError(made.status()) || absl::IsInvalidArgument(made.status())) {
    status = ConfigError(std::move(status));
  }
  return status;
}

class WharfServerImpl final : public WharfServer {
 public:
  explicit WharfServerImpl(const Config& config)
      : config_(config),
        registry_(std::make_shared<prometheus::Registry>()),
        start_time_(std::chrono::system_clock::now()) {}

  ~WharfServerImpl() override { Stop(); }

  absl::Status Init() {
    // Destinations first: configuration errors (invalid options, unreadable secrets) fail the
    // start before the store is opened.
    std::vector<std::vector<pipeline::DestinationSpec>> destinations;
    for (const auto& ds : config_.datasets) {
      std::vector<pipeline::DestinationSpec>& specs = destinations.emplace_back();
      for (const auto& dest : ds.destinations) {
        auto made = MakeDestination(config_, ds, dest);
        if (!made.ok()) return made.status();
        std::optional<pipeline::RetryOptions> retry;
        if (dest.retry.has_value()) retry = ToRetryOptions(*dest.retry);
        specs.push_back({dest.name, std::move(*made), retry});
      }
    }

    std::vector<std::string> names;
    storage::StoreOptions so;
    so.path = config_.data_dir;
    so.durability = config_.durability;
    so.min_free_bytes = config_.min_free_bytes;
    so.metrics_registry = registry_.get();
    for (const auto& ds : config_.datasets) {
      storage::DatasetOptions d;
      d.name = ds.name;
      d.partitions = ds.partitions;
      d.quota_bytes = ds.quota_bytes;
      so.datasets.push_back(d);
      names.push_back(ds.name);
    }
    // Test-only: WHARF_FAULT_FS installs the fault-injection file system (integration tests
    // of fsync and write errors). Never set in production; a malformed value fails the start.
    if (const char* spec = std::getenv("WHARF_FAULT_FS"); spec != nullptr && *spec != '\0') {
      auto fs = storage::FaultInjectionFsFromSpec(spec);
      if (!fs.ok()) {
        return ConfigError(absl::InvalidArgumentError(
            absl::StrCat("WHARF_FAULT_FS: ", std::string(fs.status().message()))));
      }
      spdlog::warn("WHARF_FAULT_FS=\"{}\": TEST-ONLY fault injection in the staging store", spec);
      so.file_system = std::move(*fs);
    }
    auto store = storage::StagingStore::Open(std::move(so));
    if (!store.ok()) return store.status();
    store_ = std::move(*store);

    auto contracts = LoadContracts(config_, store_.get());
    if (!contracts.ok()) return contracts.status();
    contracts_ = std::move(*contracts);

    pipeline::PipelineOptions po;
    po.threads = config_.pipeline_threads;
    po.batching.max_records = config_.batching.max_records;
    po.batching.max_bytes = config_.batching.max_bytes;
    po.batching.linger = config_.batching.linger;
    po.retention.raw = config_.retention.raw;
    po.retention.interval = config_.retention.interval;
    po.retry = ToRetryOptions(config_.delivery);
    po.metrics_registry = registry_.get();
    for (size_t i = 0; i < config_.datasets.size(); ++i) {
      const DatasetConfig& ds = config_.datasets[i];
      pipeline::DatasetPipelineOptions d;
      d.name = ds.name;
      // The dataset's current contract, wherever it came from (config or `wharfctl apply`);
      // without one, the format's plain processor.
      std::shared_ptr<const pipeline::contract::Contract> contract = contracts_->Current(ds.name);
      if (contract != nullptr && ds.format == "raw") {
        // Running the contract on raw payloads would quarantine every non-JSON record; running
        // without it would deliver records its contract was meant to check.
        return ConfigError(absl::InvalidArgumentError(absl::StrCat(
            "dataset ", ds.name, " has format raw, but its store holds a contract (schema version ",
            contract->schema_version(), "): a contract needs format json")));
      }
      if (contract != nullptr) {
        d.processor = contract;
      } else {
        d.processor =
            ds.format == "raw" ? pipeline::NewRawProcessor() : pipeline::NewJsonParseProcessor();
      }
      d.destinations = std::move(destinations[i]);
      d.quarantine_quota_bytes = ds.quarantine_quota_bytes;
      d.quarantine_retention = ds.quarantine_retention;
      po.datasets.push_back(std::move(d));
    }
    auto pipe = pipeline::Pipeline::Create(store_.get(), std::move(po));
    if (!pipe.ok()) return pipe.status();
    pipeline_ = std::move(*pipe);
    pipeline::Pipeline* p = pipeline_.get();
    store_->SetAppendListener([p](const std::string& ds, uint32_t partition, uint64_t next) {
      p->OnAppend(ds, partition, next);
    });

    metrics_ = std::make_unique<ServerMetrics>(registry_.get(), names);
    ingest_ = std::make_unique<IngestService>(store_.get(), config_.limits, metrics_.get());
    control_ = std::make_unique<ControlService>(store_.get(), pipeline_.get(), metrics_.get(),
                                                start_time_, config_.durability, contracts_.get(),
                                                config_.datasets, config_.delivery);
    return absl::OkStatus();
  }

  absl::Status Start() override {
    if (absl::Status st = store_->Start(); !st.ok()) return st;
    if (absl::Status st = pipeline_->Start(); !st.ok()) return st;
    try {
      exposer_ = std::make_unique<prometheus::Exposer>(config_.metrics_listen);
      exposer_->RegisterCollectable(registry_);
    } catch (const std::exception& e) {
      return absl::UnavailableError(
          absl::StrCat("cannot serve metrics on ", config_.metrics_listen, ": ", e.what()));
    }
    grpc::ServerBuilder builder;
    builder.AddListeningPort(config_.listen, grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(ingest_.get());
    builder.RegisterService(control_.get());
    // gRPC's own limit is above max_message_bytes so that a request just over the configured
    // limit gets our INVALID_ARGUMENT with the sizes instead of gRPC's RESOURCE_EXHAUSTED.
    const uint64_t hard = std::min<uint64_t>(config_.limits.max_message_bytes * 2, INT32_MAX);
    builder.SetMaxReceiveMessageSize(static_cast<int>(hard));
    // Dead peers (docs/reliability/network_and_abuse.md): ping a connection quiet for
    // keepalive_time, close it when the ping is not answered within keepalive_timeout, so that
    // the streams of a vanished producer end (their unanswered requests are then retried by the
    // producer, deduplicated by sequence number) instead of staying open for hours. Pings go on
    // without data frames in between (gRPC stops after 2 by default), since an idle producer's
    // connection is the one most likely to die unnoticed. Safe: a live peer answers pings from
    // its transport, whether or not its application reads; nothing stored is affected.
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                               static_cast<int>(config_.limits.keepalive_time.count()));
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                               static_cast<int>(config_.limits.keepalive_timeout.count()));
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_SENT_PING_INTERVAL_WITHOUT_DATA_MS,
                               static_cast<int>(config_.limits.keepalive_time.count()));
    // Clients may enable keepalive themselves (every 10 s at most) without being sent a GOAWAY
    // for "too many pings" (gRPC's server default tolerates one ping per 5 minutes).
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
    // A bound on gRPC's own buffers (limits.max_grpc_memory). Why: gRPC grows each stream's
    // HTTP/2 receive window with its bandwidth estimate (BDP probing) and buffers what a client
    // sends up to that window whether or not the stream's reactor reads it; a Produce stream that
    // is paused (its client reads no acks, or the store is behind) could thus park tens of MiB
    // in wharfd, per stream. Measured: 20 clients that never read acks took wharfd to 790 MiB of
    // RSS without the quota, about 300 MiB with it (docs/reliability/network_and_abuse.md).
    // Under pressure gRPC shrinks the windows, so clients are pushed back by flow control; at
    // worst it closes idle connections or cancels streams with RESOURCE_EXHAUSTED. Safe for
    // durability: a cancelled stream's unanswered requests are retried by the producer with the
    // same sequence numbers and deduplicated; nothing acknowledged depends on gRPC's buffers.
    // A fixed receive window per stream (limits.stream_window) instead of one grown by BDP
    // probing. Why: the quota above is a pressure signal, not a hard limit; what a paused stream
    // was let in before the pressure stays parked, so with BDP probing memory still grew with the
    // number of clients that read no acks (466 MiB with 50; 436 MiB with 100, 376 MiB with the
    // window fixed). With the window fixed, each such stream holds at most
    // max_inflight_per_stream requests plus stream_window. Safe: flow control only delays what
    // clients send; nothing acknowledged depends on it.
    builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    builder.AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES,
                               static_cast<int>(config_.limits.stream_window));
    grpc::ResourceQuota quota("wharfd-grpc");
    quota.Resize(static_cast<size_t>(config_.limits.max_grpc_memory));
    builder.SetResourceQuota(quota);
    grpc_ = builder.BuildAndStart();
    if (grpc_ == nullptr || port_ == 0) {
      return absl::UnavailableError(
          absl::StrCat("cannot listen on ", config_.listen, " (address in use or invalid?)"));
    }
    started_ = true;
    spdlog::info("wharfd serving gRPC on {} (port {}), metrics on {}, data in {}, durability {}",
                 config_.listen, port_, config_.metrics_listen, config_.data_dir,
                 config_.durability == storage::Durability::kSync ? "sync" : "async");
    return absl::OkStatus();
  }

  void Stop() override { StopImpl(/*flush=*/true); }

  absl::Status StoreFailure() const override {
    return store_ ? store_->WriteFailure() : absl::OkStatus();
  }

  void StopAfterStoreFailure() override { StopImpl(/*flush=*/false); }

 private:
  void StopImpl(bool flush) {
    if (stopped_) return;
    stopped_ = true;
    const auto t0 = std::chrono::steady_clock::now();
    if (store_) store_->Stop();
    if (grpc_) {
      const auto grace = std::min<std::chrono::milliseconds>(config_.shutdown_timeout,
                                                             std::chrono::milliseconds(2000));
      grpc_->Shutdown(std::chrono::system_clock::now() + grace);
      grpc_->Wait();
    }
    if (pipeline_) pipeline_->Stop();
    if (store_ && flush) {
      if (absl::Status st = store_->Flush(); !st.ok()) {
        spdlog::warn("flush at shutdown failed (the WAL still has everything): {}", st.ToString());
      }
    }
    exposer_.reset();
    if (started_) {
      spdlog::info("wharfd stopped in {} ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                                                  std::chrono::steady_clock::now() - t0)
                                                  .count());
    }
  }

 public:
  int port() const override { return port_; }

  void RefreshGauges() override {
    if (!started_ || stopped_) return;
    metrics_->UpdateGauges(
        BuildStatus(*store_, *pipeline_, *metrics_, {}, start_time_, config_.durability));
  }

 private:
  const Config config_;
  std::shared_ptr<prometheus::Registry> registry_;
  const std::chrono::system_clock::time_point start_time_;
  std::unique_ptr<storage::StagingStore> store_;
  // After store_ (uses it), before the pipeline and the control service (which use it).
  std::unique_ptr<pipeline::contract::ContractRegistry> contracts_;
  std::unique_ptr<pipeline::Pipeline> pipeline_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<IngestService> ingest_;
  std::unique_ptr<ControlService> control_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::unique_ptr<grpc::Server> grpc_;
  int port_ = 0;
  bool started_ = false;
  bool stopped_ = false;
};

}  // namespace

bool IsConfigError(const absl::Status& status) {
  return status.GetPayload(kConfigErrorPayload).has_value();
}

absl::StatusOr<std::unique_ptr<WharfServer>> WharfServer::Create(const Config& config) {
  auto s = std::make_unique<WharfServerImpl>(config);
  if (absl::Status st = s->Init(); !st.ok()) return st;
  return std::unique_ptr<WharfServer>(std::move(s));
}

}  // namespace wharf::server
