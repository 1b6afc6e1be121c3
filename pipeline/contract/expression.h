#pragma once

// The expression language of Wharf data contracts: rules (`rules: [{name, expr}]`, a record that
// does not evaluate to true is quarantined as RULE_VIOLATION), `set` transforms (the value is
// written into the record) and `filter` transforms (the record is dropped when true).
//
// ---------------------------------------------------------------------------------------------
// Expression language reference
// ---------------------------------------------------------------------------------------------
//
// An expression is evaluated against one record (a JSON object) and yields one value. Values
// have the JSON types: null, boolean, number, string, array, object. Numbers are 64-bit
// integers when integral and in range, otherwise doubles (so 4.0 and 4 are the same value).
// Arrays and objects come only from fields of the record; the language has no literals for them.
// Evaluation is deterministic: there is no clock, no randomness and no access to anything but
// the record.
//
// Literals
//   42  -7  3.25  1e6  2.5E-3      numbers (a leading '-' is the unary minus operator; an
//                                  integer literal beyond the int64 range becomes a double)
//   "text"  'text'                 strings in double or single quotes, UTF-8. Escapes: \" \'
//                                  \\ \/ \n \t \r \b \f and \uXXXX (a UTF-16 code unit; a
//                                  surrogate pair \uD83D\uDE00 forms one character)
//   true  false  null
//
// Field paths (a field that is absent evaluates to null; so does a path through a non-object)
//   amount                         top-level field "amount"
//   customer.address.city          nested objects
//   items[0].sku                   array element (0-based, an integer literal)
//   $["weird key"]                 any field name, as a string literal in brackets; `$` is the
//   order["line items"][2]         record itself and may start any path: $.amount == amount
//   $                              the whole record (e.g. len($) is its number of fields)
//   Identifiers are [A-Za-z_][A-Za-z0-9_]*. The words true, false, null, and, or, not, in are
//   reserved; reach a field with such a name as $["in"].
//
// Operators, from lowest to highest precedence
//   a || b     a or b              logical, three-valued (see below)
//   a && b     a and b
//   !a         not a               logical negation (lower than comparisons: not a == b means
//                                  not (a == b))
//   ==  !=  <  <=  >  >=           comparison (not chainable: write (a < b) && (b < c))
//   x in [a, b, ...]               membership in a list of expressions; x not in [...] negates
//   +  -                           addition / subtraction; + also concatenates two strings
//   *  /  %                        multiplication, division (exact: 7 / 2 == 3.5), remainder
//   -a                             unary minus
//   ( )                            grouping; f(...) function call; a.b a[0] a["k"] paths
//   Binary operators are left-associative: 10 - 2 - 3 == 5.
//
// Semantics
//   - Logic: && and || accept booleans and null. They short-circuit and follow SQL's
//     three-valued logic: false && x is false, true || x is true, null && true is null,
//     null || false is null. ! null is null. Any other operand type is a runtime error.
//   - Equality (== !=) works across all types: values of different types are not equal
//     (1 != "1"), null == null is true, numbers compare by value (1 == 1.0), strings bytewise,
//     arrays and objects structurally.
//   - Ordering (< <= > >=) compares numbers with numbers and strings with strings (bytewise,
//     which for UTF-8 is code point order). If either side is null the result is null.
//     Anything else (e.g. a string with a number) is a runtime error.
//   - Arithmetic: numbers only (plus string + string). If either side is null the result is
//     null. Integer results that overflow int64 are computed as doubles; a result that is not
//     finite, division by zero and remainder by zero are runtime errors. % on integers keeps
//     the sign of the dividend; on non-integers it is fmod.
//   - `x in [...]` is null when x is null, otherwise whether x equals (==) any list element.
//   - Rules pass only when the expression is exactly true; false and null fail the rule, and a
//     runtime error quarantines the record with the error message.
//
// Functions (a null argument makes the result null unless noted; wrong argument types are
// runtime errors; unknown functions and wrong argument counts are compile errors)
//   len(x)                   characters (code points) of a string, elements of an array, fields
//                            of an object
//   lower(s)  upper(s)       ASCII case mapping (other characters unchanged)
//   trim(s)                  strips leading/trailing spaces, \t \n \r \f \v
//   substr(s, start[, n])    n characters (default: all) from code point `start` (0-based; a
//                            negative start counts from the end); out-of-range parts are cut
//   contains(s, sub)         substring test; contains(array, x): whether an element equals x
//                            (x may be null: contains(tags, null) looks for a null element)
//   starts_with(s, p)  ends_with(s, p)
//   matches(s, "re")         RE2 regular expression search (unanchored: use ^ and $ to anchor);
//                            the pattern must be a string literal and is checked at compile time
//   coalesce(a, b, ...)      the first argument that is not null (later ones are not evaluated)
//   is_null(x)               true when x is null or absent (never null itself)
//   exists(path)             true when the field is present, even with a null value; the
//                            argument must be a field path
//   abs(n)  floor(n)  ceil(n)
//   round(n[, digits])       half away from zero; digits in 0..15 (default 0)
//   min(a, b, ...)  max(...) smallest/largest of numbers, or of strings
//   to_number(x)             string -> number (surrounding whitespace allowed; null when the
//                            text is not a number), number -> itself, bool -> 1/0
//   to_string(x)             number/bool -> text, string -> itself, array/object -> compact JSON
//
// Limits: an expression is at most 4096 bytes and nests (parentheses, function calls, unary
// operators, lists) at most 64 deep; beyond that compilation fails. Compile errors read
// "position N: <what>", N being the 1-based character position in the text; runtime errors
// name the operator or function, the offending types and the position.
// ---------------------------------------------------------------------------------------------

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <variant>

#include "absl/status/statusor.h"
#include "rapidjson/document.h"

namespace wharf::pipeline::contract {

// One value produced by an expression. Arrays and objects are references into the record that
// was evaluated: such an ExprValue is valid only while that record is alive and unmodified.
//
// Thread safety: a const ExprValue may be read from several threads; it is a plain value.
class ExprValue {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };

  ExprValue() = default;  // null
  static ExprValue Null() { return ExprValue(); }
  static ExprValue Bool(bool b);
  static ExprValue Int(int64_t i);
  // Normalised: an integral double in the int64 range becomes an integer.
  static ExprValue Double(double d);
  static ExprValue String(std::string s);
  // Scalars are copied; arrays and objects are referenced (see the class comment).
  static ExprValue FromJson(const rapidjson::Value& json);

  Type type() const;
  bool is_null() const { return std::holds_alternative<std::monostate>(v_); }
  bool is_bool() const { return std::holds_alternative<bool>(v_); }
  bool is_number() const { return is_int() || is_double(); }
  bool is_int() const { return std::holds_alternative<int64_t>(v_); }
  bool is_double() const { return std::holds_alternative<double>(v_); }
  bool is_string() const { return std::holds_alternative<std::string>(v_); }
  bool is_json() const { return std::holds_alternative<const rapidjson::Value*>(v_); }

  bool bool_value() const { return std::get<bool>(v_); }
  int64_t int_value() const { return std::get<int64_t>(v_); }
  // Any number as a double.
  double number_value() const;
  const std::string& string_value() const { return std::get<std::string>(v_); }
  const rapidjson::Value& json_value() const { return *std::get<const rapidjson::Value*>(v_); }

  // A deep copy as a JSON value allocated from `allocator` (for the `set` transform).
  rapidjson::Value ToJson(rapidjson::Document::AllocatorType& allocator) const;
  // Compact JSON text of the value ("null", "12", "\"a\"", "[1,2]").
  std::string ToJsonText() const;
  // "null", "bool", "number", "string", "array", "object".
  std::string_view TypeName() const;

  // Equality as the == operator defines it (different types are never equal).
  friend bool operator==(const ExprValue& a, const ExprValue& b);

 private:
  std::variant<std::monostate, bool, int64_t, double, std::string, const rapidjson::Value*> v_;
};

namespace expr_internal {
struct Node;
}  // namespace expr_internal

// A compiled expression (see the language reference above).
//
// Thread safety: immutable after Compile; Evaluate/EvaluateBool are const and may run on any
// number of threads at once (the compiled regular expressions are RE2 objects, which are
// thread-safe for matching).
class Expression {
 public:
  static constexpr size_t kMaxLength = 4096;
  static constexpr int kMaxDepth = 64;

  // Parses and checks `text` (syntax, function names and argument counts, regex patterns,
  // limits). Errors: InvalidArgument "position N: ...", N the 1-based character position.
  static absl::StatusOr<std::shared_ptr<const Expression>> Compile(std::string_view text);

  // Evaluates against `record` (normally a JSON object). Runtime type errors, division by zero
  // and the like come back as InvalidArgument naming the operator/function and types; never
  // throws. The result may reference `record` (see ExprValue).
  absl::StatusOr<ExprValue> Evaluate(const rapidjson::Value& record) const;

  // For rules and filters: true only when the result is boolean true; null and false give
  // false. A result of any other type is an error ("expression must evaluate to a bool, got
  // number"), as are runtime errors.
  absl::StatusOr<bool> EvaluateBool(const rapidjson::Value& record) const;

  const std::string& text() const { return text_; }

  ~Expression();
  Expression(const Expression&) = delete;
  Expression& operator=(const Expression&) = delete;

 private:
  Expression(std::string text, std::unique_ptr<expr_internal::Node> root);

  std::string text_;
  std::unique_ptr<expr_internal::Node> root_;
};

}  // namespace wharf::pipeline::contract
