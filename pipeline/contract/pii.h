#pragma once

#include <rapidjson/document.h>
#include <rapidjson/pointer.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "pipeline/contract/hmac.h"
#include "wharf/v1/contract.pb.h"

namespace wharf::pipeline::contract {

// Where a quarantine-action PII spec matched. Deliberately holds no part of the detected value:
// findings end up in quarantine entries, logs and API responses, and none of those may become a
// second copy of the personal data the spec exists to keep out.
struct PiiFinding {
  wharf::v1::PiiDetector detector = wharf::v1::PII_DETECTOR_UNSPECIFIED;
  std::string pointer;  // RFC 6901 pointer of the string (or number) that matched
};

// Detects personal data in JSON records and applies the configured action (ContractSpec.pii).
//
// Detection finds matches inside string values (a value "mail me at a@b.org" matches "a@b.org"),
// only at word boundaries (the characters around a match are not ASCII letters or digits;
// non-ASCII characters count as boundaries, so "№4111111111111111" is still found), and every
// candidate a pattern finds is verified in code before it counts:
//   email         local@domain.tld: dot-separated atoms of [A-Za-z0-9_%+-] (local part at most 64
//                 bytes), DNS labels, an alphabetic TLD of 2..63 letters, at most 254 bytes.
//                 Internationalised (non-ASCII) addresses are not detected.
//   phone         an optional '+', then digit groups separated by single spaces or dashes, with at
//                 most one parenthesised group ("(555)", "(0)") among the first two; 7..15 digits;
//                 groups after the first have at least 2 digits. Not a phone: a plain digit run
//                 without '+' unless the field is named (order ids, timestamps), ISO-like dates
//                 (2024-01-15, 15-01-2024), the SSN shape 123-45-6789, a Luhn-valid run of 13+
//                 digits without '+' outside named fields (left to the card detector). Dots are not
//                 separators, so version numbers, decimals and IPv4 addresses are never phones.
//   payment_card  13..19 digits, either contiguous or in groups of 3+ digits separated by one
//                 kind of single separator (space or dash); first digit 2..6 (the issuer
//                 industries of card networks; this keeps epoch-millisecond timestamps out);
//                 Luhn check; not all one digit; not preceded by '+' (a phone).
//   iban          country code, 2 check digits, BBAN; compact or in groups of 4 separated by
//                 single spaces; case-insensitive; the length of the country's IBAN for the
//                 countries in the built-in table, else 15..34; ISO 7064 mod-97 == 1.
//   us_ssn        AAA-GG-SSSS with dashes. Area 000, 666 and 900-999, group 00 and serial 0000
//                 are never issued and do not match, nor do the two publicised invalid numbers
//                 078-05-1120 and 219-09-9999. Nine digits without dashes match only in a named
//                 field: elsewhere nine digits are far more often something else.
//   ip_address    IPv4 dotted quads (each octet 0..255, no leading zeros) and IPv6 text forms
//                 including "::" compression and an embedded IPv4 tail, validated with
//                 inet_pton. A dotted quad inside a longer dotted number ("1.2.3.4.5") is not
//                 an address.
//
// Scope: PiiSpec.fields lists JSON pointers; a pointer to an object or array scans every string
// beneath it, a pointer that does not resolve in a record is skipped. Empty fields: every string
// value anywhere in the record. Object keys are never scanned (they are schema, not data, and
// rewriting a key would change the record's shape). A value is "named" when a pointer targets it
// directly, or it is a direct element of an array a pointer targets; in named values integer
// JSON numbers are scanned as their decimal text too (a card or phone may arrive as a number),
// and the named-only forms above (plain phone digit runs, 9-digit SSNs) apply. Numbers beyond
// int64/uint64 arrive as doubles and are not scanned, since their digits are already lost;
// parse with rapidjson::kParseNumbersAsStringsFlag to scan them as strings everywhere.
//
// Actions (specs apply in order, each seeing what the earlier ones left):
//   PII_QUARANTINE  Apply returns kQuarantine at the first match, with the detector and pointer.
//                   Earlier specs may already have modified the record, so the caller must
//                   discard it (the stored original goes to quarantine).
//   PII_MASK        each detected substring is replaced by as many '*' as it has code points.
//   PII_HASH        each detected substring is replaced by HmacSha256Hex(hash_key, substring).
//   PII_DROP        the member holding the value is removed (an array element is removed from
//                   its array).
// A masked or hashed number becomes a string.
//
// No detected value is logged or returned anywhere; messages carry detector names and pointers.
//
// Thread safety: immutable after Compile(); Apply() is const and may run on several threads at
// once (RE2 matching is thread-safe).
class PiiScanner {
 public:
  enum class Result { kClean, kModified, kQuarantine };

  // Errors: InvalidArgument listing every problem as "pii[<index>]: <problem>", joined by "; ":
  // unspecified or unknown detector or action, a field that is not a valid JSON pointer, PII_HASH
  // without a hash key.
  static absl::StatusOr<std::shared_ptr<const PiiScanner>> Compile(
      const google::protobuf::RepeatedPtrField<wharf::v1::PiiSpec>& specs, std::string hash_key);

  // Scans `record` with every spec in order and applies mask/hash/drop in place. kModified when
  // anything changed, kClean otherwise. On a quarantine-action match returns kQuarantine at once
  // with `*finding` (may be null) set to that match; the record must then be discarded.
  Result Apply(rapidjson::Document* record, PiiFinding* finding) const;

  bool empty() const { return specs_.empty(); }

  // Name for messages: "email", "phone", "payment_card", "iban", "us_ssn", "ip_address";
  // "unspecified" for anything else.
  static std::string_view DetectorName(wharf::v1::PiiDetector d);

  // Byte ranges [begin, end) of the values `d` detects in `text`; `named` enables the named-field
  // forms described above. Exposed for tests and for the mask/hash transforms' reuse.
  struct Match {
    size_t begin;
    size_t end;
  };
  static std::vector<Match> Detect(wharf::v1::PiiDetector d, std::string_view text, bool named);

 private:
  struct CompiledSpec {
    wharf::v1::PiiDetector detector;
    wharf::v1::PiiAction action;
    // Empty: scan the whole record.
    std::vector<rapidjson::Pointer> fields;
    std::vector<std::string> field_texts;  // the pointers as written, for findings
  };

  PiiScanner(std::vector<CompiledSpec> specs, std::string hash_key)
      : specs_(std::move(specs)), hasher_(hash_key) {}

  std::vector<CompiledSpec> specs_;
  // Keyed once here rather than per detected value (see HmacSha256).
  HmacSha256 hasher_;
};

}  // namespace wharf::pipeline::contract
