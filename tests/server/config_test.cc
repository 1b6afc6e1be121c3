#include "server/config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace wharf::server {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr uint64_t kGiB = 1024 * kMiB;
constexpr uint64_t kTiB = 1024 * kGiB;

// The smallest valid `datasets` section: six lines.
constexpr char kDatasets[] = R"(datasets:
  - name: orders
    destinations:
      - name: files
        type: file
        directory: /tmp/out
)";

// `prefix` (whole lines) followed by the minimal datasets section.
std::string WithDatasets(const std::string& prefix) { return prefix + kDatasets; }

absl::StatusOr<Config> Parse(const std::string& yaml) { return ParseConfig(yaml, "wharf.yaml"); }

// Parsing fails with INVALID_ARGUMENT, a message that starts with "wharf.yaml:<line>: <path>: "
// (or "wharf.yaml:<line>: " when `path` is empty) and that contains `fragment`.
::testing::AssertionResult FailsWith(const std::string& yaml, int line, const std::string& path,
                                     const std::string& fragment) {
  absl::StatusOr<Config> config = Parse(yaml);
  if (config.ok()) return ::testing::AssertionFailure() << "parsed without error";
  const absl::Status& status = config.status();
  if (!absl::IsInvalidArgument(status)) {
    return ::testing::AssertionFailure() << "wrong code: " << status;
  }
  const std::string message(status.message());
  const std::string prefix =
      absl::StrCat("wharf.yaml:", line, ": ", path, path.empty() ? "" : ": ");
  if (!absl::StartsWith(message, prefix)) {
    return ::testing::AssertionFailure()
           << "message \"" << message << "\" does not start with \"" << prefix << "\"";
  }
  if (!absl::StrContains(message, fragment)) {
    return ::testing::AssertionFailure()
           << "message \"" << message << "\" does not contain \"" << fragment << "\"";
  }
  return ::testing::AssertionSuccess();
}

// The minimal datasets section with `line` added to the dataset (e.g. "quota: 5MiB"); `line`
// is on line 3.
std::string WithDatasetKey(const std::string& line) {
  return absl::StrCat("datasets:\n  - name: orders\n    ", line, R"(
    destinations:
      - name: files
        type: file
        directory: /tmp/out
)");
}

// Parses a config whose only non-dataset line is `line` (e.g. "quota: 5MiB" in the dataset).
absl::StatusOr<Config> ParseWithDatasetKey(const std::string& line) {
  return Parse(WithDatasetKey(line));
}

// EXPECTs that every field of `actual` outside `path` and `datasets` equals that of `expected`.
void ExpectSettingsEq(const Config& actual, const Config& expected) {
  EXPECT_EQ(actual.listen, expected.listen);
  EXPECT_EQ(actual.metrics_listen, expected.metrics_listen);
  EXPECT_EQ(actual.data_dir, expected.data_dir);
  EXPECT_EQ(actual.durability, expected.durability);
  EXPECT_EQ(actual.min_free_bytes, expected.min_free_bytes);
  EXPECT_EQ(actual.shutdown_timeout, expected.shutdown_timeout);
  EXPECT_EQ(actual.pipeline_threads, expected.pipeline_threads);
  EXPECT_EQ(actual.batching.max_records, expected.batching.max_records);
  EXPECT_EQ(actual.batching.max_bytes, expected.batching.max_bytes);
  EXPECT_EQ(actual.batching.linger, expected.batching.linger);
  EXPECT_EQ(actual.retention.raw, expected.retention.raw);
  EXPECT_EQ(actual.retention.interval, expected.retention.interval);
  EXPECT_EQ(actual.delivery.initial_backoff, expected.delivery.initial_backoff);
  EXPECT_EQ(actual.delivery.max_backoff, expected.delivery.max_backoff);
  EXPECT_DOUBLE_EQ(actual.delivery.multiplier, expected.delivery.multiplier);
  EXPECT_DOUBLE_EQ(actual.delivery.jitter, expected.delivery.jitter);
  EXPECT_EQ(actual.delivery.down_after, expected.delivery.down_after);
  EXPECT_EQ(actual.delivery.probe_interval, expected.delivery.probe_interval);
  EXPECT_EQ(actual.limits.max_message_bytes, expected.limits.max_message_bytes);
  EXPECT_EQ(actual.limits.max_records_per_request, expected.limits.max_records_per_request);
  EXPECT_EQ(actual.limits.max_record_bytes, expected.limits.max_record_bytes);
  EXPECT_EQ(actual.limits.max_inflight_per_stream, expected.limits.max_inflight_per_stream);
  EXPECT_EQ(actual.limits.max_inflight_bytes, expected.limits.max_inflight_bytes);
  EXPECT_EQ(actual.limits.max_grpc_memory, expected.limits.max_grpc_memory);
  EXPECT_EQ(actual.limits.stream_window, expected.limits.stream_window);
  EXPECT_EQ(actual.limits.keepalive_time, expected.limits.keepalive_time);
  EXPECT_EQ(actual.limits.keepalive_timeout, expected.limits.keepalive_timeout);
  EXPECT_EQ(actual.log.level, expected.log.level);
  EXPECT_EQ(actual.log.format, expected.log.format);
}

// A plain file destination.
DestinationConfig FileDest(const std::string& name, const std::string& directory) {
  DestinationConfig d;
  d.name = name;
  d.type = "file";
  d.file_directory = directory;
  return d;
}

// EXPECTs that `actual` equals `expected`, destinations included.
void ExpectDatasetEq(const DatasetConfig& actual, const DatasetConfig& expected) {
  SCOPED_TRACE(absl::StrCat("dataset ", expected.name));
  EXPECT_EQ(actual.name, expected.name);
  EXPECT_EQ(actual.partitions, expected.partitions);
  EXPECT_EQ(actual.format, expected.format);
  EXPECT_EQ(actual.quota_bytes, expected.quota_bytes);
  EXPECT_EQ(actual.quarantine_quota_bytes, expected.quarantine_quota_bytes);
  EXPECT_EQ(actual.quarantine_retention, expected.quarantine_retention);
  ASSERT_EQ(actual.destinations.size(), expected.destinations.size());
  for (size_t i = 0; i < expected.destinations.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("destinations[", i, "]"));
    EXPECT_EQ(actual.destinations[i].name, expected.destinations[i].name);
    EXPECT_EQ(actual.destinations[i].type, expected.destinations[i].type);
    EXPECT_EQ(actual.destinations[i].file_directory, expected.destinations[i].file_directory);
    EXPECT_EQ(actual.destinations[i].retry.has_value(), expected.destinations[i].retry.has_value());
    EXPECT_EQ(actual.destinations[i].roll.has_value(), expected.destinations[i].roll.has_value());
  }
}

// ---------------------------------------------------------------------------------------------
// Valid configurations.

TEST(ConfigTest, FullConfigReadsEveryField) {
  const std::string yaml = R"(listen: 0.0.0.0:7500
metrics_listen: 0.0.0.0:9500
data_dir: /srv/wharf
durability: async
min_free_disk: 2GiB
shutdown_timeout: 45s
pipeline_threads: 8
batching:
  max_records: 5000
  max_bytes: 8MiB
  linger: 50ms
retention:
  raw: 7d
  interval: 30s
delivery:
  initial_backoff: 250ms
  max_backoff: 2m
  multiplier: 1.5
  jitter: 0.1
  down_after: 3
  probe_interval: 2s
limits:
  max_message_bytes: 32MiB
  max_records_per_request: 500
  max_record_bytes: 2MiB
  max_inflight_per_stream: 16
  max_inflight_bytes: 1GiB
  max_grpc_memory: 256MiB
  stream_window: 1MiB
  keepalive_time: 30s
  keepalive_timeout: 5s
log:
  level: debug
  format: json
datasets:
  - name: orders
    partitions: 16
    format: raw
    quota: 10GB
    destinations:
      - name: files
        type: file
        directory: /srv/out/orders
      - name: archive
        type: file
        directory: /srv/archive/orders
  - name: clicks.v2
    destinations:
      - name: files
        type: file
        directory: /srv/out/clicks
)";
  absl::StatusOr<Config> config = Parse(yaml);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->path, "wharf.yaml");

  Config expected;
  expected.listen = "0.0.0.0:7500";
  expected.metrics_listen = "0.0.0.0:9500";
  expected.data_dir = "/srv/wharf";
  expected.durability = storage::Durability::kAsync;
  expected.min_free_bytes = 2 * kGiB;
  expected.shutdown_timeout = seconds(45);
  expected.pipeline_threads = 8;
  expected.batching = {.max_records = 5000, .max_bytes = 8 * kMiB, .linger = milliseconds(50)};
  expected.retention = {.raw = hours(7 * 24), .interval = seconds(30)};
  expected.delivery = {.initial_backoff = milliseconds(250),
                       .max_backoff = minutes(2),
                       .multiplier = 1.5,
                       .jitter = 0.1,
                       .down_after = 3,
                       .probe_interval = seconds(2)};
  expected.limits = {.max_message_bytes = 32 * kMiB,
                     .max_records_per_request = 500,
                     .max_record_bytes = 2 * kMiB,
                     .max_inflight_per_stream = 16,
                     .max_inflight_bytes = kGiB,
                     .max_grpc_memory = 256 * kMiB,
                     .stream_window = kMiB,
                     .keepalive_time = seconds(30),
                     .keepalive_timeout = seconds(5)};
  expected.log = {.level = "debug", .format = "json"};
  ExpectSettingsEq(*config, expected);

  ASSERT_EQ(config->datasets.size(), 2u);
  ExpectDatasetEq(config->datasets[0],
                  {.name = "orders",
                   .partitions = 16,
                   .format = "raw",
                   .quota_bytes = 10'000'000'000u,
                   .destinations = {FileDest("files", "/srv/out/orders"),
                                    FileDest("archive", "/srv/archive/orders")}});
  // The same destination name in two datasets is fine.
  ExpectDatasetEq(config->datasets[1], {.name = "clicks.v2",
                                        .partitions = 4,
                                        .format = "json",
                                        .quota_bytes = 0,
                                        .destinations = {FileDest("files", "/srv/out/clicks")}});
}

TEST(ConfigTest, AbsentKeysKeepTheDefaults) {
  absl::StatusOr<Config> config = Parse(kDatasets);
  ASSERT_TRUE(config.ok()) << config.status();
  ExpectSettingsEq(*config, Config());
  ASSERT_EQ(config->datasets.size(), 1u);
  ExpectDatasetEq(config->datasets[0], {.name = "orders",
                                        .partitions = 4,
                                        .format = "json",
                                        .quota_bytes = 0,
                                        .destinations = {FileDest("files", "/tmp/out")}});
}

TEST(ConfigTest, EmptySectionsKeepTheDefaults) {
  absl::StatusOr<Config> config = Parse(WithDatasets("batching:\nlog: {}\nlimits:\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->batching.max_records, 1000u);
  EXPECT_EQ(config->log.level, "info");
  EXPECT_EQ(config->limits.max_message_bytes, 16 * kMiB);
}

TEST(ConfigTest, SizeForms) {
  const std::vector<std::pair<std::string, uint64_t>> cases = {
      {"0", 0},
      {"1048576", 1048576},
      {"\"2048\"", 2048},
      {"10B", 10},
      {"1KB", 1000},
      {"3MB", 3'000'000},
      {"2GB", 2'000'000'000},
      {"1TB", 1'000'000'000'000},
      {"512KiB", 512 * kKiB},
      {"64MiB", 64 * kMiB},
      {"64 MiB", 64 * kMiB},
      {"\"64 MiB\"", 64 * kMiB},
      {"1GiB", kGiB},
      {"5TiB", 5 * kTiB},
  };
  for (const auto& [text, bytes] : cases) {
    absl::StatusOr<Config> config = ParseWithDatasetKey("quota: " + text);
    ASSERT_TRUE(config.ok()) << text << ": " << config.status();
    EXPECT_EQ(config->datasets[0].quota_bytes, bytes) << text;
  }
}

TEST(ConfigTest, SizeRejectsUnknownForms) {
  for (const std::string text :
       {"64mb", "64Mib", "1.5GiB", "MiB", "64 MiBs", "0x10", "1e3", "lots", "\"\"", "64 M"}) {
    EXPECT_TRUE(FailsWith("limits:\n  max_inflight_bytes: " + text + "\n" + kDatasets, 2,
                          "limits.max_inflight_bytes", "expected a size in bytes or a number"))
        << text;
  }
}

TEST(ConfigTest, GrpcMemoryAndKeepaliveDefaultsAndRanges) {
  absl::StatusOr<Config> config = Parse(WithDatasets("limits: {}\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->limits.keepalive_time, seconds(60));
  EXPECT_EQ(config->limits.keepalive_timeout, seconds(20));
  EXPECT_EQ(config->limits.max_grpc_memory, 128 * kMiB);
  EXPECT_TRUE(FailsWith(WithDatasets("limits:\n  max_grpc_memory: 1MiB\n"), 2,
                        "limits.max_grpc_memory", "expected a size from 8MiB"));
  EXPECT_TRUE(FailsWith(WithDatasets("limits:\n  keepalive_time: 500ms\n"), 2,
                        "limits.keepalive_time", "expected a duration from 1s to 1d"));
  EXPECT_TRUE(FailsWith(WithDatasets("limits:\n  keepalive_timeout: 11m\n"), 2,
                        "limits.keepalive_timeout", "expected a duration from 1s to 10m"));
  EXPECT_TRUE(FailsWith(WithDatasets("limits:\n  keepalive_time: soon\n"), 2,
                        "limits.keepalive_time", "duration"));
}

TEST(ConfigTest, StreamWindowDefaultAndRange) {
  absl::StatusOr<Config> config = Parse(WithDatasets("limits: {}\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->limits.stream_window, 256 * kKiB);
  config = Parse(WithDatasets("limits:\n  stream_window: 64KiB\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->limits.stream_window, 64 * kKiB);
  config = Parse(WithDatasets("limits:\n  stream_window: 16MiB\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->limits.stream_window, 16 * kMiB);
  // Below HTTP/2's default window, above what a stream should park, not a size, not a scalar.
  for (const std::string text : {"65535", "0", "17MiB", "4GiB", "-1MiB", "99999999999999999999"}) {
    EXPECT_TRUE(FailsWith(WithDatasets("limits:\n  stream_window: " + text + "\n"), 2,
                          "limits.stream_window", "expected a size from 64KiB to 16MiB"))
        << text;
  }
  EXPECT_TRUE(FailsWith(WithDatasets("limits:\n  stream_window: wide\n"), 2, "limits.stream_window",
                        "expected a size in bytes or a number"));
  EXPECT_TRUE(
      FailsWith(WithDatasets("limits:\n  stream_window: [1MiB]\n"), 2, "limits.stream_window", ""));
}

TEST(ConfigTest, SizeOutOfRange) {
  EXPECT_TRUE(FailsWith(WithDatasets("batching:\n  max_bytes: 1000\n"), 2, "batching.max_bytes",
                        "expected a size from 1KiB to 256MiB, got \"1000\""));
  EXPECT_TRUE(FailsWith(WithDatasets("batching:\n  max_bytes: 257MiB\n"), 2, "batching.max_bytes",
                        "expected a size from 1KiB to 256MiB, got \"257MiB\""));
  EXPECT_TRUE(FailsWith(WithDatasets("limits:\n  max_message_bytes: 1GiB\n"), 2,
                        "limits.max_message_bytes", "expected a size from 1KiB to 256MiB"));
}

TEST(ConfigTest, DurationForms) {
  const std::vector<std::pair<std::string, milliseconds>> cases = {
      {"250ms", milliseconds(250)},   {"5s", seconds(5)},
      {"10m", minutes(10)},           {"24h", hours(24)},
      {"7d", hours(7 * 24)},          {"5 s", seconds(5)},
      {"\"90s\"", seconds(90)},       {"0s", milliseconds(0)},
      {"0ms", milliseconds(0)},       {"0", milliseconds(0)},
      {"1500ms", milliseconds(1500)},
  };
  for (const auto& [text, expected] : cases) {
    absl::StatusOr<Config> config = Parse(WithDatasets("retention:\n  raw: " + text + "\n"));
    ASSERT_TRUE(config.ok()) << text << ": " << config.status();
    EXPECT_EQ(config->retention.raw, expected) << text;
  }
}

TEST(ConfigTest, DurationWithoutUnitIsRefused) {
  EXPECT_TRUE(FailsWith(WithDatasets("batching:\n  linger: 200\n"), 2, "batching.linger",
                        "a number without a unit (add one, e.g. \"200s\")"));
  EXPECT_TRUE(FailsWith(WithDatasets("shutdown_timeout: 30\n"), 1, "shutdown_timeout",
                        "expected a duration: a number with a unit ms, s, m, h or d"));
}

TEST(ConfigTest, DurationRejectsUnknownForms) {
  for (const std::string text : {"5sec", "1.5s", "s", "5S", "5 seconds", "PT5S", "5s5ms"}) {
    EXPECT_TRUE(FailsWith(WithDatasets("batching:\n  linger: " + text + "\n"), 2, "batching.linger",
                          "expected a duration: a number with a unit"))
        << text;
  }
}

TEST(ConfigTest, DurationOutOfRange) {
  EXPECT_TRUE(FailsWith(WithDatasets("batching:\n  linger: 2h\n"), 2, "batching.linger",
                        "expected a duration from 0s to 1h, got \"2h\""));
  // 0 is fine for linger and retention.raw, but not where the range starts above it.
  EXPECT_TRUE(FailsWith(WithDatasets("shutdown_timeout: 0s\n"), 1, "shutdown_timeout",
                        "expected a duration from 1s to 10m, got \"0s\""));
  EXPECT_TRUE(FailsWith(WithDatasets("retention:\n  interval: 50ms\n"), 2, "retention.interval",
                        "expected a duration from 100ms to 1h"));
  EXPECT_TRUE(FailsWith(WithDatasets("delivery:\n  initial_backoff: 0ms\n"), 2,
                        "delivery.initial_backoff", "expected a duration from 1ms to 1h"));
}

TEST(ConfigTest, IntegerOutOfRangeOrNotAnInteger) {
  for (const std::string text : {"0", "1025", "x", "4.0", "0x10", "1e2", "\"\""}) {
    EXPECT_TRUE(FailsWith(WithDatasetKey("partitions: " + text), 3, "datasets[0].partitions",
                          "expected an integer from 1 to 1024, got "))
        << text;
  }
  // The example message of config.h, word for word.
  absl::StatusOr<Config> config = ParseWithDatasetKey("partitions: x");
  EXPECT_EQ(config.status().message(),
            "wharf.yaml:3: datasets[0].partitions: expected an integer from 1 to 1024, got \"x\"");
  EXPECT_TRUE(FailsWith(WithDatasets("pipeline_threads: 65\n"), 1, "pipeline_threads",
                        "expected an integer from 1 to 64, got \"65\""));
}

TEST(ConfigTest, NegativeNumbersAreRefused) {
  EXPECT_TRUE(FailsWith(WithDatasets("pipeline_threads: -1\n"), 1, "pipeline_threads",
                        "expected an integer from 1 to 64, got \"-1\""));
  EXPECT_TRUE(FailsWith(WithDatasets("min_free_disk: -5\n"), 1, "min_free_disk",
                        "expected a size from 0B to 1024TiB, got \"-5\""));
  EXPECT_TRUE(FailsWith(WithDatasets("min_free_disk: -5MiB\n"), 1, "min_free_disk",
                        "expected a size from 0B to 1024TiB, got \"-5MiB\""));
  EXPECT_TRUE(FailsWith(WithDatasets("batching:\n  linger: -5s\n"), 2, "batching.linger",
                        "expected a duration from 0s to 1h, got \"-5s\""));
  EXPECT_TRUE(FailsWith(WithDatasets("delivery:\n  jitter: -0.1\n"), 2, "delivery.jitter",
                        "expected a number from 0.0 to 1.0, got \"-0.1\""));
}

TEST(ConfigTest, OverflowIsRefused) {
  EXPECT_TRUE(FailsWith(WithDatasets("pipeline_threads: 99999999999999999999999\n"), 1,
                        "pipeline_threads", "expected an integer from 1 to 64"));
  // Fits in 64 bits, not in the 32-bit field.
  EXPECT_TRUE(FailsWith(WithDatasets("batching:\n  max_records: 4294967297\n"), 2,
                        "batching.max_records", "expected an integer from 1 to 1000000"));
  // The number fits, the number times the unit does not.
  EXPECT_TRUE(FailsWith(WithDatasets("min_free_disk: 18446744073709551615TiB\n"), 1,
                        "min_free_disk", "expected a size from 0B to 1024TiB"));
  EXPECT_TRUE(FailsWith(WithDatasets("min_free_disk: 99999999999999999999999\n"), 1,
                        "min_free_disk", "expected a size from 0B to 1024TiB"));
  EXPECT_TRUE(FailsWith(WithDatasets("retention:\n  raw: 999999999999999999d\n"), 2,
                        "retention.raw", "expected a duration from 0s to 3650d"));
  EXPECT_TRUE(FailsWith(WithDatasets("delivery:\n  multiplier: 1e400\n"), 2, "delivery.multiplier",
                        "expected a number from 1.0 to 10.0"));
}

TEST(ConfigTest, FractionsOutOfRangeOrNotNumbers) {
  for (const std::string text : {"0.5", "10.5", "abc", ".nan", "inf", "2x", "\"\""}) {
    EXPECT_TRUE(FailsWith(WithDatasets("delivery:\n  multiplier: " + text + "\n"), 2,
                          "delivery.multiplier", "expected a number from 1.0 to 10.0, got "))
        << text;
  }
  absl::StatusOr<Config> config = Parse(WithDatasets("delivery:\n  multiplier: 10\n  jitter: 0\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_DOUBLE_EQ(config->delivery.multiplier, 10.0);
  EXPECT_DOUBLE_EQ(config->delivery.jitter, 0.0);
}

// ---------------------------------------------------------------------------------------------
// Keys.

TEST(ConfigTest, UnknownTopLevelKeySuggestsTheClosest) {
  EXPECT_TRUE(FailsWith(WithDatasets("listen: 127.0.0.1:1\ndurabilty: sync\n"), 2, "durabilty",
                        "unknown key; did you mean \"durability\"?"));
}

TEST(ConfigTest, UnknownNestedKeysSuggestTheClosest) {
  EXPECT_TRUE(FailsWith(WithDatasets("batching:\n  max_recods: 10\n"), 2, "batching.max_recods",
                        "did you mean \"batching.max_records\"?"));
  EXPECT_TRUE(FailsWith("datasets:\n  - name: orders\n    partition: 8\n", 3,
                        "datasets[0].partition", "did you mean \"datasets[0].partitions\"?"));
  EXPECT_TRUE(FailsWith(R"(datasets:
  - name: orders
    destinations:
      - name: files
        type: file
        dir: /tmp/out
)",
                        6, "datasets[0].destinations[0].dir",
                        "did you mean \"datasets[0].destinations[0].directory\"?"));
}

TEST(ConfigTest, UnknownKeyWithoutCloseMatchListsTheKnownKeys) {
  EXPECT_TRUE(FailsWith(WithDatasets("log:\n  colour: true\n"), 2, "log.colour",
                        "unknown key (known keys: level, format)"));
}

TEST(ConfigTest, SectionKeyAtTheTopLevelNamesItsSection) {
  EXPECT_TRUE(FailsWith(WithDatasets("max_records: 10\n"), 1, "max_records",
                        "did you mean \"batching.max_records\" (in the batching section)?"));
}

TEST(ConfigTest, DuplicateKeyIsRefused) {
  EXPECT_TRUE(FailsWith(WithDatasets("listen: a:1\ndata_dir: /x\nlisten: b:2\n"), 3, "listen",
                        "duplicate key (first set at line 1)"));
}

TEST(ConfigTest, NonScalarKeyIsRefused) {
  EXPECT_TRUE(FailsWith(WithDatasets("? [a, b]\n: 1\n"), 1, "",
                        "expected keys that are plain names, got a key that is a list"));
}

// ---------------------------------------------------------------------------------------------
// Types.

TEST(ConfigTest, WrongTypesAreRefused) {
  EXPECT_TRUE(FailsWith(WithDatasets("batching: [1, 2]\n"), 1, "batching",
                        "expected a map of batching settings, got a list"));
  EXPECT_TRUE(FailsWith(WithDatasets("log: verbose\n"), 1, "log",
                        "expected a map of log settings, got \"verbose\""));
  EXPECT_TRUE(FailsWith(WithDatasets("listen:\n  host: a\n"), 1, "listen",
                        "expected a non-empty string, got a map"));
  EXPECT_TRUE(FailsWith(WithDatasets("pipeline_threads: [1]\n"), 1, "pipeline_threads",
                        "expected an integer from 1 to 64, got a list"));
  EXPECT_TRUE(
      FailsWith(WithDatasets("min_free_disk: {}\n"), 1, "min_free_disk", "got an empty map"));
  EXPECT_TRUE(FailsWith(WithDatasets("retention:\n  raw: [1s]\n"), 2, "retention.raw",
                        "expected a duration: a number with a unit ms, s, m, h or d"));
  EXPECT_TRUE(FailsWith("datasets: orders\n", 1, "datasets",
                        "expected a list of at least one dataset, got \"orders\""));
  EXPECT_TRUE(FailsWith("datasets:\n  - orders\n", 2, "datasets[0]",
                        "expected a map describing a dataset, got \"orders\""));
  EXPECT_TRUE(FailsWith("datasets:\n  - name: orders\n    destinations:\n      files: {}\n", 3,
                        "datasets[0].destinations",
                        "expected a list of at least one destination, got a map"));
  EXPECT_TRUE(FailsWith("datasets:\n  - name: orders\n    destinations:\n      - [file]\n", 4,
                        "datasets[0].destinations[0]",
                        "expected a map describing a destination, got a list"));
}

TEST(ConfigTest, EmptyValuesAreRefused) {
  EXPECT_TRUE(FailsWith(WithDatasets("listen:\n"), 1, "listen",
                        "expected a non-empty string, got nothing"));
  EXPECT_TRUE(FailsWith(WithDatasets("data_dir: \"\"\n"), 1, "data_dir",
                        "expected a non-empty string, got \"\""));
  EXPECT_TRUE(FailsWith(WithDatasets("log:\n  level: ~\n"), 2, "log.level",
                        "expected one of \"trace\", \"debug\", \"info\", \"warn\", \"error\", "
                        "\"critical\", \"off\", got nothing"));
}

// ---------------------------------------------------------------------------------------------
// Required fields, names and choices.

TEST(ConfigTest, MissingOrEmptyDatasets) {
  EXPECT_TRUE(FailsWith("listen: 127.0.0.1:1\n", 1, "datasets", "required key is missing"));
  EXPECT_TRUE(FailsWith("listen: 127.0.0.1:1\ndatasets: []\n", 2, "datasets",
                        "expected a list of at least one dataset, got an empty list"));
  EXPECT_TRUE(FailsWith("listen: 127.0.0.1:1\ndatasets:\n", 2, "datasets",
                        "expected a list of at least one dataset, got nothing"));
}

TEST(ConfigTest, MissingDatasetFields) {
  EXPECT_TRUE(FailsWith("datasets:\n  - partitions: 2\n", 2, "datasets[0].name",
                        "required key is missing"));
  EXPECT_TRUE(FailsWith(kDatasets + std::string("  - name: clicks\n    partitions: 2\n"), 7,
                        "datasets[1].destinations", "required key is missing"));
  EXPECT_TRUE(FailsWith("datasets:\n  - name: orders\n    destinations: []\n", 3,
                        "datasets[0].destinations",
                        "expected a list of at least one destination, got an empty list"));
}

TEST(ConfigTest, MissingDestinationFields) {
  const std::string head = "datasets:\n  - name: orders\n    destinations:\n";
  EXPECT_TRUE(FailsWith(head + "      - type: file\n        directory: /tmp\n", 4,
                        "datasets[0].destinations[0].name", "required key is missing"));
  EXPECT_TRUE(FailsWith(head + "      - name: files\n        directory: /tmp\n", 4,
                        "datasets[0].destinations[0].type", "required key is missing"));
  EXPECT_TRUE(FailsWith(head + "      - name: a\n        type: file\n        directory: /a\n" +
                            "      - name: b\n        type: file\n",
                        7, "datasets[0].destinations[1].directory",
                        "required key is missing (a file destination needs a directory)"));
}

TEST(ConfigTest, UnknownDestinationType) {
  EXPECT_TRUE(FailsWith(
      "datasets:\n  - name: orders\n    destinations:\n      - name: s3\n        type: s3\n", 5,
      "datasets[0].destinations[0].type",
      "expected one of \"file\", \"postgres\", \"http\", \"wharf\", got \"s3\""));
}

TEST(ConfigTest, InvalidNames) {
  EXPECT_TRUE(FailsWith("datasets:\n  - name: bad name\n", 2, "datasets[0].name",
                        "dataset name \"bad name\" may only contain letters, digits"));
  EXPECT_TRUE(FailsWith("datasets:\n  - name: .hidden\n", 2, "datasets[0].name",
                        "must start with a letter or digit"));
  EXPECT_TRUE(FailsWith("datasets:\n  - name: " + std::string(65, 'a') + "\n", 2,
                        "datasets[0].name", "must be 1 to 64 characters, got 65"));
  EXPECT_TRUE(FailsWith(
      "datasets:\n  - name: orders\n    destinations:\n      - name: a/b\n        type: file\n", 4,
      "datasets[0].destinations[0].name", "destination name \"a/b\" may only contain"));
  absl::StatusOr<Config> config = Parse(
      "datasets:\n  - name: " + std::string(64, 'a') +
      "\n    destinations:\n      - name: 0_x.y-z\n        type: file\n        directory: /t\n");
  EXPECT_TRUE(config.ok()) << config.status();
}

TEST(ConfigTest, DuplicateDatasetNames) {
  EXPECT_TRUE(FailsWith(kDatasets + std::string("  - name: orders\n"), 7, "datasets[1].name",
                        "duplicate dataset name \"orders\" (first defined at line 2)"));
}

TEST(ConfigTest, DuplicateDestinationNamesWithinADataset) {
  EXPECT_TRUE(FailsWith(kDatasets + std::string("      - name: files\n        type: file\n"), 7,
                        "datasets[0].destinations[1].name",
                        "duplicate destination name \"files\" (first defined at line 4)"));
}

TEST(ConfigTest, ChoicesAreChecked) {
  EXPECT_TRUE(FailsWith(WithDatasets("durability: fast\n"), 1, "durability",
                        "expected \"sync\" or \"async\", got \"fast\""));
  EXPECT_TRUE(FailsWith(WithDatasets("log:\n  level: verbose\n"), 2, "log.level",
                        "expected one of \"trace\", \"debug\", \"info\", \"warn\", \"error\", "
                        "\"critical\", \"off\", got \"verbose\""));
  EXPECT_TRUE(FailsWith(WithDatasets("log:\n  format: xml\n"), 2, "log.format",
                        "expected \"text\" or \"json\", got \"xml\""));
  EXPECT_TRUE(FailsWith("datasets:\n  - name: orders\n    format: csv\n", 3, "datasets[0].format",
                        "expected \"json\" or \"raw\", got \"csv\""));
  // Choices are case-sensitive.
  EXPECT_TRUE(FailsWith(WithDatasets("durability: SYNC\n"), 1, "durability", "got \"SYNC\""));
}

// ---------------------------------------------------------------------------------------------
// Cross-field checks.

TEST(ConfigTest, MaxBackoffBelowInitialBackoff) {
  EXPECT_TRUE(FailsWith(WithDatasets("delivery:\n  initial_backoff: 5s\n  max_backoff: 1s\n"), 3,
                        "delivery.max_backoff",
                        "expected a duration of at least initial_backoff (5s), got \"1s\""));
  // Only initial_backoff set, above the default max_backoff of 30s.
  EXPECT_TRUE(FailsWith(WithDatasets("delivery:\n  initial_backoff: 1m\n"), 2,
                        "delivery.initial_backoff",
                        "expected a duration of at most max_backoff (30s), got \"1m\""));
  EXPECT_TRUE(Parse(WithDatasets("delivery:\n  initial_backoff: 5s\n  max_backoff: 5s\n")).ok());
}

TEST(ConfigTest, MaxRecordBytesAboveMaxMessageBytes) {
  EXPECT_TRUE(
      FailsWith(WithDatasets("limits:\n  max_message_bytes: 1MiB\n  max_record_bytes: 2MiB\n"), 3,
                "limits.max_record_bytes",
                "expected a size of at most max_message_bytes (1MiB), got \"2MiB\""));
  // Only max_message_bytes set, below the default max_record_bytes of 1MiB.
  EXPECT_TRUE(FailsWith(WithDatasets("limits:\n  max_message_bytes: 512KiB\n"), 2,
                        "limits.max_message_bytes",
                        "expected a size of at least max_record_bytes (1MiB), got \"512KiB\""));
  EXPECT_TRUE(
      Parse(WithDatasets("limits:\n  max_message_bytes: 1MiB\n  max_record_bytes: 1MiB\n")).ok());
}

// ---------------------------------------------------------------------------------------------
// The file as a whole.

TEST(ConfigTest, EmptyFileIsRefused) {
  EXPECT_TRUE(FailsWith("", 1, "", "got an empty file"));
  EXPECT_TRUE(FailsWith("# only a comment\n\n", 1, "", "got an empty file"));
  EXPECT_TRUE(FailsWith("---\n", 1, "", "got an empty file"));
}

TEST(ConfigTest, TopLevelMustBeAMap) {
  EXPECT_TRUE(
      FailsWith("- a\n- b\n", 1, "", "expected a map of settings at the top level, got a list"));
  EXPECT_TRUE(FailsWith("\n\nhello\n", 3, "",
                        "expected a map of settings at the top level, got \"hello\""));
}

TEST(ConfigTest, SyntaxErrorNamesTheLine) {
  EXPECT_TRUE(FailsWith(WithDatasets("listen: [a, b\n"), 2, "", "end of sequence flow not found"));
  EXPECT_TRUE(FailsWith("listen: a\n\tdata_dir: b\n", 2, "", "illegal tab"));
}

TEST(ConfigTest, SecondDocumentIsRefused) {
  EXPECT_TRUE(FailsWith(kDatasets + std::string("---\nlisten: a:1\n"), 8, "",
                        "expected a single YAML document, got a second one"));
}

// Fuzz finding F5: yaml-cpp 0.7.0's LoadAll never returned on a tag or anchor followed by a stray
// ',' (it reported empty documents at the same place forever). Each of these must be a prompt
// error naming the line and column; before the fix the test binary hung here.
TEST(ConfigTest, StrayTokenAfterTagIsAnErrorNotAHang) {
  EXPECT_TRUE(FailsWith("!m,\n", 1, "", "unexpected character at column 3"));
  EXPECT_TRUE(FailsWith("&a,", 1, "", "unexpected character at column 3"));
  EXPECT_TRUE(FailsWith("!!str,", 1, "", "unexpected character at column 6"));
  EXPECT_TRUE(FailsWith(kDatasets + std::string("---\n!m,\n"), 8, "", "unexpected character"));
}

TEST(ConfigTest, AnchorsAndAliasesWork) {
  absl::StatusOr<Config> config = Parse(R"(datasets:
  - name: orders
    destinations: &dests
      - name: files
        type: file
        directory: /tmp/out
  - name: clicks
    destinations: *dests
)");
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->datasets.size(), 2u);
  EXPECT_EQ(config->datasets[1].destinations[0].file_directory, "/tmp/out");
}

// ---------------------------------------------------------------------------------------------
// node_id, probe_interval and the dataset's quarantine section.

TEST(ConfigTest, NodeIdDefaultsToTheHostName) {
  char host[256] = {};
  ASSERT_EQ(gethostname(host, sizeof(host) - 1), 0);
  absl::StatusOr<Config> config = Parse(kDatasets);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->node_id, host);
  config = Parse(WithDatasets("node_id: edge-1.eu_west\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->node_id, "edge-1.eu_west");
}

TEST(ConfigTest, InvalidNodeIdIsRefused) {
  EXPECT_TRUE(FailsWith(WithDatasets("node_id: edge 1\n"), 1, "node_id",
                        "expected 1 to 64 characters of [A-Za-z0-9_.-], got \"edge 1\""));
  EXPECT_TRUE(FailsWith(WithDatasets("node_id: " + std::string(65, 'n') + "\n"), 1, "node_id",
                        "expected 1 to 64 characters"));
  EXPECT_TRUE(FailsWith(WithDatasets("node_id: \"\"\n"), 1, "node_id",
                        "expected a non-empty string, got \"\""));
  EXPECT_TRUE(FailsWith(WithDatasets("node_id: [a]\n"), 1, "node_id", "got a list"));
}

TEST(ConfigTest, ProbeInterval) {
  absl::StatusOr<Config> config = Parse(WithDatasets("delivery:\n  probe_interval: 250ms\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->delivery.probe_interval, milliseconds(250));
  EXPECT_EQ(Config().delivery.probe_interval, seconds(30));
  EXPECT_TRUE(FailsWith(WithDatasets("delivery:\n  probe_interval: 50ms\n"), 2,
                        "delivery.probe_interval",
                        "expected a duration from 100ms to 1d, got \"50ms\""));
  EXPECT_TRUE(FailsWith(WithDatasets("delivery:\n  probe_interval: 25h\n"), 2,
                        "delivery.probe_interval", "got \"25h\""));
  EXPECT_TRUE(FailsWith(WithDatasets("delivery:\n  probe_interval: 30\n"), 2,
                        "delivery.probe_interval", "a number without a unit"));
}

TEST(ConfigTest, QuarantineSection) {
  absl::StatusOr<Config> config = ParseWithDatasetKey("quarantine: {quota: 1GiB, retention: 7d}");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->datasets[0].quarantine_quota_bytes, kGiB);
  EXPECT_EQ(config->datasets[0].quarantine_retention, hours(7 * 24));
  config = ParseWithDatasetKey("quarantine:");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->datasets[0].quarantine_quota_bytes, 0u);
  EXPECT_EQ(config->datasets[0].quarantine_retention, milliseconds(0));
  config = ParseWithDatasetKey("quarantine: {quota: 0, retention: 0}");
  ASSERT_TRUE(config.ok()) << config.status();

  EXPECT_TRUE(FailsWith(WithDatasetKey("quarantine: {quota: lots}"), 3,
                        "datasets[0].quarantine.quota", "expected a size in bytes"));
  EXPECT_TRUE(FailsWith(WithDatasetKey("quarantine: {retention: 7}"), 3,
                        "datasets[0].quarantine.retention", "a number without a unit"));
  EXPECT_TRUE(FailsWith(WithDatasetKey("quarantine: {retention: -1d}"), 3,
                        "datasets[0].quarantine.retention", "got \"-1d\""));
  EXPECT_TRUE(FailsWith(WithDatasetKey("quarantine: {quotas: 1GiB}"), 3,
                        "datasets[0].quarantine.quotas",
                        "did you mean \"datasets[0].quarantine.quota\"?"));
  EXPECT_TRUE(FailsWith(WithDatasetKey("quarantine: 1GiB"), 3, "datasets[0].quarantine",
                        "expected a map of quarantine settings, got \"1GiB\""));
}

// ---------------------------------------------------------------------------------------------
// Destinations of every type.

// A config with one destination whose lines (after "      - name: d") are `lines`, each
// indented by 8 spaces; the destination's name is on line 4, its first extra line on line 5.
std::string WithDestination(const std::vector<std::string>& lines) {
  std::string yaml = "datasets:\n  - name: orders\n    destinations:\n      - name: d\n";
  for (const std::string& line : lines) absl::StrAppend(&yaml, "        ", line, "\n");
  return yaml;
}

absl::StatusOr<DestinationConfig> ParseDestination(const std::vector<std::string>& lines) {
  absl::StatusOr<Config> config = Parse(WithDestination(lines));
  if (!config.ok()) return config.status();
  return config->datasets.at(0).destinations.at(0);
}

constexpr char kDest[] = "datasets[0].destinations[0]";
std::string DestPath(const std::string& key) { return absl::StrCat(kDest, ".", key); }

TEST(ConfigTest, PlainFileDestinationIsNotRolling) {
  absl::StatusOr<DestinationConfig> d = ParseDestination({"type: file", "directory: /out"});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->file_directory, "/out");
  EXPECT_FALSE(d->roll.has_value());
  EXPECT_FALSE(d->retry.has_value());
}

TEST(ConfigTest, RollingFileDestination) {
  absl::StatusOr<DestinationConfig> d = ParseDestination(
      {"type: file", "directory: /out", "roll: {max_bytes: 64MiB, max_age: 5m}",
       "path_template: \"{dataset}/{date}/{dataset}-p{partition}-{first_offset}.jsonl\"",
       "gzip: true"});
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_TRUE(d->roll.has_value());
  EXPECT_EQ(d->roll->max_bytes, 64 * kMiB);
  EXPECT_EQ(d->roll->max_age, minutes(5));
  EXPECT_EQ(d->path_template, "{dataset}/{date}/{dataset}-p{partition}-{first_offset}.jsonl");
  EXPECT_TRUE(d->file_gzip);
  // An empty roll section: the defaults.
  d = ParseDestination({"type: file", "directory: /out", "roll: {}"});
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_TRUE(d->roll.has_value());
  EXPECT_EQ(d->roll->max_bytes, 64 * kMiB);
  EXPECT_EQ(d->roll->max_age, minutes(5));
  EXPECT_EQ(d->path_template, "");
  EXPECT_FALSE(d->file_gzip);
  // One limit may be 0.
  d = ParseDestination({"type: file", "directory: /out", "roll: {max_bytes: 0, max_age: 1s}"});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->roll->max_bytes, 0u);
}

TEST(ConfigTest, MalformedRollingFileDestination) {
  EXPECT_TRUE(FailsWith(WithDestination({"type: file", "directory: /o", "path_template: x"}), 7,
                        DestPath("path_template"), "only valid for a rolling file destination"));
  EXPECT_TRUE(FailsWith(WithDestination({"type: file", "directory: /o", "gzip: true"}), 7,
                        DestPath("gzip"), "only valid for a rolling file destination"));
  EXPECT_TRUE(FailsWith(WithDestination({"type: file", "directory: /o", "roll: 5m"}), 7,
                        DestPath("roll"), "expected a map of roll settings, got \"5m\""));
  EXPECT_TRUE(FailsWith(WithDestination({"type: file", "directory: /o", "roll: {max_age: 1500ms}"}),
                        7, DestPath("roll.max_age"),
                        "expected a duration in whole seconds, got \"1500ms\""));
  EXPECT_TRUE(FailsWith(
      WithDestination({"type: file", "directory: /o", "roll: {max_bytes: 0, max_age: 0}"}), 7,
      DestPath("roll.max_age"), "a value above 0 for max_bytes or max_age"));
  EXPECT_TRUE(FailsWith(WithDestination({"type: file", "directory: /o", "roll: {max_bytes: big}"}),
                        7, DestPath("roll.max_bytes"), "expected a size in bytes"));
  EXPECT_TRUE(FailsWith(WithDestination({"type: file", "directory: /o", "roll: {max_byte: 1MiB}"}),
                        7, DestPath("roll.max_byte"), "did you mean"));
  EXPECT_TRUE(FailsWith(WithDestination({"type: file", "directory: /o", "roll: {}", "gzip: yes"}),
                        8, DestPath("gzip"), "expected \"true\" or \"false\", got \"yes\""));
  EXPECT_TRUE(
      FailsWith(WithDestination({"type: file", "directory: /o", "roll: {}", "path_template: \"\""}),
                8, DestPath("path_template"), "expected a non-empty string"));
}

TEST(ConfigTest, RollingFileNameWithDatasetMustBeAValidName) {
  // "<destination>.<dataset>" names the state: 30 + 1 + 6 characters are fine, 58 + 1 + 6 not.
  EXPECT_TRUE(Parse("datasets:\n  - name: orders\n    destinations:\n      - name: " +
                    std::string(30, 'd') + "\n        type: file\n        directory: /o\n" +
                    "        roll: {}\n")
                  .ok());
  EXPECT_TRUE(FailsWith(
      "datasets:\n  - name: orders\n    destinations:\n      - name: " + std::string(58, 'd') +
          "\n        type: file\n        directory: /o\n        roll: {}\n",
      7, DestPath("roll"), "at most 63 characters long"));
}

TEST(ConfigTest, PerDestinationRetryInheritsTheDeliverySection) {
  const std::string yaml =
      "delivery: {initial_backoff: 200ms, max_backoff: 10s, down_after: 7}\n" +
      WithDestination(
          {"type: file", "directory: /o",
           "retry: {initial_backoff: 1s, multiplier: 3, jitter: 0, probe_interval: 5s}"});
  absl::StatusOr<Config> config = Parse(yaml);
  ASSERT_TRUE(config.ok()) << config.status();
  const DestinationConfig& d = config->datasets[0].destinations[0];
  ASSERT_TRUE(d.retry.has_value());
  EXPECT_EQ(d.retry->initial_backoff, seconds(1));
  EXPECT_EQ(d.retry->max_backoff, seconds(10));  // inherited
  EXPECT_DOUBLE_EQ(d.retry->multiplier, 3.0);
  EXPECT_DOUBLE_EQ(d.retry->jitter, 0.0);
  EXPECT_EQ(d.retry->down_after, 7u);  // inherited
  EXPECT_EQ(d.retry->probe_interval, seconds(5));
  // The global section itself is unchanged.
  EXPECT_EQ(config->delivery.initial_backoff, milliseconds(200));
}

TEST(ConfigTest, MalformedRetry) {
  EXPECT_TRUE(FailsWith(WithDestination({"type: file", "directory: /o", "retry: {down_after: 0}"}),
                        7, DestPath("retry.down_after"),
                        "expected an integer from 1 to 1000000, got \"0\""));
  EXPECT_TRUE(FailsWith(WithDestination({"type: file", "directory: /o", "retry: {jitter: 2}"}), 7,
                        DestPath("retry.jitter"), "expected a number from 0.0 to 1.0"));
  EXPECT_TRUE(FailsWith(WithDestination({"type: file", "directory: /o", "retry: {backoff: 1s}"}), 7,
                        DestPath("retry.backoff"), "unknown key"));
  EXPECT_TRUE(FailsWith(WithDestination({"type: file", "directory: /o", "retry: 3"}), 7,
                        DestPath("retry"), "expected a map of retry settings"));
  // Above the inherited max_backoff of 30s.
  EXPECT_TRUE(
      FailsWith(WithDestination({"type: file", "directory: /o", "retry: {initial_backoff: 1m}"}), 7,
                DestPath("retry.initial_backoff"),
                "expected a duration of at most max_backoff (30s), got \"1m\""));
}

TEST(ConfigTest, KeysOfAnotherTypeAreRefused) {
  EXPECT_TRUE(FailsWith(WithDestination({"type: file", "directory: /o", "table: t"}), 7,
                        DestPath("table"),
                        "key \"table\" is not valid for a destination of type file (its keys: "
                        "name, type, retry, directory, roll, path_template, gzip)"));
  EXPECT_TRUE(FailsWith(
      WithDestination({"type: postgres", "directory: /o", "conninfo: x", "table: t"}), 6,
      DestPath("directory"), "key \"directory\" is not valid for a destination of type postgres"));
  EXPECT_TRUE(FailsWith(WithDestination({"type: wharf", "target: a:1", "url: http://x"}), 7,
                        DestPath("url"), "is not valid for a destination of type wharf"));
  EXPECT_TRUE(FailsWith(WithDestination({"type: http", "url: http://x", "target: a:1"}), 7,
                        DestPath("target"), "is not valid for a destination of type http"));
  EXPECT_TRUE(FailsWith(WithDestination({"type: kafka"}), 5, DestPath("type"),
                        "expected one of \"file\", \"postgres\", \"http\", \"wharf\", got "
                        "\"kafka\""));
}

TEST(ConfigTest, PostgresDestination) {
  absl::StatusOr<DestinationConfig> d = ParseDestination(
      {"type: postgres", "conninfo: \"host=127.0.0.1 port=5432 dbname=wh user=wharf\"",
       "password_file: /etc/wharf/pg.pass", "table: public.orders", "create_table: true",
       "ledger_table: ledger", "columns:", "  - {name: id, source: /id, type: bigint}",
       "  - {name: doc, source: \"\", type: jsonb}", "  - {name: src_offset, source: $offset}",
       "connect_timeout: 3s", "statement_timeout: 10s", "max_connections: 8"});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->type, "postgres");
  EXPECT_EQ(d->pg_conninfo, "host=127.0.0.1 port=5432 dbname=wh user=wharf");
  EXPECT_EQ(d->pg_password_file, "/etc/wharf/pg.pass");
  EXPECT_EQ(d->pg_password_env, "");
  EXPECT_EQ(d->pg_table, "public.orders");
  EXPECT_TRUE(d->pg_create_table);
  EXPECT_EQ(d->pg_ledger_table, "ledger");
  ASSERT_EQ(d->pg_columns.size(), 3u);
  EXPECT_EQ(d->pg_columns[0].name, "id");
  EXPECT_EQ(d->pg_columns[0].source, "/id");
  EXPECT_EQ(d->pg_columns[0].type, "bigint");
  EXPECT_EQ(d->pg_columns[1].source, "");
  EXPECT_EQ(d->pg_columns[1].type, "jsonb");
  EXPECT_EQ(d->pg_columns[2].source, "$offset");
  EXPECT_EQ(d->pg_columns[2].type, "text");  // the default
  EXPECT_EQ(d->pg_connect_timeout, seconds(3));
  EXPECT_EQ(d->pg_statement_timeout, seconds(10));
  EXPECT_EQ(d->pg_max_connections, 8u);

  d = ParseDestination(
      {"type: postgres", "conninfo: dbname=wh", "password_env: WHARF_PG_PW", "table: t"});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->pg_password_env, "WHARF_PG_PW");
  EXPECT_TRUE(d->pg_columns.empty());
  EXPECT_EQ(d->pg_ledger_table, "wharf_batches");
  EXPECT_FALSE(d->pg_create_table);
  EXPECT_EQ(d->pg_max_connections, 4u);
}

TEST(ConfigTest, MalformedPostgresDestination) {
  const std::string type = "type: postgres";
  EXPECT_TRUE(FailsWith(WithDestination({type, "table: t"}), 4, DestPath("conninfo"),
                        "required key is missing"));
  EXPECT_TRUE(FailsWith(WithDestination({type, "conninfo: dbname=wh"}), 4, DestPath("table"),
                        "required key is missing"));
  // A password in the connection string is refused, and not repeated in the message.
  for (const std::string conninfo :
       {"\"dbname=wh password=hunter2\"", "\"dbname=wh PASSWORD = hunter2\"",
        "\"postgresql://wharf:hunter2@db/wh\"", "\"postgres://db/wh?password=hunter2\""}) {
    SCOPED_TRACE(conninfo);
    const std::string yaml = WithDestination({type, "conninfo: " + conninfo, "table: t"});
    EXPECT_TRUE(FailsWith(yaml, 6, DestPath("conninfo"),
                          "must not contain a password (connection strings end up in logs): put "
                          "it in a file named by password_file"));
    EXPECT_FALSE(absl::StrContains(Parse(yaml).status().message(), "hunter2"));
  }
  // A user without a password in a URI is fine.
  EXPECT_TRUE(ParseDestination({type, "conninfo: \"postgresql://wharf@db/wh\"", "table: t"}).ok());
  EXPECT_TRUE(FailsWith(
      WithDestination({type, "conninfo: x", "table: t", "password_file: /p", "password_env: PW"}),
      9, DestPath("password_env"), "password_file and password_env are exclusive"));
  EXPECT_TRUE(FailsWith(WithDestination({type, "conninfo: x", "table: t", "password_env: 1PW"}), 8,
                        DestPath("password_env"), "expected an environment variable name"));
  EXPECT_TRUE(FailsWith(WithDestination({type, "conninfo: x", "table: t", "create_table: 1"}), 8,
                        DestPath("create_table"), "expected \"true\" or \"false\", got \"1\""));
  EXPECT_TRUE(FailsWith(WithDestination({type, "conninfo: x", "table: t", "max_connections: 0"}), 8,
                        DestPath("max_connections"), "expected an integer from 1 to 1024"));
  EXPECT_TRUE(FailsWith(WithDestination({type, "conninfo: x", "table: t", "connect_timeout: 10ms"}),
                        8, DestPath("connect_timeout"), "expected a duration from 1s to 10m"));
  EXPECT_TRUE(FailsWith(WithDestination({type, "conninfo: x", "table: t", "columns: []"}), 8,
                        DestPath("columns"), "expected a list of at least one column"));
  EXPECT_TRUE(FailsWith(WithDestination({type, "conninfo: x", "table: t",
                                         "columns:", "  - {name: a, type: varchar}"}),
                        9, DestPath("columns[0].type"), "got \"varchar\""));
  EXPECT_TRUE(
      FailsWith(WithDestination({type, "conninfo: x", "table: t", "columns:", "  - {source: /a}"}),
                9, DestPath("columns[0].name"), "required key is missing"));
  EXPECT_TRUE(FailsWith(WithDestination({type, "conninfo: x", "table: t",
                                         "columns:", "  - {name: a}", "  - {name: a, source: /b}"}),
                        10, DestPath("columns[1].name"),
                        "duplicate column name \"a\" (first defined at line 9)"));
  EXPECT_TRUE(FailsWith(
      WithDestination({type, "conninfo: x", "table: t", "columns:", "  - {name: a, sourc: /a}"}), 9,
      DestPath("columns[0].sourc"), "did you mean"));
  EXPECT_TRUE(FailsWith(
      WithDestination({type, "conninfo: x", "table: t", "columns:", "  - {name: a, source: [1]}"}),
      9, DestPath("columns[0].source"), "expected a string, got a list"));
}

TEST(ConfigTest, HttpDestination) {
  absl::StatusOr<DestinationConfig> d = ParseDestination(
      {"type: http", "url: http://127.0.0.1:8080/ingest", "format: json_array", "gzip: true",
       "headers: {X-Team: data, X-Empty: \"\"}", "bearer_token_file: /etc/wharf/token",
       "connect_timeout: 2s", "request_timeout: 1m",
       "tls: {ca_file: /ca.pem, insecure_skip_verify: true, client_cert_file: /c.pem, "
       "client_key_file: /k.pem}"});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->http_url, "http://127.0.0.1:8080/ingest");
  EXPECT_EQ(d->http_format, "json_array");
  EXPECT_TRUE(d->http_gzip);
  const std::vector<std::pair<std::string, std::string>> headers = {{"X-Team", "data"},
                                                                    {"X-Empty", ""}};
  EXPECT_EQ(d->http_headers, headers);
  EXPECT_EQ(d->http_bearer_token_file, "/etc/wharf/token");
  EXPECT_EQ(d->http_connect_timeout, seconds(2));
  EXPECT_EQ(d->http_request_timeout, minutes(1));
  EXPECT_EQ(d->http_ca_file, "/ca.pem");
  EXPECT_TRUE(d->http_insecure_skip_verify);
  EXPECT_EQ(d->http_client_cert_file, "/c.pem");
  EXPECT_EQ(d->http_client_key_file, "/k.pem");

  d = ParseDestination({"type: http", "url: HTTPS://example.com"});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->http_format, "ndjson");
  EXPECT_FALSE(d->http_gzip);
  EXPECT_TRUE(d->http_headers.empty());
  EXPECT_EQ(d->http_request_timeout, seconds(30));
}

TEST(ConfigTest, MalformedHttpDestination) {
  const std::string type = "type: http";
  EXPECT_TRUE(FailsWith(WithDestination({type}), 4, DestPath("url"), "required key is missing"));
  EXPECT_TRUE(FailsWith(WithDestination({type, "url: ftp://user:secret@x/"}), 6, DestPath("url"),
                        "expected an http:// or https:// URL with a host"));
  EXPECT_FALSE(absl::StrContains(
      Parse(WithDestination({type, "url: ftp://user:secret@x/"})).status().message(), "secret"));
  EXPECT_TRUE(FailsWith(WithDestination({type, "url: http://"}), 6, DestPath("url"),
                        "expected an http:// or https:// URL"));
  EXPECT_TRUE(FailsWith(WithDestination({type, "url: http://x", "format: csv"}), 7,
                        DestPath("format"), "expected \"ndjson\" or \"json_array\", got \"csv\""));
  EXPECT_TRUE(FailsWith(WithDestination({type, "url: http://x", "headers: [a]"}), 7,
                        DestPath("headers"),
                        "expected a map of header names to values, got a list"));
  EXPECT_TRUE(FailsWith(
      WithDestination({type, "url: http://x", "headers: {\"X Team\": a}"}), 7, DestPath("headers"),
      "expected header names that are HTTP tokens (e.g. X-Team), got \"X Team\""));
  EXPECT_TRUE(
      FailsWith(WithDestination({type, "url: http://x", "headers:", "  X-A: 1", "  x-a: 2"}), 9,
                DestPath("headers.x-a"), "duplicate header (first set at line 8"));
  EXPECT_TRUE(FailsWith(WithDestination({type, "url: http://x", "headers: {X-A: [1]}"}), 7,
                        DestPath("headers.X-A"), "expected a header value (a string), got a list"));
  EXPECT_TRUE(FailsWith(WithDestination({type, "url: http://x", "headers: {X-A: \"a\\nb\"}"}), 7,
                        DestPath("headers.X-A"), "without CR, LF or NUL"));
  EXPECT_TRUE(FailsWith(WithDestination({type, "url: http://x", "request_timeout: 2h"}), 7,
                        DestPath("request_timeout"), "expected a duration from 1ms to 1h"));
  EXPECT_TRUE(FailsWith(WithDestination({type, "url: http://x", "tls: {verify: false}"}), 7,
                        DestPath("tls.verify"), "unknown key"));
  EXPECT_TRUE(FailsWith(WithDestination({type, "url: http://x", "tls: {client_key_file: /k}"}), 7,
                        DestPath("tls.client_key_file"), "needs client_cert_file"));
  EXPECT_TRUE(FailsWith(WithDestination({type, "url: http://x", "tls: {insecure_skip_verify: no}"}),
                        7, DestPath("tls.insecure_skip_verify"), "expected \"true\" or \"false\""));
  EXPECT_TRUE(FailsWith(WithDestination({type, "url: http://x", "bearer_token_file: \"\""}), 7,
                        DestPath("bearer_token_file"), "expected a non-empty string"));
}

TEST(ConfigTest, WharfDestination) {
  absl::StatusOr<DestinationConfig> d =
      ParseDestination({"type: wharf", "target: 10.0.0.5:7400", "dataset: orders.central",
                        "rpc_timeout: 10s", "max_request_bytes: 2MiB"});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->forward_target, "10.0.0.5:7400");
  EXPECT_EQ(d->forward_dataset, "orders.central");
  EXPECT_EQ(d->forward_rpc_timeout, seconds(10));
  EXPECT_EQ(d->forward_max_request_bytes, 2 * kMiB);
  d = ParseDestination({"type: wharf", "target: \"[::1]:7400\""});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->forward_dataset, "");
  EXPECT_EQ(d->forward_rpc_timeout, seconds(30));
  EXPECT_EQ(d->forward_max_request_bytes, 4 * kMiB);
}

TEST(ConfigTest, MalformedWharfDestination) {
  const std::string type = "type: wharf";
  EXPECT_TRUE(FailsWith(WithDestination({type}), 4, DestPath("target"), "required key is missing"));
  for (const std::string target : {"central", "\"central:\"", ":7400", "central:70000",
                                   "central:-1", "a:b:7400", "\"[::1:7400\""}) {
    SCOPED_TRACE(target);
    EXPECT_TRUE(FailsWith(WithDestination({type, "target: " + target}), 6, DestPath("target"),
                          "expected host:port with a port from 1 to 65535"));
  }
  EXPECT_TRUE(FailsWith(WithDestination({type, "target: c:1", "dataset: a/b"}), 7,
                        DestPath("dataset"), "dataset name \"a/b\" may only contain"));
  EXPECT_TRUE(FailsWith(WithDestination({type, "target: c:1", "rpc_timeout: 10ms"}), 7,
                        DestPath("rpc_timeout"), "expected a duration from 100ms to 1h"));
  EXPECT_TRUE(FailsWith(WithDestination({type, "target: c:1", "max_request_bytes: 100"}), 7,
                        DestPath("max_request_bytes"), "expected a size from 1KiB to 256MiB"));
}

// ---------------------------------------------------------------------------------------------
// LoadConfig.

class LoadConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/wharf_config_test_XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    for (const std::string& file : files_) unlink(file.c_str());
    rmdir(dir_.c_str());
  }
  std::string Write(const std::string& name, const std::string& text) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    files_.push_back(path);
    return path;
  }

  std::string dir_;
  std::vector<std::string> files_;
};

TEST_F(LoadConfigTest, ReadsTheFileAndSetsThePath) {
  const std::string path = Write("wharf.yaml", kDatasets);
  absl::StatusOr<Config> config = LoadConfig(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->path, path);
  EXPECT_EQ(config->datasets[0].name, "orders");
}

TEST_F(LoadConfigTest, ErrorsNameThePath) {
  const std::string path = Write("bad.yaml", WithDatasets("pipeline_threads: 0\n"));
  absl::StatusOr<Config> config = LoadConfig(path);
  EXPECT_TRUE(absl::IsInvalidArgument(config.status()));
  EXPECT_TRUE(absl::StartsWith(config.status().message(), path + ":1: pipeline_threads: "))
      << config.status();
}

TEST_F(LoadConfigTest, MissingFileIsNotFound) {
  const std::string path = dir_ + "/absent.yaml";
  absl::StatusOr<Config> config = LoadConfig(path);
  EXPECT_TRUE(absl::IsNotFound(config.status())) << config.status();
  EXPECT_TRUE(absl::StrContains(config.status().message(), path)) << config.status();
  EXPECT_TRUE(absl::StrContains(config.status().message(), "No such file or directory"))
      << config.status();
}

TEST_F(LoadConfigTest, UnreadableFileIsPermissionDenied) {
  const std::string path = Write("secret.yaml", kDatasets);
  ASSERT_EQ(chmod(path.c_str(), 0), 0);
  // Root reads any file, so the check runs in a child that drops to an unprivileged user
  // (nobody) when the test runs as root. The child reports through its exit code.
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0)) _exit(10);
    absl::StatusOr<Config> config = LoadConfig(path);
    if (!absl::IsPermissionDenied(config.status())) _exit(11);
    if (!absl::StrContains(config.status().message(), path)) _exit(12);
    if (!absl::StrContains(config.status().message(), "Permission denied")) _exit(13);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << "10: cannot drop privileges, 11: not PERMISSION_DENIED, 12: path missing from the "
         "message, 13: strerror missing from the message";
}

TEST(ExampleConfigTest, LoadsWithTheDocumentedValues) {
  absl::StatusOr<Config> config = LoadConfig(WHARF_SOURCE_DIR "/deploy/examples/wharf.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->listen, "127.0.0.1:7400");
  EXPECT_EQ(config->metrics_listen, "127.0.0.1:9464");
  EXPECT_EQ(config->durability, storage::Durability::kSync);
  // Every value shown in the example but data_dir is the default.
  Config expected;
  expected.data_dir = "/tmp/wharf-demo/data";
  ExpectSettingsEq(*config, expected);
  ASSERT_EQ(config->datasets.size(), 1u);
  ExpectDatasetEq(config->datasets[0],
                  {.name = "orders",
                   .partitions = 4,
                   .format = "json",
                   .quota_bytes = 0,
                   .destinations = {FileDest("files", "/tmp/wharf-demo/out")}});
}

}  // namespace
}  // namespace wharf::server
