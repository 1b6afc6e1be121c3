#include "server/wharf_server.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "pipeline/destinations/file_destination.h"
#include "pipeline/pipeline.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"
#include "server/control_service.h"
#include "server/ingest_service.h"
#include "server/server_metrics.h"
#include "server/status.h"
#include "spdlog/spdlog.h"
#include "storage/staging_store.h"

namespace wharf::server {
namespace {

absl::StatusOr<std::unique_ptr<pipeline::Destination>> MakeDestination(const DatasetConfig& ds,
                                                                       const DestinationConfig& d) {
  if (d.type == "file") {
    pipeline::FileDestinationOptions o;
    o.directory = d.file_directory;
    auto dest = pipeline::FileDestination::Create(o);
    if (!dest.ok()) {
      return absl::Status(dest.status().code(),
                          absl::StrCat("dataset ", ds.name, ", destination ", d.name, ": ",
                                       dest.status().message()));
    }
    return std::unique_ptr<pipeline::Destination>(std::move(*dest));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("dataset ", ds.name, ", destination ", d.name, ": unknown type ", d.type));
}

class WharfServerImpl final : public WharfServer {
 public:
  explicit WharfServerImpl(const Config& config)
      : config_(config),
        registry_(std::make_shared<prometheus::Registry>()),
        start_time_(std::chrono::system_clock::now()) {}

  ~WharfServerImpl() override { Stop(); }

  absl::Status Init() {
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
    auto store = storage::StagingStore::Open(std::move(so));
    if (!store.ok()) return store.status();
    store_ = std::move(*store);

    pipeline::PipelineOptions po;
    po.threads = config_.pipeline_threads;
    po.batching.max_records = config_.batching.max_records;
    po.batching.max_bytes = config_.batching.max_bytes;
    po.batching.linger = config_.batching.linger;
    po.retention.raw = config_.retention.raw;
    po.retention.interval = config_.retention.interval;
    po.retry.initial_backoff = config_.delivery.initial_backoff;
    po.retry.max_backoff = config_.delivery.max_backoff;
    po.retry.multiplier = config_.delivery.multiplier;
    po.retry.jitter = config_.delivery.jitter;
    po.retry.down_after = config_.delivery.down_after;
    po.metrics_registry = registry_.get();
    for (const auto& ds : config_.datasets) {
      pipeline::DatasetPipelineOptions d;
      d.name = ds.name;
      d.processor =
          ds.format == "raw" ? pipeline::NewRawProcessor() : pipeline::NewJsonParseProcessor();
      for (const auto& dest : ds.destinations) {
        auto made = MakeDestination(ds, dest);
        if (!made.ok()) return made.status();
        d.destinations.push_back({dest.name, std::move(*made), std::nullopt});
      }
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
                                                start_time_, config_.durability);
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

  void Stop() override {
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
    if (store_) {
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

absl::StatusOr<std::unique_ptr<WharfServer>> WharfServer::Create(const Config& config) {
  auto s = std::make_unique<WharfServerImpl>(config);
  if (absl::Status st = s->Init(); !st.ok()) return st;
  return std::unique_ptr<WharfServer>(std::move(s));
}

}  // namespace wharf::server
