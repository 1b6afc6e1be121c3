#pragma once

// Checkers for the `format` values that JsonSchema asserts. Each takes the UTF-8 string and
// returns whether it matches the format exactly (no surrounding whitespace, ASCII digits only).
//
// Thread safety: all functions are pure and thread-safe.

#include <string_view>

namespace wharf::pipeline::contract {

using JsonSchemaFormatChecker = bool (*)(std::string_view value);

// The checker for a supported format name ("date-time", "date", "time", "email", "uuid", "ipv4",
// "ipv6", "uri"), or nullptr for any other name (those are annotations and never asserted).
JsonSchemaFormatChecker FindJsonSchemaFormatChecker(std::string_view name);

// RFC 3339 date-time, e.g. "1963-06-19T08:30:06.283185Z" ('T'/'Z' case-insensitive). A leap
// second (:60) is accepted only where it falls on 23:59:60 UTC after applying the offset.
bool IsValidDateTimeFormat(std::string_view value);
// RFC 3339 full-date "YYYY-MM-DD" with the Gregorian month lengths (leap years included).
bool IsValidDateFormat(std::string_view value);
// RFC 3339 full-time "HH:MM:SS[.frac](Z|+HH:MM|-HH:MM)"; the offset is required.
bool IsValidTimeFormat(std::string_view value);
// RFC 5321 mailbox: dot-atom or quoted-string local part, then a host name or an address
// literal ("[127.0.0.1]", "[IPv6:::1]").
bool IsValidEmailFormat(std::string_view value);
// RFC 4122 textual UUID: 8-4-4-4-12 hex digits, any case, any version / variant.
bool IsValidUuidFormat(std::string_view value);
// Dotted-quad IPv4 with decimal octets 0-255 and no leading zeros.
bool IsValidIpv4Format(std::string_view value);
// RFC 4291 textual IPv6 (with optional trailing dotted-quad); no zone id, no brackets.
bool IsValidIpv6Format(std::string_view value);
// RFC 3986 absolute URI (scheme required; a relative reference is not a "uri").
bool IsValidUriFormat(std::string_view value);

}  // namespace wharf::pipeline::contract
