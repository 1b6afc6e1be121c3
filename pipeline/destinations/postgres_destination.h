#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "pipeline/destination.h"
#include "wharf/v1/record.pb.h"

namespace wharf::pipeline {

// One column of the target table and where its value comes from.
struct PostgresColumn {
  // Target column name, taken exactly as written (case-sensitive, always quoted in SQL).
  std::string name;
  // Where the value comes from:
  //  - a JSON pointer (RFC 6901) into the record, e.g. "/user/id";
  //  - "" (the default): the whole record;
  //  - a metadata source, with the types it may be stored as (checked by Create()):
  //      "$offset"      bigint, numeric, text, jsonb
  //      "$partition"   integer, bigint, numeric, text, jsonb
  //      "$batch_id", "$dataset"   text
  //      "$key"         text (the key must be UTF-8 without NUL bytes; an empty key is NULL)
  //      "$ingest_time", "$event_time"   timestamptz, or text as RFC 3339 (unset is NULL).
  //  The whole record may be stored as jsonb or text (the payload's exact JSON text).
  std::string source;
  enum class Type {
    kText,
    kSmallint,
    kInteger,
    kBigint,
    kNumeric,
    kBoolean,
    kTimestamptz,
    kJsonb,
    kDouble
  };
  // Default text.
  Type type = Type::kText;
};

struct PostgresDestinationOptions {
  // Destination name; part of the ledger key, so it must stay the same across restarts and be
  // unique among the destinations sharing a ledger table. Required.
  std::string name;
  // libpq connection string ("host=... port=... user=... dbname=..." or a postgresql:// URI),
  // WITHOUT a password (rejected if present: connection strings end up in configs and logs).
  std::string conninfo;
  // Password, resolved by the caller (from a file or the environment). Empty (default): none
  // (libpq may still use PGPASSWORD or ~/.pgpass). Passed to libpq as a separate parameter and
  // never logged or put into a status message.
  std::string password;
  // Target table, optionally schema-qualified: "events" or "public.events". Each part is taken
  // exactly as written (case-sensitive, no folding to lower case); a part containing '.' or
  // starting with '"' is written in SQL quoting: "\"my.schema\".\"Ev\"\"ents\"". Required.
  std::string table;
  // Target columns. Empty (default): one jsonb column "record" holding the whole record.
  std::vector<PostgresColumn> columns;
  // Default false: the target table must exist. true: CREATE TABLE IF NOT EXISTS from `columns`
  // (all nullable, no key) before the first delivery.
  bool create_table = false;
  // Ledger table, same syntax as `table`; created if missing. Default "wharf_batches".
  std::string ledger_table = "wharf_batches";
  // Bound on establishing a connection (all hosts of the conninfo together), measured on the
  // steady clock. Default 5 s.
  std::chrono::milliseconds connect_timeout{5000};
  // Server-side bound on each statement of a delivery (SET LOCAL statement_timeout). Default
  // 30 s. The client gives a connection up when a statement stays unanswered 2 s longer (a
  // stopped or frozen server cannot enforce its own timeout): UNAVAILABLE, retried.
  std::chrono::milliseconds statement_timeout{30000};
  // Connection pool size: the most concurrent Deliver() calls (one per partition) that run at
  // once; further calls wait for a connection. Default 4; at least 1.
  size_t max_connections = 4;
};

// Delivers each batch into a PostgreSQL table, exactly once, through a ledger table.
//
// One delivery is one transaction: BEGIN; look the batch id up in the ledger (found: ROLLBACK,
// report "already delivered"); COPY the records into the target table; INSERT the ledger row
// (dataset, destination, batch_id, first_offset, last_offset, record_count, committed_at);
// COMMIT. Durability / exactly once: the ledger row commits atomically with the batch's rows, so
// after a crash anywhere (wharfd killed after the COMMIT but before its delivery cursor moved,
// PostgreSQL killed mid-transaction, a lost connection during COMMIT) the redelivery either
// finds the ledger row and skips, or finds neither rows nor ledger row and delivers. Two
// concurrent deliveries of one batch serialize on the ledger's primary key; the loser's INSERT
// fails with a unique violation, it rolls back and reports "already delivered".
//
// Ledger DDL (created if missing):
//   CREATE TABLE IF NOT EXISTS <ledger> (dataset text NOT NULL, destination text NOT NULL,
//     batch_id text NOT NULL, first_offset bigint, last_offset bigint, record_count bigint,
//     committed_at timestamptz NOT NULL DEFAULT now(),
//     PRIMARY KEY (dataset, destination, batch_id))
//
// Records: each payload is parsed as JSON (invalid JSON is a content rejection of the batch)
// and each column's value converted by the column type:
//   - a missing pointer or JSON null: NULL (whatever the type);
//   - text: a string as is, any other value as its JSON text;
//   - smallint/integer/bigint: an integral JSON number in range (1.0 counts, 1.5 does not) or a
//     string of decimal digits with optional '-' (protobuf's JSON encoding of int64);
//   - numeric/double: a JSON number, or a string in JSON number syntax. Non-integral JSON
//     numbers are read as IEEE doubles (shortest round-trip text); send strings for exact
//     decimals beyond 17 significant digits. NaN/Infinity are not accepted;
//   - boolean: JSON true/false only;
//   - timestamptz: an RFC 3339 string with time zone ("2024-05-01T12:00:00.5Z") or an integral
//     number of milliseconds since the Unix epoch; years 1 to 9999; microsecond precision
//     (finer digits are truncated);
//   - jsonb: the value's JSON text.
// A value that cannot be converted (or a string with a NUL character into text) rejects the
// batch with INVALID_ARGUMENT naming the record's offset and the column, before anything is sent.
//
// Status codes of Deliver() (see Destination):
//   OK                   delivered, or found in the ledger (report->already_delivered).
//   INVALID_ARGUMENT     content: invalid JSON, an unconvertible value, or PostgreSQL refusing
//                        the COPY with SQLSTATE class 22 (data exception) or 23 (integrity
//                        constraint: NOT NULL, CHECK, a unique key of the target table, ...);
//                        the message has the server's message and detail, and the offset of the
//                        record when the server named the COPY line.
//   UNAVAILABLE          no connection, connection lost, SQLSTATE classes 08, 40 (serialization
//                        failure, deadlock), 53 (resources), 58 (system), 57P01-57P03 (shutdown),
//                        57014 (statement timeout), 55P03 (lock timeout), 25P03 (idle timeout).
//                        A broken connection is dropped; the next attempt reconnects (the
//                        pipeline's backoff paces the attempts).
//   FAILED_PRECONDITION  configuration problems: authentication (class 28), undefined table or
//                        column (class 42), permissions, an unknown database, any other
//                        SQLSTATE, and class 22/23 errors of statements other than the COPY
//                        (e.g. an incompatible existing ledger table).
//   Connection failures carry no SQLSTATE: a missing or rejected password, "no pg_hba.conf
//   entry", an unknown database or role are FAILED_PRECONDITION (recognised by libpq's
//   PQconnectionNeedsPassword or the server's English message); anything else (refused, timed
//   out, starting up, too many clients) is UNAVAILABLE. Both are retried.
//   INTERNAL             a malformed batch (no dataset or batch id) or a protocol surprise.
// report->commit_id is the PostgreSQL transaction id of the delivering transaction.
//
// Thread safety: thread-safe. Deliver() may be called concurrently; each call uses its own
// pooled connection. The pool is guarded by a mutex; the options are immutable after Create().
class PostgresDestination final : public Destination {
 public:
  // Validates the options (names, pointers, column types against metadata sources, the
  // connection string). Does not connect: wharfd starts while PostgreSQL is down, and the first
  // Deliver() connects. Returns INVALID_ARGUMENT for invalid options.
  static absl::StatusOr<std::unique_ptr<PostgresDestination>> Create(
      PostgresDestinationOptions options);

  ~PostgresDestination() override;

  std::string_view type() const override { return "postgres"; }

  absl::Status Deliver(const wharf::v1::StoredBatch& batch, DeliveryReport* report) override;

 private:
  class Impl;
  explicit PostgresDestination(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

}  // namespace wharf::pipeline
