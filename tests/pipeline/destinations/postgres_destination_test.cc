#include "pipeline/destinations/postgres_destination.h"

#include <libpq-fe.h>
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/support/postgres_server.h"
#include "tests/support/wharfd_process.h"
#include "wharf/v1/record.pb.h"

namespace wharf::pipeline {
namespace {

using Rows = std::vector<std::vector<std::string>>;
using Type = PostgresColumn::Type;
using wharf::testing::PostgresServer;
using wharf::testing::PostgresServerOptions;

constexpr char kPasswordRole[] = "wharf_pw";
constexpr char kPassword[] = "c0rrect 'horse' battery";

// pipeline_test links GoogleTest without gMock, hence no HasSubstr.
::testing::AssertionResult MessageContains(const absl::Status& status, const std::string& part) {
  const std::string message(status.message());
  if (message.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "status " << status << " does not mention \"" << part << "\"";
}

// A batch of records at offsets first_offset, first_offset + 1, ...
wharf::v1::StoredBatch MakeBatch(const std::string& dataset, uint32_t partition,
                                 uint64_t first_offset, const std::vector<std::string>& payloads) {
  wharf::v1::StoredBatch batch;
  wharf::v1::BatchManifest* m = batch.mutable_manifest();
  const uint64_t last_offset = first_offset + (payloads.empty() ? 0 : payloads.size() - 1);
  m->set_batch_id(absl::StrCat(dataset, ".p", partition, ".", first_offset, "-", last_offset));
  m->set_dataset(dataset);
  m->set_partition(partition);
  m->set_first_offset(first_offset);
  m->set_last_offset(last_offset);
  m->set_record_count(payloads.size());
  uint64_t offset = first_offset;
  for (const std::string& payload : payloads) {
    wharf::v1::BatchRecord* r = batch.add_records();
    r->set_offset(offset++);
    r->set_payload(payload);
  }
  return batch;
}

// A libpq session of the test itself, for holding transactions and locks.
class Session {
 public:
  explicit Session(const std::string& conninfo) : conn_(PQconnectdb(conninfo.c_str())) {}
  ~Session() { PQfinish(conn_); }
  bool ok() const { return PQstatus(conn_) == CONNECTION_OK; }
  // Runs `sql`; returns "" on success or the error message.
  std::string Exec(const std::string& sql) {
    PGresult* res = PQexec(conn_, sql.c_str());
    const ExecStatusType st = PQresultStatus(res);
    PQclear(res);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? "" : PQerrorMessage(conn_);
  }

 private:
  PGconn* conn_;
};

class PostgresDestinationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    PostgresServerOptions options;
    options.password_roles = {{kPasswordRole, kPassword}};
    server_ = new PostgresServer(options);
    const absl::Status started = server_->Start();
    ASSERT_TRUE(started.ok()) << started << "\n" << server_->Log();
    auto granted = server_->Query(absl::StrCat("GRANT CREATE ON SCHEMA public TO ", kPasswordRole));
    ASSERT_TRUE(granted.ok()) << granted.status();
  }

  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    ASSERT_TRUE(server_->running()) << "the PostgreSQL test server did not start";
  }

  static PostgresDestinationOptions Options(const std::string& table,
                                            std::vector<PostgresColumn> columns = {}) {
    PostgresDestinationOptions o;
    o.name = "pg";
    o.conninfo = server_->ConnInfo();
    o.table = table;
    o.columns = std::move(columns);
    o.create_table = true;
    return o;
  }

  static std::unique_ptr<PostgresDestination> MustCreate(PostgresDestinationOptions options) {
    absl::StatusOr<std::unique_ptr<PostgresDestination>> d =
        PostgresDestination::Create(std::move(options));
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? *std::move(d) : nullptr;
  }

  static void MustExec(const std::string& sql) {
    auto r = server_->Query(sql);
    ASSERT_TRUE(r.ok()) << sql << ": " << r.status();
  }

  static Rows MustQuery(const std::string& sql) {
    auto r = server_->Query(sql);
    EXPECT_TRUE(r.ok()) << sql << ": " << r.status();
    return r.ok() ? *r : Rows{};
  }

  static std::string Value(const std::string& sql) {
    auto r = server_->QueryValue(sql);
    EXPECT_TRUE(r.ok()) << sql << ": " << r.status();
    return r.ok() ? *r : "<error>";
  }

  static PostgresServer* server_;
};

PostgresServer* PostgresDestinationTest::server_ = nullptr;

TEST_F(PostgresDestinationTest, DeliversEveryColumnType) {
  auto dest = MustCreate(Options("types", {{"id", "/id", Type::kBigint},
                                           {"name", "/name", Type::kText},
                                           {"small", "/s", Type::kSmallint},
                                           {"int", "/i", Type::kInteger},
                                           {"num", "/n", Type::kNumeric},
                                           {"flag", "/b", Type::kBoolean},
                                           {"ts", "/ts", Type::kTimestamptz},
                                           {"doc", "/doc", Type::kJsonb},
                                           {"dbl", "/d", Type::kDouble},
                                           {"doc_text", "/doc", Type::kText},
                                           {"off", "$offset", Type::kBigint},
                                           {"part", "$partition", Type::kInteger},
                                           {"bid", "$batch_id", Type::kText},
                                           {"ds", "$dataset", Type::kText},
                                           {"key", "$key", Type::kText},
                                           {"ingest", "$ingest_time", Type::kTimestamptz},
                                           {"event", "$event_time", Type::kText},
                                           {"whole", "", Type::kJsonb}}));
  ASSERT_NE(dest, nullptr);
  const std::string r0 =
      R"({"id":1,"name":"tab\there\nnew\\line \"q\" \u00fc\r","s":-32768,"i":"2147483647",)"
      R"("n":"12345678901234567890.123456789","b":true,"ts":"2024-05-01T12:00:00.5Z",)"
      R"("doc":{"a":[1,2,{"b":null}]},"d":1.5})";
  const std::string r1 = R"({"id":2,"name":42,"s":7.0,"i":-1,"n":0.1,"b":false,"ts":1714564800123,)"
                         R"("doc":"str","d":"1e3"})";
  const std::string r2 = R"({"id":"3","name":null,"ts":"2024-05-01T14:00:00+02:00"})";
  wharf::v1::StoredBatch batch = MakeBatch("types", 3, 40, {r0, r1, r2});
  batch.mutable_records(0)->set_key("k-0");
  batch.mutable_records(0)->mutable_ingest_time()->set_seconds(1714564800);
  batch.mutable_records(0)->mutable_ingest_time()->set_nanos(123456789);
  batch.mutable_records(0)->mutable_event_time()->set_seconds(1714564800);

  DeliveryReport report;
  const absl::Status s = dest->Deliver(batch, &report);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_FALSE(report.already_delivered);
  EXPECT_FALSE(report.commit_id.empty());
  EXPECT_EQ(report.commit_id.find_first_not_of("0123456789"), std::string::npos)
      << report.commit_id;

  const Rows rows = MustQuery(
      "SET TIME ZONE 'UTC'; SELECT id, name, small, int, num, flag, ts, doc, dbl, doc_text, off, "
      "part, bid, ds, key, ingest, event, whole->>'id' FROM types ORDER BY id");
  ASSERT_EQ(rows.size(), 3u);
  const std::string N = PostgresServer::kNull;
  const std::vector<std::string> want0 = {"1",
                                          "tab\there\nnew\\line \"q\" \xc3\xbc\r",
                                          "-32768",
                                          "2147483647",
                                          "12345678901234567890.123456789",
                                          "t",
                                          "2024-05-01 12:00:00.5+00",
                                          R"({"a": [1, 2, {"b": null}]})",
                                          "1.5",
                                          R"({"a":[1,2,{"b":null}]})",
                                          "40",
                                          "3",
                                          "types.p3.40-42",
                                          "types",
                                          "k-0",
                                          "2024-05-01 12:00:00.123456+00",
                                          "2024-05-01T12:00:00+00:00",
                                          "1"};
  const std::vector<std::string> want1 = {"2",
                                          "42",
                                          "7",
                                          "-1",
                                          "0.1",
                                          "f",
                                          "2024-05-01 12:00:00.123+00",
                                          R"("str")",
                                          "1000",
                                          "str",
                                          "41",
                                          "3",
                                          "types.p3.40-42",
                                          "types",
                                          N,
                                          N,
                                          N,
                                          "2"};
  const std::vector<std::string> want2 = {
      "3",     N, N, N, N,  N, "2024-05-01 12:00:00+00", N, N, N, "42", "3", "types.p3.40-42",
      "types", N, N, N, "3"};
  EXPECT_EQ(rows[0], want0);
  EXPECT_EQ(rows[1], want1);
  EXPECT_EQ(rows[2], want2);

  EXPECT_EQ(MustQuery("SELECT dataset, destination, first_offset, last_offset, record_count, "
                      "committed_at <= now() FROM wharf_batches WHERE batch_id = 'types.p3.40-42'"),
            (Rows{{"types", "pg", "40", "42", "3", "t"}}));
}

TEST_F(PostgresDestinationTest, WholeRecordJsonbByDefault) {
  auto dest = MustCreate(Options("whole_default"));
  ASSERT_NE(dest, nullptr);
  DeliveryReport report;
  ASSERT_TRUE(dest->Deliver(MakeBatch("whole", 0, 0,
                                      {R"({"k":"a","n":1.25})", R"({"k":"b","deep":[[[[1]]]]})",
                                       R"( {"k":"c","big":123456789012345678901234567890} )"}),
                            &report)
                  .ok());
  EXPECT_EQ(MustQuery("SELECT record->>'k', jsonb_typeof(record) FROM whole_default ORDER BY 1"),
            (Rows{{"a", "object"}, {"b", "object"}, {"c", "object"}}));
  // The whole record is the payload's own text: no digit of a big number is lost.
  EXPECT_EQ(Value("SELECT record->>'big' FROM whole_default WHERE record->>'k' = 'c'"),
            "123456789012345678901234567890");
  EXPECT_EQ(Value("SELECT (record->'deep'->0->0->0->>0) FROM whole_default WHERE record->>'k' = "
                  "'b'"),
            "1");
  EXPECT_EQ(Value("SELECT string_agg(column_name || ':' || data_type, ',') FROM "
                  "information_schema.columns WHERE table_name = 'whole_default'"),
            "record:jsonb");
}

TEST_F(PostgresDestinationTest, RedeliveryOfTheSameBatchIsSkipped) {
  auto dest = MustCreate(Options("redeliver"));
  ASSERT_NE(dest, nullptr);
  const wharf::v1::StoredBatch batch = MakeBatch("redeliver", 1, 100, {"{\"a\":1}", "{\"a\":2}"});
  DeliveryReport first;
  ASSERT_TRUE(dest->Deliver(batch, &first).ok());
  EXPECT_FALSE(first.already_delivered);

  DeliveryReport second;
  ASSERT_TRUE(dest->Deliver(batch, &second).ok());
  EXPECT_TRUE(second.already_delivered);
  EXPECT_TRUE(second.commit_id.empty());
  EXPECT_EQ(Value("SELECT count(*) FROM redeliver"), "2");

  // A new instance (wharfd restarted after a crash) finds the ledger row too.
  auto restarted = MustCreate(Options("redeliver"));
  ASSERT_NE(restarted, nullptr);
  DeliveryReport third;
  ASSERT_TRUE(restarted->Deliver(batch, &third).ok());
  EXPECT_TRUE(third.already_delivered);
  EXPECT_EQ(Value("SELECT count(*) FROM redeliver"), "2");

  // A sub-batch id of the same records is a different batch id, delivered on its own.
  wharf::v1::StoredBatch sub = MakeBatch("redeliver", 1, 102, {"{\"a\":3}"});
  sub.mutable_manifest()->set_batch_id("redeliver.p1.100-102/102-102");
  DeliveryReport fourth;
  ASSERT_TRUE(dest->Deliver(sub, &fourth).ok());
  EXPECT_FALSE(fourth.already_delivered);
  EXPECT_EQ(Value("SELECT count(*) FROM redeliver"), "3");
}

TEST_F(PostgresDestinationTest, EmptyBatchRecordsOnlyTheLedgerRow) {
  auto dest = MustCreate(Options("empty_batch"));
  ASSERT_NE(dest, nullptr);
  wharf::v1::StoredBatch batch = MakeBatch("empty", 0, 7, {});
  batch.mutable_manifest()->set_last_offset(9);  // every record of 7..9 was quarantined
  DeliveryReport report;
  ASSERT_TRUE(dest->Deliver(batch, &report).ok());
  EXPECT_EQ(Value("SELECT count(*) FROM empty_batch"), "0");
  EXPECT_EQ(Value("SELECT record_count || '/' || last_offset FROM wharf_batches WHERE "
                  "dataset = 'empty'"),
            "0/9");
  DeliveryReport again;
  ASSERT_TRUE(dest->Deliver(batch, &again).ok());
  EXPECT_TRUE(again.already_delivered);
}

TEST_F(PostgresDestinationTest, TwoDestinationsShareOneLedger) {
  PostgresDestinationOptions a = Options("shared_a");
  a.name = "dest-a";
  PostgresDestinationOptions b = Options("shared_b");
  b.name = "dest-b";
  a.ledger_table = b.ledger_table = "shared_ledger";
  auto dest_a = MustCreate(a);
  auto dest_b = MustCreate(b);
  ASSERT_NE(dest_a, nullptr);
  ASSERT_NE(dest_b, nullptr);
  const wharf::v1::StoredBatch batch = MakeBatch("shared", 0, 0, {"{}", "{}", "{}"});
  DeliveryReport ra, rb;
  ASSERT_TRUE(dest_a->Deliver(batch, &ra).ok());
  ASSERT_TRUE(dest_b->Deliver(batch, &rb).ok());
  EXPECT_FALSE(ra.already_delivered);
  EXPECT_FALSE(rb.already_delivered);
  EXPECT_NE(ra.commit_id, rb.commit_id);
  EXPECT_EQ(MustQuery("SELECT destination, batch_id FROM shared_ledger ORDER BY 1"),
            (Rows{{"dest-a", "shared.p0.0-2"}, {"dest-b", "shared.p0.0-2"}}));
  EXPECT_EQ(Value("SELECT (SELECT count(*) FROM shared_a) || ',' || "
                  "(SELECT count(*) FROM shared_b)"),
            "3,3");
  DeliveryReport again_a, again_b;
  ASSERT_TRUE(dest_a->Deliver(batch, &again_a).ok());
  ASSERT_TRUE(dest_b->Deliver(batch, &again_b).ok());
  EXPECT_TRUE(again_a.already_delivered);
  EXPECT_TRUE(again_b.already_delivered);
  EXPECT_EQ(Value("SELECT count(*) FROM shared_a"), "3");
}

TEST_F(PostgresDestinationTest, ConstraintViolationsAreInvalidArgument) {
  MustExec("CREATE TABLE constrained (v text NOT NULL, n integer CHECK (n > 0), u integer UNIQUE)");
  PostgresDestinationOptions o =
      Options("constrained",
              {{"v", "/v", Type::kText}, {"n", "/n", Type::kInteger}, {"u", "/u", Type::kInteger}});
  o.create_table = false;
  auto dest = MustCreate(o);
  ASSERT_NE(dest, nullptr);

  DeliveryReport report;
  absl::Status s =
      dest->Deliver(MakeBatch("constrained", 0, 10, {R"({"v":"x","n":1})", R"({"n":2})"}), &report);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(MessageContains(s, "null value in column \"v\"")) << s;
  EXPECT_TRUE(MessageContains(s, "23502")) << s;
  EXPECT_TRUE(MessageContains(s, "offset 11")) << s;

  s = dest->Deliver(MakeBatch("constrained", 0, 20, {R"({"v":"x","n":-5})"}), &report);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(MessageContains(s, "check constraint")) << s;
  EXPECT_TRUE(MessageContains(s, "offset 20")) << s;

  // A unique key of the target table: the duplicate is content, not "already delivered".
  ASSERT_TRUE(dest->Deliver(MakeBatch("constrained", 0, 30, {R"({"v":"x","u":1})"}), &report).ok());
  s = dest->Deliver(MakeBatch("constrained", 0, 31, {R"({"v":"y","u":1})"}), &report);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(MessageContains(s, "23505")) << s;
  EXPECT_TRUE(MessageContains(s, "Key (u)=(1) already exists")) << s;

  // Nothing of the refused batches was written, and none of them is in the ledger.
  EXPECT_EQ(Value("SELECT count(*) FROM constrained"), "1");
  EXPECT_EQ(Value("SELECT count(*) FROM wharf_batches WHERE dataset = 'constrained'"), "1");
}

TEST_F(PostgresDestinationTest, UnconvertibleValuesAreInvalidArgumentNamingOffsetAndColumn) {
  auto dest = MustCreate(Options("convert", {{"i", "/i", Type::kInteger},
                                             {"s", "/s", Type::kSmallint},
                                             {"b", "/b", Type::kBoolean},
                                             {"t", "/t", Type::kTimestamptz},
                                             {"n", "/n", Type::kNumeric},
                                             {"x", "/x", Type::kText},
                                             {"k", "$key", Type::kText}}));
  ASSERT_NE(dest, nullptr);
  struct Case {
    std::string payload;
    std::string column;  // expected in the message; "" for a JSON error
    std::string key = "";
  };
  const std::vector<Case> cases = {
      {R"({"i":"twelve"})", "i"},
      {R"({"i":1.5})", "i"},
      {R"({"i":2147483648})", "i"},
      {R"({"i":"99999999999999999999"})", "i"},
      {R"({"i":[1]})", "i"},
      {R"({"s":40000})", "s"},
      {R"({"b":"true"})", "b"},
      {R"({"b":1})", "b"},
      {R"({"t":"yesterday"})", "t"},
      {R"({"t":"2024-05-01 12:00:00"})", "t"},
      {R"({"t":253402300800000})", "t"},  // year 10000
      {R"({"t":true})", "t"},
      {R"({"n":"12abc"})", "n"},
      {R"({"n":{"v":1}})", "n"},
      {R"({"x":"nul\u0000byte"})", "x"},
      {R"({})", "k", "bad\xff key"},
      {R"({"i":1)", ""},
      {"[1,2", ""},
      {"", ""},
      {"{\"x\":\"\xc3\x28\"}", ""},  // invalid UTF-8 in a string
      {"{} {}", ""},
  };
  for (size_t c = 0; c < cases.size(); ++c) {
    const uint64_t offset = 1000 + 10 * c;
    wharf::v1::StoredBatch batch =
        MakeBatch("convert", 0, offset, {R"({"i":1})", cases[c].payload});
    batch.mutable_records(1)->set_key(cases[c].key);
    DeliveryReport report;
    const absl::Status s = dest->Deliver(batch, &report);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << cases[c].payload << ": " << s;
    EXPECT_TRUE(MessageContains(s, absl::StrCat("offset ", offset + 1))) << cases[c].payload;
    if (!cases[c].column.empty()) {
      EXPECT_TRUE(MessageContains(s, absl::StrCat("column \"", cases[c].column, "\"")))
          << cases[c].payload;
    } else {
      EXPECT_TRUE(MessageContains(s, "not valid JSON")) << cases[c].payload;
    }
    EXPECT_FALSE(report.already_delivered);
  }
  // Nothing was sent: neither rows nor ledger entries (the table exists: create_table ran).
  EXPECT_EQ(Value("SELECT count(*) FROM convert"), "0");
  EXPECT_EQ(Value("SELECT count(*) FROM wharf_batches WHERE dataset = 'convert'"), "0");
}

TEST_F(PostgresDestinationTest, DeliveredBatchIsNotRejectedAfterAConfigChange) {
  auto lenient = MustCreate(Options("config_change", {{"v", "/v", Type::kText}}));
  ASSERT_NE(lenient, nullptr);
  const wharf::v1::StoredBatch batch = MakeBatch("config_change", 0, 0, {R"({"v":"abc"})"});
  DeliveryReport report;
  ASSERT_TRUE(lenient->Deliver(batch, &report).ok());
  // The same column now converts as an integer, which "abc" is not. The batch was delivered
  // before (e.g. the cursor was lost in a crash), so it must not be quarantined.
  PostgresDestinationOptions strict = Options("config_change", {{"v", "/v", Type::kInteger}});
  strict.create_table = false;
  auto dest = MustCreate(strict);
  ASSERT_NE(dest, nullptr);
  DeliveryReport again;
  const absl::Status s = dest->Deliver(batch, &again);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_TRUE(again.already_delivered);
}

TEST_F(PostgresDestinationTest, DataExceptionsFromTheServerNameTheOffset) {
  MustExec("CREATE TABLE server_side (v varchar(3), j jsonb)");
  PostgresDestinationOptions o =
      Options("server_side", {{"v", "/v", Type::kText}, {"j", "/j", Type::kJsonb}});
  o.create_table = false;
  auto dest = MustCreate(o);
  ASSERT_NE(dest, nullptr);
  DeliveryReport report;
  absl::Status s =
      dest->Deliver(MakeBatch("server_side", 2, 5, {R"({"v":"abc"})", R"({"v":"abcd"})"}), &report);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(MessageContains(s, "22001")) << s;
  EXPECT_TRUE(MessageContains(s, "offset 6")) << s;
  // jsonb cannot hold \u0000.
  s = dest->Deliver(MakeBatch("server_side", 2, 7, {R"({"j":"a\u0000b"})"}), &report);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(MessageContains(s, "offset 7")) << s;
  EXPECT_EQ(Value("SELECT count(*) FROM server_side"), "0");
}

TEST_F(PostgresDestinationTest, ConfigurationErrorsAreFailedPrecondition) {
  PostgresDestinationOptions o = Options("no_such_table");
  o.create_table = false;
  auto dest = MustCreate(o);
  ASSERT_NE(dest, nullptr);
  DeliveryReport report;
  absl::Status s = dest->Deliver(MakeBatch("config", 0, 0, {"{}"}), &report);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_TRUE(MessageContains(s, "42P01")) << s;

  // Once the table appears, the same object delivers.
  MustExec("CREATE TABLE no_such_table (record jsonb)");
  s = dest->Deliver(MakeBatch("config", 0, 0, {"{}"}), &report);
  EXPECT_TRUE(s.ok()) << s;

  MustExec("CREATE TABLE wrong_column (a text)");
  PostgresDestinationOptions wrong = Options("wrong_column", {{"b", "/b", Type::kText}});
  wrong.create_table = false;
  auto dest2 = MustCreate(wrong);
  ASSERT_NE(dest2, nullptr);
  s = dest2->Deliver(MakeBatch("config", 0, 1, {"{}"}), &report);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_TRUE(MessageContains(s, "42703")) << s;

  // An unknown database: a server refusal at connection time.
  PostgresDestinationOptions nodb = Options("x");
  nodb.conninfo = server_->ConnInfo() + " dbname=no_such_db";
  auto dest4 = MustCreate(nodb);
  ASSERT_NE(dest4, nullptr);
  s = dest4->Deliver(MakeBatch("config", 0, 3, {"{}"}), &report);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
}

TEST_F(PostgresDestinationTest, StatementTimeoutIsUnavailable) {
  MustExec("CREATE TABLE locked (record jsonb)");
  PostgresDestinationOptions o = Options("locked");
  o.create_table = false;
  o.statement_timeout = std::chrono::milliseconds(300);
  auto dest = MustCreate(o);
  ASSERT_NE(dest, nullptr);
  DeliveryReport report;
  ASSERT_TRUE(dest->Deliver(MakeBatch("locked", 0, 0, {"{}"}), &report).ok());

  Session locker(server_->ConnInfo());
  ASSERT_TRUE(locker.ok());
  ASSERT_EQ(locker.Exec("BEGIN; LOCK TABLE locked IN ACCESS EXCLUSIVE MODE"), "");
  const auto start = std::chrono::steady_clock::now();
  absl::Status s = dest->Deliver(MakeBatch("locked", 0, 1, {"{}"}), &report);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_TRUE(MessageContains(s, "57014")) << s;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  ASSERT_EQ(locker.Exec("ROLLBACK"), "");
  s = dest->Deliver(MakeBatch("locked", 0, 1, {"{}"}), &report);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(Value("SELECT count(*) FROM locked"), "2");
}

TEST_F(PostgresDestinationTest, ServerOutageIsUnavailableAndThePoolRecovers) {
  PostgresDestinationOptions o = Options("outage");
  o.max_connections = 3;
  o.connect_timeout = std::chrono::milliseconds(2000);
  auto dest = MustCreate(o);
  ASSERT_NE(dest, nullptr);
  // Open several pooled connections, so stale ones are in the pool during the outage.
  std::vector<std::thread> threads;
  for (uint32_t p = 0; p < 3; ++p) {
    threads.emplace_back([&, p] {
      DeliveryReport report;
      const absl::Status s = dest->Deliver(MakeBatch("outage", p, 0, {"{}"}), &report);
      EXPECT_TRUE(s.ok()) << s;
    });
  }
  for (auto& t : threads) t.join();

  // Clean shutdown (the pooled sessions are terminated by the server).
  ASSERT_TRUE(server_->Shutdown().ok());
  DeliveryReport report;
  absl::Status s = dest->Deliver(MakeBatch("outage", 0, 1, {"{}"}), &report);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  s = dest->Deliver(MakeBatch("outage", 0, 1, {"{}"}), &report);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  // A destination can be created while the server is down (wharfd starts anyway).
  auto created_while_down = MustCreate(Options("outage_late"));
  ASSERT_NE(created_while_down, nullptr);
  s = created_while_down->Deliver(MakeBatch("outage_late", 0, 0, {"{}"}), &report);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;

  ASSERT_TRUE(server_->Restart().ok()) << server_->Log();
  s = dest->Deliver(MakeBatch("outage", 0, 1, {"{}"}), &report);
  EXPECT_TRUE(s.ok()) << s;
  s = created_while_down->Deliver(MakeBatch("outage_late", 0, 0, {"{}"}), &report);
  EXPECT_TRUE(s.ok()) << s;

  // A crash of the server (kill -9): the same, and nothing of an unacknowledged delivery stays.
  server_->Kill9();
  // The killed server's backends exit on their own as soon as they notice the postmaster's
  // death; until then a pooled session could still answer. Give them a moment, like a real
  // crash where they die with the machine.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  s = dest->Deliver(MakeBatch("outage", 0, 2, {"{}"}), &report);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  ASSERT_TRUE(server_->Start().ok()) << server_->Log();
  for (uint32_t p = 0; p < 3; ++p) {
    DeliveryReport r;
    s = dest->Deliver(MakeBatch("outage", p, 2, {"{}"}), &r);
    EXPECT_TRUE(s.ok()) << s;
    EXPECT_FALSE(r.already_delivered);
  }
  EXPECT_EQ(Value("SELECT count(*) FROM outage"), "7");
  EXPECT_EQ(Value("SELECT count(*) FROM wharf_batches WHERE dataset = 'outage'"), "7");
}

TEST_F(PostgresDestinationTest, PasswordAuthentication) {
  PostgresDestinationOptions o = Options("pw_table");
  o.conninfo = server_->ConnInfoFor(kPasswordRole);
  o.ledger_table = "pw_ledger";
  o.password = kPassword;
  auto dest = MustCreate(o);
  ASSERT_NE(dest, nullptr);
  DeliveryReport report;
  absl::Status s = dest->Deliver(MakeBatch("pw", 0, 0, {"{}"}), &report);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(Value("SELECT tableowner FROM pg_tables WHERE tablename = 'pw_table'"), kPasswordRole);

  const std::string wrong_password = "wrong-Pa55word-xyz";
  o.password = wrong_password;
  auto wrong = MustCreate(o);
  ASSERT_NE(wrong, nullptr);
  s = wrong->Deliver(MakeBatch("pw", 0, 1, {"{}"}), &report);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_TRUE(MessageContains(s, "password authentication failed")) << s;
  EXPECT_FALSE(MessageContains(s, wrong_password)) << s;

  o.password.clear();
  auto none = MustCreate(o);
  ASSERT_NE(none, nullptr);
  s = none->Deliver(MakeBatch("pw", 0, 1, {"{}"}), &report);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;

  // Without privileges on a table of another owner: a configuration problem.
  MustExec("CREATE TABLE pw_forbidden (record jsonb)");
  PostgresDestinationOptions forbidden = Options("pw_forbidden");
  forbidden.conninfo = server_->ConnInfoFor(kPasswordRole);
  forbidden.password = kPassword;
  forbidden.ledger_table = "pw_ledger";
  forbidden.create_table = false;
  auto denied = MustCreate(forbidden);
  ASSERT_NE(denied, nullptr);
  s = denied->Deliver(MakeBatch("pw", 0, 2, {"{}"}), &report);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_TRUE(MessageContains(s, "42501")) << s;
  EXPECT_EQ(Value("SELECT count(*) FROM pw_table"), "1");
}

TEST_F(PostgresDestinationTest, IdentifiersAreQuotedExactly) {
  MustExec(R"(CREATE SCHEMA "Odd""Schema"; CREATE TABLE canary (x int))");
  PostgresDestinationOptions o = Options(R"("Odd""Schema"."Mixed.Case ""T""")",
                                         {{"Value\"X", "/v", Type::kText},
                                          {"UPPER", "/u", Type::kBigint},
                                          {"x\"); DROP TABLE canary; --", "/v", Type::kText}});
  o.ledger_table = R"("Odd""Schema".Ledger)";
  auto dest = MustCreate(o);
  ASSERT_NE(dest, nullptr);
  DeliveryReport report;
  const absl::Status s =
      dest->Deliver(MakeBatch("quoted", 0, 0, {R"({"v":"it's \"fine\"","u":5})"}), &report);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(MustQuery(R"(SELECT "Value""X", "UPPER", "x""); DROP TABLE canary; --" )"
                      R"(FROM "Odd""Schema"."Mixed.Case ""T""")"),
            (Rows{{"it's \"fine\"", "5", "it's \"fine\""}}));
  // Case is preserved: the ledger is "Ledger", not ledger.
  EXPECT_EQ(Value(R"(SELECT count(*) FROM "Odd""Schema"."Ledger")"), "1");
  EXPECT_EQ(Value("SELECT count(*) FROM pg_tables WHERE tablename = 'ledger'"), "0");
  EXPECT_EQ(Value("SELECT to_regclass('canary') IS NOT NULL"), "t");
}

TEST_F(PostgresDestinationTest, ConcurrentPartitionsFromFourThreads) {
  PostgresDestinationOptions o = Options("concurrent", {{"part", "$partition", Type::kInteger},
                                                        {"off", "$offset", Type::kBigint},
                                                        {"v", "/v", Type::kBigint}});
  o.max_connections = 4;
  o.conninfo += " application_name=wharf_concurrent";
  auto dest = MustCreate(o);
  ASSERT_NE(dest, nullptr);
  constexpr int kBatches = 25;
  constexpr int kRecords = 100;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (uint32_t p = 0; p < 4; ++p) {
    threads.emplace_back([&, p] {
      for (int b = 0; b < kBatches; ++b) {
        std::vector<std::string> payloads;
        for (int r = 0; r < kRecords; ++r) {
          payloads.push_back(absl::StrCat("{\"v\":", b * kRecords + r, "}"));
        }
        const wharf::v1::StoredBatch batch =
            MakeBatch("concurrent", p, static_cast<uint64_t>(b) * kRecords, payloads);
        // Every batch twice: the second delivery must be skipped.
        for (int attempt = 0; attempt < 2; ++attempt) {
          DeliveryReport report;
          const absl::Status s = dest->Deliver(batch, &report);
          if (!s.ok() || report.already_delivered != (attempt == 1)) {
            ++failures;
            ADD_FAILURE() << s << " attempt " << attempt;
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(Value("SELECT count(*) || ',' || count(DISTINCT (part, off)) || ',' || "
                  "count(DISTINCT part) FROM concurrent"),
            "10000,10000,4");
  EXPECT_EQ(Value("SELECT count(*) FROM wharf_batches WHERE dataset = 'concurrent'"), "100");
  // Pool bound: never more than max_connections sessions of the destination.
  const int sessions = std::stoi(
      Value("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'wharf_concurrent'"));
  EXPECT_GE(sessions, 1);
  EXPECT_LE(sessions, 4);
}

TEST_F(PostgresDestinationTest, ConcurrentDuplicateDeliveryWaitsOnTheLedgerAndSkips) {
  auto dest = MustCreate(Options("dup"));
  ASSERT_NE(dest, nullptr);
  DeliveryReport report;
  ASSERT_TRUE(dest->Deliver(MakeBatch("dup", 0, 0, {"{}"}), &report).ok());

  // Another deliverer holds the ledger row of batch dup.p0.1-1, uncommitted.
  Session other(server_->ConnInfo());
  ASSERT_TRUE(other.ok());
  ASSERT_EQ(other.Exec("BEGIN; INSERT INTO wharf_batches (dataset, destination, batch_id) "
                       "VALUES ('dup', 'pg', 'dup.p0.1-1')"),
            "");
  absl::Status status;
  DeliveryReport dup_report;
  std::thread deliverer(
      [&] { status = dest->Deliver(MakeBatch("dup", 0, 1, {"{}"}), &dup_report); });
  // Wait until the delivery is blocked on the ledger's primary key.
  const bool blocked = wharf::testing::WaitFor(
      [&] {
        auto v = server_->QueryValue(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'wharf' AND "
            "wait_event_type = 'Lock'");
        return v.ok() && *v == "1";
      },
      std::chrono::seconds(10));
  EXPECT_TRUE(blocked);
  ASSERT_EQ(other.Exec("COMMIT"), "");
  deliverer.join();
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_TRUE(dup_report.already_delivered);
  EXPECT_EQ(Value("SELECT count(*) FROM dup"), "1");
}

TEST_F(PostgresDestinationTest, HundredThousandRecordsExactlyOnce) {
  auto dest = MustCreate(Options("bulk", {{"off", "$offset", Type::kBigint},
                                          {"user_id", "/user/id", Type::kBigint},
                                          {"name", "/user/name", Type::kText},
                                          {"record", "", Type::kJsonb}}));
  ASSERT_NE(dest, nullptr);
  constexpr uint64_t kBatch = 1000;
  constexpr uint64_t kTotal = 100000;
  int skipped = 0;
  for (uint64_t first = 0; first < kTotal; first += kBatch) {
    std::vector<std::string> payloads;
    payloads.reserve(kBatch);
    for (uint64_t o = first; o < first + kBatch; ++o) {
      payloads.push_back(absl::StrCat(R"({"user":{"id":)", o, R"(,"name":"user\t)", o,
                                      R"("},"tags":["a","b"],"score":)", o % 97, ".5}"));
    }
    const wharf::v1::StoredBatch batch = MakeBatch("bulk", 0, first, payloads);
    // Every tenth batch is delivered again, as after a crash before the cursor moved.
    const int attempts = (first / kBatch) % 10 == 0 ? 2 : 1;
    for (int a = 0; a < attempts; ++a) {
      DeliveryReport report;
      const absl::Status s = dest->Deliver(batch, &report);
      ASSERT_TRUE(s.ok()) << s;
      if (report.already_delivered) ++skipped;
    }
  }
  EXPECT_EQ(skipped, 10);
  EXPECT_EQ(Value("SELECT count(*) || ',' || count(DISTINCT off) || ',' || min(off) || ',' || "
                  "max(off) FROM bulk"),
            "100000,100000,0,99999");
  EXPECT_EQ(Value("SELECT count(*) FROM bulk WHERE user_id <> off OR name <> 'user' || chr(9) "
                  "|| off OR (record->'user'->>'id')::bigint <> off"),
            "0");
}

TEST_F(PostgresDestinationTest, CreateRejectsInvalidOptions) {
  struct Case {
    std::string what;
    std::function<void(PostgresDestinationOptions&)> change;
  };
  const std::vector<Case> cases = {
      {"empty name", [](auto& o) { o.name.clear(); }},
      {"empty table", [](auto& o) { o.table.clear(); }},
      {"three-part table", [](auto& o) { o.table = "a.b.c"; }},
      {"trailing dot", [](auto& o) { o.table = "a."; }},
      {"leading dot", [](auto& o) { o.table = ".a"; }},
      {"unterminated quote", [](auto& o) { o.table = "\"abc"; }},
      {"text after quote", [](auto& o) { o.table = "\"a\"b"; }},
      {"empty quoted", [](auto& o) { o.table = "\"\""; }},
      {"long identifier", [](auto& o) { o.table = std::string(64, 'a'); }},
      {"NUL in table", [](auto& o) { o.table = std::string("a\0b", 3); }},
      {"empty ledger", [](auto& o) { o.ledger_table.clear(); }},
      {"ledger is target", [](auto& o) { o.ledger_table = "t"; }},
      {"password in conninfo", [](auto& o) { o.conninfo += " password=secret"; }},
      {"password in URI", [](auto& o) { o.conninfo = "postgresql://u:secret@127.0.0.1/db"; }},
      {"bad conninfo", [](auto& o) { o.conninfo = "host"; }},
      {"unknown conninfo keyword", [](auto& o) { o.conninfo = "nonsense=1"; }},
      {"no connections", [](auto& o) { o.max_connections = 0; }},
      {"zero connect timeout", [](auto& o) { o.connect_timeout = std::chrono::milliseconds(0); }},
      {"zero statement timeout",
       [](auto& o) { o.statement_timeout = std::chrono::milliseconds(0); }},
      {"empty column name",
       [](auto& o) {
         o.columns = {{"", "/a", Type::kText}};
       }},
      {"duplicate column",
       [](auto& o) {
         o.columns = {{"a", "/a", Type::kText}, {"a", "/b", Type::kText}};
       }},
      {"bad pointer",
       [](auto& o) {
         o.columns = {{"a", "/a~2", Type::kText}};
       }},
      {"relative source",
       [](auto& o) {
         o.columns = {{"a", "a/b", Type::kText}};
       }},
      {"unknown metadata",
       [](auto& o) {
         o.columns = {{"a", "$nope", Type::kText}};
       }},
      {"offset as boolean",
       [](auto& o) {
         o.columns = {{"a", "$offset", Type::kBoolean}};
       }},
      {"offset as smallint",
       [](auto& o) {
         o.columns = {{"a", "$offset", Type::kSmallint}};
       }},
      {"key as bigint",
       [](auto& o) {
         o.columns = {{"a", "$key", Type::kBigint}};
       }},
      {"time as bigint",
       [](auto& o) {
         o.columns = {{"a", "$event_time", Type::kBigint}};
       }},
      {"record as integer",
       [](auto& o) {
         o.columns = {{"a", "", Type::kInteger}};
       }},
  };
  for (const Case& c : cases) {
    PostgresDestinationOptions o;
    o.name = "pg";
    o.conninfo = "host=127.0.0.1 port=1 dbname=x";
    o.table = "t";
    c.change(o);
    absl::StatusOr<std::unique_ptr<PostgresDestination>> d = PostgresDestination::Create(o);
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << c.what;
    EXPECT_FALSE(MessageContains(d.status(), "secret")) << c.what << ": " << d.status();
  }
  // Valid: every metadata source with a permitted type, quoted names, a URI conninfo.
  PostgresDestinationOptions o;
  o.name = "pg";
  o.conninfo = "postgresql://u@127.0.0.1:1/db";
  o.table = "\"s.x\".\"t\"\"1\"";
  o.columns = {{"a", "$offset", Type::kNumeric},   {"b", "$partition", Type::kBigint},
               {"c", "$batch_id", Type::kText},    {"d", "$key", Type::kText},
               {"e", "$ingest_time", Type::kText}, {"f", "$event_time", Type::kTimestamptz},
               {"g", "$dataset", Type::kText},     {"h", "", Type::kText},
               {"i", "/a/0/~1b", Type::kDouble}};
  absl::StatusOr<std::unique_ptr<PostgresDestination>> d = PostgresDestination::Create(o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ((*d)->type(), "postgres");
}

TEST_F(PostgresDestinationTest, MalformedBatchIsInternal) {
  auto dest = MustCreate(Options("malformed"));
  ASSERT_NE(dest, nullptr);
  wharf::v1::StoredBatch batch = MakeBatch("malformed", 0, 0, {"{}"});
  batch.mutable_manifest()->clear_batch_id();
  DeliveryReport report;
  EXPECT_EQ(dest->Deliver(batch, &report).code(), absl::StatusCode::kInternal);
  batch = MakeBatch("malformed", 0, 0, {"{}"});
  batch.mutable_manifest()->clear_dataset();
  EXPECT_EQ(dest->Deliver(batch, &report).code(), absl::StatusCode::kInternal);
}

// The test server itself: start, query, crash, restart with the data, stop and clean up.
TEST(PostgresServerTest, StartQueryKillRestartStop) {
  PostgresServer server;
  ASSERT_TRUE(server.Start().ok()) << server.Log();
  EXPECT_TRUE(server.running());
  EXPECT_GT(server.port(), 0);
  const std::string dir = server.dir();
  ASSERT_TRUE(
      server.Query("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('x'), (NULL)").ok());
  auto rows = server.Query("SELECT v FROM kept ORDER BY v NULLS LAST");
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(*rows, (Rows{{"x"}, {PostgresServer::kNull}}));
  EXPECT_FALSE(server.Query("SELEKT 1").ok());
  EXPECT_EQ(server.QueryValue("SELECT current_setting('fsync')").value_or(""), "off");
  EXPECT_EQ(server.QueryValue("SELECT current_setting('listen_addresses')").value_or(""),
            "127.0.0.1");

  const pid_t pid = server.pid();
  server.Kill9();
  EXPECT_FALSE(server.running());
  EXPECT_EQ(::kill(pid, 0), -1);
  EXPECT_FALSE(server.Query("SELECT 1").ok());
  ASSERT_TRUE(server.Restart().ok()) << server.Log();
  EXPECT_EQ(server.QueryValue("SELECT count(*) FROM kept").value_or(""), "2");

  const pid_t pid2 = server.pid();
  server.Stop();
  EXPECT_FALSE(server.running());
  EXPECT_EQ(::kill(pid2, 0), -1);
  struct stat st {};
  EXPECT_NE(::stat(dir.c_str(), &st), 0) << dir << " still exists";
}

TEST(PostgresServerTest, PasswordRolesMustAuthenticate) {
  PostgresServerOptions options;
  options.password_roles = {{"app", "s3cret"}};
  PostgresServer server(options);
  ASSERT_TRUE(server.Start().ok()) << server.Log();
  {
    Session trusted(server.ConnInfo());
    EXPECT_TRUE(trusted.ok());
    Session without(server.ConnInfoFor("app"));
    EXPECT_FALSE(without.ok());
    Session wrong(server.ConnInfoFor("app") + " password=nope");
    EXPECT_FALSE(wrong.ok());
    Session right(server.ConnInfoFor("app") + " password=s3cret");
    EXPECT_TRUE(right.ok());
  }
  PostgresServerOptions bad;
  bad.password_roles = {{"Bad Name", "x"}};
  PostgresServer invalid(bad);
  EXPECT_EQ(invalid.Start().code(), absl::StatusCode::kInvalidArgument);
}

// kill -9 of wharfd right after the COMMIT (failpoint postgres_after_commit), before the
// pipeline could move its cursor: the redelivery finds the ledger row and the rows exist once.
//
// The failpoint is armed through WHARF_FAILPOINTS, which is read when a process starts, so the
// delivery runs in a re-executed copy of this test binary ("threadsafe" death test). That copy
// runs this test body again up to EXPECT_EXIT; it finds the parent's server through the
// environment instead of starting its own.
TEST(PostgresDestinationCrashTest, KilledAfterCommitThenRedeliverySkips) {
  constexpr char kConnInfoEnv[] = "WHARF_TEST_PG_CRASH_CONNINFO";
  std::unique_ptr<PostgresServer> server;
  std::string conninfo;
  if (const char* inherited = std::getenv(kConnInfoEnv); inherited != nullptr) {
    conninfo = inherited;  // the death-test child
  } else {
    server = std::make_unique<PostgresServer>();
    ASSERT_TRUE(server->Start().ok()) << server->Log();
    conninfo = server->ConnInfo();
  }
  PostgresDestinationOptions o;
  o.name = "crash";
  o.conninfo = conninfo;
  o.table = "crashed";
  o.create_table = true;
  absl::StatusOr<std::unique_ptr<PostgresDestination>> dest = PostgresDestination::Create(o);
  ASSERT_TRUE(dest.ok()) << dest.status();
  const wharf::v1::StoredBatch batch = MakeBatch("crash", 0, 0, {"{\"a\":1}", "{\"a\":2}"});

  ASSERT_EQ(::setenv(kConnInfoEnv, conninfo.c_str(), 1), 0);
  ASSERT_EQ(::setenv("WHARF_FAILPOINTS", "postgres_after_commit:1", 1), 0);
  const std::string previous_style = GTEST_FLAG_GET(death_test_style);
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        DeliveryReport report;
        const absl::Status s = (*dest)->Deliver(batch, &report);
        // Reaching this line means the failpoint did not fire.
        std::fprintf(stderr, "delivered without crashing: %s\n", s.ToString().c_str());
        std::_Exit(0);
      },
      ::testing::KilledBySignal(SIGKILL), "");
  GTEST_FLAG_SET(death_test_style, previous_style);
  ::unsetenv("WHARF_FAILPOINTS");
  ::unsetenv(kConnInfoEnv);
  ASSERT_NE(server, nullptr);

  EXPECT_EQ(server->QueryValue("SELECT count(*) FROM crashed").value_or(""), "2");
  DeliveryReport report;
  const absl::Status s = (*dest)->Deliver(batch, &report);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_TRUE(report.already_delivered);
  EXPECT_EQ(server->QueryValue("SELECT count(*) FROM crashed").value_or(""), "2");
}

}  // namespace
}  // namespace wharf::pipeline
